"""The interleaved timer: identical variants give ~1.0, twice the work gives ~2.0."""

import torch

from sol.bench.timing import interleaved, measure

# torch (one thread, see conftest) rather than numpy: OpenBLAS threads spin under load.
A = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))


def work(n: int):
    def fn():
        for _ in range(n):
            A @ A

    return fn


def test_identical_variants_ratio_close_to_one():
    cmp = interleaved(work(60), work(60), warmup=1, repeats=11)
    assert 0.8 < cmp.speedup < 1.25, cmp.to_json()
    assert cmp.order[:4] == ["a", "b", "b", "a"]  # alternating who goes first


def test_double_work_ratio_close_to_two():
    cmp = interleaved(work(120), work(60), warmup=1, repeats=11)
    assert 1.6 < cmp.speedup < 2.5, cmp.to_json()


def test_setup_runs_untimed_before_each_call():
    seen = []
    interleaved(lambda: seen.append("A"), lambda: seen.append("B"), warmup=0, repeats=2,
                setup_a=lambda: seen.append("sa"), setup_b=lambda: seen.append("sb"))  # fmt: skip
    assert seen == ["sa", "A", "sb", "B", "sb", "B", "sa", "A"]


def test_measure_reports_median_and_memory():
    t = measure(work(5), warmup=1, repeats=3)
    assert len(t.samples_s) == 3 and t.median_s > 0 and t.peak_memory_mb > 0
