"""The integrator on real skills and the tiny Wan: compositions are measured, not multiplied."""

from __future__ import annotations

import math

from sol.bench.evaluate import CandidateResult, Evaluator
from sol.integrator.compose import Integrator, Part, predict
from sol.integrator.pareto import pareto_front
from sol.skills.cache.block_residual import BlockResidualCacheConfig
from sol.skills.quantization.config import QuantizeLinear


def _result(label, speedup, psnr, ok=True):
    return CandidateResult(
        label=label, techniques=[], workload="w", ok=ok, speedup=speedup, fidelity={"psnr": psnr}
    )


def test_predict_multiplies_speedups_and_adds_errors():
    s, q = predict([Part("a", _result("a", 2.0, 40.0)), Part("b", _result("b", 1.5, 40.0))])
    assert math.isclose(s, 3.0)
    assert math.isclose(q, 40.0 - 10 * math.log10(2), rel_tol=1e-9)
    assert predict([Part("a", _result("a", 1.2, math.inf))])[1] == math.inf


def test_pareto_front_keeps_undominated_fastest_first():
    rs = [
        _result("a", 2.0, 30),
        _result("b", 1.5, 35),
        _result("c", 1.4, 33),
        _result("d", 3.0, 20, ok=False),
    ]
    assert [r.label for r in pareto_front(rs)] == ["a", "b"]


def test_compositions_are_measured_on_a_copy_with_every_technique_active(tiny, tiny_workload):
    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0)
    cache = ev.evaluate([BlockResidualCacheConfig(threshold=0.3, leading_blocks=1, warmup_steps=1)])
    quant = ev.evaluate([QuantizeLinear(scheme="int8_dynamic")])
    assert cache.ok and quant.ok, (cache.reason, quant.reason)
    for r in (cache, quant):
        # Pretend both are settled gains so the integrator stacks them; timing is not under test.
        r.speedup, r.timing = 1.5, {"interval": [1.4, 1.6], "beats_baseline": True}
        r.fidelity["psnr"] = 60.0
    integ = Integrator({"cache": [cache], "quantization": [quant]}, ev, min_psnr=0.0, max_evals=3).run()
    stacked = [c for c in integ.compositions if len(c.families) == 2]
    assert stacked, integ.log
    comp = stacked[0]
    assert comp.result.ok, comp.result.reason
    assert comp.predicted_speedup > 2.0  # 1.5 x 1.5
    # The cache still skips blocks on the quantized copy (both techniques are active).
    assert comp.result.calls["blocks"] < comp.result.baseline_calls["blocks"]
    assert comp.result.calls["blocks"] == cache.calls["blocks"]


def test_a_broken_technique_search_does_not_sink_its_family(tiny, tiny_workload):
    from typing import Literal

    from sol.hardware import detect
    from sol.integrator.skill_search import search_skill
    from sol.skills import SearchContext, Skill, TechniqueConfig, register_skill, unregister_skill

    class Broken(TechniqueConfig):
        kind: Literal["test.broken_search"] = "test.broken_search"

    @register_skill(Broken)
    class BrokenSkill(Skill):
        name = "test"

        def search_space(self, context):
            raise ValueError("boom")

        def examples(self):
            return [Broken()]

    try:
        ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
        front = search_skill("test", SearchContext(tiny.adapter, detect(), tiny_workload), ev)
        assert "boom" in front.unavailable["test.broken_search"]
    finally:
        unregister_skill(Broken)


def test_every_pair_of_singles_is_judged_not_only_stacks_on_the_fastest(tiny, tiny_workload):
    """A fresh-clone make demo built its stacks on token pruning (the fastest single), spent its budget
    re-tuning pruning under the cache, and never judged fusion on the chosen cache: pairs come first."""
    from sol.skills.token_pruning.step_prune import StepPruneConfig

    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
    parts = {
        "token_pruning": ev.evaluate([StepPruneConfig(keep=0.5)]),
        "cache": ev.evaluate([BlockResidualCacheConfig(threshold=0.3, leading_blocks=1, warmup_steps=1)]),
        "quantization": ev.evaluate([QuantizeLinear(scheme="int8_dynamic")]),
    }
    for speed, r in zip((1.8, 1.6, 1.2), parts.values(), strict=True):
        assert r.ok, r.reason
        # Pretend settled gains so the integrator stacks them; timing is not under test.
        r.speedup, r.timing = speed, {"interval": [speed - 0.1, speed + 0.1], "beats_baseline": True}
        r.fidelity["psnr"] = 60.0
    # An exact, untimed part (as Sparse VideoGen's profile that kept every head dense) joins stacks
    # at the end; pairing it spent three of a make demo's eight evaluations.
    from sol.skills.cache import TextKVCacheConfig

    exact = ev.evaluate([TextKVCacheConfig()])
    assert exact.ok and math.isinf(exact.psnr), (exact.reason, exact.psnr)
    exact.speedup = None
    fronts = {**{f: [r] for f, r in parts.items()}, "exact": [exact]}
    integ = Integrator(fronts, ev, min_psnr=0.0, max_evals=4).run()
    judged = {frozenset(c.families) for c in integ.compositions}
    for pair in (("token_pruning", "cache"), ("token_pruning", "quantization"), ("cache", "quantization")):
        assert frozenset(pair) in judged, integ.log
    # The fourth evaluation grows the best pair into the triple.
    assert frozenset(parts) in judged, integ.log
    # A stack's quality interaction is reported once it is judged, raced or not.
    for c in integ.compositions:
        if len(c.families) > 1 and c.result.psnr < c.predicted_psnr - 2.0:
            assert "errors compound" in (c.interaction or ""), (c.id, c.interaction)
    assert any(len(c.families) > 1 and c.interaction for c in integ.compositions), integ.log


def test_a_failing_pair_is_retuned_down_the_ladder_to_the_budget_left(tiny, tiny_workload):
    """The cache's fastest setting stacked on int8 misses the floor; the integrator steps the cache
    down its ladder (the settings its search judged) until the stack passes, and keeps that stack."""
    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
    int8 = QuantizeLinear(scheme="int8_dynamic")
    cfgs = [BlockResidualCacheConfig(threshold=t, leading_blocks=1, warmup_steps=1) for t in (0.6, 0.2, 0.05)]
    fast, mid, gentle = ladder = [ev.evaluate([c]) for c in cfgs]  # fastest first, as a search's ladder
    quant = ev.evaluate([int8])
    pairs = [ev.evaluate([c, int8]) for c in cfgs]
    floor = (pairs[0].psnr + fast.psnr) / 2  # every single clears it; int8 on the fastest cache does not
    assert pairs[0].psnr < floor < min(fast.psnr, mid.psnr, quant.psnr), ([p.psnr for p in pairs], floor)
    assert pairs[1].psnr < floor < pairs[2].psnr, ([p.psnr for p in pairs], floor)  # two steps down
    for r, speed in ((fast, 1.8), (mid, 1.5), (gentle, 1.2), (quant, 1.3)):
        # Pretend settled gains so the integrator stacks them; timing is not under test.
        r.speedup, r.timing = speed, {"interval": [speed - 0.1, speed + 0.1], "beats_baseline": True}
    fronts = {"cache": [fast], "quantization": [quant]}
    integ = Integrator(fronts, ev, min_psnr=floor, max_evals=4, ladders={"cache": ladder}).run()
    assert f"re-tuned cache to {gentle.label} for the remaining budget" in integ.log, integ.log
    stacked = [c for c in integ.compositions if len(c.families) == 2 and c.passes]
    assert [sorted(c.parts) for c in stacked] == [sorted([gentle.label, quant.label])], integ.log
