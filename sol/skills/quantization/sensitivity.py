"""Sensitivity scan and per-layer speed: the evidence the mixed-precision search ranks groups by.

Method (cheap by design, see docs/skills.md "Quantization"):

1. **Calibration**: run the calibration workload once through the pipeline and capture the
   transformer's inputs at a few denoising calls spread over the steps (and the shape each
   linear layer sees). No pipeline at hand: synthetic inputs of the workload's shapes.
2. **Sensitivity**: quantize one module group at a time (per block: self-attention,
   cross-attention, feed-forward), replay the captured calls through the transformer and
   measure the drift of its output: ``rel_err = ||y_q - y|| / ||y||`` over all calls. This
   is a forward per group and call instead of a full generation (and a VAE decode) per
   group; errors of independent groups add roughly in quadrature, which the search uses to
   predict a mix before measuring it. The groups that drift most are scanned again layer by
   layer, so one sensitive layer does not keep its whole group in full precision.
3. **Speed**: time each distinct (layer shape, tokens) full-precision vs quantized, interleaved,
   at the token counts the model really sees: small layers can be slower quantized (the
   activation quantization is a fixed cost), and the search keeps those in full precision.

Modules are swapped in and out (the original ``nn.Linear`` objects are kept), so the scan
leaves the model exactly as it found it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sol.skills.quantization.config import prefix_pattern
from sol.skills.quantization.schemes import Scheme, swap, swapped  # noqa: F401  (swap: re-exported)

# A layer counts as faster quantized only beyond this ratio: per-layer timings on a shared
# 2-core machine wobble by a few percent, and a layer that is not clearly faster only costs fidelity.
FASTER_RATIO = 1.05


@dataclass
class Calibration:
    """Captured transformer calls (inputs and full-precision outputs) and each linear's input shape."""

    calls: list[tuple[tuple, dict]]
    outputs: list[torch.Tensor]
    linear_shapes: dict[str, tuple[int, ...]]
    source: str  # "pipeline" | "synthetic"

    def describe(self) -> dict:
        return {"source": self.source, "calls": len(self.calls)}


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        return _first_tensor(out[0])  # Cosmos3 returns a list of per-item predictions first
    sample = getattr(out, "sample", out)
    return sample if sample is out else _first_tensor(sample)


