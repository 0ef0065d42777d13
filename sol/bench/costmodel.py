"""A cost model of one generation, fitted once from the baseline: predicts a candidate's latency
from the work it was counted doing, so a search times only the candidates worth timing.

Fit (:func:`fit_cost_model`): one baseline generation with timers on the modules the adapter
names as work probes (every denoiser, its blocks, self- and cross-attention, the text K/V
projection), on the steadier clock of :mod:`sol.bench.timing` (thread CPU time with one torch
thread, CUDA events on a GPU, wall time otherwise), plus the op-class shares of one transformer
call (``sol.bench.profile.op_breakdown``) to split self-attention into its kernel and the rest.
That gives seconds per generation outside the denoisers (text encoding, VAE decode, the
scheduler), per transformer call outside its blocks (embeddings, head), and per block split into
self-attention (kernel / projections), cross-attention (text K/V projection / the rest) and the
rest (feed-forward, norms, modulation) at the workload's token count.

Predict (:meth:`CostModel.predict`): a candidate's probe counts (``calls``: transformer, blocks,
self_attention, cross_attention, text_kv_projection) and its techniques' own counters (``work``:
``tokens_computed``/``tokens_dense`` scale per-token work, ``attention_pairs``/
``attention_pairs_dense`` the attention kernel) priced at those costs; calls a compiled region hid
from its probe come from the fusion skill's ``fused_calls.<probe>`` counters. What changes the cost of
work without changing its amount — another numeric precision, fused or compiled kernels — is
not counted, so a candidate that writes such a seam is *unmodelled*: it must be timed.

The same model, fed another device's costs, is what a GPU projection would reuse.

>>> cm = fit_cost_model(loaded.pipe, loaded.adapter, workload)  # doctest: +SKIP
>>> cm.predict(result.calls, result.work, videos=3).speedup  # doctest: +SKIP
2.41
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch

from sol.bench.timing import clocks, sync

# Counted work the model prices; the probe names come from ``adapter.call_probes()``.
PROBES = ("transformer", "blocks", "self_attention", "cross_attention", "text_kv_projection")
# Seams whose effect is a cost per unit of work, not an amount of work: never predicted.
UNMODELLED_SEAMS = frozenset({"linear_precision", "kernel_fusion", "attention_backend"})


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds per generation, the speedup over the baseline, and whether it is modelled."""

    seconds: float
    speedup: float
    modelled: bool = True
    why: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CostModel:
    """Seconds per unit of counted work on one model, workload and machine (see the module docstring)."""

    clock: str
    generation_s: float  # one baseline generation (one prompt, one seed)
    fixed_s: float  # outside the denoisers: text encoding, VAE decode, scheduler, Python
    call_s: float  # per transformer call, outside its blocks
    block_rest_s: float  # per block call: feed-forward, norms, modulation (per-token work)
    self_attention_s: float  # per self-attention call, whole
    attention_kernel_share: float  # share of self_attention_s in the attention kernel (pairs of tokens)
    cross_attention_s: float  # per cross-attention call, whole (text K/V projection included)
    text_kv_s: float  # per text K/V projection call
    baseline_calls: dict[str, float] = field(default_factory=dict)  # per generation
    tokens: int | None = None
    notes: dict = field(default_factory=dict)

    def predict(self, calls: dict, work: dict | None = None, *, videos: int = 1, seams=()) -> Prediction:
        """Predicted seconds per generation for ``calls``/``work`` summed over ``videos`` generations.

        ``seams``: the seams the candidate's techniques write; one in :data:`UNMODELLED_SEAMS` makes
        the prediction unmodelled (its speedup is the counted-work part only, and it must be timed).

        >>> cm.predict({"transformer": 50, "blocks": 200, ...}, {}, videos=1).speedup  # doctest: +SKIP
        """
        work = work or {}
        v = max(1, int(videos))
        n = {}
        for k in PROBES:
            # Attention inside a compiled block never reaches its probe; the fusion skill counts those
            # calls as ``fused_calls.<probe>``. Without them a cache under fusion was priced at every
            # attention call of the baseline (make demo: 1.31x predicted, 1.84x measured).
            fused = float(work.get(f"fused_calls.{k}", 0.0))
            counted = calls.get(k)
            n[k] = (
                (float(counted or 0.0) + fused) / v
                if counted is not None or fused
                else float(self.baseline_calls.get(k, 0.0))
            )
        tok = _ratio(work, "tokens_computed", "tokens_dense")
        pairs = _ratio(work, "attention_pairs", "attention_pairs_dense", default=tok * tok)
        attn = self.self_attention_s * (
            self.attention_kernel_share * pairs + (1.0 - self.attention_kernel_share) * tok
        )
        seconds = (
            self.fixed_s
            + self.call_s * n["transformer"]
            + self.block_rest_s * n["blocks"] * tok
            + attn * n["self_attention"]
            + (self.cross_attention_s - self.text_kv_s) * tok * n["cross_attention"]
            + self.text_kv_s * n["text_kv_projection"]
        )
        unmodelled = sorted(str(s) for s in seams if str(s) in UNMODELLED_SEAMS)
        speed = self.generation_s / seconds if seconds > 0 else float("inf")
        if unmodelled:
            return Prediction(
                seconds, speed, False, f"writes {', '.join(unmodelled)}: a cost per unit of work"
            )
        return Prediction(seconds, speed)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CostModel:
        return cls(**data)


