"""Timing: interleaved A/B pairs, two clocks, a bootstrap interval on every speedup, and a race.

Timings on shared machines drift (other processes, frequency, caches). Measuring A and B
alternately (A B A B …) in one process exposes both to the same drift, and the ratio of
medians ignores the odd slow run. It is the only way Sol reports a speedup.

Clocks. On the CPU every run is timed twice: wall time, and the thread CPU time of the calling
thread (``time.thread_time()``), which does not count the time other processes held the core.
With one torch thread (``sol.hardware.configure_cpu_threads``) every op runs on the calling
thread, so its CPU time is the work done; measured on a loaded 2-core machine, wall time of a
generation swung 3x while its CPU time moved a few percent. The speedup is read from the
steadier clock (the smaller spread of per-pair log ratios). With several torch threads CPU time
misses the other threads' work, so only wall time counts. On CUDA, events time the GPU stream.

Intervals. Every speedup carries a percentile-bootstrap interval of the ratio of medians,
resampling whole pairs (both members were measured side by side, so a pair is the unit that
shares the machine's state — Criterion resamples the same way). Fewer than ``MIN_PAIRS`` pairs
give no interval a decision may rest on (``settled`` is False).

Race. :func:`race` times several candidates against one baseline in rounds (the baseline once
per round, every candidate still in the race once, positions rotated), and adds rounds until
the leader's interval lies clear of 1.0 and of every other candidate's, or the budget runs out —
pyperf's "more runs until stable" and Criterion's intervals, combined for a search's finalists.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

MIN_PAIRS = 5  # fewer pairs: the bootstrap interval of a median is too optimistic to decide on
FUTILE = 1.02  # after MIN_PAIRS, a candidate measured below this (interval reaching 1.0) leaves the race
CONFIDENCE = 0.95
RESAMPLES = 2000


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so a timer measures it (no-op on the CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def _on_cuda(device) -> bool:
    return torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory: allocated CUDA memory on a GPU, else the process's peak resident set."""
    if _on_cuda(device):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    if _on_cuda(device):
        torch.cuda.reset_peak_memory_stats()


def clocks(device=None) -> tuple[str, ...]:
    """The clocks a run is timed with here: ``("wall", "cuda")`` on a GPU, ``("wall", "cpu")`` on
    the CPU with one torch thread, ``("wall",)`` otherwise (CPU time would miss other threads).

    >>> "wall" in clocks("cpu")
    True
    """
    if _on_cuda(device):
        return ("wall", "cuda")
    if torch.get_num_threads() == 1:
        return ("wall", "cpu")
    return ("wall",)


def time_once(fn: Callable[[], object], device=None) -> dict[str, float]:
    """Seconds of one call of ``fn`` on every clock of :func:`clocks`."""
    names = clocks(device)
    events = None
    if "cuda" in names:
        events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
    sync(device)
    w0, c0 = time.perf_counter(), time.thread_time()
    if events:
        events[0].record()
    fn()
    if events:
        events[1].record()
    sync(device)
    out = {"wall": time.perf_counter() - w0}
    if "cpu" in names:
        out["cpu"] = time.thread_time() - c0
    if events:
        out["cuda"] = events[0].elapsed_time(events[1]) / 1000.0
    return out


@dataclass
class Timing:
    """Samples of one variant; ``samples_s`` are wall seconds, ``clock_s`` every clock's."""

    samples_s: list[float]
    peak_memory_mb: float = 0.0
    clock_s: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    def median(self, clock: str = "wall") -> float:
        return statistics.median(self.clock_s.get(clock) or self.samples_s)

    def to_json(self) -> dict:
        return {"median_s": self.median_s, "samples_s": self.samples_s, "peak_memory_mb": self.peak_memory_mb,
                "clock_s": self.clock_s}  # fmt: skip


