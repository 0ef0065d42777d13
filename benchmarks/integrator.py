"""Is the approved composition faster than the best single skill and the hand-made stacks, at the
same quality, on prompts the search never saw?

Runs `sol optimize` (or reads a finished run), then in ONE process: every stack's quality on the
search split and on the workload's held-out split, and one race of all of them against the
baseline (interleaved pairs, thread CPU time beside wall time, 95% bootstrap intervals).

    python -m benchmarks.integrator                       # optimize sol-tiny-wan, default workload
    python -m benchmarks.integrator --run runs/<run-id>    # reuse a finished run
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from sol.bench.evaluate import CandidateResult

# Hand-made stacks as people compose them today: a documented cache setting plus
# quantization of every linear layer (and the lossless text K/V reuse).
HAND_MADE = {
    "hand-made: FirstBlockCache 0.1 + int8 all linears": [
        {"kind": "cache.diffusers_fbc", "threshold": 0.1},
        {"kind": "quantization.linear", "scheme": "int8_dynamic"},
    ],
    "hand-made: text K/V + FirstBlockCache 0.1": [
        {"kind": "cache.text_kv"},
        {"kind": "cache.diffusers_fbc", "threshold": 0.1},
    ],
}


def best_single(run_dir: Path, min_psnr: float) -> tuple[str, list[dict]] | None:
    """The fastest timed front point of any skill that beat the baseline at the floor."""
    best = None
    for path in sorted((run_dir / "skills").glob("*.json")):
        for r in json.loads(path.read_text())["front"]:
            res = CandidateResult.from_json(r)
            good = res.ok and res.psnr >= min_psnr and (res.beats_baseline or not res.timing)
            if good and (best is None or (res.speedup or 0) > best[0]):
                best = (res.speedup, res.label, res.techniques)
    return (best[1], best[2]) if best else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run folder (default: run sol optimize now)")
    ap.add_argument("--model", default="sol-tiny-wan")
    ap.add_argument("--workload", default="default")
    ap.add_argument("--effort", default="standard")
    ap.add_argument("--executor", default="ray")
    ap.add_argument("--min-pairs", type=int, default=6)
    ap.add_argument("--max-pairs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/integrator.json"))
    args = ap.parse_args()

    from sol.agent import driver
    from sol.hardware import configure_cpu_threads

    configure_cpu_threads()
    from sol.bench.evaluate import Evaluator
    from sol.models import load_model
    from sol.plan import load_plan
    from sol.skills.base import config_from_dict
    from sol.workload import load_workload

    run_dir = args.run
    if run_dir is None:
        out = driver.start(model=args.model, gpu="auto", workload=args.workload, effort=args.effort,
                           executor=args.executor, approve="auto", on_update=lambda n, _v: print("  done:", n))  # fmt: skip
        run_dir = out.run_dir
        print(out.status)
    spec = json.loads((run_dir / "run.json").read_text())
    min_psnr = float(
        json.loads(sorted(run_dir.glob("candidates-*.json"))[-1].read_text())["budget"]["min_psnr"]
    )
    if not (run_dir / "plan.json").is_file():
        raise SystemExit(
            f"{run_dir} exported no plan: {json.loads((run_dir / 'summary.json').read_text())['status']}"
        )
    plan = load_plan(run_dir / "plan.json")
    loaded = load_model(spec["model"], layers=spec.get("layers"))
    wl = load_workload(spec["workload"])
    held = wl.validation()
    ev = Evaluator(loaded, wl, timing=False)
    val = Evaluator(loaded, held, timing=False) if held is not None else None
    stacks = [(name, [config_from_dict(t) for t in ts]) for name, ts in HAND_MADE.items()]
    single = best_single(run_dir, min_psnr)
    if single:
        stacks.append((f"best single skill: {single[0]}", [config_from_dict(t) for t in single[1]]))
    stacks.append(("approved composition", list(plan.techniques)))
    results, held_out = [], []
    for _name, configs in stacks:
        results.append(ev.evaluate(list(configs)))
        held_out.append(val.evaluate(list(configs)) if val is not None else None)
    race = ev.time(results, min_pairs=args.min_pairs, max_pairs=args.max_pairs)
    rows = []
    for (name, _c), r, h in zip(stacks, results, held_out, strict=True):
        rows.append({"stack": name, "label": r.label, "ok": r.ok, "reason": r.reason, "speedup": r.speedup,
                     "interval": r.interval, "clock": r.timing.get("clock"), "pairs": r.timing.get("pairs"),
                     "psnr_min": r.psnr, "psnr_held_out": h.psnr if h is not None else None,
                     "ssim": r.fidelity.get("ssim")})  # fmt: skip
    print(f"\n{spec['model']} · {wl.name} · floor {min_psnr:g} dB worst video · one race, {race.get('rounds')} rounds"
          " (ratio of medians per generation, steadier clock, 95% bootstrap interval)\n")  # fmt: skip
    print(f"{'stack':<56} {'speedup':>8} {'interval':>13} {'search':>8} {'held out':>9}")
    for r in rows:
        iv = r["interval"] or (math.nan, math.nan)
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "failed"
        held_txt = f"{r['psnr_held_out']:.1f}" if r["psnr_held_out"] is not None else "-"
        print(f"{r['stack'][:56]:<56} {sp:>8} {iv[0]:5.2f}-{iv[1]:5.2f}x {r['psnr_min']:7.1f} {held_txt:>9}")
    ours = rows[-1]
    for other in rows[:-1]:
        if ours["speedup"] and other["speedup"]:
            word = "faster" if ours["speedup"] > other["speedup"] else "NOT faster"
            within = other["ok"] and other["psnr_min"] >= min_psnr
            print(f"composition is {word} than {other['stack'][:50]} ({ours['speedup'] / other['speedup']:.2f}x)"
                  + ("" if within else f"; that stack misses the {min_psnr:g} dB floor anyway"))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from sol.quality.metrics import json_safe

    args.out.write_text(json.dumps(json_safe({"run": str(run_dir), "min_psnr": min_psnr, "rows": rows,
                                              "race": race}), indent=2))  # fmt: skip
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
