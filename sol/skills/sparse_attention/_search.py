"""Search helpers the sparse-attention methods share (search layer: imported by search functions).

Cheap first: a candidate's speed follows the share of attention it computes (its density), which is
known before it runs; what it costs in quality is what must be measured. So each method screens a
few densities and the cheapest dense fallbacks, then :func:`refine_windows` moves between the
sparsest setting that met the floor and the densest that missed it, or, when nothing met it, keeps
the pattern only where it costs least quality (the last layers, after a dense first step).
"""

from __future__ import annotations

import math

from sol.hooks import Span
from sol.skills.sparse_attention._base import density_of
from sol.skills.sparse_attention.tiling import Tiling


def grid_of(context) -> tuple[int, int, int]:
    """The token grid of the workload's transformer calls (what the step tracker sees at run time)."""
    (args, kwargs), *_ = context.adapter.example_inputs(context.workload, calls=1)
    return tuple(context.adapter.call_token_grid(args, kwargs))


def tile_target(context) -> int:
    """Tokens per tile: 64 on the CPU (batched SDPA rows long enough to pay for the gather), 128 on
    a GPU (FlexAttention's block size)."""
    return 128 if getattr(context.hardware, "kind", "cpu") == "cuda" else 64


def step_count(context) -> int:
    return int(getattr(context.workload, "num_inference_steps", 0) or 0)


def layer_count(context) -> int:
    return len(context.adapter.self_attention_modules())


def unique(configs) -> list:
    out = []
    for c in configs:
        if c not in out:
            out.append(c)
    return out


def window_for(tiling: Tiling, target: float) -> tuple[int, int, int]:
    """The window whose density is closest to ``target``: all frames' tiles first shrink in space
    (the spatial side is where attention decays on video models), then in time."""
    nf, nh, nw = tiling.shape
    best = None
    for a in range(1, nf + 1):
        for b in range(1, nh + 1):
            c = max(1, min(nw, round(b * nw / nh)))
            d = (a * b * c) / (nf * nh * nw)
            score = (abs(math.log(d / target)), -a)
            if best is None or score < best[0]:
                best = (score, (a, b, c))
    return best[1]


def split(results, floor: float, config_type) -> tuple[list, list]:
    """``(density, config)`` of this kind's single-technique results that met / missed the floor."""
    kind = config_type.model_fields["kind"].default
    ok, bad = [], []
    for r in results:
        if not r.ok or len(r.techniques) != 1 or r.techniques[0].get("kind") != kind:
            continue
        d = density_of(r)
        if d is None:
            continue
        cfg = config_type.model_validate(r.techniques[0])
        (ok if r.psnr >= floor else bad).append((d, cfg))
    return ok, bad


def refine_windows(context, results, config_type, between=None) -> list:
    """Refinement shared by the mask methods (STA, radial).

    With a bracket (a setting met the floor, a sparser one missed it): ``between(config, target,
    tiling)`` — the passing config moved to the density halfway (geometric) between the two. With
    nothing meeting the floor: the most faithful setting tried, kept only in the last quarter of the
    layers, and that with a dense first step (gentler along the knobs that cost least speed).
    """
    ok, bad = split(results, context.min_psnr, config_type)
    tried = {c for _, c in ok + bad}
    out = []
    if ok:
        d_ok, c_ok = min(ok, key=lambda p: p[0])  # the sparsest that met the floor
        sparser = [d for d, _ in bad if d < d_ok]
        if sparser and between is not None:
            target = math.sqrt(d_ok * max(sparser))
            out.append(between(c_ok, target, Tiling.build(grid_of(context), c_ok.tile)))
        return unique([c for c in out if c is not None and c not in tried])
    if not bad:
        return []
    n_layers = layer_count(context)
    _, c_best = max(bad, key=lambda p: p[0])  # the densest (most faithful) one tried
    base = c_best.model_copy(update={"layers": Span(start=max(0, n_layers - max(1, n_layers // 4)))})
    out.append(base)
    if step_count(context) > 2 and base.dense_steps is None:
        out.append(base.model_copy(update={"dense_steps": Span(stop=1)}))
    return unique([c for c in out if c not in tried])
