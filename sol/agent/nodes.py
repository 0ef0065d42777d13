"""Graph nodes. Each returns a partial state update; heavy work goes through the executor.

Nodes before an ``interrupt()`` re-run on resume, so each is safe to repeat: it reuses its
result file when present (``sol.agent.jobs``), and the approval node does nothing before
its interrupt but read small files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from langgraph.types import Command, Send, interrupt

from sol.agent import jobs
from sol.agent.jobs import write_json
from sol.agent.state import RunState
from sol.cluster.executor import Executor, JobFailed


def _budget(settings: dict):
    from sol.quality.gate import QualityBudget, get_budget

    base = get_budget(settings.get("budget"))
    if settings.get("min_psnr") is not None and float(settings["min_psnr"]) != base.min_psnr:
        return QualityBudget(**{**base.model_dump(), "name": f"{base.name}+psnr{settings['min_psnr']:g}",
                                "min_psnr": float(settings["min_psnr"])})  # fmt: skip
    return base


class Nodes:
    def __init__(self, executor: Callable[[], Executor]):
        self._executor_factory = executor
        # Skills that failed while this process drove the graph; one that failed before a resume
        # is run again by the integrator (the failure may have come from the kill or the load).
        self._failed_here: set[str] = set()

    @property
    def executor(self) -> Executor:
        return self._executor_factory()

    # --- profile --------------------------------------------------------------------------
    def profile(self, state: RunState) -> dict:
        spec = state["spec"]
        self.executor.run(jobs.profile, spec, name="profile")
        return {"profile": str(Path(spec["run_dir"]) / "profile.json"), "status": "searching"}

    def fan_out(self, state: RunState) -> list[Send] | str:
        done = set(state.get("fronts", {})) | set(state.get("failed", {}))
        todo = [f for f in state["spec"]["skills"] if f not in done]
        if not todo:
            return "integrator"
        return [Send("skill_agent", {"spec": state["spec"], "family": f}) for f in todo]

    # --- skill agents (parallel) ----------------------------------------------------------
    def skill_agent(self, payload: dict) -> dict:
        family = payload["family"]
        try:
            out = self.executor.run(jobs.skill_search, payload["spec"], family, name=f"skill-{family}")
        except JobFailed as e:
            self._failed_here.add(family)
            return {"failed": {family: str(e)}}
        return {"fronts": {family: out["path"]}}

    def _recover_skills(self, state: RunState) -> dict:
        """Run again, before the first composition, every skill with no readable result that did not
        fail in this process: a result file deleted or damaged, or a failure recorded before a kill.
        Returns the state update (fronts found, failures cleared or renewed, a note for each)."""
        from concurrent.futures import ThreadPoolExecutor

        spec, fronts = state["spec"], state.get("fronts") or {}
        if state.get("integration"):
            return {}
        todo = [f for f in spec["skills"] if f not in self._failed_here
                and (f not in fronts or jobs.read_result(Path(fronts[f])) is None)]  # fmt: skip
        if not todo:
            return {}
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            done = dict(
                zip(
                    todo, pool.map(lambda f: self.skill_agent({"spec": spec, "family": f}), todo), strict=True
                )
            )
        update: dict = {"fronts": {}, "failed": {}, "notes": []}
        for family, out in done.items():
            if family in out.get("fronts", {}):
                update["fronts"][family] = out["fronts"][family]
                update["failed"][family] = None  # merge() drops it: the skill has a result now
                update["notes"].append(f"re-ran the {family} search (its result was missing or had failed)")
            else:
                update["failed"][family] = out["failed"][family]
                update["notes"].append(f"the {family} search failed again: {out['failed'][family]}")
        return update

    # --- integrator -----------------------------------------------------------------------
    def integrator(self, state: RunState) -> dict:
        spec = state["spec"]
        settings = state.get("settings") or {"round": 1, "budget": spec["budget"]}
        if "min_psnr" not in settings:
            settings = {**settings, "min_psnr": _budget(settings).min_psnr}
        recovered = self._recover_skills(state)
        fronts = {**state.get("fronts", {}), **recovered.get("fronts", {})}
        try:
            out = self.executor.run(
                jobs.integrate, spec, fronts, settings, name=f"integrator-{settings['round']}"
            )
        except JobFailed as e:
            # Kept in `failed` (not only the status, which later nodes overwrite): the summary and the
            # report say the integrator failed and why, instead of "no candidates".
            failed = {**recovered.get("failed", {}), "integrator": str(e)}
            return {**recovered, "failed": failed, "settings": settings, "status": f"integrator failed: {e}",
                    "integration": ""}  # fmt: skip
        failed = {**recovered.get("failed", {}), "integrator": None}  # a failure of an earlier round is over
        return {
            **recovered,
            "failed": failed,
            "settings": settings,
            "integration": out["path"],
            "status": "gating",
        }

    # --- gate -----------------------------------------------------------------------------
    def gate(self, state: RunState) -> dict:
        from sol.quality.gate import gate
        from sol.quality.vbench import GATE_DIMENSIONS, not_scored, run_vbench, unmeasured

        spec, settings = state["spec"], state["settings"]
        run_dir = Path(spec["run_dir"])
        rnd = settings["round"]
        if not state.get("integration"):
            return {"candidates": "", "summary": []}
        integ = json.loads(Path(state["integration"]).read_text())
        baseline = [np.load(p).astype(np.float32) for p in integ["baseline_videos"]]
        comps = [c for c in integ["compositions"] if c["result"]["ok"]]
        cand_videos = [[np.load(p).astype(np.float32) for p in c["result"]["outputs"]] for c in comps]
        # One VBench call for all videos: its interpreter starts once.
        flat = baseline + [v for vs in cand_videos for v in vs]
        # Every dimension the user's weights allow (their folder, else VBench's cache); the others are
        # recorded once, with why, instead of as a skipped check on every candidate.
        dims = list(spec.get("vbench_dimensions") or GATE_DIMENSIONS)
        weights = spec.get("vbench_weights")
        not_measured = unmeasured(dims, weights)
        vb = run_vbench(flat, [d for d in dims if d not in not_measured], spec.get("vbench_python"),
                        workdir=run_dir / "vbench" / f"round-{rnd}", weights=weights)  # fmt: skip
        not_measured.update(not_scored(vb))
        not_measured = {d: not_measured[d] for d in dims if d in not_measured}
        n = len(baseline)

        def per(dim_result: dict, lo: int, hi: int) -> dict:
            if "videos" not in dim_result:
                return dim_result
            vals = dim_result["videos"][lo:hi]
            return {"score": float(np.mean(vals)), "videos": vals}

        vb_base = {d: per(r, 0, n) for d, r in vb.items()}
        budget = _budget(settings)
        val_paths = integ.get("validation_baseline_videos") or []
        val_baseline = [np.load(p).astype(np.float32) for p in val_paths]
        candidates = []
        for k, (c, videos) in enumerate(zip(comps, cand_videos, strict=True)):
            vb_c = {d: per(r, n * (k + 1), n * (k + 2)) for d, r in vb.items()}
            verdict = gate(baseline, videos, budget, vbench_baseline=vb_base, vbench_candidate=vb_c)
            res = c["result"]
            candidates.append({
                "id": c["id"],
                "label": res["label"],
                "techniques": res["techniques"],
                "speedup": res["speedup"],
                "timing": res.get("timing") or {},
                "predicted_speedup": c["predicted_speedup"],
                "predicted": res.get("predicted") or {},
                "predicted_psnr": c["predicted_psnr"],
                "screen": res.get("screen") or {},
                "interaction": c["interaction"],
                "fidelity": {k2: v for k2, v in res["fidelity"].items() if k2 != "videos"},
                "vbench": vb_c,
                "verdict": verdict.model_dump(mode="json"),
                "videos": res["outputs"],
                "latency_s": res["latency_s"],
                "baseline_s": res["baseline_s"],
                **_validation(c.get("validation"), val_baseline, budget, res),
            })  # fmt: skip
            candidates[-1].update(_decide(candidates[-1], verdict.passed, bool(val_baseline)))
        candidates.sort(key=lambda c: (not c["passed"], -(c["speedup"] or 0)))
        prefer = settings.get("prefer")
        if prefer:
            candidates.sort(key=lambda c: (not c["passed"], c["id"] != prefer))
        path = write_json(run_dir / f"candidates-{rnd}.json", {"candidates": candidates, "vbench_baseline": vb_base,
                                                                "vbench_not_measured": not_measured,
                                                                "budget": budget.model_dump(mode="json")})  # fmt: skip
        summary = [_summary_row(c) for c in candidates]
        return {"candidates": str(path), "summary": summary, "status": "reporting"}

    # --- report ---------------------------------------------------------------------------
    def report(self, state: RunState) -> dict:
        from sol.agent.reporting import write_report

        return {"report": write_report(state), "status": "awaiting approval"}

    # --- approval -------------------------------------------------------------------------
    def approval(self, state: RunState) -> Command:
        spec = state["spec"]
        passing = [c for c in state.get("summary", []) if c["passed"]]
        back: dict = {}  # the round whose candidates are offered, when it is not the latest
        if not passing and spec.get("approve") != "auto":
            # A rejection whose round found nothing that qualifies must not lose what qualified
            # before ("min_psnr=nan" once made a passing 2.58x candidate unapprovable): offer the
            # latest earlier round that had one, saying why.
            back = _earlier_round(state)
            passing = [c for c in back.get("summary", []) if c["passed"]]
        if not passing:
            return Command(
                goto="export", update={"decision": {"action": "none", "why": no_plan_reason(state)}}
            )
        offered = back.get("summary") or state["summary"]
        if spec.get("approve") == "auto":
            decision = {"action": "approve", "candidate": passing[0]["id"], "by": "auto (--approve auto)"}
        else:
            ask = {"run": Path(spec["run_dir"]).name, "candidates": offered,
                   "report": state.get("report", {}).get("html")}  # fmt: skip
            if back:
                ask["message"] = back["message"]
            decision = interrupt(ask)
        if back:  # decisions refer to the offered round's candidates
            state = {**state, "summary": back["summary"], "candidates": back["candidates"]}
        if decision.get("action") == "reject":
            return Command(goto="integrator", update=self._after_reject(state, decision))
        if decision.get("candidate") is None:
            decision = {**decision, "candidate": passing[0]["id"]}
        update = {"decision": decision, "status": "exporting"}
        if back:
            update.update(summary=back["summary"], candidates=back["candidates"])
        return Command(goto="export", update=update)

    def _after_reject(self, state: RunState, decision: dict) -> dict:
        """Stricter settings from structured feedback; a bare rejection asks for more fidelity."""
        fb = decision.get("feedback") or {}
        old = state["settings"]
        new = {**old, "round": old["round"] + 1}
        if fb.get("budget"):
            new["budget"] = fb["budget"]
            new.pop("min_psnr", None)
            new["min_psnr"] = _budget(new).min_psnr
        if fb.get("min_psnr") is not None:
            new["min_psnr"] = float(fb["min_psnr"])
        if fb.get("exclude"):
            new["exclude"] = sorted(set(old.get("exclude", [])) | set(fb["exclude"]))
        if fb.get("prefer"):
            new["prefer"] = fb["prefer"]
        rejected = next((c for c in state.get("summary", []) if c["id"] == decision.get("candidate")), None)
        if rejected is None:
            rejected = next((c for c in state.get("summary", []) if c["passed"]), None)
        if not (fb.get("budget") or fb.get("min_psnr") or fb.get("exclude") or fb.get("prefer")) and rejected:
            # Not good enough, no numbers given: ask for more fidelity than what was rejected.
            psnr = float(rejected["psnr"]) if rejected["psnr"] is not None else math.inf
            if math.isfinite(psnr):
                new["min_psnr"] = max(float(new["min_psnr"]), psnr + 1.0)
        entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": decision.get("by", ""),
                 "rejected": rejected["id"] if rejected else None, "feedback": fb, "settings": new}  # fmt: skip
        return {"settings": new, "feedback": [entry], "status": "re-integrating after feedback"}

    # --- export ---------------------------------------------------------------------------
    def export(self, state: RunState) -> dict:
        from sol.agent.reporting import export_plan, write_report

        decision = state.get("decision") or {}
        if decision.get("action") != "approve":
            why = decision.get("why") or no_plan_reason(state)
            status = f"finished: {why}; no plan exported ({_elapsed(state)})"
            return {"status": status, "report": write_report({**state, "status": status})}
        plan_path = export_plan(state)
        status = "done: " + approved_line(state)
        state = {**state, "plan": str(plan_path), "status": status}
        return {"plan": str(plan_path), "report": write_report(state), "status": status}


def _summary_row(c: dict) -> dict:
    """A candidate as the approval prompt shows it (from a ``candidates-N.json`` entry)."""
    return {"id": c["id"], "label": c["label"], "speedup": c["speedup"], "interval": (c.get("timing") or {}).get("interval"),
            "psnr": c["fidelity"].get("psnr"), "psnr_min": c["fidelity"].get("psnr_min"),
            "validation_psnr": (c.get("validation") or {}).get("psnr_min"), "passed": c["passed"],
            "beats_baseline": c.get("beats_baseline"), "why": c.get("why", "")}  # fmt: skip


def _earlier_round(state: RunState) -> dict:
    """The latest round before this one with a candidate that qualifies: its summary, its
    candidates file and a message for the approval prompt ({} when there is none)."""
    rnd = int((state.get("settings") or {}).get("round", 1))
    run_dir = Path(state["spec"]["run_dir"])
    for r in range(rnd - 1, 0, -1):
        path = run_dir / f"candidates-{r}.json"
        data = jobs.read_result(path) or {}
        summary = [_summary_row(c) for c in data.get("candidates", [])]
        if any(c["passed"] for c in summary):
            why = no_plan_reason(state)
            return {"summary": summary, "candidates": str(path),
                    "message": f"round {rnd} (after your feedback) found no candidate that qualifies: {why};"
                               f" the candidates of round {r} are offered again"}  # fmt: skip
    return {}


def _validation(val: dict | None, val_baseline: list, budget, res: dict) -> dict:
    """The held-out verdict of one composition (the gate on the validation split, no VBench)."""
    from sol.quality.gate import gate

    if not val_baseline:
        return {"validation": None}
    if not val:
        return {"validation": {"checked": False}}
    if not val.get("ok"):
        return {"validation": {"checked": True, "passed": False, "reason": val.get("reason")}}
    videos = [np.load(p).astype(np.float32) for p in val["outputs"]]
    verdict = gate(val_baseline, videos, budget)
    fid = val.get("fidelity") or {}
    search_worst = (res.get("fidelity") or {}).get("psnr_min")
    gap = None
    if isinstance(search_worst, int | float) and isinstance(fid.get("psnr_min"), int | float):
        if math.isfinite(search_worst) and math.isfinite(fid["psnr_min"]):
            gap = float(search_worst) - float(fid["psnr_min"])
    return {"validation": {"checked": True, "passed": verdict.passed, "psnr_min": fid.get("psnr_min"),
                           "psnr": fid.get("psnr"), "ssim_min": fid.get("ssim_min"), "gap_db": gap,
                           "verdict": verdict.model_dump(mode="json"), "videos": val.get("outputs", [])}}  # fmt: skip


def _decide(c: dict, gate_passed: bool, has_validation: bool) -> dict:
    """Whether a candidate may be approved, and why not: the gate on the search split, a speedup
    whose interval lies above 1.0, and (with a validation split) the gate on the held-out split."""
    why = []
    timing = c.get("timing") or {}
    beats = bool(timing.get("beats_baseline"))
    if not gate_passed:
        why.append("quality gate: " + _verdict_line(c["verdict"]))
    if not timing:
        why.append("not timed")
    elif not beats:
        lo, hi = (timing.get("interval") or [math.nan, math.nan])[:2]
        losing = {k: v for k, v in (timing.get("by_clock") or {}).items() if v is not None and v <= 1.0}
        if lo > 1.0 and losing:  # the interval cleared 1.0 on the steadier clock; another clock read a loss
            clock, v = min(losing.items(), key=lambda kv: kv[1])
            why.append(
                f"speedup {c['speedup']:.2f}x ({timing.get('clock')} clock, interval {lo:.2f}-{hi:.2f}x), "
                f"but the {clock} clock reads {v:.2f}x: a loss on one clock is never approved"
            )
        else:
            why.append(f"speedup {c['speedup']:.2f}x, interval {lo:.2f}-{hi:.2f}x does not lie above 1.0")
    val = c.get("validation")
    if has_validation:
        if not val or not val.get("checked"):
            why.append("not re-checked on the held-out split")
        elif not val.get("passed"):
            why.append(
                "held-out split: "
                + (_verdict_line(val["verdict"]) if val.get("verdict") else str(val.get("reason")))
            )
    return {"passed": not why, "beats_baseline": beats, "why": "; ".join(why)}


def _verdict_line(verdict: dict) -> str:
    from sol.quality.gate import Verdict

    try:
        return Verdict.model_validate(verdict).summary()
    except Exception:  # noqa: BLE001 — a verdict from an older run: say what is known
        return "failed" if not verdict.get("passed") else "passed"


def no_plan_reason(state: RunState) -> str:
    """Why a run ends without a plan: nothing beat the baseline, or nothing passed quality."""
    summary = state.get("summary") or []
    failed = {k: v for k, v in (state.get("failed") or {}).items() if v}
    if failed.get("integrator"):
        return f"the integrator failed ({failed['integrator']})"
    skills = (state.get("spec") or {}).get("skills") or []
    if not summary and skills and all(s in failed for s in skills):
        return "every skill search failed (" + "; ".join(f"{s}: {failed[s]}" for s in skills) + ")"
    if not summary:
        return "no candidate was measured within the quality budget"
    if not any(c.get("beats_baseline") for c in summary):
        return "no candidate beat the baseline (every speedup interval reached 1.0 or below)"
    return "no candidate that beat the baseline passed the quality gate and the held-out check"


def _elapsed(state: RunState) -> str:
    """Wall time since the run started (its run.json was written), e.g. ``6 min 12 s since the start``."""
    import time

    start = Path(state["spec"]["run_dir"]) / "run.json"
    if not start.is_file():
        return "wall time unknown"
    s = max(0, int(time.time() - start.stat().st_mtime))
    cpu = _jobs_cpu_s(start.parent)
    tail = f", {cpu / 60:.1f} min CPU in its jobs" if cpu else ""
    return f"{s // 60} min {s % 60:02d} s wall since the start{tail}"


def _jobs_cpu_s(run_dir: Path) -> float:
    """CPU seconds the run's jobs recorded (profile, skill agents, integrator rounds): on a loaded
    machine the work a quiet one would do, where the wall time says little."""
    total = 0.0
    for f in [run_dir / "profile.json", *run_dir.glob("skills/*.json"), *run_dir.glob("integration-*.json")]:
        try:
            total += float((json.loads(f.read_text()).get("cost") or {}).get("cpu_s") or 0.0)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return total


def approved_line(state: RunState) -> str:
    """One line with the figures a reader checks: the approved stack's speedup with its interval and
    clock, its worst video on the search and held-out prompts, and the run's wall time."""
    cid = (state.get("decision") or {}).get("candidate")
    cands = (
        json.loads(Path(state["candidates"]).read_text()).get("candidates", [])
        if state.get("candidates")
        else []
    )
    c = next((x for x in cands if x["id"] == cid), None)
    if c is None:
        return f"approved {cid} ({_elapsed(state)})"
    t = c.get("timing") or {}
    lo, hi = (t.get("interval") or [math.nan, math.nan])[:2]
    worst = (c.get("fidelity") or {}).get("psnr_min")
    held = (c.get("validation") or {}).get("psnr_min")

    def db(x) -> str:
        return "-" if x is None else f"{float(x):.1f} dB"

    return (
        f"approved {cid}, {c['label']}: {c['speedup']:.2f}x (95% interval {lo:.2f}-{hi:.2f}x, {t.get('clock', '?')}"
        f" time, {t.get('pairs', '?')} pairs); worst video {db(worst)} on the search prompts, {db(held)} held out;"
        f" {_elapsed(state)}"
    )
