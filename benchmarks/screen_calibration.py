"""How well does the quality screen predict the worst video on prompts the search never saw?

For every candidate a finished run screened (its skills' ``screened`` lists), this generates all
videos of the workload's search split *and* of its held-out split, and writes their per-video PSNR.
``--analyse`` then replays the screen: from the videos the screen saw (the first ``k`` of the
screening order, or the whole search split) it predicts the worst unseen video, and the table shows
how often the worst video of each split clears that bound (its coverage, against the screen's
stated confidence), by how many dB at the median (its slack), the coverage of the worst of the
search videos left out (the bound's measured level), and what the search's funnel of 2, 4 and then
all videos keeps, with the videos it spends.

    python -m benchmarks.screen_calibration --run runs/<id> --shard 0/2 --out /tmp/cal0.json &
    python -m benchmarks.screen_calibration --run runs/<id> --shard 1/2 --out /tmp/cal1.json
    python -m benchmarks.screen_calibration --analyse /tmp/cal0.json /tmp/cal1.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path


def _videos(res) -> list[float]:
    return [float(v.get("psnr", math.nan)) for v in res.fidelity.get("videos", [])]


def measure(args) -> None:
    from sol.bench.evaluate import Evaluator
    from sol.hardware import configure_cpu_threads
    from sol.models import load_model
    from sol.skills.base import config_from_dict
    from sol.workload import load_workload

    configure_cpu_threads()
    spec = json.loads((args.run / "run.json").read_text())
    wl = load_workload(spec.get("workload") or "default")
    held = wl.validation()
    loaded = load_model(spec.get("model") or "sol-tiny-wan", layers=spec.get("layers"))
    search = Evaluator(loaded, wl, timing=False)
    unseen = Evaluator(loaded, held, timing=False)
    order = search.screening_order()
    cands = []
    for fam in args.families:
        f = args.run / "skills" / f"{fam}.json"
        if f.is_file():
            cands += [r for r in json.loads(f.read_text())["screened"] if r.get("ok")]
    i, n = (int(x) for x in args.shard.split("/"))
    rows, t0 = [], time.perf_counter()
    for j, r in enumerate(cands):
        if j % n != i:
            continue
        configs = [config_from_dict(t) for t in r["techniques"]]
        a, b = search.evaluate(configs, timing=False), unseen.evaluate(configs, timing=False)
        rows.append(
            {
                "label": r["label"],
                "kind": r["techniques"][0]["kind"],
                "predicted_speedup": (r.get("predicted") or {}).get("speedup"),
                "search": _videos(a),
                "held_out": _videos(b),
            }
        )
        print(
            f"{time.perf_counter() - t0:6.0f}s {r['label'][:70]:<70} search worst {min(rows[-1]['search']):5.1f}"
            f"  held-out worst {min(rows[-1]['held_out']):5.1f}",
            flush=True,
        )
        args.out.write_text(json.dumps({"screening_order": order, "rows": rows}, indent=1))


def analyse(paths: list[Path], floor: float = 30.0) -> dict:
    """Replay the screen on the measured candidates; print and return its coverage and slack."""
    import numpy as np

    from sol.agent.jobs import EFFORT
    from sol.integrator.screening import CONFIDENCE, EARLY_CONFIDENCE, POOL_BAND, PSNR_CAP, Screen
    from sol.integrator.skill_search import MIN_PREDICTED, SearchPlan

    e = EFFORT["standard"]  # `make demo`'s effort: its cheap screen, halving stages and finalists
    plan = SearchPlan(screen_runs=e["screen_runs"], halving=tuple(e["halving"]), top_k=e["top_k"])

    rows, order = [], None
    for p in paths:
        d = json.loads(p.read_text())
        rows += d["rows"]
        order = d["screening_order"]

    class R:  # the piece of a CandidateResult the screen reads
        def __init__(self, label, psnrs):
            self.label, self.ok, self.reason = label, True, None
            self.fidelity = {"videos": [{"psnr": x} for x in psnrs]}
            self.psnr = min(psnrs)

    cap = lambda xs: [min(x, PSNR_CAP) for x in xs]  # noqa: E731

    def seen_by(r, idx: list[int]) -> list[float]:  # the search videos ``idx`` (capped)
        return cap([r["search"][i] for i in idx])

    def pooled_screen(idx: list[int], **kw) -> Screen:
        """A screen pooled as a search pools it: over every candidate's videos ``idx``."""
        sc = Screen(min_psnr=floor, **{"unseen": 8, **kw})
        for r in rows:
            sc.observe(R(r["label"], seen_by(r, idx)))
        return sc

    out = {"candidates": len(rows)}
    for k in (2, len(order)):
        sc = pooled_screen(order[:k])
        print(f"\nscreen on {k} of {len(order)} search videos · pooled spread "
              f"{sc.pooled[0]:.2f} dB ({sc.pooled[1]} df)" if sc.pooled else "")  # fmt: skip
        print(f"{'candidate':<64} {'seen':>5} {'bound':>6} {'search':>6} {'held':>6}  verdicts")
        tally = {"n": 0, "cover_search": 0, "cover_held": 0, "agree_search": 0, "agree_held": 0}
        slack_s, slack_h = [], []
        for r in rows:
            seen = seen_by(r, order[:k])
            if min(seen) < floor - POOL_BAND or min(seen) >= PSNR_CAP:
                continue  # far below the floor, or exact: no decision to predict
            bound, _ = sc.predicted_worst(R(r["label"], seen))
            ws, wh = min(cap(r["search"])), min(cap(r["held_out"]))
            tally["n"] += 1
            tally["cover_search"] += ws >= bound
            tally["cover_held"] += wh >= bound
            tally["agree_search"] += (bound >= floor) == (ws >= floor)
            tally["agree_held"] += (bound >= floor) == (wh >= floor)
            slack_s.append(ws - bound)
            slack_h.append(wh - bound)
            verdict = "pass" if bound >= floor else "fail"
            print(
                f"{r['label'][:64]:<64} {min(seen):5.1f} {bound:6.1f} {ws:6.1f} {wh:6.1f}  screen {verdict}, "
                f"search {'pass' if ws >= floor else 'fail'}, held-out {'pass' if wh >= floor else 'fail'}"
            )
        n = tally["n"]
        if n:
            print(f"bound under the worst video: search split {tally['cover_search']}/{n}, held-out "
                  f"{tally['cover_held']}/{n} (stated: {sc.confidence:.0%}) · median slack {np.median(slack_s):.1f} dB search, "
                  f"{np.median(slack_h):.1f} dB held-out · verdict agrees with the search split's gate "
                  f"{tally['agree_search']}/{n}, the held-out's {tally['agree_held']}/{n}")  # fmt: skip
        out[f"screen_{k}"] = {**tally, "pooled_spread": sc.pooled[0] if sc.pooled else None,
                              "median_slack_search": float(np.median(slack_s)) if slack_s else None,
                              "median_slack_held": float(np.median(slack_h)) if slack_h else None}  # fmt: skip

    # Leave-out coverage within the search split: from k videos, the worst of the other 8 - k. The
    # videos are exchangeable here (one split), so the coverage measures the bound's nominal level.
    rng = np.random.default_rng(0)
    n_all = len(order)
    out["leave_out"] = {}
    print("\nleave-out within the search split: coverage of the worst unseen video (median slack)")
    for k in (2, 4):
        splits = [sorted(rng.choice(n_all, k, replace=False).tolist()) for _ in range(20)]
        for conf in (0.8, 0.65, 0.5, 0.2):
            cover, slack = [], []
            for sp in splits:
                sc = pooled_screen(sp, unseen=n_all - k, confidence=conf)
                for r in rows:
                    seen = seen_by(r, sp)
                    if min(r["search"]) < floor - POOL_BAND or min(seen) >= PSNR_CAP:
                        continue
                    bound, _ = sc.predicted_worst(R(r["label"], seen))
                    rest = min(cap([x for i, x in enumerate(r["search"]) if i not in sp]))
                    cover.append(rest >= bound)
                    slack.append(rest - bound)
            if cover:
                print(f"  {k} seen, nominal {conf:.0%}: {np.mean(cover):.0%} ({np.median(slack):.1f} dB), "
                      f"{len(cover)} cases")  # fmt: skip
                out["leave_out"][f"{k}@{conf}"] = {"coverage": float(np.mean(cover)),
                                                   "median_slack": float(np.median(slack))}  # fmt: skip

    # The funnel as a search runs it (skill_search._halve): the candidates passing the cheap screen,
    # fastest predicted first, extended stage by stage (SearchPlan.stages) until each stage keeps
    # its number; at the module's confidences and at the earlier 50% / 80%.
    gate = lambda r: min(cap(r["search"]) + cap(r["held_out"])) >= floor  # noqa: E731
    best_gate = max((r for r in rows if gate(r)), key=lambda r: r.get("predicted_speedup") or 0, default=None)
    for early, whole in ((EARLY_CONFIDENCE, CONFIDENCE), (0.5, 0.8)):
        kw = {"full_videos": n_all, "confidence": whole, "early_confidence": early}
        last = plan.screen_runs
        sc = pooled_screen(order[:last], **kw)
        kept = sorted(
            (r for r in rows
             if sc.judge(R(r["label"], seen_by(r, order[:last])))["passes"] and (r.get("predicted_speedup") or 0) >= MIN_PREDICTED),
            key=lambda r: -(r.get("predicted_speedup") or 0),
        )  # fmt: skip
        videos = last * len(rows)
        for k, cap_n in plan.stages(n_all):
            sc, survivors = pooled_screen(order[:k], **kw), []
            for r in kept:
                if len(survivors) >= cap_n:
                    break
                videos += k - last
                if sc.judge(R(r["label"], seen_by(r, order[:k])))["passes"]:
                    survivors.append(r)
            kept, last = survivors, k
        failing = sum(not gate(r) for r in kept)
        fastest = max(kept, key=lambda r: r.get("predicted_speedup") or 0, default=None)
        print(f"\nfunnel at {early:.0%} early, {whole:.0%} on the whole split: {len(kept)} finalists, "
              f"{videos} videos; failing the gate on either split: {failing}"
              + (f" · fastest {fastest['predicted_speedup']:.2f}x ({fastest['label'][:60]})" if fastest else ""))  # fmt: skip
        out[f"funnel_{early}_{whole}"] = {"kept": len(kept), "videos": videos, "failing_gate": failing,
                                          "fastest": fastest and fastest["predicted_speedup"],
                                          "fastest_passing_gate": best_gate and best_gate["predicted_speedup"]}  # fmt: skip
    out["funnel"] = out[f"funnel_{EARLY_CONFIDENCE}_{CONFIDENCE}"]
    if best_gate is not None:
        print(f"fastest candidate passing the gate on both splits: {best_gate['predicted_speedup']:.2f}x "
              f"({best_gate['label'][:60]})")  # fmt: skip
    # How much of the spread across videos is the video (the same for every candidate)?
    x = np.array([cap(r["search"]) for r in rows if min(r["search"]) >= floor - POOL_BAND])
    h = np.array([cap(r["held_out"]) for r in rows if min(r["search"]) >= floor - POOL_BAND])
    if len(x) >= 3:
        a = x.mean(1, keepdims=True)
        b = (x - a).mean(0)
        res = x - a - b
        sr = float(np.sqrt((res**2).sum() / ((x.shape[0] - 1) * (x.shape[1] - 1))))
        print(f"\ntwo-way fit over {len(x)} candidates x {x.shape[1]} search videos: video effects "
              f"{np.round(b, 1).tolist()} dB (spread {b.std(ddof=1):.1f}); residual spread {sr:.1f} dB · "
              f"held-out mean minus search mean: median {np.median(h.mean(1) - x.mean(1)):+.1f} dB")  # fmt: skip
        out["two_way"] = {"video_effects": b.tolist(), "residual_spread": sr,
                          "held_minus_search_mean": float(np.median(h.mean(1) - x.mean(1)))}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--families", nargs="*", default=["cache"])
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--out", type=Path, default=Path("screen-calibration.json"))
    ap.add_argument("--analyse", nargs="*", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.analyse:
        out = analyse(args.analyse)
        if args.out != ap.get_default("out"):
            args.out.write_text(json.dumps(out, indent=1))
    else:
        measure(args)


if __name__ == "__main__":
    main()
