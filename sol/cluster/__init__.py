"""Where agents run: in this process (``local``) or as Ray actors (``ray``), sharing devices by lease."""

from sol.cluster.executor import Executor, LocalExecutor, RayExecutor, make_executor
from sol.cluster.lease import ThreadLease

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "ThreadLease", "make_executor"]
