"""Sol's approved plan beside every tuned peer, on held-out prompts, in one process, interleaved.

Peers, each swept over its knobs from gentle to aggressive, and judged on the workload's
*validation split* (prompts and seeds Sol's search never saw):

- diffusers FirstBlockCache (threshold), TaylorSeer (interval x warm-up, the adapter's blocks as
  cache identifiers), MagCache (ratios from its own ``calibrate=True`` run, the way its docs say:
  the printed list of the first generation's cond branch; then threshold), PyramidAttentionBroadcast
  (spatial skip range);
- cache-dit DBCache and DBPrune (Fn=1, Bn=0, threshold x warm-up), each with and without its
  TaylorSeer calibrator (``pip install 'sol[bench]'``).

Each peer keeps its fastest setting whose worst video keeps the floor (ranked by the work it was
counted doing), tuned on one of two splits (``--tune-on``):

- ``search`` (default): the workload's search prompts, the ones Sol's search saw. This is a person
  tuning one hook on the prompts they have, then serving prompts nobody tuned on; the chosen
  setting is then judged on the held-out prompts, like Sol's plan.
- ``held-out``: the held-out prompts themselves, an oracle tuning that neither Sol nor a person
  has.

Then Sol's plan and every tuned peer are raced against the baseline together on the held-out
prompts (interleaved pairs, thread CPU time beside wall time, bootstrap intervals). The table
prints Sol's lead over the best peer that keeps the floor on the held-out prompts.

    python -m benchmarks.peers --run runs/<run-id>        # the plan a `sol optimize` run approved
    python -m benchmarks.peers --plan plan.json --quick   # fewer sweep points
    python -m benchmarks.peers --run runs/<run-id> --tune-on held-out   # the oracle tuning
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sol.bench.evaluate import CandidateResult, Evaluator, _Applied, _reason
from sol.bench.runner import count_calls, generate
from sol.bench.timing import race

DEFAULT_OUT = Path(__file__).parent / "results" / "peers.json"


@dataclass
class Peer:
    """One setting of one peer: a Sol config list (diffusers peers) or cache-dit enable/disable."""

    family: str
    label: str
    configs: list = field(default_factory=list)
    enable: object = None  # cache-dit: a function that turns it on (on the evaluator's pipeline)
    disable: object = None
    result: CandidateResult | None = None


def _diffusers_peers(adapter, steps: int, quick: bool, mag_ratios: tuple[float, ...] | None) -> list[Peer]:
    from sol.skills.cache import (
        DiffusersFirstBlockCacheConfig,
        DiffusersMagCacheConfig,
        DiffusersPABConfig,
        DiffusersTaylorSeerConfig,
    )

    out = []
    for t in (0.03, 0.05, 0.08, 0.12, 0.16, 0.24)[:: 2 if quick else 1]:
        out.append(Peer("diffusers FBC", f"threshold {t}", [DiffusersFirstBlockCacheConfig(threshold=t)]))
    for w in (3, round(0.24 * steps)):
        for i in (2, 3, 4, 5, 6)[:: 2 if quick else 1]:
            out.append(Peer("diffusers TaylorSeer", f"interval {i}, warm-up {w}",
                            [DiffusersTaylorSeerConfig(cache_interval=i, disable_cache_before_step=w)]))  # fmt: skip
    if mag_ratios:
        for t in (0.02, 0.04, 0.06, 0.1, 0.15, 0.24)[:: 2 if quick else 1]:
            out.append(Peer("diffusers MagCache", f"threshold {t} (K 3, retention 0.2)",
                            [DiffusersMagCacheConfig(mag_ratios=mag_ratios, threshold=t)]))  # fmt: skip
    for k in (2, 3, 4, 6)[:: 2 if quick else 1]:
        out.append(Peer("diffusers PAB", f"spatial skip {k}", [DiffusersPABConfig(spatial_skip_range=k)]))
    return out


def _cache_dit_peers(pipe, quick: bool) -> tuple[list[Peer], str | None]:
    try:
        import cache_dit
        from cache_dit import DBCacheConfig, DBPruneConfig, TaylorSeerCalibratorConfig
    except ImportError:
        return [], "cache-dit is not installed: pip install 'sol[bench]'"
    for name in list(logging.root.manager.loggerDict):
        if "cache" in name.lower() and "dit" in name.lower():
            logging.getLogger(name).setLevel(logging.WARNING)
    out = []
    for kind, cfg_type in (("DBCache", DBCacheConfig), ("DBPrune", DBPruneConfig)):
        for calib in (False, True):
            fam = f"cache-dit {kind}" + (" + TaylorSeer" if calib else "")
            for t in (0.04, 0.08, 0.12, 0.16, 0.24)[:: 2 if quick else 1]:
                kw = dict(
                    Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=t, max_warmup_steps=4
                )

                def enable(cfg_type=cfg_type, kw=kw, calib=calib):
                    cal = TaylorSeerCalibratorConfig(taylorseer_order=1) if calib else None
                    cache_dit.enable_cache(pipe, cache_config=cfg_type(**kw), calibrator_config=cal)

                out.append(Peer(fam, f"F1B0 threshold {t}, warm-up 4", enable=enable,
                                disable=lambda: cache_dit.disable_cache(pipe)))  # fmt: skip
    return out, None


def diffusers_magcache_ratios(pipe, adapter, workload) -> tuple[float, ...] | None:
    """diffusers' own calibration (``MagCacheConfig(calibrate=True)``): one generation, the printed
    ratios of its first cache context (cond), as its docs tell a user to copy them."""
    from diffusers.hooks import MagCacheConfig
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    from sol.skills.cache import _diffusers

    one = workload.model_copy(update={"prompts": workload.prompts[:1], "seeds": workload.seeds[:1]})
    buf = io.StringIO()
    handle = _diffusers.enable(adapter, MagCacheConfig(calibrate=True, num_inference_steps=one.num_inference_steps),
                               "diffusers magcache calibration",
                               (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK))  # fmt: skip
    try:
        with torch.no_grad(), contextlib.redirect_stdout(buf):
            generate(pipe, one)
    finally:
        handle.revert()
    lists = re.findall(r"\[([0-9eE.,\s+-]+)\]", buf.getvalue())
    return tuple(round(float(x), 5) for x in lists[0].split(",")) if lists else None


def _external(ev: Evaluator, peer: Peer) -> CandidateResult:
    """Evaluate a cache Sol does not wrap (cache-dit) as ``Evaluator.evaluate`` does, untimed."""
    from sol.quality.metrics import fidelity

    res = CandidateResult(
        label=f"{peer.family}: {peer.label}", techniques=[], workload=ev.workload.name, ok=False
    )
    res.baseline_calls = ev.baseline_calls
    t0 = time.perf_counter()
    try:
        peer.enable()
        with torch.no_grad(), count_calls(ev.adapter) as calls:
            outputs = generate(ev.pipe, ev.workload)
        res.calls = dict(calls)
        res.fidelity = fidelity(ev.baseline_outputs, outputs)
        res.runs = list(range(len(ev.runs)))
        if ev.cost_model is not None:
            res.predicted = ev.cost_model.predict(res.calls, {}, videos=len(ev.runs)).to_json()
        res.ok = True
    except Exception as e:  # noqa: BLE001 — a failing peer is a row, not a crash
        res.reason = _reason(e)
    finally:
        with contextlib.suppress(Exception):
            peer.disable()
        res.eval_s = time.perf_counter() - t0
    return res


def sweep(ev: Evaluator, peers: list[Peer], min_psnr: float, log) -> dict[str, Peer]:
    """Each family gentle to aggressive; a family stops after two settings in a row miss the floor
    once one kept it (more aggressive ones only lose more). Returns each family's fastest keeper."""
    best: dict[str, Peer] = {}
    misses: dict[str, int] = {}
    for p in peers:
        if misses.get(p.family, 0) >= 2:
            continue
        p.result = _external(ev, p) if p.enable else ev.evaluate(p.configs, timing=False)
        r = p.result
        keeps = r.ok and r.psnr >= min_psnr
        pred = r.predicted_speedup
        log(f"  {p.family:<32} {p.label:<40} worst {r.psnr:6.1f} dB  predicted "
            + (f"{pred:.2f}x" if pred else "-") + ("" if r.ok else f"  failed: {r.reason}"))  # fmt: skip
        if keeps:
            misses[p.family] = 0
            cur = best.get(p.family)
            if cur is None or (pred or 0) > (cur.result.predicted_speedup or 0):
                best[p.family] = p
        elif p.family in best:
            misses[p.family] = misses.get(p.family, 0) + 1
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished `sol optimize` run folder with plan.json")
    ap.add_argument("--plan", type=Path, help="a plan file (default: the run's plan.json)")
    ap.add_argument("--model", default=None, help="default: the run's model, else sol-tiny-wan")
    ap.add_argument("--workload", default=None, help="default: the run's workload, else default")
    ap.add_argument("--min-psnr", type=float, default=30.0)
    ap.add_argument("--min-pairs", type=int, default=5)
    ap.add_argument("--max-pairs", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="every other sweep point")
    ap.add_argument(
        "--tune-on",
        choices=("search", "held-out"),
        default="search",
        help="the split each peer is tuned on (default: the search prompts Sol saw)",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    from sol.bench.costmodel import fit_cost_model
    from sol.hardware import configure_cpu_threads
    from sol.models import load_model
    from sol.plan import load_plan
    from sol.quality.metrics import json_safe
    from sol.workload import load_workload

    configure_cpu_threads()
    t_start = time.perf_counter()
    spec = json.loads((args.run / "run.json").read_text()) if args.run else {}
    plan_path = args.plan or (args.run / "plan.json" if args.run else None)
    if plan_path is None or not Path(plan_path).is_file():
        raise SystemExit(
            "give --run RUN (with a plan.json) or --plan plan.json: Sol's approved plan to compare"
        )
    plan = load_plan(plan_path)
    model = args.model or spec.get("model") or "sol-tiny-wan"
    wl = load_workload(args.workload or spec.get("workload") or "default")
    held = wl.validation()
    if held is None:
        raise SystemExit(
            f"workload {wl.name!r} has no validation split: peers are compared on held-out prompts"
        )
    loaded = load_model(model, layers=spec.get("layers"))
    pipe, adapter = loaded.pipe, loaded.adapter
    print(
        f"{model} · held-out split of {wl.name}: {len(held.runs)} videos · floor {args.min_psnr:g} dB worst video"
    )
    cm = fit_cost_model(pipe, adapter, held)
    ev = Evaluator(loaded, held, timing=False, cost_model=cm)
    tune = ev if args.tune_on == "held-out" else Evaluator(loaded, wl, timing=False, cost_model=cm)
    # MagCache's ratios come from its own calibration run on the first prompt of the tuning split.
    ratios = diffusers_magcache_ratios(pipe, adapter, tune.workload)
    peers = _diffusers_peers(adapter, held.num_inference_steps, args.quick, ratios)
    dit, why = _cache_dit_peers(pipe, args.quick)
    peers += dit
    if why:
        print(f"  ({why}; its rows are left out)")
    split = "held-out prompts" if tune is ev else "search prompts"
    print(f"\nsweep (quality on the {split}, speed predicted from counted work):")
    best = sweep(tune, peers, args.min_psnr, print)
    tuned = {fam: p.result for fam, p in best.items()}  # on the tuning split
    held_out = dict(tuned)
    if tune is not ev:  # the settings a person would ship, judged on prompts nobody tuned on
        print("\nthe tuned settings on the held-out prompts:")
        for fam, p in best.items():
            held_out[fam] = _external(ev, p) if p.enable else ev.evaluate(p.configs, timing=False)
            print(f"  {fam:<32} {p.label:<40} worst {held_out[fam].psnr:6.1f} dB"
                  f"  (tuned at {tuned[fam].psnr:.1f} dB)")  # fmt: skip

    sol_res = ev.evaluate(list(plan.techniques), timing=False)
    print(f"  {'Sol (approved plan)':<32} {sol_res.label[:40]:<40} worst {sol_res.psnr:6.1f} dB")
    entries = {"sol": (sol_res, None)}
    for fam, p in best.items():
        entries[fam] = (held_out[fam], p)

    # One race: Sol's plan and every tuned peer against the same baseline, interleaved.
    applied, before, after, fns = {}, {}, {}, {}
    try:
        for name, (_r, p) in entries.items():
            if p is not None and p.enable is not None:
                before[name], after[name] = p.enable, p.disable

                def fn(i, ev=ev):
                    with torch.no_grad():
                        generate(ev.pipe, ev._one(i))

            else:
                a = applied[name] = _Applied(ev, p.configs if p is not None else list(plan.techniques))

                def fn(i, a=a, ev=ev):
                    with torch.no_grad():
                        generate(a.pipe, ev._one(i))

            fns[name] = fn

        def base(i):
            with torch.no_grad():
                generate(pipe, ev._one(i))

        res = race(base, fns, min_pairs=args.min_pairs, max_pairs=args.max_pairs, before=before, after=after)
    finally:
        for a in applied.values():
            a.revert()
    rows = []
    for name, (r, p) in entries.items():
        s = res.comparisons[name].summary()
        rows.append({"peer": "Sol (approved plan)" if name == "sol" else name,
                     "setting": r.label if p is None else p.label, "psnr_min": r.psnr,
                     "psnr_min_tuned": None if p is None else tuned[name].psnr,
                     "psnr": r.fidelity.get("psnr"), "predicted": r.predicted_speedup, **s})  # fmt: skip
    print(f"\nheld-out prompts, peers tuned on the {split} · interleaved race, {res.rounds} rounds ({res.stopped}) · ratio of medians per "
          "generation on the steadier clock, 95% bootstrap interval\n")  # fmt: skip
    print(f"{'':<32} {'setting':<40} {'worst':>7} {'speedup':>8} {'interval':>13} {'clock':>5}")
    for row in sorted(rows, key=lambda x: -x["speedup"]):
        iv = row["interval"]
        print(f"{row['peer'][:32]:<32} {row['setting'][:40]:<40} {row['psnr_min']:6.1f}  {row['speedup']:7.2f}x"
              f" {iv[0]:5.2f}-{iv[1]:5.2f}x {row['clock']:>5}")  # fmt: skip
    sol_row = next(r for r in rows if r["peer"].startswith("Sol"))
    keepers = [r for r in rows if not r["peer"].startswith("Sol") and r["psnr_min"] >= args.min_psnr]
    lead = None
    if keepers:
        top = max(keepers, key=lambda r: r["speedup"])
        lead = sol_row["speedup"] / top["speedup"]
        lo = sol_row["interval"][0] / top["interval"][1]
        hi = sol_row["interval"][1] / top["interval"][0]
        ok = "keeps" if sol_row["psnr_min"] >= args.min_psnr else "MISSES"
        print(f"\nSol's lead over the best peer that keeps {args.min_psnr:g} dB ({top['peer']}, {top['setting']}): "
              f"{lead:.2f}x (range {lo:.2f}-{hi:.2f}x); Sol's plan {ok} the floor on these prompts "
              f"({sol_row['psnr_min']:.1f} dB)")  # fmt: skip
    else:
        print(f"\nno peer keeps {args.min_psnr:g} dB on the held-out prompts")
    print(f"({time.perf_counter() - t_start:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sweep_rows = [{"family": p.family, "setting": p.label, "ok": p.result.ok if p.result else None,
                   "psnr_min": p.result.psnr if p.result else None,
                   "predicted": p.result.predicted_speedup if p.result else None} for p in peers if p.result]  # fmt: skip
    args.out.write_text(json.dumps(json_safe({"model": model, "workload": wl.name, "held_out": held.runs,
                                              "tuned_on": args.tune_on,
                                              "min_psnr": args.min_psnr, "plan": str(plan_path), "rows": rows,
                                              "lead": lead, "race": res.to_json(), "sweep": sweep_rows,
                                              "magcache_ratios": ratios}), indent=2))  # fmt: skip
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
