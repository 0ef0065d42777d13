"""The figures of several `make demo` runs side by side, with their spread (README's results table).

Each argument is a run folder, or a folder of runs (its latest run is taken) — e.g. the `runs/` of
three fresh clones:

    for i in 1 2 3; do git clone /work/main /tmp/demo$i && (cd /tmp/demo$i && make demo); done
    python -m benchmarks.demo_runs /tmp/demo1/runs /tmp/demo2/runs /tmp/demo3/runs

Per run: the approved stack, its speedup with the 95% interval (clock, pairs), the worst video on
the search prompts and on the held-out prompts, and the run's wall time (run.json written to the
last file of the run). Then the spread of the speedups and the issue's bar: every run >= 2.5x at
>= 30 dB worst held-out video, speedups within 10% of one another, each run <= 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _latest(path: Path) -> Path:
    if (path / "run.json").is_file():
        return path
    runs = sorted((p for p in path.iterdir() if (p / "run.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"{path}: no run folder (run.json) here")
    return runs[-1]


def figures(run: Path) -> dict:
    """The approved candidate's figures from a finished run folder."""
    cands_files = sorted(run.glob("candidates-*.json"))
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else None
    out = {"run": str(run), "approved": None}
    files = [p for p in run.rglob("*") if p.is_file()]
    out["wall_s"] = max(p.stat().st_mtime for p in files) - (run / "run.json").stat().st_mtime
    if plan is None or not cands_files:
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        out["status"] = summary.get("status", "no plan")
        return out
    chosen = plan["approval"]["candidate"]
    c = next(x for x in json.loads(cands_files[-1].read_text())["candidates"] if x["id"] == chosen)
    t = c.get("timing") or {}
    out.update(
        approved=c["label"],
        speedup=c["speedup"],
        interval=t.get("interval"),
        clock=t.get("clock"),
        pairs=t.get("pairs"),
        psnr_search=(c.get("fidelity") or {}).get("psnr_min"),
        psnr_held_out=(c.get("validation") or {}).get("psnr_min"),
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders, or folders of runs (latest taken)")
    ap.add_argument("--min-speedup", type=float, default=2.5)
    ap.add_argument("--min-psnr", type=float, default=30.0)
    ap.add_argument("--max-spread", type=float, default=0.10)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, help="write the figures as JSON too")
    args = ap.parse_args()
    rows = [figures(_latest(p)) for p in args.runs]
    print(
        f"{'run':<44} {'speedup':>8} {'interval':>13} {'clock':>5} {'search':>8} {'held out':>9} {'wall':>8}"
    )
    for r in rows:
        name = Path(r["run"]).name[-44:]
        if not r["approved"]:
            print(f"{name:<44} no plan: {r.get('status')}")
            continue
        iv = r["interval"] or [math.nan, math.nan]
        held = r["psnr_held_out"]
        print(f"{name:<44} {r['speedup']:7.2f}x {iv[0]:5.2f}-{iv[1]:5.2f}x {r['clock'] or '-':>5} "
              f"{float(r['psnr_search']):6.1f}dB {(float(held) if held is not None else math.nan):7.1f}dB "
              f"{r['wall_s'] / 60:6.1f}min")  # fmt: skip
        print(f"   {r['approved'][:100]}")
    done = [r for r in rows if r["approved"]]
    if done:
        sp = [r["speedup"] for r in done]
        spread = max(sp) / min(sp) - 1
        print(
            f"\nspeedups {min(sp):.2f}-{max(sp):.2f}x (spread {100 * spread:.1f}%), median {sorted(sp)[len(sp) // 2]:.2f}x"
        )
        bar = {
            f"every run approves >= {args.min_speedup:g}x": len(done) == len(rows)
            and all(s >= args.min_speedup for s in sp),
            f"worst held-out video >= {args.min_psnr:g} dB": all(
                r["psnr_held_out"] is not None and float(r["psnr_held_out"]) >= args.min_psnr for r in done
            ),
            f"speedups within {100 * args.max_spread:.0f}%": spread <= args.max_spread,
            f"each run <= {args.max_minutes:g} min": all(r["wall_s"] <= 60 * args.max_minutes for r in rows),
        }
        for k, ok in bar.items():
            print(f"  {'PASS' if ok else 'FAIL'}  {k}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
