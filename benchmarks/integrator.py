"""Is the approved composition faster than the best single skill at the same quality budget?

Runs `sol optimize` (or reads a finished run), then times in ONE process, interleaved
(A B A B …): the baseline, the best single-skill candidate that meets the budget, and the
approved composition — and prints their speedups and fidelity side by side.

    python -m benchmarks.integrator                       # optimize sol-tiny-wan, default workload
    python -m benchmarks.integrator --run runs/<run-id>    # reuse a finished run
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

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
    best = None
    for path in sorted((run_dir / "skills").glob("*.json")):
        data = json.loads(path.read_text())
        for r in data["front"]:
            psnr = CandidateResult.from_json(r).psnr  # the worst video, as the gate judges
            if r["ok"] and psnr >= min_psnr and (best is None or r["speedup"] > best[0]):
                best = (r["speedup"], r["label"], r["techniques"])
    return (best[1], best[2]) if best else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run folder (default: run sol optimize now)")
    ap.add_argument("--model", default="sol-tiny-wan")
    ap.add_argument("--workload", default="default")
    ap.add_argument("--effort", default="standard")
    ap.add_argument("--executor", default="ray")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/integrator.json"))
    args = ap.parse_args()

    from sol.agent import driver
    from sol.hardware import configure_cpu_threads

    configure_cpu_threads()
    from sol.bench.evaluate import Evaluator
    from sol.models import load_model
    from sol.plan import load_plan
    from sol.skills.base import config_from_dict

    run_dir = args.run
    if run_dir is None:
        out = driver.start(model=args.model, gpu="auto", workload=args.workload, effort=args.effort,
                           executor=args.executor, approve="auto", on_update=lambda n, _v: print("  done:", n))  # fmt: skip
        run_dir = out.run_dir
    plan = load_plan(run_dir / "plan.json")
    spec = json.loads((run_dir / "run.json").read_text())
    min_psnr = float(json.loads(next(run_dir.glob("candidates-*.json")).read_text())["budget"]["min_psnr"])
    single = best_single(run_dir, min_psnr)
    loaded = load_model(spec["model"], layers=spec.get("layers"))
    from sol.workload import load_workload

    wl = load_workload(spec["workload"])
    ev = Evaluator(loaded, wl, repeats=args.repeats, warmup=1)
    rows = []
    stacks = [(name, [config_from_dict(t) for t in ts]) for name, ts in HAND_MADE.items()]
    if single:
        stacks.append((f"best single skill: {single[0]}", [config_from_dict(t) for t in single[1]]))
    stacks.append(("approved composition", list(plan.techniques)))
    with torch.no_grad():
        for name, configs in stacks:
            r = ev.evaluate(list(configs))
            rows.append({"stack": name, "label": r.label, "ok": r.ok, "reason": r.reason, "speedup": r.speedup,
                         "psnr": r.psnr, "ssim": r.fidelity.get("ssim"), "latency_s": r.latency_s})  # fmt: skip
    print(
        f"\n{spec['model']} · {wl.name} · budget PSNR >= {min_psnr:g} dB · interleaved ratio of medians, {args.repeats} pairs\n"
    )
    print(f"{'stack':<60} {'speedup':>8} {'PSNR':>7} {'SSIM':>6}")
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "failed"
        ps = f"{r['psnr']:.1f}" if r["ok"] and math.isfinite(r["psnr"]) else ("inf" if r["ok"] else "-")
        ss = f"{r['ssim']:.3f}" if r["ssim"] is not None else "-"
        print(f"{r['stack'][:60]:<60} {sp:>8} {ps:>7} {ss:>6}")
    ours = rows[-1]
    for other in rows[:-1]:
        if ours["speedup"] and other["speedup"]:
            word = "faster" if ours["speedup"] > other["speedup"] else "NOT faster"
            within = other["ok"] and other["psnr"] >= min_psnr
            print(f"composition is {word} than {other['stack'][:50]} ({ours['speedup'] / other['speedup']:.2f}x)"
                  + ("" if within else f"; that stack misses the {min_psnr:g} dB floor anyway"))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from sol.quality.metrics import json_safe

    args.out.write_text(
        json.dumps(json_safe({"run": str(run_dir), "min_psnr": min_psnr, "rows": rows}), indent=2)
    )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
