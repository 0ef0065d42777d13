"""The search funnel: a quality screen that predicts the worst unseen video, knob bisection round
after round, successive halving to the whole split, and a race of the finalists only."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from pydantic import Field

from sol.bench.costmodel import fit_cost_model
from sol.bench.evaluate import CandidateResult, Evaluator
from sol.hardware import detect
from sol.integrator.screening import Screen, t_quantile
from sol.integrator.skill_search import SearchPlan, search_skill
from sol.skills import SearchContext, Skill, TechniqueConfig, register_skill
from sol.skills.base import skill_for, unregister_skill
from sol.skills.cache import StepOutputCacheConfig
from sol.skills.search import bisect_threshold
from sol.workload import Workload


def _res(label, psnrs, ok=True):
    return CandidateResult(label=label, techniques=[], workload="w", ok=ok,
                           fidelity={"psnr_min": min(psnrs), "videos": [{"psnr": p} for p in psnrs]})  # fmt: skip


def test_student_t_quantiles():
    assert math.isclose(t_quantile(0.975, 7), 2.365, abs_tol=2e-3)
    assert math.isclose(t_quantile(0.95, 3), 2.353, abs_tol=5e-3)
    assert math.isclose(t_quantile(0.975, 5000), 1.960, abs_tol=1e-3)


def test_the_screen_keeps_a_margin_measured_from_the_spread():
    sc = Screen(min_psnr=30.0, unseen=8)
    steady = _res("steady", [36.0, 36.5, 35.8, 36.2, 36.4, 35.9, 36.1, 36.3])
    spread = _res(
        "spread", [45.0, 31.0, 40.0, 33.0, 44.0, 38.0, 42.0, 35.0]
    )  # worst seen 31: above the floor
    assert sc.judge(steady)["passes"]
    j = sc.judge(spread)
    assert not j["passes"] and j["predicted_worst"] < 30.0 < j["observed_worst"] and j["margin"] > 1.0
    # A lossless candidate passes; a failed one never does.
    assert sc.judge(_res("exact", [math.inf] * 3))["passes"]
    assert not sc.judge(_res("broken", [40.0], ok=False))["passes"]
    # Two videos say little on their own: the spread pooled over what the search saw is used.
    for r in (steady, spread):
        sc.observe(r)
    two = _res("two", [38.0, 38.2])
    pooled, df = sc.pooled
    assert df == 14 and pooled > 2.0
    assert sc.predicted_worst(two)[1] == pytest.approx(pooled)
    # Judging the videos seen only (the gate on a split it runs on): the worst against the floor.
    held = Screen(min_psnr=30.0, predictive=False)
    assert held.judge(spread)["passes"] and not held.judge(_res("low", [29.9, 40.0]))["passes"]


def test_a_nearly_exact_video_does_not_drag_the_predicted_worst_down():
    # FirstBlockCache 0.05 on sol-tiny-wan: one prompt where the cache never fired (exact), seven
    # at 42-58 dB; its worst held-out video was 48 dB. The two-sided spread had put the bound at 22.
    sc = Screen(min_psnr=30.0, unseen=8)
    seen = [51.8, 58.3, 44.6, 42.6, 43.8, 54.2, 45.2]
    with_exact, with_typical = _res("a", seen + [math.inf]), _res("b", seen + [50.0])
    exact, typical = sc.predicted_worst(with_exact)[0], sc.predicted_worst(with_typical)[0]
    assert abs(exact - typical) < 2.0 and sc.judge(with_exact)["passes"]
    # The lower spread of two videos is their usual sample spread: pairs screen as they did.
    assert sc.predicted_worst(_res("pair", [40.0, 44.0]))[1] == pytest.approx(math.sqrt(8.0))


def test_cheap_screens_filter_at_the_early_confidence_and_the_whole_split_holds_the_stated_one():
    from sol.integrator.screening import CONFIDENCE, EARLY_CONFIDENCE

    strict, staged = Screen(min_psnr=30.0, unseen=8), Screen(min_psnr=30.0, unseen=8, full_videos=8)
    for sc in (strict, staged):
        for i in range(8):  # a pooled spread of about 4 dB
            sc.observe(_res(f"p{i}", [37.0, 43.0]))
    pair = _res("pair", [36.0, 40.0])
    assert EARLY_CONFIDENCE < CONFIDENCE
    # Two videos of eight: kept for more videos, where the stated confidence would have dropped it.
    assert staged.judge(pair)["passes"] and not strict.judge(pair)["passes"]
    whole = _res("whole", [40.0, 43.0, 36.0, 44.0, 41.0, 35.0, 42.0, 39.0])
    assert staged.predicted_worst(whole) == strict.predicted_worst(whole)


def test_bisection_follows_the_screen_not_the_seen_worst():
    class R:
        def __init__(self, t, psnr, passes):
            self.techniques = [
                StepOutputCacheConfig(threshold=t, coefficients=(1.0,)).model_dump(mode="json")
            ]
            self.ok, self.psnr, self.speedup, self.screen = True, psnr, None, {"passes": passes}
            self.predicted_speedup = 1 + t / 4

    # Both meet the floor on the videos seen, but the screen predicts 3.5 fails on unseen ones.
    got = bisect_threshold([R(1.5, 36, True), R(3.5, 31, False)], StepOutputCacheConfig, 30.0)
    assert [c.threshold for c in got] == [2.5]


class Every(TechniqueConfig):
    """Test-only: step-output caching on a fixed schedule, knob ``every`` (compute every k-th step)."""

    kind: Literal["test.every"] = "test.every"
    every: int = Field(2, ge=1)


@pytest.fixture
def every_skill():
    @register_skill(Every)
    class EverySkill(Skill):
        name = "testevery"
        writes = frozenset(skill_for(StepOutputCacheConfig()).writes)

        def _inner(self, c):
            return StepOutputCacheConfig(
                threshold=c.every - 0.5, coefficients=(1.0,), warmup_steps=1, final_steps=0
            )

        def apply(self, pipe, config, adapter):
            return skill_for(StepOutputCacheConfig()).apply(pipe, self._inner(config), adapter)

        def examples(self):
            return [Every()]

        def search_space(self, context):
            return [Every(every=2), Every(every=5)]

        def refine(self, context, results):
            return bisect_threshold(results, Every, context.min_psnr, field="every", integer=True)

    yield
    unregister_skill(Every)


def test_the_funnel_screens_cheap_halves_and_races_only_finalists(tiny, every_skill):
    wl = Workload(name="t", prompts=["a red circle moving right", "a blue square moving up"], seeds=[0, 1],
                  num_frames=5, height=32, width=32, num_inference_steps=8, guidance_scale=4.5)  # fmt: skip
    cm = fit_cost_model(tiny.pipe, tiny.adapter, wl)
    ev = Evaluator(tiny, wl, timing=False, cost_model=cm)
    ctx = SearchContext(tiny.adapter, detect(), wl, budget={"min_psnr": 20.0})
    plan = SearchPlan(
        screen_runs=1, halving=(2,), refine_rounds=3, top_k=1, min_pairs=5, max_pairs=6, unseen=4
    )
    front = search_skill("testevery", ctx, ev, plan=plan)
    screened = front.screened
    assert len(screened) >= 3  # the two screened settings and at least one bisection step
    assert all(r.predicted_speedup and r.screen for r in screened)
    assert {r.videos for r in screened} >= {1}  # screened on one video first
    timed = [r for r in screened if r.timing]
    assert len(timed) == 1 and timed[0].videos == 4  # only the finalist was timed, on the whole split
    assert timed[0].timing["pairs"] >= 5 and len(timed[0].interval) == 2
    sc = front.notes["screen"]
    assert sc["full_evaluations"] >= 1 and 0 <= sc["pass_share"] <= 1
    assert front.front == [] or front.front[0] is timed[0]


class Slow(TechniqueConfig):
    """Test-only: a technique whose attention does the work twice (its probe must say so)."""

    kind: Literal["test.slow_attention"] = "test.slow_attention"


@pytest.fixture
def slow_skill():
    from sol.skills.probe import attention_ceiling, probe_layer

    @register_skill(Slow)
    class SlowSkill(Skill):
        name = "testslow"

        def apply(self, pipe, config, adapter):  # never reached: the probe stops the search first
            raise AssertionError("a technique that cannot pay was applied")

        def examples(self):
            return [Slow()]

        def search_space(self, context):
            return [Slow()]

        def ceiling(self, context, cost_model):
            p = probe_layer(context, 0)

            def twice():
                return [context.adapter.attend(p.inner, p.q, p.k, p.v) for _ in range(2)]

            return attention_ceiling(context, cost_model, {"twice": twice}, layer=0)

    yield
    unregister_skill(Slow)


def test_a_technique_whose_measured_ceiling_cannot_beat_the_baseline_makes_no_video(tiny, slow_skill):
    from sol.skills.probe import attention_ceiling, probe_layer

    wl = Workload(name="t", prompts=["a red circle moving right"], seeds=[0], num_frames=5, height=32,
                  width=32, num_inference_steps=4, guidance_scale=4.5)  # fmt: skip
    cm = fit_cost_model(tiny.pipe, tiny.adapter, wl)
    ctx = SearchContext(tiny.adapter, detect(), wl, budget={"min_psnr": 20.0}, pipe=tiny.pipe)
    # The probe itself, on the real model's captured q, k, v: attention done twice is priced below
    # the baseline, attention skipped outright above it.
    p = probe_layer(ctx, 0)
    q = p.q
    twice = attention_ceiling(
        ctx, cm, {"twice": lambda: [tiny.adapter.attend(p.inner, p.q, p.k, p.v) for _ in range(2)]}, layer=0
    )
    free = attention_ceiling(ctx, cm, {"free": lambda: None}, layer=0)
    assert twice["speedup"] < 1.0 < free["speedup"]
    assert f"{q.shape[1]} tokens" in twice["why"] and twice["configs"][0]["kernel_speedup"] < 1.0
    # The search skips it: recorded with the measurement, nothing evaluated, nothing timed.
    ev = Evaluator(tiny, wl, timing=False, cost_model=cm)
    front = search_skill("testslow", ctx, ev, plan=SearchPlan(screen_runs=1, halving=(), top_k=1, unseen=1))
    assert front.screened == [] and front.front == []
    assert front.unavailable["test.slow_attention"].startswith("cannot beat the baseline on this hardware")
    assert front.notes["ceilings"]["test.slow_attention"]["skipped"] is True
