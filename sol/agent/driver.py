"""Start, resume, approve and reject runs: the graph driven with its checkpointer.

>>> out = start(model="sol-tiny-wan", gpu="cpu", approve="auto")  # doctest: +SKIP
>>> out.plan  # doctest: +SKIP
'runs/sol-tiny-wan-20261124-001500/plan.json'
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sol.agent.runs import (
    DEFAULT_RUNS_DIR,
    checkpointer,
    decision_lock,
    find_run,
    list_run_dirs,
    new_run_dir,
    read_spec,
)
from sol.errors import SolError

NODE_ORDER = ["profile", "skill_agent", "integrator", "gate", "report", "approval", "export"]


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    values: dict = field(default_factory=dict)
    interrupt: dict | None = None
    next: tuple = ()

    @property
    def plan(self) -> str | None:
        return self.values.get("plan")

    @property
    def report(self) -> dict:
        return self.values.get("report") or {}


def default_skills() -> list[str]:
    from sol.skills import skills_by_family

    return sorted(skills_by_family())


def start(
    *,
    model: str,
    gpu: str = "auto",
    workload: str = "default",
    budget: str = "near-lossless",
    effort: str = "standard",
    skills: list[str] | None = None,
    approve: str = "manual",
    executor: str = "ray",
    ray_address: str | None = None,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    layers: int | None = None,
    allow_pickle: bool = False,
    vbench_python: str | None = None,
    checkpoint_url: str | None = None,
    on_update=None,
    on_start=None,
) -> RunOutcome:
    """Validate everything cheap first (no run folder for bad input), then run the graph.

    ``on_start(run_dir)`` is called once the run folder exists (a watcher reads its progress files)."""
    from sol.agent.jobs import EFFORT
    from sol.hardware import resolve
    from sol.quality.gate import get_budget
    from sol.workload import load_workload

    hw = resolve(gpu)
    wl = load_workload(workload)
    get_budget(budget)
    if effort not in EFFORT:
        raise SolError(f"unknown --effort {effort!r}; use one of {', '.join(EFFORT)}")
    if approve not in ("auto", "manual", "ask"):
        raise SolError(f"unknown --approve {approve!r}; use ask, manual or auto")
    if executor not in ("ray", "local"):
        raise SolError(f"unknown --executor {executor!r}; use ray or local")
    known = default_skills()
    skills = skills or known
    unknown = [s for s in skills if s not in known]
    if unknown:
        raise SolError(f"unknown skill {unknown[0]!r}; available: {', '.join(known)}")
    from sol.models.loading import BUILTIN_MODELS, PRESETS

    if model not in BUILTIN_MODELS and model not in PRESETS and not Path(model).expanduser().is_dir():
        from sol.models import load_model

        load_model(model, layers=layers, allow_pickle=allow_pickle)  # raises the right one-line error
    run_dir = new_run_dir(model, runs_dir)
    workload_ref = workload if not Path(workload).is_file() else str(Path(workload).resolve())
    spec = {
        "run_id": run_dir.name,
        "run_dir": str(run_dir.resolve()),
        "model": str(Path(model).resolve()) if Path(model).expanduser().is_dir() else model,
        "layers": layers,
        "allow_pickle": allow_pickle,
        "gpu": hw.name if hw.kind == "cuda" else "cpu",
        "workload": workload_ref,
        "workload_name": wl.name,
        "budget": budget,
        "effort": effort,
        "skills": skills,
        "approve": "auto" if approve == "auto" else "manual",
        "executor": executor,
        "ray_address": ray_address,
        "vbench_python": vbench_python,
        "checkpoint_url": checkpoint_url,
    }
    (run_dir / "run.json").write_text(json.dumps(spec, indent=2))
    if on_start is not None:
        on_start(run_dir)
    return drive(run_dir, {"spec": spec}, on_update=on_update)


def _graph(run_dir: Path, holder: dict):
    from sol.agent.graph import build_graph
    from sol.cluster.executor import make_executor

    spec = read_spec(run_dir)

    def factory():
        if "executor" not in holder:
            holder["executor"] = make_executor(
                spec["executor"], address=spec.get("ray_address"), run_id=spec["run_id"]
            )
        return holder["executor"]

    saver = checkpointer(run_dir, spec.get("checkpoint_url"))
    return build_graph(factory, saver), {"configurable": {"thread_id": spec["run_id"]}}


def drive(run_dir: Path, graph_input: Any = None, *, on_update=None) -> RunOutcome:
    """Run the graph until it ends or pauses; ``graph_input`` None continues from the checkpoint."""
    holder: dict = {}
    graph, config = _graph(run_dir, holder)
    try:
        for update in graph.stream(graph_input, config, stream_mode="updates"):
            if on_update is not None:
                for node, value in update.items():
                    on_update(node, value)
    finally:
        if "executor" in holder:
            holder["executor"].shutdown()
    return outcome(run_dir, graph, config)


def outcome(run_dir: Path, graph=None, config=None) -> RunOutcome:
    if graph is None:
        graph, config = _graph(run_dir, {})
    snap = graph.get_state(config)
    interrupts = [i.value for t in snap.tasks for i in (t.interrupts or ())]
    values = dict(snap.values or {})
    if interrupts:
        status = "awaiting approval"
    elif not snap.next and values.get("status"):
        status = values["status"]
    elif snap.next:
        status = f"interrupted before {', '.join(snap.next)} (sol resume {run_dir.name})"
    else:
        status = "not started"
    return RunOutcome(run_dir, status, values, interrupts[0] if interrupts else None, tuple(snap.next))


def resume(run: str, runs_dir: Path = DEFAULT_RUNS_DIR, on_update=None) -> RunOutcome:
    run_dir = find_run(run, runs_dir)
    current = outcome(run_dir)
    if current.interrupt is not None:
        raise SolError(
            f"run {run_dir.name} is waiting for approval; use `sol approve {run_dir.name}` or `sol reject`"
        )
    if not current.next and current.values:
        return current
    spec = read_spec(run_dir)
    return drive(run_dir, None if current.values else {"spec": spec}, on_update=on_update)


def _decision(run: str, runs_dir: Path, who: str):
    """The run's decision lock; none for a run that cannot be found (the decision says why)."""
    import contextlib

    try:
        run_dir = find_run(run, runs_dir)
    except SolError:
        return contextlib.nullcontext()
    return decision_lock(run_dir, who)


