"""Token-pruning benchmark: speedup, worst-video PSNR and the share of tokens computed, on ``long``
and ``default``.

For each workload: the baseline once, then each candidate applied once to a copy of the
denoisers (weights shared), its outputs compared with the baseline's (PSNR of every video, the
worst reported, as the gate judges; the same on the workload's held-out prompts), its counters
read (``tokens_computed / tokens_dense``, ``attention_pairs / attention_pairs_dense``), then
baseline and candidate timed interleaved (A B A B ... after one warm-up pair) on two clocks:
wall time and the thread CPU time of this one-thread process, which other processes on a shared
machine barely disturb. Each speedup is a
ratio of medians; the spread of the per-pair ratios is printed beside it.

Candidates: the token-pruning search space of each workload (what ``sol optimize`` screens),
the settings docs/skills.md quotes, and, with ``--search``, the family's whole search
(``search_skill``: screening, refinement toward the floor, full evaluations).

    .venv/bin/python -m benchmarks.token_pruning                      # long and default, 3 pairs
    .venv/bin/python -m benchmarks.token_pruning --workloads long --pairs 5 \\
        --out benchmarks/results/token_pruning.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sol.bench.evaluate import candidate_pipeline
from sol.bench.runner import generate
from sol.hardware import configure_cpu_threads, detect
from sol.hooks import Span
from sol.models import load_model
from sol.quality.metrics import json_safe, psnr
from sol.skills import SearchContext, apply_all, skill_for
from sol.skills.token_pruning import KVMergeConfig, StepPruneConfig, TokenMergeConfig
from sol.workload import load_workload

DEFAULT_OUT = Path(__file__).parent / "results" / "token_pruning.json"


def quoted(workload) -> list:
    """The settings docs/skills.md quotes, beside the search space."""
    f = max(1, round(workload.num_inference_steps / 3))
    full, later = (Span(stop=f),), Span(start=f)
    return [
        StepPruneConfig(keep=0.8, keep_end=0.1, full_steps=full, layers=Span(start=1)),
        StepPruneConfig(keep=0.5, full_steps=full, layers=Span(start=1)),
        StepPruneConfig(keep=0.5, full_steps=full, layers=Span(start=1), attend="kept"),
        StepPruneConfig(keep=0.8, keep_end=0.1, full_steps=full, layers=Span(start=1), scope="attention"),
        KVMergeConfig(ratio=0.5, steps=later),
        KVMergeConfig(ratio=0.5),
        TokenMergeConfig(ratio=0.5),
    ]


def _gen(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def measure(loaded, workload, base_videos, config, pairs: int, held=None) -> dict:
    """One candidate: fidelity, counters and interleaved timing (see the module docstring).

    ``held``: (the held-out workload, its baseline videos), judged as the search prompts are."""
    row: dict = {"label": config.label(), "technique": config.model_dump(mode="json")}
    pipe, adapter = candidate_pipeline(loaded.pipe, loaded.adapter, share_weights=True)
    applied = apply_all(pipe, [config], adapter)
    try:
        videos = _gen(pipe, workload)
        work = applied.counters()
        per_video = [psnr(a, b) for a, b in zip(base_videos, videos, strict=True)]
        row["psnr_per_video"] = per_video
        row["psnr_min"] = min(per_video)
        if held is not None:
            held_videos = _gen(pipe, held[0])
            row["psnr_per_video_held_out"] = [psnr(a, b) for a, b in zip(held[1], held_videos, strict=True)]
            row["psnr_min_held_out"] = min(row["psnr_per_video_held_out"])
        row["tokens_share"] = (
            work["tokens_computed"] / work["tokens_dense"] if work.get("tokens_dense") else None
        )
        dense = work.get("attention_pairs_dense")
        row["pairs_share"] = work["attention_pairs"] / dense if dense else None
        row["tokens_share_per_step"] = {
            k.rsplit(".", 1)[1]: work[k] / work[k.replace("computed", "dense")]
            for k in sorted(work)
            if k.startswith("tokens_computed.steps.")
        }
        a_w, a_c, b_w, b_c = [], [], [], []
        _gen(loaded.pipe, workload), _gen(pipe, workload)  # warm-up pair
        for _ in range(pairs):
            w, c = _timed(lambda: _gen(loaded.pipe, workload))
            a_w.append(w), a_c.append(c)
            w, c = _timed(lambda: _gen(pipe, workload))
            b_w.append(w), b_c.append(c)
        for clock, a, b in (("cpu", a_c, b_c), ("wall", a_w, b_w)):
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            row[f"speedup_{clock}"] = statistics.median(a) / statistics.median(b)
            row[f"pair_ratios_{clock}"] = ratios
        row["baseline_cpu_s"] = statistics.median(a_c)
    finally:
        applied.revert()
    return row


def _fmt(x, spec=".2f"):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def run_workload(loaded, name: str, pairs: int, search: bool, hw, only_space: bool = False) -> dict:
    workload = load_workload(name)
    ctx = SearchContext(adapter=loaded.adapter, hardware=hw, workload=workload)
    space = []
    for cfg in (StepPruneConfig(), KVMergeConfig(), TokenMergeConfig()):
        space += skill_for(cfg).search_space(ctx)
    configs = space + ([c for c in quoted(workload) if c not in space] if not only_space else [])
    base = _gen(loaded.pipe, workload)
    val = workload.validation()
    held = (val, _gen(loaded.pipe, val)) if val is not None else None
    out = {"workload": workload.model_dump(mode="json"), "rows": []}
    print(f"\n{name}: {len(workload.runs)} video(s), {workload.num_frames}x{workload.height}x{workload.width},"
          f" {workload.num_inference_steps} steps; {pairs} interleaved pairs per candidate", flush=True)  # fmt: skip
    print(f"{'candidate':100s} {'cpu x':>6s} {'wall x':>6s} {'worst dB':>8s} {'held dB':>8s} {'tokens':>6s}"
          f" {'pairs':>6s}")  # fmt: skip
    for cfg in configs:
        try:
            row = measure(loaded, workload, base, cfg, pairs, held)
        except Exception as e:  # noqa: BLE001 — a failing candidate is a row, not a crash
            row = {"label": cfg.label(), "error": f"{type(e).__name__}: {e}"}
            print(f"{cfg.label():100s} failed: {row['error']}", flush=True)
            out["rows"].append(row)
            continue
        row["in_search_space"] = cfg in space
        out["rows"].append(row)
        print(f"{row['label']:100s} {_fmt(row['speedup_cpu']):>6s} {_fmt(row['speedup_wall']):>6s}"
              f" {_fmt(row['psnr_min']):>8s} {_fmt(row.get('psnr_min_held_out')):>8s}"
              f" {_fmt(row['tokens_share']):>6s} {_fmt(row['pairs_share']):>6s}",
              flush=True)  # fmt: skip
    if search:
        from sol.bench.evaluate import Evaluator
        from sol.integrator.skill_search import search_skill

        t0 = time.perf_counter()
        full = Evaluator(loaded, workload, repeats=3)
        screen = Evaluator(loaded, workload.shortened(prompts=1), repeats=1, warmup=0)
        front = search_skill("token_pruning", ctx, full, screen, top_k=3, min_psnr=ctx.min_psnr)
        out["search"] = front.to_json()
        out["search"]["wall_s"] = time.perf_counter() - t0
        print(f"search: {front.evaluations} evaluations, {out['search']['wall_s']:.0f} s wall; front:")
        for r in front.front:
            print(f"  {r.label:100s} {_fmt(r.speedup)}x wall, worst {_fmt(r.psnr)} dB")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sol-tiny-wan")
    p.add_argument("--workloads", default="long,default")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--search", action="store_true", help="also run the family's search (search_skill)")
    p.add_argument("--space-only", action="store_true", help="only the search space, not the quoted settings")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    configure_cpu_threads()
    torch.set_num_threads(1)  # CPU time then counts all the work (see the module docstring)
    hw = detect()
    loaded = load_model(args.model)
    result = {"model": args.model, "hardware": hw.to_json(), "torch_threads": 1, "pairs": args.pairs,
              "workloads": {}}  # fmt: skip
    t0 = time.perf_counter()
    for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        result["workloads"][name] = run_workload(loaded, name, args.pairs, args.search, hw, args.space_only)
    result["wall_s"] = time.perf_counter() - t0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
