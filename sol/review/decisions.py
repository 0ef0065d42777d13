"""Approvals and rejections resumed in the background, one per run at a time.

An approval resumes the graph to export (seconds); a rejection resumes it into the integrator again
(minutes, through the run's executor). Either runs in a worker thread so the page answers at once and
shows progress; the page polls the run folder. Within the app a per-run lock refuses a second decision
at once (the person is told who holds it); across processes ``sol.agent.driver`` holds the run's
``decision_lock`` (a concurrent ``sol approve`` in a terminal is refused the same way).

>>> d = Decisions()
>>> d.submit("run-1", "approve", "alice", lambda: driver.approve("run-1", by="alice"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sol.errors import SolError

log = logging.getLogger("sol.review")


@dataclass
class Decision:
    """One approval or rejection this app resumed."""

    run_id: str
    action: str  # approve | reject
    by: str
    detail: str = ""  # the candidate approved, or the feedback given
    started: float = 0.0
    finished: float | None = None
    error: str | None = None
    status: str = ""  # the run's status once the graph paused or ended again

    @property
    def running(self) -> bool:
        return self.finished is None

    def describe(self) -> str:
        what = f"{self.by} {'approving' if self.action == 'approve' else 'rejecting'}"
        return what + (f" {self.detail}" if self.detail else "")


class DecisionBusy(SolError):
    """A decision on this run is already being carried out."""

    def __init__(self, current: Decision):
        ago = int(time.time() - current.started)
        super().__init__(
            f"run {current.run_id} is already being decided: {current.describe()} (started {ago} s ago)"
        )
        self.current = current


class Decisions:
    """The decisions this app runs; one at a time per run."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sol-decision")
        self._lock = threading.Lock()
        self._held: dict[str, Decision] = {}
        self._last: dict[str, Decision] = {}

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def latest(self, run_id: str) -> Decision | None:
        with self._lock:
            return self._held.get(run_id) or self._last.get(run_id)

    def submit(
        self, run_id: str, action: str, by: str, fn: Callable[[], object], detail: str = ""
    ) -> Decision:
        """Run ``fn`` (``driver.approve`` / ``driver.reject``) in the background, or raise
        :class:`DecisionBusy` when this run already has a decision under way."""
        with self._lock:
            if run_id in self._held:
                raise DecisionBusy(self._held[run_id])
            d = Decision(run_id, action, by, detail, started=time.time())
            self._held[run_id] = d
        self._pool.submit(self._run, d, fn)
        return d

    def _run(self, d: Decision, fn: Callable[[], object]) -> None:
        try:
            out = fn()
            d.status = str(getattr(out, "status", "") or "")
        except SolError as e:
            d.error = str(e)
        except Exception as e:  # noqa: BLE001 — shown on the page; the run stays where it was
            log.exception("decision on %s failed", d.run_id)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            d.error = f"{type(e).__name__}: {first}"
        finally:
            d.finished = time.time()
            with self._lock:
                self._held.pop(d.run_id, None)
                self._last[d.run_id] = d

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
