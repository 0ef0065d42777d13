"""Run folders: one per ``sol optimize``, holding its state (SQLite), results, plan and report."""

from __future__ import annotations

import re
import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sol.errors import SolError

DEFAULT_RUNS_DIR = Path("runs")


def new_run_dir(model: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(model).name).strip("-") or "model"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / f"{stem}-{stamp}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = runs_dir / f"{stem}-{stamp}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def find_run(run: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """A run by id (folder name under ``runs_dir``) or path."""
    if not run.strip():
        raise SolError("the run id is empty; pass a run id from `sol runs`")
    for cand in (Path(run), runs_dir / run):
        if (cand / "run.json").is_file():
            return cand
    known = ", ".join(p.name for p in list_run_dirs(runs_dir)[-5:]) or "none"
    raise SolError(f"no run {run!r} under {runs_dir}/ (recent: {known}); see `sol runs`")


def list_run_dirs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    return sorted(
        (p for p in runs_dir.iterdir() if (p / "run.json").is_file()), key=lambda p: p.stat().st_mtime
    )


class DecisionInProgress(SolError):
    """Another approve/reject of the same run holds its decision lock."""


@contextmanager
def decision_lock(run_dir: Path, who: str = ""):
    """Hold ``run_dir``'s decision lock while an approval or a rejection resumes it.

    One decision at a time, across processes and threads (an ``flock`` on ``decision.lock``: each
    ``open`` is its own lock holder, and the kernel frees it when a holder dies). A second decider is
    refused at once with :class:`DecisionInProgress` naming the holder, instead of resuming the graph
    twice. ``who`` is recorded for that message.

    >>> with decision_lock(run_dir, "alice approving c1"):  # doctest: +SKIP
    ...     drive(run_dir, Command(resume=decision))
    """
    import fcntl

    f = open(run_dir / "decision.lock", "a+")  # noqa: SIM115 — held for the whole block
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DecisionInProgress(
                f"run {run_dir.name} is already being decided ({holder}); reload it when that finishes"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{who or 'someone'} since {datetime.now(UTC).isoformat(timespec='seconds')}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


# What every reader of run.json relies on.
SPEC_KEYS = ("run_id", "run_dir", "model", "workload", "skills", "executor")


def read_spec(run_dir: Path) -> dict:
    """The run's ``run.json``; a missing, broken or foreign one is one :class:`SolError` line."""
    from sol.errors import parse_json

    path = run_dir / "run.json"
    fix = f"restore it, or start a new run with `sol optimize` (the folder {run_dir} is not usable)"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SolError(f"cannot read {path} ({e.strerror}); {fix}") from None
    spec = parse_json(raw, str(path), fix)
    if not isinstance(spec, dict) or any(k not in spec for k in SPEC_KEYS):
        missing = next((k for k in SPEC_KEYS if not isinstance(spec, dict) or k not in spec), "")
        raise SolError(f"{path} is not a Sol run record (no {missing!r}); {fix}")
    return spec


def state_problem(run_dir: Path) -> str | None:
    """Why the run's ``state.sqlite`` cannot be read (None when it can, or when there is none yet).

    A truncated or overwritten file fails on first use with "database disk image is malformed" or
    "file is not a database"; an integrity check reads every page, so it is found here, at once.
    """
    path = run_dir / "state.sqlite"
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return str(e)
    if rows != [("ok",)]:
        return str(rows[0][0]) if rows else "integrity check failed"
    return None


def set_aside_state(run_dir: Path) -> Path:
    """Move an unreadable ``state.sqlite`` (and its journal files) aside; returns where it went.

    The run is then rebuilt from its result files: every job finds its own and returns it.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"state.sqlite.corrupt-{stamp}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        src = run_dir / f"state.sqlite{suffix}"
        if src.exists():
            src.replace(run_dir / f"{target.name}{suffix}")
    return target


def checkpointer(run_dir: Path, url: str | None = None):
    """SQLite in the run folder by default; Postgres when ``url`` says so (teams)."""
    if url and url.startswith(("postgres://", "postgresql://")):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError:
            raise SolError(
                "a Postgres checkpointer needs langgraph-checkpoint-postgres; pip install langgraph-checkpoint-postgres"
            ) from None
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        saver = PostgresSaver(conn)
        saver.setup()
        return saver
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(run_dir / "state.sqlite"), check_same_thread=False)
    return SqliteSaver(conn)
