"""Sparse attention benchmark: attention-only speedup beside end-to-end speedup (Amdahl), measured
density, and fidelity, for each method on the reference model at the ``long`` workload.

For every candidate config it prints:

- ``attn``: the self-attention call alone (q, k, v captured from the real model, the method's own
  code path, reorder into tiles and back included) against the model's dense attention, timed
  interleaved (A B A B) on the thread-CPU clock;
- ``amdahl``: the end-to-end speedup that attention speedup predicts, ``1 / (1 - a + a / attn)``,
  with ``a`` the share of a generation spent in self-attention, measured here as
  ``1 - T(no attention) / T(baseline)`` (a processor that returns ``v`` in place of attention);
- ``e2e``: the whole generation with the skill applied against the baseline, interleaved; and the
  worst video's PSNR against the baseline's output;
- ``density``: ``attention_pairs / attention_pairs_dense`` from the skill's own counters (every
  dense fallback counted dense).

Before the candidates it prints how local the model's attention is (``locality``: per layer, the
softmax mass inside a few token neighbourhoods beside the share of keys they hold, the share of keys
that hold 90 % of the mass, and the normalised entropy): a pattern that drops keys can only keep
quality where the mass is concentrated. ``--locality`` measures only that (seconds) and merges it
into an existing result file.

One torch thread; the clock is the steadier of wall and thread CPU time (``sol.bench.timing``).

    .venv/bin/python -m benchmarks.sparse_attention --model sol-tiny-wan --workload long \\
        --out benchmarks/results/sparse_attention.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from pathlib import Path

import torch

from sol.bench.runner import generate
from sol.bench.timing import interleaved
from sol.hooks import ForwardContext, Installation, Span, track_steps
from sol.models import load_model
from sol.quality.metrics import fidelity, json_safe
from sol.skills import skill_for
from sol.skills.sparse_attention import PisaConfig, RadialConfig, StaConfig, SvgConfig, Tiling, Work
from sol.skills.sparse_attention._base import Call, SparseAttentionProcessor, choose_tile
from sol.skills.sparse_attention._search import window_for
from sol.workload import load_workload

DEFAULT_OUT = Path(__file__).parent / "results" / "sparse_attention.json"


def candidates(grid, layers: int) -> list:
    """The configs measured: each method at ~25 % and ~50 % of the tiles, and the gentlest settings
    that keep the pattern where it costs least (the last layers)."""
    tile = choose_tile(grid, 48)
    tiling = Tiling.build(grid, tile)
    q25, q50 = window_for(tiling, 0.25), window_for(tiling, 0.5)
    last = Span(start=layers - 2)
    return [
        StaConfig(tile=tile, window=q25),
        StaConfig(tile=tile, window=q50),
        StaConfig(tile=tile, window=q25, dense_steps=Span(stop=1)),
        StaConfig(tile=tile, window=q25, layers=last),
        SvgConfig(tile=choose_tile((1, grid[1], grid[2]), 48), max_error=0.15),
        RadialConfig(tile=tile, window=2, decay=1),
        PisaConfig(tile=tile, sparsity=0.5, order=1),
        PisaConfig(tile=tile, sparsity=0.75, order=1),
    ]


def short_label(cfg) -> str:
    """The method and the fields that differ from their defaults."""
    default = type(cfg)().model_dump()
    parts = []
    for k, v in cfg.model_dump().items():
        if k in ("kind", "version") or v == default[k]:
            continue
        if isinstance(v, dict):  # a Span
            v = f"{v.get('start', 0)}:{'' if v.get('stop') is None else v['stop']}"
        parts.append(f"{k}={tuple(v) if isinstance(v, list) else v}")
    return f"{cfg.kind.split('.', 1)[1]}({', '.join(parts)})"


def capture_qkv(loaded, workload, layer: int):
    """q, k, v of one self-attention call of the real model (cond branch, second step)."""
    adapter = loaded.adapter
    inst = Installation("benchmark capture")
    ctx = track_steps(inst, adapter)
    name, attn = list(adapter.self_attention_modules().items())[layer]
    got = {}
    inner = attn.processor

    def proc(a, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kw):
        if not got and ctx.step == 1:
            got["qkv"] = adapter.self_attention_qkv(a, hidden_states, rotary_emb)
            got["grid"] = ctx.grid
        return inner(a, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kw)

    inst.processor(attn, proc)
    try:
        with torch.no_grad():
            generate(loaded.pipe, workload.model_copy(update={"num_inference_steps": 2}))
    finally:
        inst.revert()
    return got["qkv"], got["grid"], inner


def attention_only(loaded, cfg, qkv, grid, inner, *, warmup: int, pairs: int) -> dict:
    adapter = loaded.adapter
    skill = skill_for(cfg)
    ctx = ForwardContext(step=1, num_steps=6, grid=grid, active=True)
    work = Work()
    proc = SparseAttentionProcessor(inner, skill, cfg, adapter, ctx, 0, 1, work)
    tiling = Tiling.build(grid, cfg.tile)
    q, k, v = qkv

    def dense():
        with torch.no_grad():
            adapter.attend(inner, q, k, v)

    def sparse():
        with torch.no_grad():
            return skill.attend(Call(proc, tiling, "gather"), q, k, v)

    with torch.no_grad():
        out, pairs_done = skill.attend(Call(proc, tiling, "gather"), q, k, v)
        ref = adapter.attend(inner, q, k, v)
    cmp = interleaved(dense, sparse, warmup=warmup, repeats=pairs)
    b, s, h, _ = q.shape
    return {
        "speedup": cmp.speedup,
        "interval": list(cmp.interval),
        "clock": cmp.clock,
        "density": pairs_done / (b * h * s * s),
        "rel_error": float((out - ref).norm() / ref.norm()),
    }


def locality(loaded, workload) -> dict:
    """How concentrated each layer's attention is, at the middle step of the first prompt (cond branch).

    Per layer, over heads (mean and the least local head) and queries: the softmax mass inside each
    neighbourhood (``mass``) beside the share of keys it holds (``keys``); mass close to the key share
    means no locality. ``keys_for_90`` is the share of keys, best first, holding 90 % of a query's mass.
    """
    from types import SimpleNamespace

    from sol.skills.probe import captured_qkv

    ctx = SimpleNamespace(pipe=loaded.pipe, adapter=loaded.adapter, workload=workload)
    captured = captured_qkv(ctx)
    if captured is None:
        return {}
    grid, qkvs = captured
    t, h, w = (torch.arange(n) for n in grid)
    tt, hh, ww = (x.flatten() for x in torch.meshgrid(t, h, w, indexing="ij"))
    dt, dh, dw = ((x[:, None] - x[None]).abs() for x in (tt, hh, ww))
    hoods = {
        "own frame": dt == 0,
        "frames within 1": dt <= 1,
        "within 2 tokens in space": (dh <= 2) & (dw <= 2),
        "within 4 tokens in space, 2 frames": (dh <= 4) & (dw <= 4) & (dt <= 2),
    }
    layers = []
    with torch.no_grad():
        for q, k, _ in qkvs:
            logits = torch.einsum("bshd,bthd->bhst", q[:1].float(), k[:1].float()) / math.sqrt(q.shape[-1])
            p = logits.softmax(-1)[0]  # heads, queries, keys
            ranked = p.sort(-1, descending=True).values.cumsum(-1)
            k90 = ((ranked < 0.9).sum(-1) + 1).float().mean(-1) / p.shape[-1]  # per head
            entropy = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(-1) / math.log(p.shape[-1])
            mass = {n: (p * m).sum(-1).mean(-1) for n, m in hoods.items()}  # per head
            layers.append(
                {
                    "mass_mean": {n: float(v.mean()) for n, v in mass.items()},
                    "mass_least_local_head": {n: float(v.min()) for n, v in mass.items()},
                    "keys_for_90": float(k90.mean()),
                    "entropy": float(entropy.mean()),
                }
            )
    return {
        "grid": list(grid),
        "keys": {n: float(m.float().mean()) for n, m in hoods.items()},
        "layers": layers,
    }


def print_locality(loc: dict) -> None:
    if not loc:
        return
    names = list(loc["keys"])
    print("attention locality (middle step): softmax mass in each neighbourhood, mean over heads", flush=True)
    print(f"{'':10s}" + "".join(f"{n[:30]:>32s}" for n in names) + f"{'keys for 90%':>14s}{'entropy':>9s}")
    print(f"{'(keys)':10s}" + "".join(f"{loc['keys'][n]:32.3f}" for n in names))
    for i, row in enumerate(loc["layers"]):
        print(
            f"{'layer ' + str(i):10s}"
            + "".join(f"{row['mass_mean'][n]:32.3f}" for n in names)
            + f"{row['keys_for_90']:14.3f}{row['entropy']:9.2f}",
            flush=True,
        )


def attention_share(loaded, workload, *, warmup: int, pairs: int) -> dict:
    """Share of a generation spent in self-attention: 1 - T(attention replaced by v) / T(baseline)."""
    adapter = loaded.adapter
    mods = adapter.self_attention_modules()
    inners = {n: m.processor for n, m in mods.items()}

    def make(inner):
        def proc(a, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kw):
            return adapter.self_attention(a, inner, hidden_states, rotary_emb, attend=lambda q, k, v: v)

        return proc

    def on():
        for n, m in mods.items():
            m.set_processor(make(inners[n]))

    def off():
        for n, m in mods.items():
            m.set_processor(inners[n])

    def run():
        with torch.no_grad():
            generate(loaded.pipe, workload)

    try:
        cmp = interleaved(run, run, warmup=warmup, repeats=pairs, setup_a=off, setup_b=on)
    finally:
        off()
    return {"share": 1.0 - 1.0 / cmp.speedup, "no_attention_speedup": cmp.speedup, "clock": cmp.clock}


def end_to_end(loaded, cfg, workload, baseline, *, warmup: int, pairs: int) -> dict:
    skill = skill_for(cfg)
    handle = skill.apply(loaded.pipe, cfg, loaded.adapter)
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = generate(loaded.pipe, workload)
            first = time.perf_counter() - t0
        work = handle.counters()
        fid = fidelity(baseline, out)
    finally:
        handle.revert()
    state = {"h": None}

    def on():
        if state["h"] is None:
            state["h"] = skill.apply(loaded.pipe, cfg, loaded.adapter)

    def off():
        if state["h"] is not None:
            state["h"].revert()
            state["h"] = None

    def run():
        with torch.no_grad():
            generate(loaded.pipe, workload)

    try:
        cmp = interleaved(run, run, warmup=warmup, repeats=pairs, setup_a=off, setup_b=on)
    finally:
        off()
    dense = work.get("attention_pairs_dense", 0.0)
    per_layer = {
        k.rsplit(".", 1)[1]: work[k] / work[f"attention_pairs_dense.blocks.{k.rsplit('.', 1)[1]}"]
        for k in sorted(work)
        if k.startswith("attention_pairs.blocks.")
    }
    return {
        "speedup": cmp.speedup,
        "interval": list(cmp.interval),
        "clock": cmp.clock,
        "psnr_min": fid.get("psnr_min", fid.get("psnr")),
        "ssim": fid.get("ssim"),
        "density": work.get("attention_pairs", 0.0) / dense if dense else None,
        "density_per_layer": per_layer,
        "first_run_s": first,
        "counters": {k: v for k, v in work.items() if ".blocks." not in k},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sol-tiny-wan")
    ap.add_argument("--workload", default="long")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved pairs per end-to-end comparison")
    ap.add_argument(
        "--attn-pairs", type=int, default=7, help="interleaved pairs per attention-only comparison"
    )
    ap.add_argument("--layer", type=int, default=3, help="the layer whose q, k, v time attention alone")
    ap.add_argument("--only", default="", help="comma-separated indices of the candidates to run")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--locality", action="store_true", help="measure only attention locality and merge it into --out"
    )
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    loaded = load_model(args.model)
    wl = load_workload(args.workload)
    loc = locality(loaded, wl)
    print_locality(loc)
    if args.locality:
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        data["locality"] = loc
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(data), indent=2))
        print(f"locality merged into {args.out}")
        return 0
    with torch.no_grad():
        baseline = generate(loaded.pipe, wl)
    qkv, grid, inner = capture_qkv(loaded, wl, args.layer)
    layers = len(loaded.adapter.self_attention_modules())
    share = attention_share(loaded, wl, warmup=1, pairs=args.pairs)
    a = share["share"]
    print(f"{args.model} · {args.workload} · grid {grid} · self-attention {a:.1%} of a generation "
          f"(no-attention ceiling {share['no_attention_speedup']:.2f}x)", flush=True)  # fmt: skip
    rows = []
    cands = candidates(grid, layers)
    picked = [int(i) for i in args.only.split(",") if i.strip()] or range(len(cands))
    print(
        f"{'candidate':88s} {'density':>7s} {'attn':>6s} {'amdahl':>6s} {'e2e':>6s} {'PSNR':>6s}", flush=True
    )
    for i in picked:
        cfg = cands[i]
        att = attention_only(loaded, cfg, qkv, grid, inner, warmup=2, pairs=args.attn_pairs)
        e2e = end_to_end(loaded, cfg, wl, baseline, warmup=1, pairs=args.pairs)
        amdahl = 1.0 / (1.0 - a + a / att["speedup"])
        row = {"config": cfg.model_dump(mode="json"), "label": short_label(cfg), "attention": att,
               "amdahl": amdahl, "end_to_end": e2e}  # fmt: skip
        rows.append(row)
        d = e2e["density"]
        print(f"{short_label(cfg)[:88]:88s} {d if d is not None else math.nan:7.3f} {att['speedup']:5.2f}x "
              f"{amdahl:5.2f}x {e2e['speedup']:5.2f}x {e2e['psnr_min']:6.2f}", flush=True)  # fmt: skip
    data = {
        "model": args.model,
        "workload": args.workload,
        "grid": list(grid),
        "threads": 1,
        "pairs": args.pairs,
        "attention_pairs_timed": args.attn_pairs,
        "attention_share": share,
        "locality": loc,
        "rows": rows,
        "elapsed_s": time.perf_counter() - t_start,
        "how": "interleaved A B A B after warm-up, ratio of medians on the steadier clock "
        "(thread CPU time with one torch thread, or wall); PSNR of the worst video against the "
        "un-accelerated output; density from the skill's own counters",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(data), indent=2))
    print(f"written to {args.out} ({data['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
