"""Start, resume, approve and reject runs: the graph driven with its checkpointer.

>>> out = start(model="sol-tiny-wan", gpu="cpu", approve="auto")  # doctest: +SKIP
>>> out.plan  # doctest: +SKIP
'runs/sol-tiny-wan-20261124-001500/plan.json'
"""

from __future__ import annotations

import getpass
import json
import math
import os
import threading
from collections.abc import Callable
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
    set_aside_state,
    state_problem,
)
from sol.errors import SolError

# A PSNR floor outside this range is a typo (or NaN): below 10 dB a video is noise, above 100 dB
# only an exact technique passes (budget=lossless says that).
PSNR_FLOOR_RANGE = (10.0, 100.0)

NODE_ORDER = ["profile", "skill_agent", "integrator", "gate", "report", "approval", "export"]


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    values: dict = field(default_factory=dict)
    interrupt: dict | None = None
    next: tuple = ()
    notes: list[str] = field(default_factory=list)  # what resume found and did (re-ran a skill, …)

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
    vbench_weights: str | Path | None = None,
) -> RunOutcome:
    """Validate everything cheap first (no run folder for bad input), then run the graph.

    ``vbench_weights``: a folder laid out as VBench's cache for the model-based VBench dimensions
    (default: VBench's own cache); the gate measures those whose weights are there.

    ``on_start(run_dir)`` is called once the run folder exists (a watcher reads its progress files)."""
    from sol.agent.jobs import EFFORT
    from sol.hardware import resolve
    from sol.quality.gate import get_budget
    from sol.workload import load_workload

    hw = resolve(gpu)
    wl = load_workload(workload)
    get_budget(budget)
    for flag, value in (("--ray-address", ray_address), ("--vbench-python", vbench_python),
                        ("--checkpoint-url", checkpoint_url), ("--vbench-weights", vbench_weights)):  # fmt: skip
        if value is not None and not str(value).strip():
            raise SolError(f"{flag} is empty; give a value or leave the option out")
    if vbench_python and not Path(vbench_python).expanduser().is_file():
        raise SolError(f"--vbench-python {vbench_python}: no such file; pass VBench's python interpreter")
    if vbench_weights is not None:
        from sol.quality.vbench import check_weights_dir

        vbench_weights = str(check_weights_dir(vbench_weights))  # absolute: a resume runs from anywhere
    if checkpoint_url and not checkpoint_url.startswith(("postgres://", "postgresql://")):
        raise SolError(
            f"--checkpoint-url {checkpoint_url!r}: use a postgresql://… URL (SQLite is the default)"
        )
    if effort not in EFFORT:
        raise SolError(f"unknown --effort {effort!r}; use one of {', '.join(EFFORT)}")
    if approve not in ("auto", "manual", "ask"):
        raise SolError(f"unknown --approve {approve!r}; use ask, manual or auto")
    if executor not in ("ray", "local"):
        raise SolError(f"unknown --executor {executor!r}; use ray or local")
    known = default_skills()
    if skills is not None and not skills:  # `--skills ","` named nothing; it must not mean "all"
        raise SolError(
            f"--skills names no skill family; name some ({', '.join(known)}) or leave it out for all"
        )
    skills = list(dict.fromkeys(skills)) if skills is not None else known
    unknown = [s for s in skills if s not in known]
    if unknown:
        raise SolError(f"unknown skill {unknown[0]!r}; available: {', '.join(known)}")
    from sol.models.loading import BUILTIN_MODELS, PRESETS, check_fits

    if model not in BUILTIN_MODELS and model not in PRESETS and not Path(model).expanduser().is_dir():
        from sol.models import load_model

        load_model(model, layers=layers, allow_pickle=allow_pickle)  # raises the right one-line error
    # Before the run folder exists: a model or workload this machine cannot hold is refused in one
    # line, instead of a run killed by the out-of-memory killer or left "interrupted before profile".
    check_fits(model, layers=layers, workload=wl, hardware=hw)
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
        "vbench_weights": vbench_weights,
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
    lock = threading.Lock()

    def factory():
        # Parallel skill agents ask at once: the executor (and Ray) must start exactly once.
        with lock:
            if "executor" not in holder:
                holder["executor"] = make_executor(
                    spec["executor"], address=spec.get("ray_address"), run_id=spec["run_id"]
                )
        return holder["executor"]

    saver = holder["saver"] = checkpointer(run_dir, spec.get("checkpoint_url"))
    return build_graph(factory, saver), {"configurable": {"thread_id": spec["run_id"]}}


