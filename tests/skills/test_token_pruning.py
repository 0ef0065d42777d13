"""Token pruning: the shared skill contract for every kind, plus what only token pruning promises —
off is bit-identical, merge/restore round trips, per-token block arguments gathered with the
tokens, CFG branches kept apart, composition with a step cache, and honest work counters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sol.bench.runner import Probes, count_calls, generate
from sol.errors import ConflictError, SolError
from sol.hooks import Span, tracker_of
from sol.skills import SearchContext, apply_all, compose, registered_kinds, skill_for
from sol.skills.cache import BlockResidualCacheConfig, StepOutputCacheConfig, TextKVCacheConfig
from sol.skills.token_pruning import KVMergeConfig, StepPruneConfig, TokenMergeConfig
from sol.skills.token_pruning._common import gather_per_token
from sol.skills.token_pruning.matching import (
    bipartite,
    destinations,
    gather_rows,
    scatter_rows,
    top_tokens,
)
from tests.skills.skill_mixin import SkillContract

KINDS = ("token_pruning.merge", "token_pruning.kv_merge", "token_pruning.step_prune")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TestPruningContract(SkillContract):
    kinds = KINDS


def _run(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _with(tiny, configs, workload):
    """Outputs, probe counts (inside every technique, as the evaluator puts them) and counters."""
    probes = []
    applied = apply_all(
        tiny.pipe, configs, tiny.adapter, instrument=lambda: probes.append(Probes(tiny.adapter)) or probes[-1]
    )
    try:
        out = _run(tiny.pipe, workload)
        return out, dict(probes[0].counts), applied.counters()
    finally:
        applied.revert()


@pytest.fixture(scope="module")
def baseline(tiny, tiny_workload):
    with count_calls(tiny.adapter) as calls:
        out = _run(tiny.pipe, tiny_workload)
    return out, dict(calls)


def _tokens(tiny, workload) -> int:
    f = (workload.num_frames - 1) // 4 + 1
    grid = tiny.adapter.token_grid((1, 16, f, workload.height // 8, workload.width // 8))
    return grid[0] * grid[1] * grid[2]


# --- off is the baseline ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        TokenMergeConfig(ratio=0.0),
        TokenMergeConfig(ratio=0.5, steps=Span(start=100)),
        KVMergeConfig(ratio=0.0),
        KVMergeConfig(ratio=0.6, layers=Span(start=0), steps=Span(stop=0)),
        StepPruneConfig(keep=1.0),
        StepPruneConfig(keep=0.5, full_steps=(Span(),)),
        StepPruneConfig(keep=1.0, scope="attention"),
        StepPruneConfig(keep=0.3, scope="attention", full_steps=(Span(),)),
    ],
    ids=lambda c: c.label(),
)
def test_ratio_zero_or_no_scheduled_step_is_bit_identical(tiny, tiny_workload, baseline, config):
    out, calls, work = _with(tiny, [config], tiny_workload)
    assert _same(out, baseline[0])
    assert calls == baseline[1]
    # Nothing pruned, and nothing reported as pruned.
    for name in ("tokens", "attention_pairs"):
        done, dense = work.get(f"{name}_computed" if name == "tokens" else name), work.get(f"{name}_dense")
        if dense is not None:
            assert done == dense


# --- merge / restore primitives ----------------------------------------------------------------


def test_gather_scatter_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 8, generator=g)
    keep = top_tokens(torch.rand(2, 24, generator=g), 10).keep
    assert keep.shape == (2, 10) and bool((keep[:, 1:] > keep[:, :-1]).all())  # raster order kept
    rows = gather_rows(x, keep)
    assert torch.equal(scatter_rows(x, keep, rows), x)
    back = scatter_rows(torch.zeros_like(x), keep, rows)
    assert torch.equal(gather_rows(back, keep), rows)


def test_bipartite_merge_restore_round_trips_identical_tokens():
    # Tokens that are exact copies of their destination merge without error: restore gives them back.
    g = torch.Generator().manual_seed(1)
    grid = (2, 4, 4)
    n = 32
    dst = destinations(n, grid, (1, 2, 2))
    base = torch.randn(1, n, 16, generator=g)
    x = base.clone()
    src = torch.tensor([i for i in range(n) if i not in set(dst.tolist())])
    x[0, src] = base[0, dst[torch.arange(src.numel()) % dst.numel()]]
    red = bipartite(x, dst, r=src.numel())
    assert red.k == dst.numel() and float(red.size.sum()) == n
    torch.testing.assert_close(red.restore(red.merge(x)), x)
    # r = 0: every token its own representative, exactly.
    none = bipartite(base, dst, 0)
    assert torch.equal(none.merge(base), base) and torch.equal(none.restore(base), base)


def test_bipartite_merges_the_most_similar_sources_first():
    x = torch.tensor([[[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.7, 0.7]]])
    red = bipartite(x, torch.tensor([0, 2]), r=1)
    assert red.keep.tolist() == [[0, 2, 3]]  # token 1 (nearly token 0) merged, token 3 kept
    assert red.slot.tolist() == [[0, 0, 1, 2]]


def test_destinations_cover_one_token_per_cell_and_rotate():
    grid, stride = (3, 4, 6), (1, 2, 2)
    n = 3 * 4 * 6
    seen = set()
    for step in range(4):
        d = destinations(n, grid, stride, offset=step)
        assert d.numel() == 3 * 2 * 3
        seen |= set(d.tolist())
    assert seen == set(range(n))  # four rotations visit every cell position
    # A packed sequence (grid does not describe n tokens): every prod(stride)-th token.
    assert destinations(10, (1, 2, 2), stride).tolist() == [0, 4, 8]


# --- per-token arguments, CFG branches --------------------------------------------------------


def test_per_token_arguments_are_gathered_and_others_left_alone(tiny):
    adapter = tiny.adapter
    b, n, d = 1, 12, 4
    hs = torch.randn(b, n, d)
    text = torch.randn(b, 3, d)
    temb_tokens = torch.randn(b, n, 6, d)  # Wan 2.2 TI2V: per-token modulation
    cos, sin = torch.randn(1, n, 1, 8), torch.randn(1, n, 1, 8)
    keep = torch.tensor([[1, 4, 7]])
    args, kwargs = gather_per_token(adapter, (hs, text, temb_tokens, (cos, sin)), {}, keep, "hidden_states")
    assert args[0] is hs and args[1] is text  # hidden states: the method's own; text: per sample
    assert torch.equal(args[2], temb_tokens[:, [1, 4, 7]])
    assert torch.equal(args[3][0], cos[:, [1, 4, 7]]) and torch.equal(args[3][1], sin[:, [1, 4, 7]])
    temb_sample = torch.randn(b, 6, d)  # Wan 2.1: one modulation per sample, not gathered
    args, _ = gather_per_token(adapter, (hs, text, temb_sample, (cos, sin)), {}, keep, "hidden_states")
    assert args[2] is temb_sample


def test_blocks_see_rope_of_their_kept_tokens(tiny, tiny_workload):
    """On a pruned step the block's self-attention receives the RoPE rows of exactly its kept tokens."""
    cfg = StepPruneConfig(keep=0.5, attend="kept")
    transformer = tiny.adapter.transformer
    inst = skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)
    hook = tiny.adapter.blocks()[1]._diffusers_hook.get_hook("sol_token_prune")
    seen, full_rope = [], []

    def record(module, args):
        st = hook.states.get(tracker_of(transformer).context.branch)
        seen.append((args[0].shape[1], args[3], None if st.keep is None else st.keep.clone()))

    handles = [
        tiny.adapter.blocks()[1].attn1.register_forward_pre_hook(record),
        transformer.rope.register_forward_hook(lambda m, a, out: full_rope.append(out)),
    ]
    try:
        _run(tiny.pipe, tiny_workload)
    finally:
        for h in handles:
            h.remove()
        inst.revert()
    n = _tokens(tiny, tiny_workload)
    tokens, rope, keep = seen[-1]
    assert tokens == round(0.5 * n) < n and keep.shape == (1, tokens)
    cos_full, sin_full = full_rope[-1]
    assert torch.equal(rope[0], gather_rows(cos_full.flatten(2), keep).view_as(rope[0]))
    assert torch.equal(rope[1], gather_rows(sin_full.flatten(2), keep).view_as(rope[1]))
    assert seen[0][0] == n  # the seeding step ran at full size