def ratio_interval(
    a: list[float],
    b: list[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``median(a) / median(b)`` over pairs ``(a[i], b[i])``.

    Deterministic (fixed seed): the same samples always give the same interval.

    >>> lo, hi = ratio_interval([2.0, 2.1, 1.9, 2.0, 2.05], [1.0, 1.02, 0.98, 1.0, 1.01])
    >>> 1.8 < lo <= hi < 2.2
    True
    """
    n = min(len(a), len(b))
    if n == 0:
        return (math.nan, math.nan)
    xa, xb = np.asarray(a[:n], dtype=float), np.asarray(b[:n], dtype=float)
    if n == 1:
        r = float(xa[0] / xb[0])
        return (r, r)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    ratios = np.median(xa[idx], axis=1) / np.median(xb[idx], axis=1)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail])
    return (float(lo), float(hi))


def spread(a: list[float], b: list[float]) -> float:
    """Median absolute deviation of the per-pair log ratios: how much one clock's pairs disagree."""
    n = min(len(a), len(b))
    if n < 2:
        return math.inf
    r = np.log(np.asarray(a[:n], dtype=float) / np.asarray(b[:n], dtype=float))
    return float(np.median(np.abs(r - np.median(r))))


@dataclass
class Comparison:
    """A/B timing: ``speedup`` = median(A) / median(B) on the steadier clock, with its interval.

    ``interval`` is the bootstrap interval of that ratio; ``settled`` says whether there are
    enough pairs for it to decide anything (:data:`MIN_PAIRS`).
    """

    a: Timing
    b: Timing
    order: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return min(len(self.a.samples_s), len(self.b.samples_s))

    @property
    def clocks(self) -> list[str]:
        return [c for c in self.a.clock_s if c in self.b.clock_s] or ["wall"]

    def _pair(self, clock: str) -> tuple[list[float], list[float]]:
        return (self.a.clock_s.get(clock) or self.a.samples_s, self.b.clock_s.get(clock) or self.b.samples_s)

    @property
    def clock(self) -> str:
        """The steadier clock: the smaller spread of per-pair log ratios (wall on a tie)."""
        return min(self.clocks, key=lambda c: (spread(*self._pair(c)), c != "wall"))

    def speedup_on(self, clock: str) -> float:
        a, b = self._pair(clock)
        mb = statistics.median(b)
        return statistics.median(a) / mb if mb > 0 else float("inf")

    @property
    def speedup(self) -> float:
        return self.speedup_on(self.clock)

    @property
    def interval(self) -> tuple[float, float]:
        return ratio_interval(*self._pair(self.clock))

    @property
    def settled(self) -> bool:
        return self.pairs >= MIN_PAIRS

    def beats_baseline(self) -> bool:
        """True when the interval lies above 1.0 with enough pairs, and no clock reads a loss."""
        lo, _hi = self.interval
        return self.settled and lo > 1.0 and all(self.speedup_on(c) > 1.0 for c in self.clocks)

    def summary(self) -> dict:
        """Small JSON: the speedup, its interval and clock, pairs, every clock's speedup."""
        lo, hi = self.interval
        return {
            "speedup": self.speedup,
            "interval": [lo, hi],
            "clock": self.clock,
            "pairs": self.pairs,
            "settled": self.settled,
            "beats_baseline": self.beats_baseline(),
            "by_clock": {c: self.speedup_on(c) for c in self.clocks},
            "spread": {c: spread(*self._pair(c)) for c in self.clocks},
            "baseline_s": {c: statistics.median(self._pair(c)[0]) for c in self.clocks},
            "latency_s": {c: statistics.median(self._pair(c)[1]) for c in self.clocks},
        }

    def to_json(self) -> dict:
        return {"a": self.a.to_json(), "b": self.b.to_json(), "order": self.order, **self.summary()}


def _append(t: Timing, sample: dict[str, float]) -> None:
    t.samples_s.append(sample["wall"])
    for k, v in sample.items():
        t.clock_s.setdefault(k, []).append(v)


def measure(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3, device=None) -> Timing:
    """Median latency of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    >>> measure(lambda: sum(range(1000)), repeats=3).median_s > 0
    True
    """
    for _ in range(warmup):
        fn()
    reset_peak_memory(device)
    t = Timing([])
    for _ in range(repeats):
        _append(t, time_once(fn, device))
    t.peak_memory_mb = peak_memory_mb(device)
    return t


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
    a = ("a", fn_a, setup_a, Timing([]))
    b = ("b", fn_b, setup_b, Timing([]))
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
            _append(out, time_once(fn, device))
            order.append(name)
    mem = peak_memory_mb(device)
    a[3].peak_memory_mb = b[3].peak_memory_mb = mem
    return Comparison(a[3], b[3], order)


@dataclass
class RaceResult:
    """Every candidate's comparison with the shared baseline, and why the race stopped."""

    comparisons: dict[str, Comparison]
    rounds: int
    stopped: str
    dropped: dict[str, str] = field(default_factory=dict)  # name -> why it left the race early

    def to_json(self) -> dict:
        return {"rounds": self.rounds, "stopped": self.stopped, "dropped": self.dropped,
                "comparisons": {k: c.summary() for k, c in self.comparisons.items()}}  # fmt: skip


def race(
    baseline: Callable[[int], object],
    candidates: dict[str, Callable[[int], object]],
    *,
    min_pairs: int = MIN_PAIRS,
    max_pairs: int = 15,
    budget_s: float | None = None,
    warmup: int = 1,
    device=None,
    on_round: Callable[[int, dict[str, Comparison]], None] | None = None,
    before: dict[str, Callable[[], object]] | None = None,
    after: dict[str, Callable[[], object]] | None = None,
) -> RaceResult:
    """Time ``candidates`` against ``baseline`` in rounds until the leader is clear, or the budget ends.

    Each callable takes the round index (e.g. to cycle through a workload's prompts: baseline and
    candidates of one round run the same one). A round times the baseline once and every candidate
    still racing once; the baseline goes first on even rounds and last on odd ones, and the
    candidates' order rotates. After ``min_pairs`` rounds a candidate leaves the race when its
    interval lies wholly below the leader's, or wholly below 1.0 (a loss), or when it measures
    below ``FUTILE`` with an interval reaching 1.0 (no gain worth more pairs). The race stops when the
    leader's interval lies above 1.0 and clear of every other racing candidate's (``separated``),
    when only losers are left, at ``max_pairs`` rounds, or when ``budget_s`` of wall time is spent.
    ``before`` / ``after`` (by candidate name) run untimed around each of its runs, e.g. to switch
    a library's cache on for it and off again for everyone else.

    >>> r = race(lambda i: sum(range(20_000)), {"same": lambda i: sum(range(20_000))}, max_pairs=6)
    >>> r.comparisons["same"].pairs >= 5
    True
    """
    names = list(candidates)
    base = {n: Timing([]) for n in names}
    cand = {n: Timing([]) for n in names}
    orders: dict[str, list[str]] = {n: [] for n in names}
    racing = list(names)
    dropped: dict[str, str] = {}
    before, after = before or {}, after or {}

    def run(n: str, r: int) -> dict[str, float]:
        if n in before:
            before[n]()
        try:
            return time_once(lambda: candidates[n](r), device)
        finally:
            if n in after:
                after[n]()

    for _ in range(warmup):
        baseline(0)
        for n in names:
            if n in before:
                before[n]()
            candidates[n](0)
            if n in after:
                after[n]()
    t_start = time.perf_counter()
    rounds, stopped = 0, "max_pairs"

    def comparisons() -> dict[str, Comparison]:
        return {n: Comparison(base[n], cand[n], orders[n]) for n in names}

    while racing:
        if rounds >= max_pairs:
            stopped = "max_pairs"
            break
        if budget_s is not None and rounds >= min_pairs and time.perf_counter() - t_start > budget_s:
            stopped = "budget"
            break
        k = rounds % len(racing)
        lineup = racing[k:] + racing[:k]
        b_first = rounds % 2 == 0
        b_sample = None
        if b_first:
            b_sample = time_once(lambda r=rounds: baseline(r), device)
        samples = {n: run(n, rounds) for n in lineup}
        if not b_first:
            b_sample = time_once(lambda r=rounds: baseline(r), device)
        for n in lineup:
            _append(base[n], b_sample)
            _append(cand[n], samples[n])
            orders[n] += ["a", "b"] if b_first else ["b", "a"]
        rounds += 1
        if rounds < min_pairs:
            continue
        cmps = comparisons()
        if on_round is not None:
            on_round(rounds, cmps)
        ivs = {n: cmps[n].interval for n in racing}
        leader = max(racing, key=lambda n: cmps[n].speedup)
        for n in list(racing):
            if ivs[n][1] < 1.0:
                racing.remove(n)
                dropped[n] = f"slower than the baseline: interval {ivs[n][0]:.2f}-{ivs[n][1]:.2f}x"
            elif cmps[n].speedup < FUTILE and ivs[n][0] <= 1.0:
                # More pairs would only narrow an interval around "no gain": not worth the machine time.
                racing.remove(n)
                dropped[n] = f"no gain: {cmps[n].speedup:.2f}x, interval {ivs[n][0]:.2f}-{ivs[n][1]:.2f}x"
            elif n != leader and ivs[n][1] < ivs[leader][0]:
                racing.remove(n)
                dropped[n] = f"behind {leader}: {ivs[n][1]:.2f}x < {ivs[leader][0]:.2f}x"
        if not racing:
            stopped = "only losses"
            break
        # Everyone still racing overlaps the leader (the rule above removed the rest): the race is
        # decided once the leader alone is left and clear of 1.0.
        if racing == [leader] and ivs[leader][0] > 1.0:
            stopped = "separated"
            break
    mem = peak_memory_mb(device)
    out = comparisons()
    for c in out.values():
        c.a.peak_memory_mb = c.b.peak_memory_mb = mem
    return RaceResult(out, rounds, stopped, dropped)


def as_dict(obj) -> dict:
    return asdict(obj)
