"""Executors run agent jobs: in this process, or each in its own Ray actor.

A job is a module-level function (the agent's ``sol.agent.jobs``; Ray pickles it by reference,
so this package never imports the agent) called with small JSON arguments and a ``lease``
keyword; results are small JSON too (big data goes to the run folder). A Ray actor that dies
is retried once on a fresh actor, then its job is reported as failed; the run goes on without it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sol.cluster.lease import LeaseServer, RayLease, ThreadLease
from sol.errors import SolError

log = logging.getLogger(__name__)

# Parallel skill agents ask for the executor at the same moment; two ``ray.init`` calls at once
# failed with "Perhaps you called ray.init twice by accident?" on the first resume after a kill.
_INIT_LOCK = threading.Lock()

# Test hook: ``SOL_TEST_KILL_AT="skill-cache:done,integrator-1:+2"`` SIGKILLs this process at those
# points (``JOB:start`` before a job, ``JOB:done`` after it returned, ``JOB:+S`` S seconds into
# it; the driver adds ``NODE:end`` after a graph node's update). tests/reliability kill a run in
# every phase this way and resume it.
KILL_ENV = "SOL_TEST_KILL_AT"
# Test hook beside it: ``SOL_TEST_FAIL_AT="skill-cache"`` makes that job fail at its start, as a
# job that raised would (a skill that failed before a kill must run again on resume).
FAIL_ENV = "SOL_TEST_FAIL_AT"


def kill_point(point: str, settle_s: float = 0.0) -> None:
    """SIGKILL this process if ``SOL_TEST_KILL_AT`` names ``point`` (a test hook; a no-op otherwise),
    ``settle_s`` seconds after it is reached."""
    if point in _kill_points():
        if settle_s:
            import time

            time.sleep(settle_s)
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_points() -> set[str]:
    return {p.strip() for p in os.environ.get(KILL_ENV, "").split(",") if p.strip()}


def _start(name: str) -> None:
    """What every executor does as job ``name`` starts: the test hooks (no-ops without their variables)."""
    kill_point(f"{name}:start")
    _kill_later(name)
    if name in {p.strip() for p in os.environ.get(FAIL_ENV, "").split(",")}:
        raise JobFailed(f"{name} failed: injected by {FAIL_ENV}")


def _kill_later(name: str) -> None:
    """Arm the ``JOB:+S`` kills for job ``name`` (a daemon timer: it dies with the process)."""
    for point in _kill_points():
        job, _, when = point.rpartition(":")
        if job == name and when.startswith("+"):
            timer = threading.Timer(float(when[1:]), os.kill, (os.getpid(), signal.SIGKILL))
            timer.daemon = True
            timer.start()


class _RayOwner:
    """Runs ``ray.init`` in a thread that lives until :meth:`stop`.

    Ray starts its head processes with ``PR_SET_PDEATHSIG``, which Linux fires when the *thread*
    that started them exits, not the process: a ``ray.init`` in a skill agent's worker thread (or
    any short-lived thread) had the GCS killed as soon as that thread ended ("Failed to connect to
    GCS within 60 seconds"). This thread only waits, so Ray lives as long as the process or until
    shutdown.
    """

    def __init__(self, init: Callable[[], Any]):
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._main, args=(init,), name="sol-ray-owner", daemon=True).start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self, init: Callable[[], Any]) -> None:
        try:
            init()
        except BaseException as e:  # noqa: BLE001 — handed to the thread that asked
            self._error = e
        finally:
            self._ready.set()
        if self._error is None:
            self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


class JobFailed(RuntimeError):
    """A job could not complete (its actor died twice, or it raised)."""


class Executor:
    kind = "base"

    def run(self, job: Callable[..., Any], spec: dict, *args, name: str | None = None) -> Any:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


def _call(job: Callable[..., Any], spec: dict, args: tuple, lease) -> Any:
    return job(spec, *args, lease=lease)


def _job_name(job) -> str:
    return getattr(job, "__name__", str(job))


class LocalExecutor(Executor):
    """Runs jobs in this process (threads of the graph share one lease). For debugging."""

    kind = "local"

    def __init__(self):
        self.lease = ThreadLease()

    def run(self, job, spec, *args, name=None):
        name = name or _job_name(job)
        _start(name)
        try:
            out = _call(job, spec, args, self.lease)
        except SolError:
            raise
        except Exception as e:
            raise JobFailed(f"{_job_name(job)} failed: {type(e).__name__}: {e}") from e
        kill_point(f"{name}:done")
        return out


class RayExecutor(Executor):
    """Each job runs in a Ray actor; ``address`` joins a cluster, otherwise Ray starts here.

    On one machine actors take half a CPU each (two 1-CPU actors on a 2-core box leave a
    third waiting forever); on a cluster with GPUs each agent asks for one GPU. At 0.4 CPU, all
    five skill agents ran at once on 2 cores and the run was slower (``make demo`` run 11: 20.9
    min against 18.2-18.9): the cache family, the longest and serial, got 0.4 of a core while the
    others ran, then finished alone with a core idle.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, *, run_id: str = "run", num_cpus: float = 0.5):
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        self._reaper: subprocess.Popen | None = None
        self._session_dir: str | None = None
        self._owner: _RayOwner | None = None
        with _INIT_LOCK:
            if not ray.is_initialized():
                self._start_ray(ray, address)
        self.run_id = run_id
        self.num_cpus = num_cpus
        self.num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        lease_actor = ray.remote(num_cpus=0)(LeaseServer)
        self.lease_actor = lease_actor.options(name=f"sol-lease-{run_id}", get_if_exists=True).remote()
        self.lease = RayLease(self.lease_actor)
        self._agent_cls = ray.remote(_Agent)

    def _start_ray(self, ray, address: str | None) -> None:
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": False,
        }
        if address:
            kwargs["address"] = address
        else:
            # The package must be importable in workers started from any folder.
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": _package_root(), "HF_HUB_OFFLINE": "1"}}
        try:
            self._owner = _RayOwner(lambda: ray.init(**kwargs))
        except ConnectionError as e:
            raise SolError(f"cannot join the Ray cluster at {address} ({e}); check --ray-address") from None
        if not address:  # Ray started here: its processes and folder are ours to clean up
            self._watch_local_ray(ray)

    def _watch_local_ray(self, ray) -> None:
        """Start the reaper (``reaper.py``): it stops this Ray's processes and removes its session
        folder when this process exits, a SIGKILL included."""
        try:
            node = ray._private.worker._global_node
            self._session_dir = node.get_session_dir_path()
            pids = [str(p.process.pid) for infos in node.all_processes.values() for p in infos if p.process]
        except Exception as e:  # noqa: BLE001 — Ray's internals moved: run without the reaper, say so
            log.warning("cannot watch the local Ray processes (%s); they are stopped at exit only", e)
            return
        self._reaper = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("reaper.py")), self._session_dir, *pids],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a kill of this process group must not take the reaper with it
            text=True,
        )

    def run(self, job, spec, *args, name=None):
        import ray
        from ray.exceptions import RayActorError

        name = name or _job_name(job)
        _start(name)
        last = None
        for attempt in (1, 2):
            actor = self._agent_cls.options(
                name=f"sol-{self.run_id}-{name}-{attempt}",
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus,
                max_restarts=0,
            ).remote()
            try:
                out = ray.get(actor.run.remote(job, spec, args, self.lease))
                kill_point(f"{name}:done")
                return out
            except RayActorError as e:
                last = e
                log.warning("agent %s died (attempt %d): %s", name, attempt, str(e).splitlines()[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if hasattr(e, "cause") else e
                if isinstance(cause, SolError):
                    raise cause from None
                raise JobFailed(
                    f"{_job_name(job)} failed: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}"
                ) from None
            finally:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 — already gone
                    pass
        raise JobFailed(f"agent {name} died twice ({type(last).__name__}); reported as failed")

    def lease_history(self):
        import ray

        return ray.get(self.lease_actor.get_history.remote())

    def shutdown(self) -> None:
        import ray

        with _INIT_LOCK:
            if ray.is_initialized():
                ray.shutdown()
            if self._owner is not None:
                self._owner.stop()
                self._owner = None
        if self._session_dir is not None:
            from sol.cluster.reaper import remove_session

            remove_session(self._session_dir)
        if self._reaper is not None:
            try:  # tell the reaper Ray was shut down; it removes what a late log line recreated
                self._reaper.stdin.write("clean\n")
                self._reaper.stdin.close()
            except OSError:
                pass
            self._reaper = None


class _Agent:
    """A Ray actor that runs one agent job (a skill search, the integrator, …)."""

    def run(self, job, spec, args, lease):
        return _call(job, spec, tuple(args), lease)


def _package_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2])


def make_executor(kind: str, *, address: str | None = None, run_id: str = "run") -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address, run_id=run_id)
    raise SolError(f"unknown executor {kind!r}; use ray or local")
