"""Sparse attention: the shared skill contract for every method, plus what only sparse attention promises.

Real components: the tiny random Wan pipeline and its adapter; masks checked against dense SDPA with
the same mask written out token by token. FlexAttention runs eagerly on the CPU; the Triton kernel
under ``TRITON_INTERPRET=1`` (nothing mocked — there is no GPU here, so the paths a GPU would take
are run on the CPU instead).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sol.bench.runner import generate
from sol.errors import ConflictError, SolError
from sol.hooks import Span
from sol.skills import compose, skill_for
from sol.skills.sparse_attention import PisaConfig, RadialConfig, StaConfig, SvgConfig, Tiling, kernels
from sol.skills.sparse_attention._base import choose_tile
from sol.skills.sparse_attention.pisa import pisa_attend
from sol.skills.sparse_attention.svg import choose_patterns
from sol.skills.sparse_attention.tiling import radial_mask, spatial_mask, temporal_mask, window_mask
from tests.skills.skill_mixin import SkillContract

KINDS = ("sparse_attention.sta", "sparse_attention.svg", "sparse_attention.radial", "sparse_attention.pisa")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TestSparseContract(SkillContract):
    kinds = KINDS


@pytest.fixture(scope="module")
def grid_workload(tiny_workload):
    """9 frames at 64x64 on the tiny model: a (3, 4, 4) token grid (48 tokens), 3 steps."""
    return tiny_workload.model_copy(
        update={"name": "tiny-grid", "num_frames": 9, "height": 64, "width": 64, "num_inference_steps": 3}
    )


def _run(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _applied(tiny, cfg, workload):
    handle = skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)
    try:
        return _run(tiny.pipe, workload), handle.counters()
    finally:
        handle.revert()


def _reference(q, k, v, mask, tiling):
    """Dense SDPA with the tile mask written out per token, in raster order ([B, S, H, D])."""
    b, s, h, d = q.shape
    tile_of = tiling.from_tiles // tiling.tile_size
    m = mask.expand(h, -1, -1) if mask.shape[0] == 1 else mask
    tok = m[:, tile_of][:, :, tile_of]  # [H, S, S]
    out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), attn_mask=tok[None])
    return out.transpose(1, 2)


def _random_mask(n, groups, density, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(groups, n, n, generator=g) < density
    return m | torch.eye(n, dtype=torch.bool)


# --- tiling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid,tile",
    [((3, 4, 4), (1, 2, 2)), ((3, 5, 7), (2, 2, 4)), ((9, 16, 16), (1, 8, 8)), ((2, 3, 3), (4, 4, 4))],
)
def test_tiling_round_trip(grid, tile):
    t = Tiling.build(grid, tile)
    s = grid[0] * grid[1] * grid[2]
    x = torch.randn(2, s, 3, 5)
    tiles = t.gather(x)
    assert tiles.shape == (2, 3, t.tiles, t.tile_size, 5)
    assert torch.equal(t.scatter(tiles), x)
    # Tile order: every tile's real tokens are a contiguous box of the grid.
    f, h, w = grid
    for i in range(t.tiles):
        idx = t.to_tiles[i * t.tile_size : (i + 1) * t.tile_size]
        idx = idx[idx < s]
        ff, hh, ww = idx // (h * w), (idx // w) % h, idx % w
        assert int(ff.max() - ff.min()) < t.tile[0] and int(hh.max() - hh.min()) < t.tile[1]
        assert int(ww.max() - ww.min()) < t.tile[2]
    assert int(t.real.sum()) == s
    assert t.padded == (s != t.padded_tokens)


def test_grid_not_a_tile_multiple_pads_and_masks_padding():
    t = Tiling.build((3, 5, 7), (2, 2, 4))  # padded to (4, 6, 8)
    assert t.shape == (2, 3, 2) and t.padded and t.key_bias is not None
    assert (t.real >= 1).all()  # no tile is all padding: no query row is ever all -inf
    q, k, v = (torch.randn(1, t.tokens, 2, 8) for _ in range(3))
    mask = _random_mask(t.tiles, 1, 0.4, 0)
    out = t.scatter(kernels.attend_gather(t.gather(q), t.gather(k), t.gather(v), mask, t))
    torch.testing.assert_close(out, _reference(q, k, v, mask, t), atol=1e-5, rtol=1e-5)


def test_masks():
    t = Tiling.build((3, 4, 4), (1, 2, 2))  # tiles (3, 2, 2)
    w = window_mask(t, (1, 1, 1))
    assert torch.equal(w, torch.eye(t.tiles, dtype=torch.bool))
    assert (window_mask(t, (2, 1, 2)).sum(1) == 4).all()  # shifted inside the grid: same count per row
    assert window_mask(t, (9, 9, 9)).all()
    assert (spatial_mask(t).sum(1) == 4).all() and (temporal_mask(t).sum(1) == 3).all()
    r = radial_mask(Tiling.build((4, 4, 4), (1, 1, 1)), window=4, decay=1, min_window=0)
    assert [int(r[0].view(4, 4, 4)[dt].sum()) for dt in range(4)] == [16, 4, 1, 0]


def test_choose_tile():
    assert choose_tile((9, 16, 16), 64) == (1, 8, 8)
    assert choose_tile((9, 16, 16), 128) in ((1, 8, 16), (1, 16, 8), (2, 8, 8))
    assert choose_tile((3, 4, 4), 64) == (3, 4, 4)


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 4])  # one mask, one per head, one per (batch, head)
def test_gather_matches_dense_with_the_same_mask(groups):
    t = Tiling.build((3, 4, 4), (1, 2, 2))
    q, k, v = (torch.randn(2, t.tokens, 2, 8) for _ in range(3))
    mask = _random_mask(t.tiles, groups, 0.3, groups)
    out = t.scatter(kernels.attend_gather(t.gather(q), t.gather(k), t.gather(v), mask, t))
    if groups == 4:  # per (batch, head): compare batch rows one by one
        for b in range(2):
            ref = _reference(q[b : b + 1], k[b : b + 1], v[b : b + 1], mask[2 * b : 2 * b + 2], t)
            torch.testing.assert_close(out[b : b + 1], ref, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(out, _reference(q, k, v, mask, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid,tile,groups", [((2, 4, 4), (1, 4, 4), 1), ((2, 4, 6), (1, 4, 4), 2)])
def test_flex_attention_matches_the_gather_path(grid, tile, groups):
    pytest.importorskip("torch.nn.attention.flex_attention")
    t = Tiling.build(grid, tile)  # tiles of 16 tokens (FlexAttention's smallest block); one padded grid
    q, k, v = (torch.randn(1, t.tokens, 2, 16) for _ in range(3))
    mask = _random_mask(t.tiles, groups, 0.4, 3)
    qt, kt, vt = t.gather(q), t.gather(k), t.gather(v)
    gathered = kernels.attend_gather(qt, kt, vt, mask, t)
    flex = kernels.attend_flex(qt, kt, vt, mask, t, compiled=False)
    real = t.scatter(flex)  # padded query rows are dropped
    torch.testing.assert_close(real, t.scatter(gathered), atol=1e-5, rtol=1e-5)


def test_triton_kernel_in_the_interpreter_matches_the_gather_path(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # before the kernel is built (lazily, on first use)
    from sol.skills.sparse_attention.triton_kernel import attend_triton

    for grid, tile, groups in (((2, 4, 4), (1, 4, 4), 1), ((2, 3, 5), (1, 2, 4), 2)):
        t = Tiling.build(grid, tile)
        q, k, v = (torch.randn(1, t.tokens, 2, 8) for _ in range(3))
        mask = _random_mask(t.tiles, groups, 0.5, 7)
        qt, kt, vt = t.gather(q), t.gather(k), t.gather(v)
        out = attend_triton(qt, kt, vt, mask, t)
        torch.testing.assert_close(
            t.scatter(out), t.scatter(kernels.attend_gather(qt, kt, vt, mask, t)), atol=1e-5, rtol=1e-5
        )


def test_pisa_approximation_improves_on_dropping_tiles():
    t = Tiling.build((2, 4, 4), (1, 2, 2))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, t.tokens, 2, 8, generator=g) * 0.3 for _ in range(3))
    qt, kt, vt = t.gather(q), t.gather(k), t.gather(v)
    dense = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    exact, pairs_all = pisa_attend(qt, kt, vt, t, 0.0, 1)
    torch.testing.assert_close(t.scatter(exact), dense, atol=1e-5, rtol=1e-5)
    errs = {}
    for order in (0, 1):
        out, _ = pisa_attend(qt, kt, vt, t, 0.5, order)
        errs[order] = float((t.scatter(out) - dense).norm() / dense.norm())
    assert errs[1] < errs[0] < 0.2


def test_svg_profile_picks_the_pattern_a_head_follows():
    t = Tiling.build((3, 4, 4), (1, 2, 2))
    s, d = t.tokens, 16
    frame = torch.arange(s) // 16
    place = torch.arange(s) % 16
    # Head 0 attends within its frame, head 1 to its place in every frame (strong one-hot keys).
    emb_f = F.one_hot(frame, 16).float() * 8
    emb_p = F.one_hot(place, 16).float() * 8
    q = torch.stack([emb_f, emb_p], 1)[None]
    v = torch.randn(1, s, 2, d)
    choice, pairs = choose_patterns(q, q, v, t, samples=12, max_error=0.05)
    assert choice == ["spatial", "temporal"] and pairs == 2 * 12 * s
    choice, _ = choose_patterns(q, q, v, t, samples=12, max_error=0.0)
    assert choice == ["dense", "dense"]


# --- on the pipeline --------------------------------------------------------------------------------


def test_dense_configs_are_bit_identical_and_count_dense(tiny, grid_workload):
    base = _run(tiny.pipe, grid_workload)
    for cfg in (
        StaConfig(tile=(1, 2, 2), window=(3, 2, 2)),  # the window covers the whole grid
        StaConfig(tile=(1, 2, 2), window=(1, 1, 1), dense_steps=Span()),  # every step dense
        StaConfig(tile=(1, 2, 2), window=(1, 1, 1), layers=Span(stop=0)),  # no layer selected
        SvgConfig(tile=(1, 2, 2), max_error=0.0),  # no head passes the profile
        PisaConfig(tile=(1, 2, 2), sparsity=0.0),
    ):
        out, work = _applied(tiny, cfg, grid_workload)
        assert _same(out, base), cfg.label()
        assert work["attention_pairs"] >= work["attention_pairs_dense"] > 0, cfg.label()


def test_density_counters_per_layer(tiny, grid_workload):
    n_layers = len(tiny.adapter.self_attention_modules())
    steps, branches, heads = (
        grid_workload.num_inference_steps,
        2,
        tiny.pipe.transformer.config.num_attention_heads,
    )
    t = Tiling.build((3, 4, 4), (1, 2, 2))
    cfg = StaConfig(tile=(1, 2, 2), window=(1, 1, 2), dense_steps=Span(stop=1), dense_layers=(0,))
    out, work = _applied(tiny, cfg, grid_workload)
    kept = int(window_mask(t, (1, 1, 2)).sum()) * t.tile_size**2  # pairs per (batch row, head)
    dense = t.tokens**2
    calls = steps * branches
    assert work["attention_pairs_dense.blocks.1"] == calls * heads * dense
    # Layer 0 is a dense fallback; the others are dense at step 0 and sparse after.
    assert work["attention_pairs.blocks.0"] == calls * heads * dense
    assert work["attention_pairs.blocks.1"] == branches * heads * (dense + (steps - 1) * kept)
    assert work["attention_pairs"] == sum(work[f"attention_pairs.blocks.{i}"] for i in range(n_layers))
    assert work["sparse_attention_calls"] == (n_layers - 1) * (steps - 1) * branches
    # Why each dense call was dense (a dense step is named first).
    assert work["sparse_attention_dense.dense_step"] == n_layers * branches
    assert work["sparse_attention_dense.dense_layer"] == (steps - 1) * branches
    assert 0 < work["attention_pairs"] / work["attention_pairs_dense"] < 1


def test_every_method_runs_on_a_grid_that_is_not_a_tile_multiple(tiny, grid_workload):
    base = _run(tiny.pipe, grid_workload)
    for cfg in (
        StaConfig(tile=(2, 3, 3), window=(1, 1, 1)),  # (3, 4, 4) -> padded to (4, 6, 6)
        RadialConfig(tile=(2, 3, 3), window=1, decay=1, min_window=0),
        SvgConfig(tile=(1, 3, 3), max_error=10.0, samples=8),
        PisaConfig(tile=(2, 3, 3), sparsity=0.5),
    ):
        out, work = _applied(tiny, cfg, grid_workload)
        assert all(np.isfinite(x).all() for x in out), cfg.label()
        assert not _same(out, base), cfg.label()  # the pattern really ran
        assert work["sparse_attention_calls"] > 0, cfg.label()


def test_calls_outside_a_transformer_forward_run_dense(tiny, grid_workload):
    """A self-attention call without the step tracker's grid (or with another token count) is the
    model's own processor, counted dense: never reported as sparse."""
    cfg = StaConfig(tile=(1, 2, 2), window=(1, 1, 1))
    name, attn = next(iter(tiny.adapter.self_attention_modules().items()))
    x = torch.randn(1, 48, attn.to_q.in_features)
    with torch.no_grad():
        ref = attn(x)
        handle = skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)
        try:
            out = attn(x)
        finally:
            handle.revert()
    assert torch.equal(out, ref)
    work = handle.counters()
    assert (
        work["attention_pairs"] == work["attention_pairs_dense"]
        and work["sparse_attention_dense.no_grid"] == 1
    )


