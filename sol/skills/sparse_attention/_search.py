"""Search helpers the sparse-attention methods share (search layer: imported by search functions).

Cheap first: a candidate's speed follows the share of attention it computes (its density), which is
known before it runs; what it costs in quality is what must be measured. So each method screens a
few densities and the cheapest dense fallbacks, then :func:`refine_windows` moves between the
sparsest setting that met the floor and the densest that missed it, or, when nothing met it, keeps
the pattern only where it costs least quality.

Where it costs least is the last layers. That was measured, and the search does not re-measure
it per candidate: on sol-tiny-wan at ``long``, STA at 25 % of the tiles on one layer only gave a
worst video of 17.1, 17.1, 19.9, 21.1, 21.0, 23.6, 26.5, 25.5 dB for layers 0-7 (an error early in
the stack is carried through every later layer and step), while neither the layer's own attention
error (:func:`layer_errors`: lowest on layer 0) nor the error of one transformer call's output
ranked the layers that way, and a search that kept the pattern on the layers of least attention
error (0, 1, 2, 5) fell to 15.2 dB against 27.1 dB on the last two. So the layer knob keeps the
pattern on the last layers (``layers=Span(start=...)``) and makes the first ones dense, as Sparse
VideoGen does (its ``first_layers_fp`` and ``first_times_fp``: dense first layers and steps).
:func:`layer_errors` stays as evidence for a reader (no search step calls it).
"""

from __future__ import annotations

import math

import torch

from sol.hooks import ForwardContext, Span
from sol.skills.probe import attention_ceiling, captured_qkv, probe_layer
from sol.skills.sparse_attention._base import (
    Call,
    SparseAttentionProcessor,
    Work,
    density_of,
    resolve_backend,
)
from sol.skills.sparse_attention.tiling import Tiling

NOTE = "sparse_attention"


def grid_of(context) -> tuple[int, int, int]:
    """The token grid of the workload's transformer calls (what the step tracker sees at run time)."""
    (args, kwargs), *_ = context.adapter.example_inputs(context.workload, calls=1)
    return tuple(context.adapter.call_token_grid(args, kwargs))


def tile_target(context) -> int:
    """Tokens per tile: 48 on the CPU, 128 on a GPU (FlexAttention's block size).

    On the CPU, batched SDPA over 48-192-token tiles ran at the same cost per kept pair (measured at
    2,304 tokens, 25 % of the tiles: 23-31 ms against 69-79 ms dense), so the smaller tile wins: it
    leaves more tiles per axis (a 9x16x16 grid is 3x4x4 tiles of 48, only 9x2x2 of 64 = 1x8x8) and
    so finer windows."""
    return 128 if getattr(context.hardware, "kind", "cpu") == "cuda" else 48


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


def layer_call(skill, config, context, grid, layer: int, backend: str) -> Call:
    """What ``skill.attend`` sees of one call of ``layer`` under ``config``, outside a generation
    (a pattern step on the captured grid): for the probes below."""
    mods = list(context.adapter.self_attention_modules().values())
    ctx = ForwardContext(step=1, num_steps=None, grid=grid, active=True)
    proc = SparseAttentionProcessor(mods[layer].processor, skill, config, context.adapter, ctx, layer,
                                    len(mods), Work())  # fmt: skip
    return Call(proc, Tiling.build(grid, config.tile), backend)


def layer_errors(context, config) -> list[float] | None:
    """Relative error of each layer's self-attention output under ``config``'s pattern, on the
    captured q, k, v (None without a pipeline). Recorded in ``context.notes``."""
    from sol.skills.base import skill_for

    captured = captured_qkv(context)
    if captured is None:
        return None
    grid, qkvs = captured
    skill = skill_for(config)
    adapter = context.adapter
    mods = list(adapter.self_attention_modules().values())
    errs = []
    with torch.no_grad():
        for i, (q, k, v) in enumerate(qkvs):
            out, _ = skill.attend(layer_call(skill, config, context, grid, i, "gather"), q, k, v)
            ref = adapter.attend(mods[i].processor, q, k, v)
            errs.append(float((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)))
    notes = context.notes.setdefault(NOTE, {}) if isinstance(context.notes, dict) else {}
    notes.setdefault("layer_errors", {})[config.label()] = [round(e, 4) for e in errs]
    return errs


def refine_windows(context, results, config_type, between=None) -> list:
    """Refinement shared by the mask methods (STA, radial).

    With a bracket (a setting met the floor, a sparser one missed it): ``between(config, target,
    tiling)`` — the passing config moved to the density halfway (geometric) between the two. With
    nothing meeting the floor: the most faithful setting tried, kept only in the last quarter of the
    layers (the ones where it costs least quality, see the module doc), and that with a dense first
    step (gentler along the knobs that cost least speed).
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
    keep = max(1, n_layers // 4)  # the pattern on the last quarter of the layers only (see the module doc)
    base = c_best.model_copy(update={"layers": Span(start=max(0, n_layers - keep)), "dense_layers": ()})
    out.append(base)
    if step_count(context) > 2 and base.dense_steps is None:
        out.append(base.model_copy(update={"dense_steps": Span(stop=1)}))
    return unique([c for c in out if c not in tried])


def kernel_ceiling(skill, context, cost_model) -> dict | None:
    """Each config of ``skill``'s search space on one layer's captured q, k, v against the model's
    dense attention (``sol.skills.probe.attention_ceiling``).

    On sol-tiny-wan at ``default`` (320 tokens) on the 2-core CPU, SVG's per-call head
    classification took 2.5-4.4 ms against 1.1-1.5 ms of dense attention, so it cannot beat the
    baseline there (ceiling 0.80-0.91x in four ``make demo`` runs); STA's and radial's static masks
    gave ceilings of 1.01-1.29x (a millisecond kernel times noisily), so they are mostly searched.
    """
    p = probe_layer(context) if cost_model is not None else None
    if p is None:
        return None
    variants = {}
    for config in skill.search_space(context):
        call = layer_call(
            skill, config, context, p.grid, p.layer, resolve_backend(config.backend, p.q.device)
        )
        if call.tiling.tiles > 1:  # one tile: the model's own attention runs, nothing to time
            variants[config.label()] = lambda call=call: skill.attend(call, p.q, p.k, p.v)
    return attention_ceiling(context, cost_model, variants, layer=p.layer)
