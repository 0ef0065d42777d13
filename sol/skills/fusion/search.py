"""Leave-one-out measurement (search time): keep only the fusions that pay on this machine.

The search's screens count work and judge quality; they time nothing, and the cost of fused
kernels is not something counted work predicts. So the fusion skill times itself, on one
transformer call of the workload's shapes (the adapter's example inputs), against the untouched
transformer, interleaved (:func:`sol.bench.timing.interleaved`, thread CPU time on the CPU):

1. everything fused (``full``);
2. ``full`` minus each part in turn.

A part pays when leaving it out loses more than :data:`MARGIN` of the speedup. The candidates
are the paying set, and ``full`` when it differs (the race decides between them). When even
``full`` gains less than :data:`MIN_GAIN`, nothing is proposed ("nothing pays here" is a result).
Evidence lands in ``context.notes["fusion"]``.

Cost: one compile (or kernel build) and ``PAIRS`` interleaved pairs per variant, 1 + len(parts)
variants; on the reference model at ``default`` (8 blocks, 320 tokens) about 1-2 min on the CPU,
nearly all of it compiling (inductor's FX graph cache makes the candidate evaluations' compiles
that follow cheaper).
"""

from __future__ import annotations

import copy
import time

import torch

NOTES_KEY = "fusion"
MARGIN = 0.02  # a part pays when leaving it out loses more than this share of the speedup
MIN_GAIN = 0.03  # below this, fusing everything is noise on a shared machine: propose nothing
PAIRS = 7
WARMUP = 2


def _copy(adapter):
    """The adapter of a copy of its transformer that shares its weights (no memory)."""
    from sol.models.base import adapter_for

    t = adapter.transformer
    memo = {id(p): p for p in (*t.parameters(), *t.buffers())}
    return adapter_for(copy.deepcopy(t, memo))


def leave_one_out(skill, context, full, field: str, parts: tuple[str, ...]) -> list:
    """Configs of ``skill`` worth screening: ``full`` with only its paying ``parts`` (+ ``full``).

    >>> leave_one_out(CompileBlocksSkill(), ctx, CompileBlocks(), "inside", PARTS)  # doctest: +SKIP
    [CompileBlocks(inside=('cross_attention', 'feed_forward', 'self_attention'))]
    """
    from sol.bench.timing import interleaved

    notes = context.notes.setdefault(NOTES_KEY, {})
    adapter = context.adapter
    (args, kwargs), *_ = adapter.example_inputs(context.workload, calls=1)
    kind = full.kind
    # CUDA events on a GPU (a kernel launch returns before the kernel ran), thread CPU time here.
    param = next(adapter.transformer.parameters(), None)
    device = param.device if param is not None else None

    def call(transformer):
        def run():
            with torch.no_grad():
                transformer(*args, **kwargs)

        return run

    def with_parts(kept: tuple[str, ...]):
        return type(full)(**{**full.model_dump(), field: kept})

    variants = {"all": full} | {f"without {p}": with_parts(tuple(x for x in parts if x != p)) for p in parts}
    measured: dict[str, dict] = {}
    for name, cfg in variants.items():
        fused = _copy(adapter)
        handle = skill.apply(context.pipe, cfg, fused)
        try:
            t0 = time.perf_counter()
            call(fused.transformer)()  # compiles (or builds kernels): not timed below
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            first = time.perf_counter() - t0
            base, cand = call(adapter.transformer), call(fused.transformer)
            cmp = interleaved(base, cand, warmup=WARMUP, repeats=PAIRS, device=device)
            measured[name] = {"config": cfg.model_dump(mode="json"), "first_call_s": first, **cmp.summary()}
        finally:
            handle.revert()
    gain = measured["all"]["speedup"]
    pays = {p: gain / measured[f"without {p}"]["speedup"] - 1.0 for p in parts}
    kept = tuple(p for p in parts if pays[p] > MARGIN)
    out = []
    if gain >= 1.0 + MIN_GAIN:
        chosen = with_parts(kept)
        out = [chosen] if chosen == full else [chosen, full]
    notes.setdefault("leave_one_out", {})[kind] = {
        "variants": measured,
        "pays": pays,  # speedup lost by leaving each part out (share)
        "kept": list(kept),
        "proposed": [c.model_dump(mode="json") for c in out],
        "why_none": None if out else f"fusing everything gained {gain:.3f}x (< {1 + MIN_GAIN:.2f}x)",
    }
    return out