def _close(holder: dict) -> None:
    """Close the checkpoint connection: SQLite folds its WAL into state.sqlite on the last close, so a
    finished command leaves one self-contained file (and no connection for the garbage collector)."""
    conn = getattr(holder.pop("saver", None), "conn", None)
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 — closing is best effort; the data is committed already
            pass


def drive(run_dir: Path, graph_input: Any = None, *, on_update=None) -> RunOutcome:
    """Run the graph until it ends or pauses; ``graph_input`` None continues from the checkpoint."""
    from sol.cluster.executor import kill_point

    holder: dict = {}
    graph, config = _graph(run_dir, holder)
    try:
        for update in graph.stream(graph_input, config, stream_mode="updates"):
            for node, value in update.items():
                if on_update is not None and not node.startswith("__"):  # LangGraph's own entries
                    on_update(node, value)
                # A test hook (SOL_TEST_KILL_AT); nothing otherwise. LangGraph yields a node's update
                # while a background thread saves its writes: the kill waits a moment for them, so
                # "NODE:end" means "after the node's result was saved", as its name says.
                kill_point(f"{node}:end", settle_s=1.0)
        return outcome(run_dir, graph, config)
    finally:
        if "executor" in holder:
            holder["executor"].shutdown()
        _close(holder)


def outcome(run_dir: Path, graph=None, config=None) -> RunOutcome:
    if graph is None:
        problem = state_problem(run_dir)
        if problem is not None:
            raise SolError(
                f"run {run_dir.name}: state.sqlite is unreadable ({problem});"
                f" `sol resume {run_dir.name}` rebuilds it from the run's result files"
            )
        holder: dict = {}
        graph, config = _graph(run_dir, holder)
        try:
            return outcome(run_dir, graph, config)
        finally:
            _close(holder)
    snap = graph.get_state(config)
    interrupts = [i.value for t in snap.tasks for i in (t.interrupts or ())]
    values = dict(snap.values or {})
    # A kill between a node's saved writes and the step's checkpoint leaves ``next`` empty while the
    # node's task is still pending (its writes not yet applied): the run is not finished.
    pending = tuple(snap.next) or tuple(t.name for t in snap.tasks)
    if interrupts:
        status = "awaiting approval"
    elif not pending and values.get("status"):
        status = values["status"]
    elif snap.next:
        status = f"interrupted before {', '.join(snap.next)} (sol resume {run_dir.name})"
    elif pending:
        status = f"interrupted after {', '.join(pending)} (sol resume {run_dir.name})"
    else:
        status = "not started"
    return RunOutcome(run_dir, status, values, interrupts[0] if interrupts else None, pending)


def resume(run: str, runs_dir: Path = DEFAULT_RUNS_DIR, on_update=None,
           on_note: Callable[[str], None] | None = None) -> RunOutcome:  # fmt: skip
    """Continue a run from its last checkpoint; ``on_note`` hears, before the work starts, what
    resume found (an unreadable state rebuilt, a skill result missing or failed, to be run again).

    A run waiting for approval or finished is returned as it is (its outcome says so).
    """
    run_dir = find_run(run, runs_dir)
    spec = read_spec(run_dir)
    notes: list[str] = []
    problem = state_problem(run_dir)
    if problem is not None:
        moved = set_aside_state(run_dir)
        notes.append(f"state.sqlite was unreadable ({problem}); moved it to {moved.name} and rebuilding"
                     " the run from its result files (finished jobs are not redone)")  # fmt: skip
    current = outcome(run_dir)
    if current.interrupt is not None or (not current.next and current.values):
        for note in notes:
            if on_note is not None:
                on_note(note)
        current.notes = notes
        return current
    if current.values:
        notes += _rerun_notes(current.values)
    for note in notes:
        if on_note is not None:
            on_note(note)
    out = drive(run_dir, None if current.values else {"spec": spec}, on_update=on_update)
    out.notes = notes
    return out


def _rerun_notes(values: dict) -> list[str]:
    """The skill searches a resume runs again: a result file missing or unreadable, or a failure
    recorded before the kill (it may have come from the kill itself, or from a machine under load)."""
    from sol.agent.jobs import read_result

    notes = []
    if values.get("integration"):  # composed already: the skills' results are no longer needed
        return notes
    for family, path in sorted((values.get("fronts") or {}).items()):
        if read_result(Path(path)) is None:
            what = "missing" if not Path(path).is_file() else "unreadable"
            notes.append(f"skills/{family}.json is {what}; the {family} search runs again")
    for family, why in sorted((values.get("failed") or {}).items()):
        if why and family in (values.get("spec") or {}).get("skills", []):
            notes.append(f"the {family} search failed before the resume ({why}); it runs again")
    return notes


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
        if not passing:
            raise SolError(
                f"no candidate of run {run_dir.name} qualifies for approval; reject it with feedback"
                f" (`sol reject {run_dir.name} --feedback ...`) or see the report"
            )
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
    check_feedback(feedback, cur, read_spec(run_dir), candidate)
    decision = {"action": "reject", "candidate": candidate, "feedback": feedback, "by": by or _who()}
    return drive(run_dir, Command(resume=decision), on_update=on_update)


