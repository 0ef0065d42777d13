"""What the review app shows of a run: its state and figures, read from the run folder.

Everything comes from the orchestration layer (``sol.agent.driver.outcome``: the checkpointed graph
state; ``sol.agent.progress``: the agents' progress files), so a run driven by ``sol optimize`` in a
terminal, by Ray actors on other machines or by this app's own background decisions reads the same.

>>> rows = list_runs(Path("runs"))  # doctest: +SKIP
>>> rows[0]["state"], rows[0]["speedup"]  # doctest: +SKIP
('awaiting approval', 2.31)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sol.agent.progress import AgentProgress, number, read_progress

RECENT_S = 120.0  # a checkpoint written this recently, with no finished state: still running


@dataclass
class RunView:
    """One run as the pages show it."""

    run_id: str
    run_dir: Path
    spec: dict
    status: str
    state: str  # awaiting approval | running | done | finished | interrupted | failed | unreadable
    values: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)  # the gate's summary rows
    agents: list[AgentProgress] = field(default_factory=list)
    version: str = ""  # which approval round the page shows (a decision on an older one is refused)

    @property
    def waiting(self) -> bool:
        return self.state == "awaiting approval"

    @property
    def chosen(self) -> dict | None:
        """The approved candidate, or the one approval would take by default (the best that passed)."""
        decision = self.values.get("decision") or {}
        if decision.get("action") == "approve":
            return next((c for c in self.candidates if c["id"] == decision.get("candidate")), None)
        return next((c for c in self.candidates if c.get("passed")), None)

    @property
    def plan_path(self) -> Path | None:
        p = self.run_dir / "plan.json"
        return p if p.is_file() else None

    @property
    def plan_json(self) -> dict | None:
        p = self.plan_path
        try:
            return json.loads(p.read_text()) if p is not None else None
        except (OSError, ValueError):
            return None

    @property
    def report_path(self) -> Path | None:
        p = self.run_dir / "report.html"
        return p if p.is_file() else None

    def row(self) -> dict[str, Any]:
        """The listing's columns: state, speedup, worst-video PSNR, gate."""
        c = self.chosen
        gate = "-"
        if self.candidates:
            gate = "pass" if any(x.get("passed") for x in self.candidates) else "fail"
        return {
            "run": self.run_id,
            "model": self.spec.get("model", ""),
            "workload": self.spec.get("workload_name", ""),
            "state": self.state,
            "status": self.status,
            "speedup": c.get("speedup") if c else None,
            "interval": c.get("interval") if c else None,
            "psnr_min": number(c.get("psnr_min")) if c else None,
            "candidate": c.get("id") if c else None,
            "gate": gate,
            "plan": bool(self.plan_path),
        }


def _state(status: str, agents: list[AgentProgress], busy: bool, last_write: float) -> str:
    """A short state from the graph's status, this app's own work and the progress files."""
    if busy:
        return "running"  # this app is resuming it (an approval exporting, a rejection re-integrating)
    for prefix, state in (
        ("awaiting approval", "awaiting approval"),
        ("done", "done"),
        ("finished", "finished"),
    ):
        if status.startswith(prefix):
            return state
    # Between nodes (the gate, the report) no agent writes progress; the checkpoint moved recently.
    if any(a.running for a in agents) or time.time() - last_write < RECENT_S:
        return "running"
    if status.startswith("interrupted"):
        return "interrupted"
    return "failed" if "failed" in status else status


def _last_write(run_dir: Path) -> float:
    paths = [run_dir / "state.sqlite", run_dir / "state.sqlite-wal"]
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


class RunReader:
    """Reads runs, caching each outcome until its state file changes (a listing stays cheap)."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self._cache: dict[Path, tuple[tuple, Any]] = {}
        self._lock = threading.Lock()

    def _outcome(self, run_dir: Path):
        from sol.agent.driver import outcome

        db = run_dir / "state.sqlite"
        key = (db.stat().st_mtime_ns, db.stat().st_size) if db.is_file() else (0, 0)
        # the WAL/journal files change too while a writer works; a stale hit only lasts until then
        for extra in ("state.sqlite-wal", "state.sqlite-journal"):
            p = run_dir / extra
            key += (p.stat().st_mtime_ns,) if p.is_file() else (0,)
        with self._lock:
            hit = self._cache.get(run_dir)
            if hit is not None and hit[0] == key:
                return hit[1]
        out = outcome(run_dir)
        with self._lock:
            self._cache[run_dir] = (key, out)
        return out

    def read(self, run_dir: Path, busy: bool = False) -> RunView:
        spec = json.loads((run_dir / "run.json").read_text())
        agents = read_progress(run_dir)
        try:
            out = self._outcome(run_dir)
        except Exception as e:  # noqa: BLE001 — a broken or busy run folder is listed, not fatal
            return RunView(run_dir.name, run_dir, spec, f"unreadable ({type(e).__name__})", "unreadable",
                           agents=agents)  # fmt: skip
        values = out.values or {}
        cands = (out.interrupt or {}).get("candidates") or values.get("summary") or []
        view = RunView(
            run_dir.name,
            run_dir,
            spec,
            out.status,
            _state(out.status, agents, busy, _last_write(run_dir)),
            values,
            list(cands),
            agents,
            version=Path(values.get("candidates") or "none").name,
        )
        return view

    def list(self, busy: set[str] = frozenset()) -> list[RunView]:
        from sol.agent.runs import list_run_dirs

        dirs = list_run_dirs(self.runs_dir)
        return [self.read(d.resolve(), d.name in busy) for d in reversed(dirs)]  # newest first


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run's listing row, newest first."""
    return [v.row() for v in RunReader(runs_dir).list()]
