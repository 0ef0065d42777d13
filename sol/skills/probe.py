"""Probes a skill may run before its search makes any video: what its kernel could gain here.

A technique that changes only *how* attention is computed (a sparse pattern, merged keys) can gain
at most the time self-attention's kernel takes, less what its own bookkeeping costs. That is cheap
to measure before a search: capture one layer's q, k, v from a short baseline generation
(:func:`captured_qkv`), time each variant against the model's dense attention on those tensors,
interleaved on the steadier clock of :mod:`sol.bench.timing`, and price the best variant's saving
on every self-attention call of a generation with the run's cost model
(:func:`attention_ceiling`). The search (``sol.integrator.skill_search``) skips a technique whose
ceiling cannot beat the baseline. What pays differs by machine, so this is measured per run, never
assumed per device kind.

>>> attention_ceiling(ctx, cost_model, {"svg 0.05": lambda: attend(q, k, v)})  # doctest: +SKIP
{'speedup': 0.86, 'why': 'its best setting took 2.98 ms per self-attention call against 1.36 ms dense at 320 tokens (...)', ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sol.hooks import Installation, track_steps

_CAPTURED: dict = {}  # (pipe id, workload) -> (grid, [(q, k, v) per layer]); one entry, tensors stay out of notes


class _Done(Exception):
    """Stops the profiling generation once every layer was captured."""


def captured_qkv(context):
    """``(grid, [(q, k, v)] per layer)`` at the middle step (cond branch) of the workload's first
    prompt on ``context.pipe``; None without a pipeline. Cached for the search (one entry)."""
    pipe = context.pipe
    if pipe is None:
        return None
    wl = context.workload.shortened(prompts=1)
    key = (id(pipe), wl.model_dump_json())
    if key in _CAPTURED:
        return _CAPTURED[key]
    from sol.bench.runner import generate

    adapter = context.adapter
    mods = list(adapter.self_attention_modules().values())
    mid = max(0, int(getattr(context.workload, "num_inference_steps", 0) or 0) // 2)
    got: dict[int, tuple] = {}
    grid: list = []
    inst = Installation("attention probe")
    ctx = track_steps(inst, adapter)

    class Capture:
        def __init__(self, inner, layer):
            self.inner, self.layer = inner, layer

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *rest, **kw):
            rotary_emb = adapter.processor_rotary_emb(rest, kw)  # LTX-2 passes query and key RoPE
            if (
                ctx.step == mid
                and ctx.branch != "uncond"
                and self.layer not in got
                and encoder_hidden_states is None
            ):
                got[self.layer] = tuple(
                    t.detach().clone() for t in adapter.self_attention_qkv(attn, hidden_states, rotary_emb)
                )
                grid[:] = [ctx.grid]
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *rest, **kw)

    def stop():
        if len(got) == len(mods):
            raise _Done

    try:
        for i, m in enumerate(mods):
            inst.processor(m, Capture(m.processor, i))
        with torch.no_grad():
            generate(pipe, wl, step_callback=stop)
    except _Done:
        pass
    finally:
        inst.revert()
    if len(got) != len(mods) or not grid or grid[0] is None:
        return None
    _CAPTURED.clear()
    _CAPTURED[key] = (tuple(grid[0]), [got[i] for i in range(len(mods))])
    return _CAPTURED[key]


@dataclass(frozen=True)
class ProbeLayer:
    """One layer's captured self-attention inputs and the model's own processor for it."""

    grid: tuple[int, int, int]
    layer: int
    layers: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    inner: object  # the model's processor on that layer (what ``adapter.attend`` calls)


def probe_layer(context, layer: int | None = None) -> ProbeLayer | None:
    """``layer`` (default: the middle one) of :func:`captured_qkv`, or None without a capture."""
    captured = captured_qkv(context)
    if captured is None:
        return None
    grid, qkvs = captured
    layer = len(qkvs) // 2 if layer is None else layer
    q, k, v = qkvs[layer]
    inner = list(context.adapter.self_attention_modules().values())[layer].processor
    return ProbeLayer(grid, layer, len(qkvs), q, k, v, inner)


def attention_ceiling(
    context,
    cost_model,
    variants: dict[str, Callable[[], object]],
    *,
    layer: int | None = None,
    repeats: int = 7,
) -> dict | None:
    """``{"speedup", "why", "tokens", "layer", "configs"}``: the best of ``variants`` (name -> a call on one
    layer's captured q, k, v: :func:`probe_layer`) timed against the model's dense attention on the same tensors, its
    saving per call priced on every self-attention call of a generation (``cost_model``'s baseline
    counts and seconds) as if it ran on every layer and step: an upper bound, since the layer and
    step knobs only run more of it dense. The saving is taken at the top of the variant's speedup
    interval, so noise never rules out a variant that might pay. None when nothing can be measured.
    """
    from sol.bench.timing import interleaved, measure

    if cost_model is None or not variants:
        return None
    calls = float((cost_model.baseline_calls or {}).get("self_attention") or 0.0)
    gen = float(cost_model.generation_s or 0.0)
    p = probe_layer(context, layer) if calls > 0 and gen > 0 else None
    if p is None:
        return None
    q, k, v, inner = p.q, p.k, p.v, p.inner
    rows, best = [], None

    def dense():
        return context.adapter.attend(inner, q, k, v)

    with torch.no_grad():
        # One sample is ``per`` calls (about 20 ms), so a millisecond kernel is not lost in the timer.
        per = max(
            1, math.ceil(0.02 / max(measure(dense, warmup=1, repeats=3, device=q.device).median_s, 1e-6))
        )
        for name, fn in variants.items():
            comp = interleaved(
                lambda: [dense() for _ in range(per)],
                lambda fn=fn: [fn() for _ in range(per)],
                warmup=2,
                repeats=repeats,
                device=q.device,
            )
            clock = comp.clock
            dense_s = comp.a.median(clock) / per
            lo, hi = comp.interval
            saved = dense_s * (1.0 - 1.0 / hi) if hi > 0 else -math.inf
            row = {"config": name, "dense_ms": round(dense_s * 1e3, 3), "variant_ms": round(comp.b.median(clock) / per * 1e3, 3),
                   "kernel_speedup": round(comp.speedup, 3), "kernel_interval": [round(lo, 3), round(hi, 3)],
                   "clock": clock}  # fmt: skip
            rows.append(row)
            if best is None or saved > best[0]:
                best = (saved, row)
    if best is None:
        return None
    saved, row = best
    rest = gen - calls * saved
    speedup = gen / rest if rest > 0 else math.inf
    why = (
        f"its best setting took {row['variant_ms']} ms per self-attention call against {row['dense_ms']} ms"
        f" dense at {q.shape[1]} tokens ({row['clock']} time; {row['kernel_speedup']}x, at most"
        f" {row['kernel_interval'][1]}x), so over the {int(calls)} calls of a generation it could reach"
        f" {speedup:.2f}x at most"
    )
    return {"speedup": speedup, "why": why, "tokens": int(q.shape[1]), "layer": p.layer, "configs": rows}
