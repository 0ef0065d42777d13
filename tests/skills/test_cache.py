"""Cache reuse: the shared skill contract for every cache kind, plus what only caches promise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sol.bench.runner import Probes, TimeLimitExceeded, count_calls, generate
from sol.errors import ConflictError, SolError
from sol.skills import SearchContext, apply_all, compose, config_from_dict, skill_for
from sol.skills.cache import (
    BlockResidualCacheConfig,
    DiffusersFirstBlockCacheConfig,
    DiffusersMagCacheConfig,
    DiffusersPABConfig,
    DiffusersTaylorSeerConfig,
    StepOutputCacheConfig,
    TextKVCacheConfig,
    calibrate,
)
from sol.skills.cache import calibration as calibration_module
from sol.skills.cache.step_output import CALIBRATION_NOTE, fixed_schedule, simulate, threshold_for
from sol.skills.search import bisect_threshold
from tests.skills.skill_mixin import SkillContract

KINDS = (
    "cache.text_kv",
    "cache.block_residual",
    "cache.step_output",
    "cache.diffusers_fbc",
    "cache.diffusers_pab",
    "cache.diffusers_taylorseer",
    "cache.diffusers_magcache",
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model's ops are too small to split; on a shared 2-core machine a second thread
    # only spins (measured: one transformer call 7 ms on 1 thread, 36 ms on 2 under load).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TestCacheContract(SkillContract):
    kinds = KINDS


def _run(pipe, workload, **kw):
    with torch.no_grad():
        return generate(pipe, workload, **kw)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _with(tiny, configs, workload):
    probes = []
    # Probes go where the evaluator puts them: inside every cache's hooks.
    applied = apply_all(
        tiny.pipe, configs, tiny.adapter, instrument=lambda: probes.append(Probes(tiny.adapter)) or probes[-1]
    )
    try:
        out = _run(tiny.pipe, workload)
        return out, dict(probes[0].counts)
    finally:
        applied.revert()


@pytest.fixture(scope="module")
def two_prompts(tiny_workload):
    return tiny_workload.model_copy(
        update={"prompts": ["a red circle moving right", "a blue square moving up"]}
    )


@pytest.fixture(scope="module")
def baseline(tiny, two_prompts):
    with count_calls(tiny.adapter) as calls:
        out = _run(tiny.pipe, two_prompts)
    return out, dict(calls)


def test_text_kv_is_exact_and_projects_once_per_prompt(tiny, two_prompts, baseline):
    base, base_calls = baseline
    out, calls = _with(tiny, [TextKVCacheConfig()], two_prompts)
    assert _same(out, base)  # bit-identical, across CFG's two texts and two prompts in a row
    blocks = len(tiny.adapter.blocks())
    # Once per block, per CFG text (prompt, negative prompt), per generation — not per step.
    assert calls["text_kv_projection"] == blocks * 2 * len(two_prompts.runs)
    assert (
        base_calls["text_kv_projection"]
        == blocks * 2 * len(two_prompts.runs) * two_prompts.num_inference_steps
    )


def test_text_kv_never_serves_another_prompts_keys(tiny, tiny_workload):
    # Same prompt embeddings tensor address reused by the allocator must not hit: run A, B, A.
    runs = [
        tiny_workload.model_copy(update={"prompts": [p]})
        for p in ("a red circle", "a blue square", "a red circle")
    ]
    base = [_run(tiny.pipe, w) for w in runs]
    applied = apply_all(tiny.pipe, [TextKVCacheConfig()], tiny.adapter)
    try:
        got = [_run(tiny.pipe, w) for w in runs]
    finally:
        applied.revert()
    assert all(_same(a, b) for a, b in zip(base, got, strict=True))


@pytest.mark.parametrize(
    "config",
    [
        BlockResidualCacheConfig(threshold=0.0),
        BlockResidualCacheConfig(threshold=10.0, warmup_steps=100),
        StepOutputCacheConfig(threshold=0.0),
        StepOutputCacheConfig(threshold=10.0, warmup_steps=100),
    ],
    ids=lambda c: c.label(),
)
def test_threshold_zero_or_full_warmup_is_the_baseline(tiny, two_prompts, baseline, config):
    out, calls = _with(tiny, [config], two_prompts)
    assert _same(out, baseline[0])
    assert calls == baseline[1]


@pytest.mark.parametrize(
    "config",
    [
        BlockResidualCacheConfig(threshold=10.0),
        BlockResidualCacheConfig(threshold=10.0, leading_blocks=2, trailing_blocks=1, max_skip_steps=1),
        StepOutputCacheConfig(threshold=10.0),
        DiffusersFirstBlockCacheConfig(threshold=10.0),
        DiffusersTaylorSeerConfig(cache_interval=2, disable_cache_before_step=1),
    ],
    ids=lambda c: c.label(),
)
def test_caching_really_skips_blocks(tiny, two_prompts, baseline, config):
    out, calls = _with(tiny, [config], two_prompts)
    assert calls["transformer"] == baseline[1]["transformer"]
    assert calls["blocks"] < baseline[1]["blocks"]
    assert all(np.isfinite(v).all() for v in out)


def test_block_residual_counts_match_its_knobs(tiny, tiny_workload):
    n = len(tiny.adapter.blocks())
    steps, contexts = tiny_workload.num_inference_steps, 2
    cfg = BlockResidualCacheConfig(
        threshold=10.0, leading_blocks=1, trailing_blocks=1, warmup_steps=1, max_skip_steps=None
    )
    _, calls = _with(tiny, [cfg], tiny_workload)
    # Step 0 computes all blocks; later steps run only Fn + Bn.
    assert calls["blocks"] == contexts * (n + (steps - 1) * 2)


def test_step_output_final_steps_and_skip_cap(tiny, tiny_workload):
    steps, n = tiny_workload.num_inference_steps, len(tiny.adapter.blocks())
    cfg = StepOutputCacheConfig(threshold=10.0, final_steps=1, max_skip_steps=1)
    _, calls = _with(tiny, [cfg], tiny_workload)
    # 4 steps: compute 0, skip 1, compute 2 (cap), compute 3 (final): 3 computed per context.
    assert steps == 4 and calls["blocks"] == 2 * 3 * n


def test_linear_reuse_extrapolates_only_on_cached_steps(tiny, tiny_workload):
    base = _run(tiny.pipe, tiny_workload)
    zero, _ = _with(tiny, [StepOutputCacheConfig(threshold=0.0, reuse="linear")], tiny_workload)
    assert _same(zero, base)
    # Compute 0, 1, 2 then skip 3: "linear" extrapolates from steps 1 and 2, "last" reuses step 2.
    kw = dict(threshold=10.0, coefficients=(1.0, 0.0), warmup_steps=3, final_steps=0)
    last, c_last = _with(tiny, [StepOutputCacheConfig(**kw, reuse="last")], tiny_workload)
    lin, c_lin = _with(tiny, [StepOutputCacheConfig(**kw, reuse="linear")], tiny_workload)
    n = len(tiny.adapter.blocks())
    assert c_last["blocks"] == c_lin["blocks"] == 2 * 3 * n
    assert not _same(last, lin)
    err = lambda v: float(np.mean((v[0] - base[0]) ** 2))  # noqa: E731
    assert np.isfinite(err(lin)) and err(lin) > 0


def test_calibration_fit_is_increasing_and_positive_over_the_observed_range():
    x = [0.03, 0.04, 0.05, 0.08, 0.1, 0.15]
    y = [0.07, 0.07, 0.09, 0.12, 0.16, 0.25]
    cal = calibration_module.Calibration(
        7,
        {
            "cond/0": [
                {"t": i + 1, "x": a, "y": b, "mag": 1.0} for i, (a, b) in enumerate(zip(x, y, strict=True))
            ]
        },
    )
    coeffs = cal.fit()
    assert len(coeffs) >= 2  # not the constant fallback: this data supports a slope
    grid = np.linspace(0.03, 0.3, 50)
    vals = np.polyval(coeffs, grid)
    assert (vals > 0).all() and (np.diff(vals) >= -1e-12).all()
    flat = calibration_module.Calibration(
        3, {"c": [{"t": 1, "x": 0.1, "y": 0.2, "mag": 1.0}, {"t": 2, "x": 0.2, "y": 0.1, "mag": 1.0}]}
    )
    assert flat.fit() == (pytest.approx(0.15),)  # decreasing data: a constant (fixed-interval caching)


def test_every_generation_starts_fresh_even_after_an_interrupted_one(tiny, tiny_workload):
    configs = [
        [BlockResidualCacheConfig(threshold=0.3)],
        [StepOutputCacheConfig(threshold=0.5, coefficients=(1.0, 0.0), reuse="linear")],
        [DiffusersFirstBlockCacheConfig(threshold=0.3), TextKVCacheConfig()],
        [DiffusersMagCacheConfig(mag_ratios=(1.0, 1.0, 1.0, 1.0), threshold=0.5, retention_ratio=0.0)],
        [DiffusersTaylorSeerConfig(cache_interval=2, disable_cache_before_step=1)],
        [DiffusersPABConfig(spatial_skip_range=2, spatial_timestep_range=(0, 1000))],
    ]
    for stack in configs:
        applied = apply_all(tiny.pipe, stack, tiny.adapter)
        try:
            first = _run(tiny.pipe, tiny_workload)
            with pytest.raises(TimeLimitExceeded):
                _run(tiny.pipe, tiny_workload, time_limit_s=-1.0)  # stops after step 0: state left behind
            again = _run(tiny.pipe, tiny_workload)
        finally:
            applied.revert()
        assert _same(first, again), stack[0].label()


def test_calibrated_coefficients_live_in_the_config_and_reapply_without_calibrating(
    tiny, tiny_workload, monkeypatch
):
    ctx = SearchContext(adapter=tiny.adapter, hardware=None, workload=tiny_workload, pipe=tiny.pipe)
    skill = skill_for(StepOutputCacheConfig())
    configs = skill.search_space(ctx)
    assert configs and CALIBRATION_NOTE in ctx.notes
    cal = calibration_module.Calibration.from_json(ctx.notes[CALIBRATION_NOTE])
    coeffs = configs[0].coefficients
    assert coeffs != StepOutputCacheConfig().coefficients
    assert np.allclose(coeffs, cal.fit(), rtol=1e-5)
    json.dumps(ctx.notes)  # the calibration is small JSON
    mags = skill_for(DiffusersMagCacheConfig(mag_ratios=(1.0, 1.0))).search_space(ctx)
    assert len(mags[0].mag_ratios) == tiny_workload.num_inference_steps

    cfg = next(c for c in configs if c.coefficients == coeffs)  # a calibrated one
    first, _ = _with(tiny, [cfg], tiny_workload)

    def refuse(*a, **k):
        raise AssertionError("re-applying a stored config must not calibrate")

    monkeypatch.setattr(calibration_module, "calibrate", refuse)
    monkeypatch.setattr("sol.skills.cache.step_output.calibrate", refuse)
    reloaded = config_from_dict(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert reloaded == cfg
    again, _ = _with(tiny, [reloaded], tiny_workload)
    assert _same(first, again)
    # A second search in the same context reuses the stored calibration too.
    assert skill.search_space(ctx) == configs


def test_calibration_traces_cover_both_cfg_contexts(tiny, tiny_workload):
    cal = calibrate(tiny.pipe, tiny.adapter, tiny_workload)
    assert {k.split("/")[0] for k in cal.traces} == {"cond", "uncond"}
    assert all(len(tr) == tiny_workload.num_inference_steps - 1 for tr in cal.traces.values())
    x, y = cal.points()
    assert (x > 0).all() and (y > 0).all()


def test_effect_check_encodes_the_cache_conflicts(tiny):
    mag = DiffusersMagCacheConfig(mag_ratios=(1.0, 1.0))
    with pytest.raises(ConflictError, match="diffusers_cache"):
        compose([DiffusersFirstBlockCacheConfig(), DiffusersPABConfig()], tiny.adapter)
    with pytest.raises(ConflictError, match="step_output"):
        compose([StepOutputCacheConfig(), BlockResidualCacheConfig()], tiny.adapter)
    with pytest.raises(ConflictError, match="step_output"):
        compose([StepOutputCacheConfig(), mag], tiny.adapter)
    # Lossless text K/V stacks on any cache; PAB (attention outputs) stacks on Sol's step caches.
    ordered = compose([StepOutputCacheConfig(), TextKVCacheConfig(), DiffusersPABConfig()], tiny.adapter)
    assert ordered[0] == TextKVCacheConfig()


def test_stacked_text_kv_and_pab_on_step_cache_run_and_revert(tiny, tiny_workload):
    base = _run(tiny.pipe, tiny_workload)
    stack = [
        StepOutputCacheConfig(threshold=0.5),
        TextKVCacheConfig(),
        DiffusersPABConfig(spatial_timestep_range=(0, 1000)),
    ]
    out, calls = _with(tiny, stack, tiny_workload)
    assert all(np.isfinite(v).all() for v in out)
    assert _same(_run(tiny.pipe, tiny_workload), base)


def test_taylorseer_patterns_that_match_nothing_are_refused(tiny):
    skill = skill_for(DiffusersTaylorSeerConfig())
    with pytest.raises(SolError, match="silent no-op"):
        skill.apply(
            tiny.pipe,
            DiffusersTaylorSeerConfig(cache_identifiers=(r"transformer_blocks\.\d+",)),
            tiny.adapter,
        )
    assert not tiny.pipe.transformer.is_cache_enabled


def test_block_residual_needs_a_block_to_cache(tiny):
    n = len(tiny.adapter.blocks())
    with pytest.raises(SolError, match="no block to cache"):
        skill_for(BlockResidualCacheConfig()).apply(
            tiny.pipe, BlockResidualCacheConfig(leading_blocks=n - 1, trailing_blocks=1), tiny.adapter
        )


class _R:
    def __init__(self, cfg, psnr, speedup, ok=True):
        self.techniques = [cfg.model_dump(mode="json")]
        self.psnr, self.speedup, self.ok = psnr, speedup, ok
        self.screen = {}


def test_refine_bisects_toward_the_psnr_floor():
    mk = lambda t: BlockResidualCacheConfig(threshold=t)  # noqa: E731
    bracket = [_R(mk(0.1), 36, 1.4), _R(mk(0.2), 32, 2.0), _R(mk(0.4), 26, 3.0)]
    got = [c.threshold for c in bisect_threshold(bracket, BlockResidualCacheConfig, 30.0)]
    assert got == [pytest.approx(0.3)]  # the midpoint of the bracket
    converged = [_R(mk(0.2), 32, 2.0), _R(mk(0.21), 29, 2.1)]
    assert bisect_threshold(converged, BlockResidualCacheConfig, 30.0) == []  # within 10%: done
    above = [_R(mk(0.1), 40, 1.2), _R(mk(0.2), 38, 1.5)]
    assert [c.threshold for c in bisect_threshold(above, BlockResidualCacheConfig, 30.0)] == [0.3]
    below = [_R(mk(0.1), 25, 1.5), _R(mk(0.2), 20, 2.0)]
    assert [c.threshold for c in bisect_threshold(below, BlockResidualCacheConfig, 30.0)] == [0.05]
    hopeless = [_R(mk(0.1), 25, 1.0)]
    assert bisect_threshold(hopeless, BlockResidualCacheConfig, 30.0) == []
    pab = [
        _R(DiffusersPABConfig(spatial_skip_range=2), 25, 1.2),
        _R(DiffusersPABConfig(spatial_skip_range=3), 24, 1.3),
    ]
    got = bisect_threshold(pab, DiffusersPABConfig, 30.0, field="spatial_skip_range", integer=True)
    assert got == []  # 1 and 0 are not valid skip ranges: nothing, not a crash
    tay = [_R(DiffusersTaylorSeerConfig(cache_interval=i), q, s) for i, q, s in ((3, 35, 2.0), (5, 28, 2.8))]
    got = bisect_threshold(tay, DiffusersTaylorSeerConfig, 30.0, field="cache_interval", integer=True)
    assert [c.cache_interval for c in got] == [4]


def test_refine_bisects_each_promising_variant_and_follows_the_screen():
    mk = lambda t, w: BlockResidualCacheConfig(threshold=t, warmup_steps=w)  # noqa: E731
    rs = [_R(mk(0.1, 1), 36, 1.4), _R(mk(0.4, 1), 26, 3.0), _R(mk(0.1, 4), 40, 1.3), _R(mk(0.4, 4), 31, 2.5)]
    got = bisect_threshold(rs, BlockResidualCacheConfig, 30.0)
    # warm-up 4 passes at 0.4 (faster than warm-up 1's best pass): it is refined first, upwards.
    assert [(c.warmup_steps, c.threshold) for c in got] == [(4, 0.6), (1, 0.25)]
    rs[3].screen = {"passes": False}  # the screen predicts it fails on unseen prompts: a bracket now
    got = bisect_threshold(rs, BlockResidualCacheConfig, 30.0, variants=1)
    assert [(c.warmup_steps, c.threshold) for c in got] == [(1, 0.25)]


def test_fixed_schedule_computes_the_warmup_then_every_kth_step(tiny, tiny_workload):
    cfg = fixed_schedule(tiny_workload.num_inference_steps, 1, 0.5)
    assert (cfg.warmup_steps, cfg.threshold, cfg.coefficients) == (1, 1.5, (1.0,))
    _, calls = _with(tiny, [cfg], tiny_workload)
    # 4 steps: 0 (warm-up) computes, 1 skips, 2 computes, 3 skips — per CFG context.
    assert calls["blocks"] == 2 * 2 * len(tiny.adapter.blocks())
    assert fixed_schedule(25, 6, 0.42).threshold == 3.5  # 6 + 19 // 4 = 10 of 25 steps


def test_step_output_refine_snaps_fixed_schedules_to_whole_intervals(tiny, tiny_workload):
    mk = lambda t: StepOutputCacheConfig(threshold=t, coefficients=(1.0,), warmup_steps=6, final_steps=0)  # noqa: E731
    ctx = SearchContext(adapter=tiny.adapter, hardware=None, workload=tiny_workload, budget={"min_psnr": 30})
    got = skill_for(mk(1.0)).refine(ctx, [_R(mk(2.5), 35, 1.9), _R(mk(4.5), 26, 2.4)])
    assert [c.threshold for c in got] == [3.5]


def test_simulated_thresholds_hit_their_compute_share():
    rng = np.random.default_rng(0)
    seqs = [[(float(x), 0.0) for x in rng.uniform(0.02, 0.1, 24)] for _ in range(4)]
    coeffs = (1.0, 0.0)
    targets = (0.6, 0.45, 0.35)
    shares = [simulate(seqs, coeffs, threshold_for(seqs, coeffs, f)) for f in targets]
    assert shares == sorted(shares, reverse=True)
    assert all(f - 0.08 < s <= f + 0.02 for s, f in zip(shares, targets, strict=True))
    assert threshold_for(seqs, coeffs, 0.01) is None  # step 0 and the last step always compute


def test_step_output_config_validates():
    with pytest.raises(SolError):
        config_from_dict({"kind": "cache.step_output", "threshold": -1})
    with pytest.raises(SolError):
        config_from_dict({"kind": "cache.diffusers_pab", "spatial_skip_range": None})
