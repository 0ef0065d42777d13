"""Never approve a loss: a technique that slows the model is timed, loses, and no plan is exported.

The slow technique is a test-only skill registered in a fixture (as tests/skills/test_framework.py
does): it runs every transformer block twice and returns the second result, so its outputs are
exact (PSNR inf: it passes every quality check) and it does twice the block work. The run is real:
LangGraph, the local executor, the tiny random Wan, CPU-time timing with a bootstrap interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from sol.agent import driver
from sol.agent.nodes import _decide
from sol.errors import SolError
from sol.hooks import Installation, ModelHook
from sol.skills import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.base import unregister_skill

TINY = {
    "name": "tiny",
    "prompts": ["a red circle moving right"],
    "num_frames": 5,
    "height": 32,
    "width": 32,
    "num_inference_steps": 4,
    "guidance_scale": 4.5,
    "validation_prompts": ["a blue square moving up"],
    "validation_seeds": [1],
}


class Slow(TechniqueConfig):
    kind: Literal["test.slow"] = "test.slow"
    repeats: int = 2


class _Repeat(ModelHook):
    def __init__(self, repeats: int):
        super().__init__()
        self.repeats = repeats

    def new_forward(self, module, *args, **kwargs):
        for _ in range(self.repeats - 1):
            self.fn_ref.original_forward(*args, **kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)


@pytest.fixture
def slow_skill():
    @register_skill(Slow)
    class SlowSkill(Skill):
        name = "testslow"
        phase = Phase.STEPS
        # Declared as a kernel change: the cost model cannot price it, so the search must time it
        # (a technique it prices below 1.0x is never timed at all).
        writes = frozenset({Seam.BLOCK_OUTPUT, Seam.KERNEL_FUSION})

        def apply(self, pipe, config, adapter):
            inst = Installation(config.kind)
            for block in adapter.blocks():
                inst.hook(block, _Repeat(config.repeats), "test_slow", root=adapter.transformer)
            return inst

        def examples(self):
            return [Slow()]

        def search_space(self, context):
            return [Slow(repeats=2)]

    yield
    unregister_skill(Slow)


def test_a_technique_that_slows_the_model_is_never_approved(tmp_path, slow_skill):
    wl = tmp_path / "tiny.json"
    wl.write_text(json.dumps(TINY))
    runs = tmp_path / "runs"
    out = driver.start(model="tiny-wan-random", gpu="cpu", workload=str(wl), effort="quick", skills=["testslow"],
                       executor="local", approve="auto", runs_dir=runs)  # fmt: skip
    assert out.plan is None and not (out.run_dir / "plan.json").exists()
    assert "no candidate beat the baseline" in out.status and "no plan exported" in out.status
    cands = out.values["summary"]
    assert cands and not any(c["passed"] or c["beats_baseline"] for c in cands), cands
    assert "does not lie above 1.0" in cands[0]["why"]
    lo, _hi = cands[0]["interval"]
    # What refuses it is the interval reaching below 1.0. Its median is not asserted: this is a
    # unit test, not a benchmark, and 5 pairs on a loaded machine are wide (0.52-1.06x once, and
    # 0.95x median, 0.68x at the low end, as the first test of a fresh-clone `make test`). The
    # doubled work itself is checked below from the counted calls, which do not depend on the clock.
    assert lo < 1.0
    front = json.loads((out.run_dir / "skills" / "testslow.json").read_text())
    timed = front["full"][0]
    assert (
        not timed["predicted"]["modelled"] and timed["predicted"]["speedup"] < 0.9
    )  # it saw twice the calls
    assert timed["timing"]["pairs"] >= 5 and not timed["timing"]["beats_baseline"]
    html = (out.run_dir / "report.html").read_text()
    assert "no candidate beat the baseline" in html
    # Nothing to approve by hand either: a one-line refusal, no plan.
    with pytest.raises(SolError, match="not waiting for approval") as err:
        driver.approve(out.run_dir.name, cands[0]["id"], runs_dir=runs)
    assert "\n" not in str(err.value)
    assert not (out.run_dir / "plan.json").exists()


def _cand(interval, gate=True, validation=True):
    c = {"speedup": sum(interval) / 2, "timing": {"interval": list(interval), "beats_baseline": interval[0] > 1.0},
         "verdict": {"passed": gate, "checks": []}}  # fmt: skip
    c["validation"] = {"checked": True, "passed": validation, "verdict": {"passed": validation, "checks": []}}
    return c


def test_approval_needs_gate_interval_above_one_and_the_held_out_check():
    assert _decide(_cand((1.3, 1.6)), True, True) == {"passed": True, "beats_baseline": True, "why": ""}
    d = _decide(_cand((0.95, 1.2)), True, True)
    assert not d["passed"] and "interval 0.95-1.20x does not lie above 1.0" in d["why"]
    d = _decide(_cand((1.3, 1.6), validation=False), True, True)
    assert not d["passed"] and d["why"].startswith("held-out split")
    assert _decide(_cand((1.3, 1.6), validation=False), True, False)["passed"]  # no split: not required
    not_checked = {**_cand((1.3, 1.6)), "validation": {"checked": False}}
    assert "not re-checked on the held-out split" in _decide(not_checked, True, True)["why"]
    assert not _decide(_cand((1.3, 1.6)), False, True)["passed"]
    # make demo: thread CPU time cleared 1.0 (1.11-1.39x) while the wall clock read 0.83x.
    split = _cand((1.11, 1.39))
    split["timing"].update(beats_baseline=False, clock="cpu", by_clock={"cpu": 1.29, "wall": 0.83})
    d = _decide(split, True, True)
    assert not d["passed"] and "the wall clock reads 0.83x" in d["why"] and "does not lie" not in d["why"]


def test_manual_approval_of_a_candidate_that_does_not_qualify_is_refused(monkeypatch, tmp_path):
    # The graph pause itself is exercised in test_optimize.py; here only the refusal's message.
    from sol.agent import driver as d

    interrupt = {"candidates": [{"id": "c1", "passed": False, "why": "speedup 0.97x, interval 0.90-1.05x does not"
                                 " lie above 1.0"}, {"id": "c2", "passed": True, "why": ""}]}  # fmt: skip
    monkeypatch.setattr(
        d, "_waiting", lambda run, runs_dir: (Path(tmp_path), d.RunOutcome(tmp_path, "", {}, interrupt))
    )
    with pytest.raises(
        SolError, match=r"candidate c1 cannot be approved: speedup 0.97x.*approve one that qualifies \(c2\)"
    ):
        d.approve("run", "c1", runs_dir=tmp_path)
