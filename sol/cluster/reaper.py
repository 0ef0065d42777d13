"""Stop the Ray processes a Sol process started, and remove their session folder, once it is gone.

Run as a script by path (``python reaper.py SESSION_DIR PID...``), never as ``sol.cluster.reaper``:
importing the ``sol`` package would load torch (seconds, hundreds of MB) into a process that only
waits. Its standard input is a pipe whose other end the Sol process holds: EOF means that process
exited, however (a SIGKILL included, which runs no ``atexit``); the line ``clean`` written first
means it shut Ray down itself and only the folder is left to remove.

On Linux Ray ties its head processes to the process that started them (``PR_SET_PDEATHSIG``), so
after a SIGKILL they usually die at once; the folder in ``/tmp/ray`` stayed behind after every run,
and a worker or node process that outlives its parent (another OS, a process re-parented under a
subreaper) is stopped here: the listed processes and every descendant they still have.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

GRACE_S = 3.0
# How often the reaper notes the descendants of Ray's processes while Sol runs: Ray's workers are
# children of the raylet, which dies with Sol (PR_SET_PDEATHSIG); orphaned, they are no longer
# anyone's descendants, lived on for seconds and wrote logs into a session folder already removed.
WATCH_S = 2.0
# After removing the folder, how long a late writer may recreate it (it is removed again).
SETTLE_S = 10.0


def _descendants(pids: list[int]) -> list[int]:
    try:
        import psutil  # a Ray dependency: present wherever Ray is
    except ImportError:
        return []
    out = []
    for pid in pids:
        try:
            out += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except Exception:  # noqa: BLE001 — gone already
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) holds no resources
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class _Watch:
    """Notes, every ``WATCH_S``, the descendants of ``pids`` with their start times (a pid seen once
    is killed later only while it is the same process)."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.note()
            self._stop.wait(WATCH_S)

    def note(self) -> None:
        for pid in _descendants(self.pids):
            if pid not in self.seen and (t := _started(pid)) is not None:
                self.seen[pid] = t

    def alive(self) -> list[int]:
        self._stop.set()
        return [pid for pid, t in list(self.seen.items()) if _started(pid) == t]


def _started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 — gone, or psutil missing
        return None


def reap(session_dir: str, pids: list[int], watched: list[int] = ()) -> None:
    """SIGTERM ``pids``, their descendants and the ``watched`` processes seen earlier, SIGKILL what is
    left after a grace period, then remove ``session_dir`` (and ``session_latest`` beside it when it
    points there), again while a late writer recreates it."""
    victims = [p for p in dict.fromkeys(pids + _descendants(pids) + list(watched)) if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            time.sleep(0.1)
    remove_session(session_dir)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if Path(session_dir).exists():
            remove_session(session_dir)


def remove_session(session_dir: str) -> None:
    """Remove one Ray session folder and the ``session_latest`` link when it names that folder."""
    path = Path(session_dir)
    latest = path.parent / "session_latest"
    try:
        if latest.is_symlink() and Path(os.readlink(latest)).name == path.name:
            latest.unlink()
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> None:
    session_dir, pids = argv[0], [int(p) for p in argv[1:]]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the Sol process
    watch = _Watch(pids)
    said = sys.stdin.read()  # blocks until the Sol process closes the pipe or dies
    watch.note()
    if said.strip() == "clean":  # Ray was shut down: wait for its processes to go, then tidy up
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
    reap(session_dir, pids, watch.alive())


if __name__ == "__main__":
    main(sys.argv[1:])
