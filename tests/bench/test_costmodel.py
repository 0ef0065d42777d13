"""The cost model: fitted on one baseline generation, it predicts a candidate's latency from the work
it was counted doing. On the reference model its call-count-driven predictions land within 15% of
the measured speedup (thread CPU time, interleaved pairs: a loaded machine moves neither much)."""

from __future__ import annotations

import math

import pytest

from sol.bench.costmodel import CostModel, fit_cost_model
from sol.bench.evaluate import Evaluator
from sol.skills.cache import BlockResidualCacheConfig, StepOutputCacheConfig


def _model(**kw) -> CostModel:
    base = dict(clock="cpu", generation_s=10.0, fixed_s=1.0, call_s=0.01, block_rest_s=0.01, self_attention_s=0.01,
                attention_kernel_share=0.5, cross_attention_s=0.004, text_kv_s=0.001,
                baseline_calls={"transformer": 50, "blocks": 400, "self_attention": 400, "cross_attention": 400,
                                "text_kv_projection": 400})  # fmt: skip
    base.update(kw)
    return CostModel(**base)


def test_prediction_prices_each_kind_of_counted_work():
    cm = _model()
    full = cm.predict(cm.baseline_calls)
    per_block = 0.01 + 0.01 + 0.004  # rest + self-attention + cross-attention
    assert math.isclose(full.seconds, 1.0 + 50 * 0.01 + 400 * per_block)
    half = cm.predict({**cm.baseline_calls, "blocks": 200, "self_attention": 200, "cross_attention": 200,
                       "text_kv_projection": 200})  # fmt: skip
    assert math.isclose(full.seconds - half.seconds, 200 * per_block)
    assert half.speedup > 1.0 and half.modelled
    # Twice the videos and twice the calls: the same per-generation cost.
    two = {k: 2 * v for k, v in cm.baseline_calls.items()}
    assert math.isclose(cm.predict(two, videos=2).seconds, full.seconds)
    # Tokens kept scale per-token work; attention pairs scale only the attention kernel.
    pruned = cm.predict(cm.baseline_calls, {"tokens_computed": 50, "tokens_dense": 100})
    sparse = cm.predict(cm.baseline_calls, {"attention_pairs": 25, "attention_pairs_dense": 100})
    assert pruned.seconds < sparse.seconds < full.seconds
    assert math.isclose(full.seconds - sparse.seconds, 400 * 0.01 * 0.5 * 0.75)
    # Calls a compiled block hid from their probes are counted by the fusion skill, and priced.
    hidden = {"transformer": 50, "blocks": 200}  # a cache skipped half the blocks; attention compiled
    fused = {f"fused_calls.{k}": 200 for k in ("self_attention", "cross_attention", "text_kv_projection")}
    assert math.isclose(cm.predict(hidden, fused).seconds, half.seconds)
    split = {**hidden, "self_attention": 150}  # some blocks ran their attention outside the graph
    assert math.isclose(cm.predict(split, {**fused, "fused_calls.self_attention": 50}).seconds, half.seconds)
    # A cost per unit of work (another precision) is not counted: it must be timed.
    q = cm.predict(cm.baseline_calls, seams={"linear_precision"})
    assert not q.modelled and "linear_precision" in q.why
    assert CostModel.from_json(cm.to_json()) == cm


def test_fit_splits_the_baseline_into_fixed_call_and_block_costs(tiny, tiny_workload):
    cm = fit_cost_model(tiny.pipe, tiny.adapter, tiny_workload)
    assert cm.clock == "cpu" and cm.baseline_calls["blocks"] == 4 * cm.baseline_calls["transformer"]
    assert (
        cm.fixed_s > 0
        and cm.block_rest_s > 0
        and cm.self_attention_s > 0
        and 0 <= cm.attention_kernel_share <= 1
    )
    # The parts add back up to the generation (the baseline predicts itself).
    assert math.isclose(cm.predict(cm.baseline_calls).speedup, 1.0, rel_tol=1e-6)


@pytest.fixture(scope="module")
def reference():
    from sol.models import load_model

    return load_model("sol-tiny-wan")


# Timed (a measured speedup against the prediction): on a loaded CI machine the error reached 17 %,
# so it runs with the slow set (`make test-all`); the untimed cost-model tests above stay in CI.
@pytest.mark.slow
def test_call_count_driven_speedups_within_15_percent_on_the_reference_model(reference):
    from sol.workload import Workload

    # The reference model at its native width, fewer frames and steps (seconds, not minutes).
    wl = Workload(name="ref", prompts=["a red circle moving right"], num_frames=9, height=64, width=64,
                  num_inference_steps=9, guidance_scale=5.0)  # fmt: skip
    cm = fit_cost_model(reference.pipe, reference.adapter, wl)
    ev = Evaluator(reference, wl, timing=False, cost_model=cm)
    every_3rd = StepOutputCacheConfig(threshold=2.5, coefficients=(1.0,), warmup_steps=2, final_steps=0)
    fbc = BlockResidualCacheConfig(threshold=0.2)
    results = [ev.evaluate([c]) for c in (every_3rd, fbc)]
    assert all(r.ok for r in results), [r.reason for r in results]
    ev.time(results, min_pairs=6, max_pairs=9)
    for r in results:
        assert r.calls["blocks"] < r.baseline_calls["blocks"]  # the cache skipped blocks
        err = r.predicted_speedup / r.speedup - 1
        assert abs(err) < 0.15, (r.label, r.predicted_speedup, r.timing)
    assert results[0].speedup > 1.4  # 2 warm-up steps, then every 3rd: 4 of 9 steps computed