def test_cross_attention_is_untouched(tiny):
    cfg = StaConfig(tile=(1, 2, 2), window=(1, 1, 1))
    before = {n: m.processor for n, m in tiny.adapter.cross_attention_modules().items()}
    handle = skill_for(cfg).apply(tiny.pipe, cfg, tiny.adapter)
    try:
        assert {n: m.processor for n, m in tiny.adapter.cross_attention_modules().items()} == before
    finally:
        handle.revert()


def test_refusals(tiny):
    with pytest.raises(SolError, match="dense_layers"):
        skill_for(StaConfig()).apply(tiny.pipe, StaConfig(dense_layers=(99,)), tiny.adapter)
    with pytest.raises(SolError, match="gather path only"):
        skill_for(PisaConfig()).apply(tiny.pipe, PisaConfig(backend="flex"), tiny.adapter)
    with pytest.raises(ConflictError, match="attention_backend"):
        compose([StaConfig(), SvgConfig()], tiny.adapter)
    with pytest.raises(ValueError):
        StaConfig(window=(0, 1, 1))


def test_composes_with_caches_by_phase(tiny, grid_workload):
    from sol.skills.base import apply_all
    from sol.skills.cache import BlockResidualCacheConfig, TextKVCacheConfig

    configs = [
        BlockResidualCacheConfig(threshold=0.3),
        StaConfig(tile=(1, 2, 2), window=(1, 1, 2)),
        TextKVCacheConfig(),
    ]
    assert [c.kind for c in compose(configs, tiny.adapter)][0] == "sparse_attention.sta"
    applied = apply_all(tiny.pipe, configs, tiny.adapter)
    try:
        out = _run(tiny.pipe, grid_workload)
        work = applied.counters()
    finally:
        applied.revert()
    assert all(np.isfinite(x).all() for x in out) and work["sparse_attention_calls"] > 0