def test_cfg_branches_keep_separate_state(tiny, tiny_workload):
    cfg = StepPruneConfig(keep=0.5)
    inst = skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)
    hook = tiny.adapter.blocks()[0]._diffusers_hook.get_hook("sol_token_prune")
    snapshots = {}
    # The pipeline resets stateful hooks when its call ends: look at the state at the last step.
    last = tiny_workload.num_inference_steps - 1
    handle = tiny.adapter.blocks()[-1].register_forward_hook(
        lambda m, a, out: (
            snapshots.update(dict(hook.states.states))
            if tracker_of(tiny.adapter.transformer).context.step == last
            else None
        )
    )
    try:
        _run(tiny.pipe, tiny_workload)
    finally:
        handle.remove()
        inst.revert()
    assert set(snapshots) == {"cond", "uncond"}
    cond, uncond = snapshots["cond"], snapshots["uncond"]
    n_blocks = len(tiny.adapter.blocks())
    assert len(cond.residual) == len(uncond.residual) == n_blocks
    # Different text, different residuals: never shared (block 0's input, the patch embedding of
    # the same latents, is the same in both branches, but each keeps its own copy).
    assert cond.residual[0] is not uncond.residual[0] and cond.ref is not uncond.ref
    assert not torch.equal(cond.residual[0], uncond.residual[0])
    assert cond.keep_step == uncond.keep_step == last


