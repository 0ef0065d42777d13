"""The skill framework: phases, the effect check on reads, optional packages, test-only skills
registered in fixtures, and an evaluator that applies a candidate once and reverts it once."""

from __future__ import annotations

from typing import Literal

import pytest

from sol.bench.evaluate import Evaluator
from sol.errors import ConflictError, SolError
from sol.hooks import Installation
from sol.skills import Phase, Seam, Skill, TechniqueConfig, compose, register_skill, registered_kinds
from sol.skills.base import apply_all, skill_for, unregister_skill
from sol.skills.cache import StepOutputCacheConfig, TextKVCacheConfig


class WritesText(TechniqueConfig):
    kind: Literal["test.writes_text"] = "test.writes_text"


class ReadsText(TechniqueConfig):
    kind: Literal["test.reads_text"] = "test.reads_text"


class NeedsPackage(TechniqueConfig):
    kind: Literal["test.needs_package"] = "test.needs_package"


class Counting(TechniqueConfig):
    kind: Literal["test.counting"] = "test.counting"


APPLIED: list[str] = []


class _Base(Skill):
    name = "test"

    def apply(self, pipe, config, adapter):
        APPLIED.append(f"apply {adapter.name}")
        inst = Installation(config.kind)
        inst.on_revert(lambda: APPLIED.append("revert"))
        inst.counter_fn = lambda: {"test_units": 3}
        return inst

    def examples(self):
        return [self.config_type()]


@pytest.fixture
def test_skills():
    """Throw-away skills, registered for one test and removed after it."""
    defs = [
        (WritesText, dict(writes=frozenset({Seam.TEXT_KV}), phase=Phase.TEXT)),
        (ReadsText, dict(reads=frozenset({Seam.TEXT_KV}), phase=Phase.TEXT)),
        (
            NeedsPackage,
            dict(packages=("sol_no_such_package",), install_hint="pip install sol-no-such-package"),
        ),
        (Counting, dict(phase=Phase.TOKENS)),
    ]
    for cfg, attrs in defs:
        register_skill(cfg)(type(f"{cfg.__name__}Skill", (_Base,), attrs))
    APPLIED.clear()
    yield
    for cfg, _ in defs:
        unregister_skill(cfg)
    assert "test.counting" not in registered_kinds()


def test_phases_are_named_and_ordered():
    assert Phase.WEIGHTS < Phase.KERNELS < Phase.ATTENTION < Phase.TOKENS < Phase.TEXT < Phase.STEPS
    assert skill_for(TextKVCacheConfig()).phase is Phase.TEXT


def test_a_read_of_a_seam_written_in_the_same_phase_is_refused(test_skills, tiny):
    with pytest.raises(
        ConflictError, match=r"test.writes_text writes the text_kv seam that test.reads_text reads"
    ):
        compose([ReadsText(), WritesText()], tiny.adapter)
    # Across phases the order is the phases': a step cache after text K/V reuse is fine.
    assert compose([StepOutputCacheConfig(), TextKVCacheConfig()], tiny.adapter)[0] == TextKVCacheConfig()


def test_a_skill_whose_package_is_missing_stays_registered_and_says_why(test_skills, tiny):
    from sol.hardware import detect_cpu

    assert "test.needs_package" in registered_kinds()
    why = skill_for(NeedsPackage()).available(detect_cpu())
    assert "sol_no_such_package" in why and "pip install sol-no-such-package" in why
    with pytest.raises(
        SolError, match=r"needs the sol_no_such_package package.*pip install sol-no-such-package"
    ):
        apply_all(tiny.pipe, [NeedsPackage()], tiny.adapter)
    assert APPLIED == []  # refused before anything was applied


def test_the_evaluator_applies_once_reverts_once_and_keeps_counters(test_skills, tiny, tiny_workload):
    ev = Evaluator(tiny, tiny_workload, repeats=2, warmup=1)
    APPLIED.clear()
    r = ev.evaluate([Counting()])
    assert r.ok, r.reason
    assert APPLIED == ["apply transformer", "revert"]  # not around every timed run
    assert r.work == {"test_units": 3.0}
    assert r.first_run_s is not None and r.first_run_s > 0 and r.latency_s is not None
    assert r.calls == r.baseline_calls  # probes count the same work: the technique skips nothing