def test_search_space_is_valid_and_cheap_first(tiny, grid_workload):
    from sol.hardware import Hardware, resolve
    from sol.skills import SearchContext
    from sol.skills.base import skills_by_family

    # Methods race in registration order when the cost model cannot price them: cheapest per pair first.
    kinds = [s.config_type.model_fields["kind"].default for s in skills_by_family()["sparse_attention"]]
    assert kinds == [f"sparse_attention.{m}" for m in ("sta", "radial", "svg", "pisa")]
    ctx = SearchContext(adapter=tiny.adapter, hardware=resolve("cpu"), workload=grid_workload)
    for kind, cls in (("sta", StaConfig), ("svg", SvgConfig), ("radial", RadialConfig)):
        space = skill_for(cls()).search_space(ctx)
        assert space and all(c.kind == f"sparse_attention.{kind}" for c in space), kind
    # PISA is slower than dense on the CPU at every setting that kept quality: searched on a GPU only.
    assert skill_for(PisaConfig()).search_space(ctx) == []
    gpu = SearchContext(
        adapter=tiny.adapter, hardware=Hardware("cuda", "h100", "test"), workload=grid_workload
    )
    assert all(c.kind == "sparse_attention.pisa" for c in skill_for(PisaConfig()).search_space(gpu))
    assert skill_for(PisaConfig()).search_space(gpu)


