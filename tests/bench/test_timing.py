"""The interleaved timer and the race: identical variants read "no difference" (their interval
includes 1.0), twice the work reads ~2x, and the race stops once the leader is clear.

These are the only timed assertions in the unit tests, and they are statistical: thread CPU time
(one torch thread, see conftest) beside wall time, the steadier of the two, 15 pairs, so a loaded
machine moves the interval but not the verdict.
"""

import math

import pytest
import torch

from sol.bench.timing import MIN_PAIRS, clocks, interleaved, measure, race, ratio_interval, spread

# torch (one thread, see conftest) rather than numpy: OpenBLAS threads spin under load.
A = torch.randn(192, 192, generator=torch.Generator().manual_seed(0))


def work(n: int):
    def fn(*_):
        for _ in range(n):
            A @ A

    return fn


def test_cpu_time_is_a_clock_with_one_thread():
    assert torch.get_num_threads() == 1
    assert clocks("cpu") == ("wall", "cpu")


def test_identical_variants_read_no_difference():
    cmp = interleaved(work(40), work(40), warmup=1, repeats=15)
    lo, hi = cmp.interval
    assert lo <= 1.0 <= hi, cmp.summary()
    assert not cmp.beats_baseline()
    assert 0.85 < cmp.speedup < 1.18, cmp.summary()
    assert cmp.order[:4] == ["a", "b", "b", "a"]  # alternating who goes first


def test_double_work_reads_about_two():
    cmp = interleaved(work(80), work(40), warmup=1, repeats=15)
    lo, hi = cmp.interval
    assert 1.7 < cmp.speedup < 2.3, cmp.summary()
    assert lo > 1.0 and cmp.beats_baseline(), cmp.summary()
    assert set(cmp.summary()["by_clock"]) == {"wall", "cpu"}


def test_too_few_pairs_never_decide():
    cmp = interleaved(work(80), work(10), warmup=0, repeats=MIN_PAIRS - 1)
    assert cmp.speedup > 1.5 and not cmp.settled and not cmp.beats_baseline()


def test_bootstrap_interval_is_deterministic_and_covers_the_ratio():
    a, b = [2.0, 2.2, 1.9, 2.1, 2.0, 2.3], [1.0, 1.1, 0.9, 1.0, 1.05, 1.0]
    assert ratio_interval(a, b) == ratio_interval(a, b)
    lo, hi = ratio_interval(a, b)
    assert lo < 2.0 / 1.0 < hi
    assert spread([1.0] * 4, [1.0] * 4) == 0.0 and math.isinf(spread([1.0], [1.0]))


def test_race_drops_a_loser_and_separates_the_leader():
    res = race(work(60), {"half": work(30), "slower": work(90), "same": work(60)}, max_pairs=15)
    cmps = res.comparisons
    assert cmps["half"].beats_baseline() and 1.6 < cmps["half"].speedup < 2.5, res.to_json()
    assert "slower" in res.dropped and not cmps["slower"].beats_baseline()
    assert not cmps["same"].beats_baseline()
    assert res.stopped in ("separated", "max_pairs"), res.stopped
    # Losers stop early: they ran fewer rounds than the leader.
    assert cmps["slower"].pairs <= cmps["half"].pairs


def test_race_passes_the_round_to_both_sides():
    seen = []
    race(
        lambda i: seen.append(("b", i)),
        {"c": lambda i: seen.append(("c", i))},
        warmup=0,
        max_pairs=2,
        min_pairs=2,
    )
    assert seen == [("b", 0), ("c", 0), ("c", 1), ("b", 1)]


def test_setup_runs_untimed_before_each_call():
    seen = []
    interleaved(lambda: seen.append("A"), lambda: seen.append("B"), warmup=0, repeats=2,
                setup_a=lambda: seen.append("sa"), setup_b=lambda: seen.append("sb"))  # fmt: skip
    assert seen == ["sa", "A", "sb", "B", "sb", "B", "sa", "A"]


def test_measure_reports_median_and_memory():
    t = measure(work(5), warmup=1, repeats=3)
    assert len(t.samples_s) == 3 and t.median_s > 0 and t.peak_memory_mb > 0
    assert set(t.clock_s) == {"wall", "cpu"}


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_samples_give_an_interval(n):
    lo, hi = ratio_interval([2.0] * n, [1.0] * n)
    assert lo == hi == 2.0