def test_pruned_output_depends_on_its_own_branch_only(tiny, tiny_workload):
    """Guidance off (one branch) and on (two) both run; a second generation starts from scratch."""
    cfg = StepPruneConfig(keep=0.5)
    applied = apply_all(tiny.pipe, [cfg], tiny.adapter)
    try:
        first = _run(tiny.pipe, tiny_workload)
        second = _run(tiny.pipe, tiny_workload)
    finally:
        applied.revert()
    assert _same(first, second)  # no state leaks from one generation into the next


# --- composition ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cache",
    [StepOutputCacheConfig(threshold=10.0), BlockResidualCacheConfig(threshold=10.0)],
    ids=lambda c: c.kind,
)
@pytest.mark.parametrize(
    "pruning",
    [StepPruneConfig(keep=0.5), StepPruneConfig(keep=0.5, scope="attention"), TokenMergeConfig(ratio=0.5)],
    ids=lambda c: f"{c.kind}-{getattr(c, 'scope', '')}",
)
def test_composes_with_a_step_cache_by_phase_order(tiny, tiny_workload, baseline, cache, pruning):
    ordered = compose([cache, pruning], tiny.adapter)
    assert [c.kind for c in ordered] == [pruning.kind, cache.kind]  # tokens (40) before steps (80)
    out, calls, work = _with(tiny, [cache, TextKVCacheConfig(), pruning], tiny_workload)
    assert all(np.isfinite(v).all() for v in out)
    assert calls["blocks"] < baseline[1]["blocks"]  # the cache still skips (a pruned step too)
    n = _tokens(tiny, tiny_workload)
    # Pruning counts only the blocks that ran: dense tokens = blocks run x tokens.
    assert work["tokens_dense"] == calls["blocks"] * n
    assert work["tokens_computed"] <= work["tokens_dense"]
    assert _same(_run(tiny.pipe, tiny_workload), baseline[0])  # reverted


def test_one_pruning_method_per_stack(tiny):
    with pytest.raises(ConflictError, match="token_set"):
        compose([StepPruneConfig(), TokenMergeConfig()], tiny.adapter)
    with pytest.raises(ConflictError, match="token_set"):
        compose([KVMergeConfig(), StepPruneConfig()], tiny.adapter)


def _sparse():
    kinds = registered_kinds()
    if "sparse_attention.sta" not in kinds:
        pytest.skip("the sparse attention skill is not registered")
    cfg_type = kinds["sparse_attention.sta"]
    return skill_for(cfg_type.model_construct(kind="sparse_attention.sta")).examples()[0]


def test_sparse_attention_beside_token_pruning(tiny, tiny_workload, baseline):
    sparse = _sparse()
    # Key/value merging is an attention backend of its own: refused by the effect check.
    with pytest.raises(ConflictError, match="attention_backend"):
        compose([sparse, KVMergeConfig()], tiny.adapter)
    # Step pruning replaces the self-attention processors (attend="all"): refused when applied,
    # in one line naming both, and nothing stays applied.
    with pytest.raises(SolError, match="sparse_attention"):
        apply_all(tiny.pipe, [sparse, StepPruneConfig(keep=0.5)], tiny.adapter)
    assert _same(_run(tiny.pipe, tiny_workload), baseline[0])
    # Merging keeps the model's attention processors: the pair runs, sparse attention dense on the
    # merged calls (it reads token_set), and the pruning's counters still hold.
    out, _calls, work = _with(tiny, [sparse, TokenMergeConfig(ratio=0.5)], tiny_workload)
    assert all(np.isfinite(v).all() for v in out)
    assert work["tokens_computed"] < work["tokens_dense"]


def test_a_span_selecting_no_layer_is_refused(tiny):
    cfg = TokenMergeConfig(layers=Span(start=50))
    with pytest.raises(SolError, match="select no block"):
        skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)


# --- counters ---------------------------------------------------------------------------------


def _per(work, name, part):
    return sum(v for k, v in work.items() if k.startswith(f"{name}.{part}."))


