"""A model that cannot fit is refused in one line before it is built or loaded.

``--layers 100000`` on a preset used all 23 GB of the machine and drew the out-of-memory killer
(exit 137, no message); ``wan2.1-14b-arch`` needs ~56 GB in float32 yet ``sol models`` listed it as
available. The estimate (parameters x bytes, plus the decoded video and the VAE's working set at the
workload's size) is a lower bound, so a refusal is never a false alarm.
"""

from __future__ import annotations

import time

import pytest

import sol.models.loading as loading
from sol.errors import SolError
from sol.models.builders import PRESETS
from sol.workload import load_workload

GiB = 2**30


@pytest.fixture
def small_machine(monkeypatch):
    """This machine with 16 GiB of RAM: the refusals must not depend on the CI machine's size
    (the only thing replaced; the estimates are real)."""
    monkeypatch.setattr(
        loading, "machine_memory", lambda hardware=None: loading.MachineMemory(16 * GiB, "RAM")
    )


@pytest.mark.parametrize("name", ["tiny-wan-random", "tiny-wan2.2-random", "wan2.1-1.3b-arch"])
def test_the_parameter_table_matches_a_meta_device_build(name):
    """The shipped counts (what keeps `sol models` instant) equal a fresh count on the meta device."""
    key, one, per = loading.PRESET_PARAMS[name]
    assert key == loading._preset_key(name)
    loading._preset_params.cache_clear()
    saved = loading.PRESET_PARAMS.pop(name)
    try:
        assert loading._preset_params(name) == (one, per)
    finally:
        loading.PRESET_PARAMS[name] = saved
        loading._preset_params.cache_clear()


def test_every_preset_has_an_estimate():
    for name in PRESETS:
        need = loading.estimate_memory(name)
        assert need is not None and need.params > 0, name
    # The published sizes, within a few percent (random weights, all components counted).
    assert 1.3e9 < loading.estimate_memory("wan2.1-1.3b-arch").params < 1.5e9
    assert 13.5e9 < loading.estimate_memory("wan2.1-14b-arch").params < 15e9


def test_a_huge_preset_or_depth_is_refused_before_anything_is_built(small_machine, monkeypatch):
    def never(*a, **k):
        raise AssertionError("built a model that cannot fit")

    monkeypatch.setattr(loading, "build_preset", never)
    t0 = time.monotonic()
    for model, layers in [
        ("wan2.1-14b-arch", None),
        ("wan2.1-1.3b-arch", 100_000),
        ("tiny-wan-random", 10**9),
    ]:
        with pytest.raises(SolError) as e:
            loading.load_model(model, layers=layers)
        msg = str(e.value)
        assert (
            "needs at least" in msg and "16.0 GB of RAM" in msg and "--layers" in msg and "\n" not in msg
        ), msg
    assert time.monotonic() - t0 < 5.0


def test_a_workload_too_large_for_the_machine_is_refused_naming_it(small_machine):
    wl = load_workload("default", height=8192, width=8192, num_frames=65)
    with pytest.raises(SolError, match="video of default.*use a smaller workload"):
        loading.check_fits("sol-tiny-wan", workload=wl)
    loading.check_fits("sol-tiny-wan", workload=load_workload("long"))  # the shipped workloads fit


def test_agents_that_each_load_a_copy_are_counted(small_machine):
    loading.check_fits("wan2.1-1.3b-arch")  # ~5.3 GB: one copy fits in 16
    with pytest.raises(SolError, match="x 4 agents.*--skills"):
        loading.check_fits("wan2.1-1.3b-arch", copies=4)


def test_sol_models_says_which_presets_fit(small_machine):
    rows = {r["name"]: r for r in loading.list_models()}
    assert rows["tiny-wan-random"]["fits"] is True
    assert rows["wan2.1-14b-arch"]["fits"] is False and rows["wan2.1-14b-arch"]["memory_gb"] > 50
    assert rows["wan2.2-a14b-arch"]["fits"] is False
    assert rows["wan"]["fits"] is None  # a family row: any folder of it, no size to tell
