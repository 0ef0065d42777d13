"""Timing: medians after warm-up, and the interleaved A/B ratio of medians.

Timings on shared machines drift (other processes, frequency, caches). Measuring A and B
alternately (A B A B …) in one process exposes both to the same drift, and the ratio of
medians ignores the odd slow run. It is the only way Sol reports a speedup.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so a timer measures it (no-op on the CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory: allocated CUDA memory on a GPU, else the process's peak resident set."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.reset_peak_memory_stats()


@dataclass
class Timing:
    samples_s: list[float]
    peak_memory_mb: float = 0.0

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    def to_json(self) -> dict:
        return {"median_s": self.median_s, "samples_s": self.samples_s, "peak_memory_mb": self.peak_memory_mb}


@dataclass
class Comparison:
    """A/B timing: ``speedup`` = median(A) / median(B), i.e. how much faster B is than A."""

    a: Timing
    b: Timing
    order: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.a.median_s / self.b.median_s if self.b.median_s > 0 else float("inf")

    def to_json(self) -> dict:
        return {"a": self.a.to_json(), "b": self.b.to_json(), "speedup": self.speedup, "order": self.order}


def _timed(fn: Callable[[], object], device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def measure(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3, device=None) -> Timing:
    """Median latency of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    >>> measure(lambda: sum(range(1000)), repeats=3).median_s > 0
    True
    """
    for _ in range(warmup):
        fn()
    reset_peak_memory(device)
    samples = [_timed(fn, device) for _ in range(repeats)]
    return Timing(samples, peak_memory_mb(device))


def interleaved(
    fn_a: Callable[[], object],
    fn_b: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device=None,
    setup_a: Callable[[], object] | None = None,
    setup_b: Callable[[], object] | None = None,
) -> Comparison:
    """Time A and B alternately (A B A B …) after warming both; ``speedup`` is B over A.

    ``setup_a`` / ``setup_b`` run untimed before each call of A / B (e.g. switching a
    pipeline between its baseline and accelerated state).

    >>> c = interleaved(lambda: sum(range(10_000)), lambda: sum(range(10_000)), repeats=5)
    >>> 0.5 < c.speedup < 2.0
    True
    """
    a = ("a", fn_a, setup_a, [])
    b = ("b", fn_b, setup_b, [])
    for _ in range(warmup):
        for _name, fn, setup, _out in (a, b):
            if setup is not None:
                setup()
            fn()
    order: list[str] = []
    reset_peak_memory(device)
    for i in range(repeats):
        # Alternate which goes first so neither always follows the other's cache state.
        for name, fn, setup, out in (a, b) if i % 2 == 0 else (b, a):
            if setup is not None:
                setup()
            out.append(_timed(fn, device))
            order.append(name)
    sa, sb = a[3], b[3]
    mem = peak_memory_mb(device)
    return Comparison(Timing(sa, mem), Timing(sb, mem), order)


def as_dict(obj) -> dict:
    return asdict(obj)