def test_layer_profile_and_the_layer_knob(tiny, grid_workload):
    """The per-layer attention error (evidence, one partial generation) is measured and recorded;
    the search keeps the pattern on the last layers, where an error costs least end to end."""
    from sol.hardware import resolve
    from sol.skills import SearchContext
    from sol.skills.sparse_attention import _search

    base = _run(tiny.pipe, grid_workload)
    procs = {n: m.processor for n, m in tiny.adapter.self_attention_modules().items()}
    ctx = SearchContext(adapter=tiny.adapter, hardware=resolve("cpu"), workload=grid_workload, pipe=tiny.pipe)
    cfg = StaConfig(tile=(1, 2, 2), window=(1, 1, 1))
    errors = _search.layer_errors(ctx, cfg)
    n = len(procs)
    assert errors is not None and len(errors) == n and all(e > 0 for e in errors)
    assert ctx.notes["sparse_attention"]["layer_errors"][cfg.label()] == [round(e, 4) for e in errors]
    space = skill_for(cfg).search_space(ctx)
    assert any(c.layers.start == n // 2 and not c.dense_layers for c in space)
    # The profile left the pipeline as it was.
    assert {n: m.processor for n, m in tiny.adapter.self_attention_modules().items()} == procs
    assert _same(_run(tiny.pipe, grid_workload), base)


def test_refine_keeps_the_pattern_on_the_last_layers_when_nothing_passes(tiny, grid_workload):
    """Nothing met the floor: the most faithful window tried, on the last quarter of the layers
    only, and that with a dense first step; with a bracket, a window between the two densities."""
    from types import SimpleNamespace

    from sol.hardware import resolve
    from sol.skills import SearchContext
    from sol.skills.sparse_attention._search import refine_windows

    ctx = SearchContext(adapter=tiny.adapter, hardware=resolve("cpu"), workload=grid_workload)
    n = len(tiny.adapter.self_attention_modules())

    def result(cfg, density, psnr):
        work = {"attention_pairs": density * 100.0, "attention_pairs_dense": 100.0}
        return SimpleNamespace(ok=True, techniques=[cfg.model_dump(mode="json")], work=work, psnr=psnr)

    sparse, gentle = StaConfig(tile=(1, 2, 2), window=(1, 1, 1)), StaConfig(tile=(1, 2, 2), window=(1, 2, 2))
    out = refine_windows(ctx, [result(sparse, 0.25, 15.0), result(gentle, 0.5, 20.0)], StaConfig)
    last = Span(start=n - max(1, n // 4))
    assert out[0] == gentle.model_copy(update={"layers": last})
    if grid_workload.num_inference_steps > 2:
        assert out[1] == gentle.model_copy(update={"layers": last, "dense_steps": Span(stop=1)})
    bracket = refine_windows(
        ctx,
        [result(sparse, 0.25, 15.0), result(gentle, 0.5, 31.0)],
        StaConfig,
        lambda cfg, target, tiling: cfg.model_copy(update={"window": (1, 1, 2)}),
    )
    assert bracket == [gentle.model_copy(update={"window": (1, 1, 2)})]
