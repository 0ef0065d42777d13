"""Executors run agent jobs: in this process, or each in its own Ray actor.

A job is a module-level function (the agent's ``sol.agent.jobs``; Ray pickles it by reference,
so this package never imports the agent) called with small JSON arguments and a ``lease``
keyword; results are small JSON too (big data goes to the run folder). A Ray actor that dies
is retried once on a fresh actor, then its job is reported as failed; the run goes on without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from sol.cluster.lease import LeaseServer, RayLease, ThreadLease
from sol.errors import SolError

log = logging.getLogger(__name__)


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
        try:
            return _call(job, spec, args, self.lease)
        except SolError:
            raise
        except Exception as e:
            raise JobFailed(f"{_job_name(job)} failed: {type(e).__name__}: {e}") from e


class RayExecutor(Executor):
    """Each job runs in a Ray actor; ``address`` joins a cluster, otherwise Ray starts here.

    On one machine actors take half a CPU each (two 1-CPU actors on a 2-core box leave a
    third waiting forever); on a cluster with GPUs each agent asks for one GPU.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, *, run_id: str = "run", num_cpus: float = 0.5):
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not ray.is_initialized():
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
                ray.init(**kwargs)
            except ConnectionError as e:
                raise SolError(
                    f"cannot join the Ray cluster at {address} ({e}); check --ray-address"
                ) from None
        self.run_id = run_id
        self.num_cpus = num_cpus
        self.num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        lease_actor = ray.remote(num_cpus=0)(LeaseServer)
        self.lease_actor = lease_actor.options(name=f"sol-lease-{run_id}", get_if_exists=True).remote()
        self.lease = RayLease(self.lease_actor)
        self._agent_cls = ray.remote(_Agent)

    def run(self, job, spec, *args, name=None):
        import ray
        from ray.exceptions import RayActorError

        name = name or _job_name(job)
        last = None
        for attempt in (1, 2):
            actor = self._agent_cls.options(
                name=f"sol-{self.run_id}-{name}-{attempt}",
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus,
                max_restarts=0,
            ).remote()
            try:
                return ray.get(actor.run.remote(job, spec, args, self.lease))
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

        if ray.is_initialized():
            ray.shutdown()


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