def _detach(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple | list):
        return type(obj)(_detach(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n // 2]


def run_transformer(transformer: nn.Module, calls) -> list[torch.Tensor]:
    with torch.no_grad():
        return [_first_tensor(transformer(*a, **kw)).detach() for a, kw in calls]


@contextlib.contextmanager
def _record_linear_shapes(linears: dict[str, nn.Module]) -> Iterator[dict]:
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name):
        def record(_module, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: a pre-hook's value replaces args

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    try:
        yield shapes
    finally:
        for h in handles:
            h.remove()


def capture(pipe, adapter, workload, *, max_calls: int = 4) -> Calibration:
    """Run ``workload`` (its first prompt) through ``pipe`` and keep ``max_calls`` transformer calls."""
    from sol.bench.runner import generate

    transformer = pipe.transformer
    seen: list[tuple[tuple, dict]] = []

    def hook(_m, args, kwargs):
        seen.append((_detach(args), _detach(kwargs)))

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            generate(pipe, workload.shortened(prompts=1))
    finally:
        handle.remove()
    calls = [seen[i] for i in _spread(len(seen), max_calls)]
    return _finish(transformer, adapter, calls, "pipeline")


def synthetic(adapter, workload, *, max_calls: int = 2) -> Calibration:
    """Calibration without a pipeline: the adapter's example inputs of the workload's shapes
    (Gaussian latents and text states, timesteps spread over the schedule).

    Real inputs are better (the drift depends on activation ranges); this keeps the scan
    usable when only the transformer is at hand.
    """
    gen = torch.Generator("cpu").manual_seed(0)
    calls = adapter.example_inputs(workload, calls=max_calls, generator=gen)
    return _finish(adapter.transformer, adapter, calls, "synthetic")


def _finish(transformer, adapter, calls, source) -> Calibration:
    with _record_linear_shapes(adapter.linear_layers()) as shapes:
        outputs = run_transformer(transformer, calls)
    return Calibration(calls, outputs, dict(shapes), source)


# --- groups ------------------------------------------------------------------------------------


def group_of(name: str, block_prefixes: list[str]) -> str:
    """The module group of a linear: its block's direct child (``blocks.0.attn1.to_q`` -> ``blocks.0.attn1``)."""
    for p in block_prefixes:
        if name.startswith(p + "."):
            child = name[len(p) + 1 :].split(".", 1)[0]
            return f"{p}.{child}"
    return name.rsplit(".", 1)[0]


def groups(adapter, granularity: str = "group") -> dict[str, list[str]]:
    """Group -> its linear layers' names. ``granularity``: "group" (block x attn1/attn2/ffn) or "layer"."""
    names = list(adapter.linear_layers())
    if granularity == "layer":
        return {n: [n] for n in names}
    ids = {id(b) for b in adapter.blocks()}
    prefixes = [n for n, m in adapter.transformer.named_modules() if id(m) in ids]
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(group_of(n, prefixes), []).append(n)
    return out


def group_pattern(group: str, members: list[str]) -> str:
    """The rule ``match`` for a group: a ``re:`` prefix pattern, or the exact name of a single layer."""
    if members == [group]:
        return group
    return prefix_pattern(group)


# --- swapping ----------------------------------------------------------------------------------


# --- the scan ----------------------------------------------------------------------------------


@dataclass
class GroupSensitivity:
    group: str
    pattern: str
    layers: list[str]
    rel_err: float  # relative L2 drift of the transformer output with only this group quantized
    saved_s: float = 0.0  # per transformer call, summed over the group's faster-quantized layers

    @property
    def snr_db(self) -> float:
        return -20.0 * math.log10(self.rel_err) if self.rel_err > 0 else math.inf


@dataclass
class LayerSpeed:
    shape: list[int]  # [tokens, in, out]
    fp_s: float
    quant_s: float

    @property
    def ratio(self) -> float:
        return self.fp_s / self.quant_s if self.quant_s > 0 else math.inf

    @property
    def faster(self) -> bool:
        return self.ratio >= FASTER_RATIO


@dataclass
class Report:
    """Everything the mixed-precision search needs, as small JSON-able data."""

    scheme: str
    calibration: dict
    groups: list[GroupSensitivity]
    layers: dict[str, LayerSpeed]
    all_rel_err: float  # every linear quantized at once (checks the quadrature model)
    scan_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def ranked(self) -> list[GroupSensitivity]:
        """Groups worth keeping in full precision first: most drift per second of speed they bring.

        Drift adds in quadrature and time linearly, so ``rel_err**2 / saved_s`` is the greedy
        knapsack order; groups with no faster layer are not candidates for quantization at all.
        """
        cand = [g for g in self.groups if g.saved_s > 0]
        return sorted(cand, key=lambda g: -(g.rel_err**2) / g.saved_s)

    def predict_rel_err(self, quantized_groups: list[str]) -> float:
        by = {g.group: g.rel_err for g in self.groups}
        return math.sqrt(sum(by[g] ** 2 for g in quantized_groups))

    def to_json(self) -> dict:
        return {
            "scheme": self.scheme,
            "calibration": self.calibration,
            "groups": [asdict(g) | {"snr_db": g.snr_db} for g in self.groups],
            "layers": {n: asdict(s) | {"ratio": s.ratio, "faster": s.faster} for n, s in self.layers.items()},
            "all_rel_err": self.all_rel_err,
            "scan_s": self.scan_s,
            **self.extra,
        }

    @classmethod
    def from_json(cls, d: dict) -> Report:
        gs = [
            GroupSensitivity(g["group"], g["pattern"], list(g["layers"]), g["rel_err"], g.get("saved_s", 0.0))
            for g in d["groups"]
        ]
        ls = {n: LayerSpeed(list(s["shape"]), s["fp_s"], s["quant_s"]) for n, s in d["layers"].items()}
        known = {"scheme", "calibration", "groups", "layers", "all_rel_err", "scan_s"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(d["scheme"], d["calibration"], gs, ls, d["all_rel_err"], d.get("scan_s", 0.0), extra)


def _rel_err(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    num = sum(float((o.double() - r.double()).pow(2).sum()) for r, o in zip(ref, out, strict=True))
    den = sum(float(r.double().pow(2).sum()) for r in ref)
    return math.sqrt(num / den) if den > 0 else math.inf


def time_layers(
    linears: dict[str, nn.Linear],
    converted: dict[str, nn.Module],
    shapes: dict[str, tuple[int, ...]],
    *,
    repeats: int = 5,
    min_sample_s: float = 0.05,
) -> dict[str, LayerSpeed]:
    """Full precision vs quantized, interleaved, once per distinct (shape, tokens, bias); shared by name.

    Each sample loops a layer for at least ``min_sample_s``: on a shared machine a small
    multi-threaded op waits for a scheduler slice (~4-8 ms measured here for a 128x128 layer
    that computes in 0.03 ms), so single calls measure the scheduler, not the layer.
    """
    from sol.bench.timing import interleaved  # search-time only: the runtime never imports sol.bench

    out: dict[str, LayerSpeed] = {}
    cache: dict[tuple, LayerSpeed] = {}
    for name, lin in linears.items():
        shape = shapes.get(name)
        if shape is None:  # never called in calibration (e.g. a branch the workload does not take)
            continue
        tokens = math.prod(shape[:-1])
        key = (tokens, lin.in_features, lin.out_features, lin.bias is not None, lin.weight.dtype)
        if key not in cache:
            x = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(0)).to(lin.weight)
            q = converted[name]
            with torch.no_grad():
                lin(x)  # the first call pays one-time costs
                t0 = time.perf_counter()
                lin(x)
                one = max(time.perf_counter() - t0, 1e-6)
                inner = max(1, min(2000, int(min_sample_s / one)))

                def fa(lin=lin, x=x, inner=inner):
                    for _ in range(inner):
                        lin(x)

                def fb(q=q, x=x, inner=inner):
                    for _ in range(inner):
                        q(x)

                cmp = interleaved(fa, fb, warmup=1, repeats=repeats, device=x.device)
            cache[key] = LayerSpeed(
                [tokens, lin.in_features, lin.out_features], cmp.a.median_s / inner, cmp.b.median_s / inner
            )
        out[name] = cache[key]
    return out


def scan(
    adapter,
    calibration: Calibration,
    scheme: Scheme,
    *,
    granularity: str = "group",
    timing_repeats: int = 5,
    split_top: int = 2,
) -> Report:
    """Sensitivity of each group and speed of each layer under ``scheme``; the model is left unchanged.

    The ``split_top`` groups with the largest drift are scanned again layer by layer and
    replaced by their layers in the report: one layer often carries a group's drift (on
    random-weight Wan, cross-attention's text K/V projections), and keeping only that layer
    in full precision keeps the speed of the others. The group-level drifts stay in
    ``report.extra["group_scan"]``.

    >>> report = scan(adapter, capture(pipe, adapter, workload), SCHEMES["int8_dynamic"])  # doctest: +SKIP
    >>> report.ranked()[0].group  # doctest: +SKIP
    'blocks.1.ffn'
    """
    t0 = time.perf_counter()
    transformer = adapter.transformer
    linears = adapter.linear_layers()
    converted = {n: scheme.convert(m) for n, m in linears.items()}
    per_group = groups(adapter, granularity)

    def drift(members: list[str]) -> float:
        with swapped(transformer, {n: converted[n] for n in members}):
            return _rel_err(calibration.outputs, run_transformer(transformer, calibration.calls))

    results = [GroupSensitivity(g, group_pattern(g, m), m, drift(m)) for g, m in per_group.items()]
    group_scan = {g.group: g.rel_err for g in results}
    split = [g for g in sorted(results, key=lambda g: -g.rel_err) if len(g.layers) > 1][:split_top]
    for g in split:
        at = results.index(g)
        results[at : at + 1] = [GroupSensitivity(n, n, [n], drift([n])) for n in g.layers]
    with swapped(transformer, converted):
        all_err = _rel_err(calibration.outputs, run_transformer(transformer, calibration.calls))
    speeds = time_layers(linears, converted, calibration.linear_shapes, repeats=timing_repeats)
    for g in results:
        g.saved_s = sum(
            speeds[n].fp_s - speeds[n].quant_s for n in g.layers if n in speeds and speeds[n].faster
        )
    return Report(
        scheme.name,
        calibration.describe() | {"granularity": granularity},
        results,
        speeds,
        all_err,
        time.perf_counter() - t0,
        {"group_scan": group_scan, "split": [g.group for g in split]},
    )