def test_step_prune_counters_match_its_schedule(tiny, tiny_workload, baseline):
    steps, n_blocks = tiny_workload.num_inference_steps, len(tiny.adapter.blocks())
    n = _tokens(tiny, tiny_workload)
    cfg = StepPruneConfig(keep=0.5, full_steps=(Span(stop=1),), layers=Span(start=1))
    _out, calls, work = _with(tiny, [cfg], tiny_workload)
    pruned = n_blocks - 1
    kept = round(0.5 * n)
    branches = 2
    assert work["tokens_dense"] == branches * steps * pruned * n
    assert work["tokens_computed"] == branches * pruned * (n + (steps - 1) * kept)
    for name in ("tokens_computed", "tokens_dense"):
        assert _per(work, name, "blocks") == work[name] == _per(work, name, "steps")
    assert "tokens_computed.blocks.0" not in work  # block 0 is not selected
    assert work["tokens_computed.steps.0"] == work["tokens_dense.steps.0"]  # the seeding step is full
    # Kept queries attend to every token ("all"): K x N pairs on pruned steps.
    assert work["attention_pairs"] == branches * pruned * (n * n + (steps - 1) * kept * n)
    assert calls["blocks"] == baseline[1]["blocks"]  # every block still runs, on fewer tokens


def test_merge_and_kv_merge_counters(tiny, tiny_workload):
    n = _tokens(tiny, tiny_workload)
    _o, _c, work = _with(tiny, [TokenMergeConfig(ratio=0.5)], tiny_workload)
    share = work["tokens_computed"] / work["tokens_dense"]
    assert share == pytest.approx(1 - int(0.5 * n) / n)
    assert work["attention_pairs"] / work["attention_pairs_dense"] == pytest.approx(share**2)
    _o, _c, work = _with(tiny, [KVMergeConfig(ratio=0.5, layers=Span(every=2))], tiny_workload)
    kept = n - int(0.5 * n)
    assert work["attention_pairs.blocks.0"] / work["attention_pairs_dense.blocks.0"] == pytest.approx(
        kept / n
    )
    assert "attention_pairs.blocks.1" not in work


# --- search -----------------------------------------------------------------------------------


def test_search_space_is_valid_and_cheap_first(tiny, tiny_workload):
    from sol.hardware import resolve

    ctx = SearchContext(adapter=tiny.adapter, hardware=resolve("cpu"), workload=tiny_workload)
    for kind in KINDS:
        skill = skill_for(
            {
                "token_pruning.merge": TokenMergeConfig(),
                "token_pruning.kv_merge": KVMergeConfig(),
                "token_pruning.step_prune": StepPruneConfig(),
            }[kind]
        )
        space = skill.search_space(ctx)
        for c in space:
            compose([c], tiny.adapter)
        assert len(space) <= 6


def test_keep_ramps_geometrically_after_the_full_steps():
    cfg = StepPruneConfig(keep=0.9, keep_end=0.1, full_steps=(Span(stop=2),))
    shares = [cfg.keep_at(i, 6) for i in range(6)]
    assert shares[:2] == [1.0, 1.0] and shares[2] == pytest.approx(0.9) and shares[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(shares[2:], shares[3:], strict=False))
    assert StepPruneConfig(keep=0.4).keep_at(3, None) == 0.4  # no step count: the flat ratio


def _result(cfg, psnr, speedup):
    from sol.bench.evaluate import CandidateResult

    return CandidateResult(
        label=cfg.label(),
        techniques=[cfg.model_dump(mode="json")],
        workload="w",
        ok=True,
        speedup=speedup,
        fidelity={"psnr_min": psnr},
    )


def test_refine_bisects_toward_the_floor(tiny, tiny_workload):
    from sol.hardware import resolve

    ctx = SearchContext(
        adapter=tiny.adapter, hardware=resolve("cpu"), workload=tiny_workload, budget={"min_psnr": 30.0}
    )
    full = (Span(stop=2),)
    a = StepPruneConfig(keep=0.9, keep_end=0.3, full_steps=full)  # passes
    b = StepPruneConfig(keep=0.6, keep_end=0.2, full_steps=full)  # fails
    new = skill_for(a).refine(ctx, [_result(a, 33.0, 1.3), _result(b, 27.0, 1.6)])
    assert [c.keep for c in new] == [0.8, 0.7]  # the bracket 0.9..0.6 in thirds
    assert new[0].keep_end == pytest.approx(0.3 * 0.8 / 0.9, rel=1e-2)  # the ramp keeps its shape
    # Every screened ratio passes: go further; none passes and none paid: nothing to refine.
    m = TokenMergeConfig(ratio=0.2)
    assert [c.ratio for c in skill_for(m).refine(ctx, [_result(m, 40.0, 1.2)])] == [0.3, 0.4]
    assert skill_for(m).refine(ctx, [_result(m, 20.0, 0.9)]) == []
    # A bracket narrower than a tenth of the passing level has converged (the cache's rule).
    c = StepPruneConfig(keep=0.722, keep_end=0.241, full_steps=full)
    d = StepPruneConfig(keep=0.7, keep_end=0.234, full_steps=full)
    assert skill_for(c).refine(ctx, [_result(c, 30.5, 1.45), _result(d, 29.9, 1.47)]) == []