def _ratio(work: dict, num: str, den: str, default: float = 1.0) -> float:
    d = float(work.get(den) or 0.0)
    return float(work.get(num, 0.0)) / d if d > 0 else default


def _clock(device) -> tuple[str, callable]:
    names = clocks(device)
    if "cpu" in names:
        return "cpu", time.thread_time
    return "wall", time.perf_counter  # CUDA: synchronised wall time around each module


@contextlib.contextmanager
def module_timers(adapter, device=None) -> Iterator[tuple[dict[str, float], dict[str, int]]]:
    """Seconds spent in (and calls of) every probe module group, while the block runs.

    Plain ``torch`` forward hooks (pre and post), removed on exit; nested groups (a block inside
    the transformer) each count their own inclusive time.
    """
    name, now = _clock(device)
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    handles = []
    cuda = torch.cuda.is_available() and device is not None and torch.device(device).type == "cuda"

    def add(group: str, module):
        starts: list[float] = []

        def pre(*_a, **_k):
            if cuda:
                sync(device)
            starts.append(now())

        def post(*_a, **_k):
            if cuda:
                sync(device)
            seconds[group] += now() - starts.pop()
            counts[group] += 1

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    for expert in getattr(adapter, "experts", None) or [adapter]:
        for group, modules in expert.call_probes().items():
            if group in PROBES:
                for m in modules:
                    add(group, m)
    try:
        yield seconds, counts
    finally:
        for h in handles:
            h.remove()


def fit_cost_model(pipe, adapter, workload, *, op_shares: dict | None = None, device=None) -> CostModel:
    """Fit the cost model on one baseline generation of ``workload``'s first (prompt, seed).

    ``op_shares``: the profile's op-class shares of one transformer call (``attention``,
    ``linear``, …); measured here when not given. One warm-up generation runs first.
    """
    from sol.bench.runner import generate

    one = workload.model_copy(update={"prompts": workload.prompts[:1], "seeds": workload.seeds[:1]})
    clock, now = _clock(device)
    with torch.no_grad():
        generate(pipe, one)  # warm-up: allocation, lazy init
        with module_timers(adapter, device) as (sec, cnt):
            sync(device)
            t0 = now()
            generate(pipe, one)
            sync(device)
            total = now() - t0
    sec, cnt = dict(sec), dict(cnt)

    def per(group: str) -> float:
        return sec.get(group, 0.0) / cnt[group] if cnt.get(group) else 0.0

    calls = {k: float(cnt.get(k, 0)) for k in PROBES}
    blocks_s = sec.get("blocks", 0.0)
    sa, ca, kv = per("self_attention"), per("cross_attention"), per("text_kv_projection")
    block_rest = (blocks_s - sec.get("self_attention", 0.0) - sec.get("cross_attention", 0.0)) / max(
        1.0, calls["blocks"]
    )
    call_rest = (sec.get("transformer", 0.0) - blocks_s) / max(1.0, calls["transformer"])
    if op_shares is None:
        op_shares = _op_shares(pipe, workload)
    kernel_share = _attention_kernel_share(
        op_shares, sa * calls["self_attention"], sec.get("transformer", 0.0)
    )
    return CostModel(
        clock=clock,
        generation_s=total,
        fixed_s=max(0.0, total - sec.get("transformer", 0.0)),
        call_s=max(0.0, call_rest),
        block_rest_s=max(0.0, block_rest),
        self_attention_s=sa,
        attention_kernel_share=kernel_share,
        cross_attention_s=ca,
        text_kv_s=min(kv, ca),
        baseline_calls=calls,
        notes={"op_shares": op_shares, "seconds": sec, "calls": cnt},
    )


def _op_shares(pipe, workload) -> dict:
    from sol.bench.profile import capture_transformer_call, op_breakdown

    args, kwargs = capture_transformer_call(pipe, workload)
    ops = op_breakdown(pipe.transformer, args, kwargs, repeats=1)
    total = sum(ops.values()) or 1.0
    return {k: v / total for k, v in ops.items()}


def _attention_kernel_share(op_shares: dict, self_attention_total: float, transformer_total: float) -> float:
    """The attention kernel's share of self-attention time: the profile's attention share of a
    transformer call (kernels only; cross-attention over a few text tokens is a small part of it)
    over self-attention's share of the same call."""
    if self_attention_total <= 0 or transformer_total <= 0:
        return 0.0
    sa_share = self_attention_total / transformer_total
    return float(min(1.0, max(0.0, op_shares.get("attention", 0.0) / sa_share)))
