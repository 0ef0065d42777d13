"""Device leases: no two latency measurements on one device at the same time.

Searches and metrics may run side by side; only the timed sections hold the lease.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid


class ThreadLease:
    """A lease shared by threads of one process (the local executor)."""

    def __init__(self):
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            yield


class LeaseServer:
    """State of a Ray lease actor: one holder per device at a time, with the holders' history."""

    def __init__(self):
        self.holder: str | None = None
        self.history: list[tuple[str, float, float]] = []  # (holder, start, end)
        self._since = 0.0

    def try_acquire(self, holder: str) -> bool:
        if self.holder is None:
            self.holder, self._since = holder, time.time()
            return True
        return self.holder == holder

    def release(self, holder: str) -> None:
        if self.holder == holder:
            self.history.append((holder, self._since, time.time()))
            self.holder = None

    def get_history(self) -> list[tuple[str, float, float]]:
        return list(self.history)


class RayLease:
    """Client side of a Ray lease actor; picklable, so actors receive it as an argument."""

    def __init__(self, actor, poll_s: float = 0.1):
        self.actor = actor
        self.poll_s = poll_s

    @contextlib.contextmanager
    def __call__(self):
        import ray

        holder = uuid.uuid4().hex
        while not ray.get(self.actor.try_acquire.remote(holder)):
            time.sleep(self.poll_s)
        try:
            yield
        finally:
            ray.get(self.actor.release.remote(holder))
