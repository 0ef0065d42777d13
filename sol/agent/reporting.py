"""Turn a run's files into the report's input and the exported plan.

Rendering belongs to the interfaces layer (``sol.report``), which orchestration never imports:
an interface registers its renderer with :func:`set_renderer` (the CLI and the review app do).
Without one, the report step writes the run summary as JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sol.agent.state import RunState

# (run summary, run folder) -> (report.html, summary.md)
Renderer = Callable[[dict, Path], tuple[Path, Path]]
_renderer: Renderer | None = None


def set_renderer(fn: Renderer | None) -> None:
    """Use ``fn`` (e.g. ``sol.report.build_report``) to render every report from now on."""
    global _renderer
    _renderer = fn


def _load(path: str | None) -> dict:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}


def run_summary(state: RunState) -> dict:
    """The ``run`` dict ``sol.report.build_report`` renders (see docs/quality.md)."""
    spec = state["spec"]
    profile = _load(state.get("profile"))
    fronts, search = {}, {}
    for fam, path in (state.get("fronts") or {}).items():
        try:
            data = _load(path)
            front_keys = {(r["label"], r["workload"]) for r in data.get("front", [])}
            rows = []
            for r in data.get("full", []) + data.get("screened", []):
                rows.append({
                    "label": r["label"], "techniques": r["techniques"], "speedup": r["speedup"],
                    "psnr": r["fidelity"].get("psnr"), "ssim": r["fidelity"].get("ssim"),
                    "on_front": (r["label"], r["workload"]) in front_keys,
                    "failed": not r["ok"], "reason": r["reason"], "calls": r["calls"], "workload": r["workload"],
                })  # fmt: skip
            fronts[fam] = rows
            search[fam] = _search_evidence(data)
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ):  # a damaged result: the report still renders
            fronts[fam], search[fam] = [], {}
    cand_file = _load(state.get("candidates"))
    cands = cand_file.get("candidates", [])
    integ = _load(state.get("integration"))
    decision = state.get("decision") or {}
    return {
        "run_id": Path(spec["run_dir"]).name,
        "model": spec["model"],
        "hardware": profile.get("hardware", {}),
        "workload": _workload_dict(spec),
        "quality_budget": (state.get("settings") or {}).get("budget", spec.get("budget")),
        "settings": state.get("settings") or {},
        "profile": profile,
        "fronts": fronts,
        "failed_skills": state.get("failed") or {},
        "candidates": cands,
        "baseline_videos": profile.get("baseline_videos", []),
        "prompts": profile.get("prompts", []),
        "chosen": decision.get("candidate") if decision.get("action") == "approve" else None,
        "feedback": state.get("feedback") or [],
        "integration_log": integ.get("log", []),
        "search": search,
        "race": integ.get("race") or {},
        "validation": {**(integ.get("validation") or {}), "prompts": integ.get("validation_prompts", [])},
        "plan": _load(state.get("plan")) or None,
        "vbench": _vbench_summary(cand_file, spec),
        "status": state.get("status", ""),
        # Why the candidate table is empty (an integrator or skill failure, nothing measured), so a
        # failure never reads as a bare "no candidates".
        "no_candidates": "" if cands else _why_none(state),
    }


def _vbench_summary(cand_file: dict, spec: dict) -> dict:
    """The gate's VBench dimensions: those measured, and those not measured with why (their weights
    absent, VBench's environment missing, VBench failed), so the report says what the gate did not see."""
    base = cand_file.get("vbench_baseline") or {}
    not_measured = cand_file.get("vbench_not_measured")
    if not_measured is None:  # a run from before the gate recorded them: the baseline's reasons
        from sol.quality.vbench import not_scored

        not_measured = not_scored(base)
    return {
        "measured": [d for d, r in base.items() if "score" in r],
        "not_measured": not_measured,
        "weights": spec.get("vbench_weights"),
    }


def _why_none(state: RunState) -> str:
    from sol.agent.nodes import no_plan_reason

    return no_plan_reason(state)


def _search_evidence(front: dict) -> dict:
    """A skill search's screen accuracy and, for every candidate it timed, predicted vs measured."""
    notes = front.get("notes") or {}
    timed = [
        {"label": r["label"], "predicted_speedup": (r.get("predicted") or {}).get("speedup"),
         "modelled": (r.get("predicted") or {}).get("modelled"), "speedup": r.get("speedup"),
         "interval": (r.get("timing") or {}).get("interval"), "clock": (r.get("timing") or {}).get("clock"),
         "pairs": (r.get("timing") or {}).get("pairs"), "psnr_min": (r.get("fidelity") or {}).get("psnr_min"),
         "predicted_worst": (r.get("screen") or {}).get("predicted_worst")}
        for r in front.get("full", []) if r.get("timing")
    ]  # fmt: skip
    return {"screen": notes.get("screen") or {}, "timed": timed, "race": notes.get("race") or {},
            "ceilings": notes.get("ceilings") or {}}  # fmt: skip


def _workload_dict(spec: dict) -> dict:
    from sol.workload import load_workload

    return load_workload(spec["workload"]).model_dump(mode="json")


def write_report(state: RunState) -> dict[str, str]:
    """``summary.json`` always; ``report.html`` and ``summary.md`` through the registered renderer."""
    from sol.agent.jobs import write_json

    run_dir = Path(state["spec"]["run_dir"])
    summary = run_summary(state)
    out = {"summary": str(write_json(run_dir / "summary.json", summary))}
    if _renderer is not None:
        html, md = _renderer(summary, run_dir)
        out.update(html=str(html), markdown=str(md))
    return out


def export_plan(state: RunState) -> Path:
    """plan.json for the approved candidate, with the approval record."""
    from sol.plan import Approval, HardwareRef, Measured, ModelRef, Plan, library_versions
    from sol.skills.base import config_from_dict
    from sol.workload import load_workload

    spec = state["spec"]
    decision = state["decision"]
    cands = _load(state["candidates"])["candidates"]
    chosen = next((c for c in cands if c["id"] == decision["candidate"]), None)
    if chosen is None:
        from sol.errors import SolError

        raise SolError(
            f"candidate {decision['candidate']!r} is not in this run; choose one of {[c['id'] for c in cands]}"
        )
    profile = _load(state["profile"])
    hw = profile["hardware"]
    plan = Plan(
        model=ModelRef(name=spec["model"], **profile["fingerprint"]),
        hardware=HardwareRef(**hw),
        versions=library_versions(),
        sol_version=library_versions().get("sol", ""),
        techniques=[config_from_dict(t) for t in chosen["techniques"]],
        workload=load_workload(spec["workload"]),
        measured=Measured(
            speedup=chosen["speedup"],
            baseline_s=chosen["baseline_s"],
            latency_s=chosen["latency_s"],
            fidelity={k: v for k, v in chosen["fidelity"].items() if not isinstance(v, list | dict)},
            vbench={d: r.get("score") for d, r in chosen.get("vbench", {}).items() if "score" in r},
        ),  # fmt: skip
        approval=Approval(
            approved_by=decision.get("by") or "unknown",
            approved_at=datetime.now(UTC).isoformat(timespec="seconds"),
            candidate=chosen["id"],
            verdict=chosen["verdict"],
            note=decision.get("note", ""),
        ),
    )
    return plan.save(Path(spec["run_dir"]) / "plan.json")