def _waiting(run: str, runs_dir: Path) -> tuple[Path, RunOutcome]:
    run_dir = find_run(run, runs_dir)
    cur = outcome(run_dir)
    if cur.interrupt is None:
        raise SolError(f"run {run_dir.name} is not waiting for approval (status: {cur.status})")
    return run_dir, cur


def approve(run: str, candidate: str | None = None, *, by: str | None = None, note: str = "",
            runs_dir: Path = DEFAULT_RUNS_DIR, on_update=None) -> RunOutcome:  # fmt: skip
    """Approve a candidate (default: the best that passed the gate) and export its plan.

    One decision per run at a time (``decision_lock``): a concurrent approve or reject of the same run
    is refused with ``DecisionInProgress``; one that comes after finds the run no longer waiting."""
    with _decision(run, runs_dir, f"{by or _who()} approving {candidate or 'the best'}"):
        return _approve(run, candidate, by=by, note=note, runs_dir=runs_dir, on_update=on_update)


def _approve(run: str, candidate: str | None, *, by: str | None, note: str, runs_dir: Path,
             on_update) -> RunOutcome:  # fmt: skip
    from langgraph.types import Command

    run_dir, cur = _waiting(run, runs_dir)
    cands = cur.interrupt["candidates"]
    passing = [c for c in cands if c["passed"]]
    if candidate is None:
        candidate = passing[0]["id"]
    chosen = next((c for c in cands if c["id"] == candidate), None)
    if chosen is None:
        raise SolError(
            f"no candidate {candidate!r} in run {run_dir.name}; choose one of {', '.join(c['id'] for c in cands)}"
        )
    if not chosen["passed"]:
        others = ", ".join(c["id"] for c in passing) or "none qualifies: reject it with feedback instead"
        raise SolError(
            f"candidate {candidate} cannot be approved: {chosen.get('why') or 'it failed the quality gate'};"
            f" approve one that qualifies ({others})"
        )
    decision = {"action": "approve", "candidate": candidate, "by": by or _who(), "note": note}
    return drive(run_dir, Command(resume=decision), on_update=on_update)


def reject(run: str, feedback: dict, *, candidate: str | None = None, by: str | None = None,
           runs_dir: Path = DEFAULT_RUNS_DIR, on_update=None) -> RunOutcome:  # fmt: skip
    """Reject with structured feedback; the integrator runs again under stricter settings.

    Holds the run's ``decision_lock`` until the new round pauses again or ends (see :func:`approve`)."""
    with _decision(run, runs_dir, f"{by or _who()} rejecting"):
        return _reject(run, feedback, candidate=candidate, by=by, runs_dir=runs_dir, on_update=on_update)


def _reject(run: str, feedback: dict, *, candidate: str | None, by: str | None, runs_dir: Path,
            on_update) -> RunOutcome:  # fmt: skip
    from langgraph.types import Command

    run_dir, cur = _waiting(run, runs_dir)
    known = default_skills()
    bad = [s for s in feedback.get("exclude", []) if s not in known]
    if bad:
        raise SolError(f"feedback excludes unknown skill {bad[0]!r}; skills: {', '.join(known)}")
    if feedback.get("budget"):
        from sol.quality.gate import get_budget

        get_budget(feedback["budget"])
    decision = {"action": "reject", "candidate": candidate, "feedback": feedback, "by": by or _who()}
    return drive(run_dir, Command(resume=decision), on_update=on_update)


def parse_feedback(text: str | None, **options) -> dict:
    """``"min_psnr=35 exclude=cache prefer=c2 budget=lossless"`` + CLI options → structured feedback."""
    fb: dict[str, Any] = {"note": ""}
    words = []
    for tok in (text or "").split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            k = k.strip().replace("-", "_")
            if k == "min_psnr":
                try:
                    fb[k] = float(v)
                except ValueError:
                    raise SolError(f"feedback min_psnr={v!r} is not a number (e.g. min_psnr=35)") from None
            elif k == "exclude":
                fb.setdefault("exclude", []).extend(s for s in v.split(",") if s)
            elif k in ("prefer", "budget"):
                fb[k] = v
            else:
                raise SolError(f"unknown feedback key {k!r}; use min_psnr=, budget=, exclude=, prefer=")
        else:
            words.append(tok)
    fb["note"] = " ".join(words)
    for k, v in options.items():
        if v:
            if k == "exclude":
                fb.setdefault("exclude", []).extend(v)
            else:
                fb[k] = v
    return fb


def list_runs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[dict]:
    rows = []
    for d in list_run_dirs(runs_dir):
        spec = read_spec(d)
        try:
            st = outcome(d).status
        except Exception as e:  # noqa: BLE001 — a broken run folder is listed, not fatal
            st = f"unreadable ({type(e).__name__})"
        rows.append({"run": d.name, "model": spec["model"], "workload": spec.get("workload_name", ""),
                     "status": st, "plan": str(d / "plan.json") if (d / "plan.json").is_file() else ""})  # fmt: skip
    return rows


def _who() -> str:
    try:
        return os.environ.get("SOL_USER") or getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"