def parse_feedback(text: str | None, **options) -> dict:
    """``"min_psnr=35 exclude=cache prefer=c2 budget=lossless"`` + CLI options → structured feedback.

    Values are checked here, before anything runs: a PSNR floor is a finite number of dB within
    :data:`PSNR_FLOOR_RANGE` ("min_psnr=nan" would pass no candidate ever again), names are not empty.

    >>> parse_feedback("too soft min_psnr=35 exclude=cache")
    {'note': 'too soft', 'min_psnr': 35.0, 'exclude': ['cache']}
    """
    fb: dict[str, Any] = {"note": ""}
    words = []
    for tok in (text or "").split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            k = k.strip().replace("-", "_")
            if k == "min_psnr":
                fb[k] = _psnr_floor(v, f"feedback min_psnr={v}")
            elif k == "exclude":
                names = [s for s in v.split(",") if s]
                if not names:
                    raise SolError("feedback exclude= names no skill; e.g. exclude=cache,quantization")
                fb.setdefault("exclude", []).extend(names)
            elif k in ("prefer", "budget"):
                if not v:
                    example = "prefer=c2" if k == "prefer" else "budget=lossless"
                    raise SolError(f"feedback {k}= is empty; e.g. {example}")
                fb[k] = v
            else:
                raise SolError(f"unknown feedback key {k!r}; use min_psnr=, budget=, exclude=, prefer=")
        else:
            words.append(tok)
    fb["note"] = " ".join(words)
    for k, v in options.items():
        if v is None or v == [] or v == "":
            continue
        if k == "exclude":
            names = [s for item in v for s in str(item).split(",") if s]
            if not names:
                raise SolError("--exclude names no skill; e.g. --exclude cache")
            fb.setdefault("exclude", []).extend(names)
        elif k == "min_psnr":
            fb[k] = _psnr_floor(v, f"--min-psnr {v}")
        else:
            fb[k] = v
    return fb


def _psnr_floor(value: Any, where: str) -> float:
    lo, hi = PSNR_FLOOR_RANGE
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SolError(f"{where} is not a number; give a PSNR floor in dB, e.g. min_psnr=35") from None
    if isinstance(value, bool) or not math.isfinite(x) or not lo <= x <= hi:
        raise SolError(
            f"{where}: a PSNR floor must be a number of dB from {lo:g} to {hi:g}, e.g. min_psnr=35"
        )
    return x


def check_feedback(feedback: dict, current: RunOutcome, spec: dict, candidate: str | None = None) -> None:
    """Refuse feedback that cannot apply to this paused run, in one line, before the graph resumes."""
    known = default_skills()
    if not isinstance(feedback, dict):
        raise SolError("feedback must be a mapping (see driver.parse_feedback)")
    if feedback.get("min_psnr") is not None:
        _psnr_floor(feedback["min_psnr"], f"feedback min_psnr={feedback['min_psnr']}")
    bad = [s for s in feedback.get("exclude", []) if s not in known]
    if bad:
        raise SolError(f"feedback excludes unknown skill {bad[0]!r}; skills: {', '.join(known)}")
    settings = current.values.get("settings") or {}
    left = (
        set(spec.get("skills") or known) - set(settings.get("exclude", [])) - set(feedback.get("exclude", []))
    )
    if feedback.get("exclude") and not left:
        raise SolError("the feedback excludes every skill this run searched; leave at least one in")
    if feedback.get("budget"):
        from sol.quality.gate import get_budget

        get_budget(feedback["budget"])
    ids = [c["id"] for c in (current.interrupt or {}).get("candidates", [])]
    for what, cid in (("--candidate", candidate), ("prefer", feedback.get("prefer"))):
        if cid is not None and cid not in ids:
            raise SolError(
                f"{what} {cid!r}: the run has no such candidate; choose one of {', '.join(ids) or 'none'}"
            )


def list_runs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[dict]:
    rows = []
    for d in list_run_dirs(runs_dir):
        try:
            spec = read_spec(d)
        except SolError:  # a broken run folder is listed, not fatal
            rows.append(
                {"run": d.name, "model": "?", "workload": "?", "status": "unreadable run.json", "plan": ""}
            )
            continue
        try:
            st = outcome(d).status
        except SolError as e:
            st = str(e).removeprefix(f"run {d.name}: ")
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
