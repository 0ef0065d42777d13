"""Kernel fusion: the shared contract, the adapter's block forward, compiled blocks and fused ops,
composition with caches, text K/V reuse and quantization, work counting, and leave-one-out.

Graph-capture tests compile with dynamo's captured graphs run as they are (``COMPILER =
"eager"``): guards, graph breaks and recompiles are dynamo's, and inductor's code generation
(10-30 s per graph here) is exercised once, in the slow end-to-end test.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch
from diffusers.models.attention import FeedForward

from sol.bench.evaluate import Evaluator
from sol.bench.runner import PROBE_HOOK, Probes, generate
from sol.errors import ConflictError, SolError
from sol.hardware import Hardware, detect_cpu
from sol.skills import SearchContext, apply_all, compose, skill_for
from sol.skills.cache import BlockResidualCacheConfig, TextKVCacheConfig
from sol.skills.fusion import CompileBlocks, FusedKernels, _blocks, compiled
from sol.skills.fusion import search as fsearch
from sol.skills.fusion.fused_ops import KernelOps
from sol.skills.quantization import QuantizeLinear
from tests.skills.skill_mixin import SkillContract

H100 = Hardware("cuda", "h100", "NVIDIA H100", (9, 0))


@pytest.fixture(autouse=True)
def _eager_compiler(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILER", "eager")


class TestFusionContract(SkillContract):
    kinds = ("fusion.compile", "fusion.triton")


def _close(a, b, atol=1e-4) -> bool:
    return all(np.abs(x - y).max() <= atol for x, y in zip(a, b, strict=True))


def _gen(pipe, workload, **kw):
    with torch.no_grad():
        return generate(pipe, workload, **kw)


# --- the adapter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_block_forward_with_default_ops_is_bit_identical(tiny, dtype):
    adapter = tiny.adapter
    # A copy: casting the session's block to bfloat16 and back would round its weights for every
    # later test (plans made after it no longer matched a fresh process's fingerprint).
    block = copy.deepcopy(adapter.blocks()[0])
    g = torch.Generator().manual_seed(0)
    dim = block.scale_shift_table.shape[-1]
    hs = torch.randn((1, 24, dim), generator=g).to(dtype)
    text = torch.randn((1, 8, dim), generator=g).to(dtype)
    temb = torch.randn((1, 6, dim), generator=g)
    angle = torch.rand((1, 24, 1, dim // 8), generator=g, dtype=torch.float64)
    rope = (angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1))
    with torch.no_grad():
        block.to(dtype)
        want = block(hs, text, temb, rope)
        got = adapter.block_forward(block, hs, text, temb, rope)
    assert torch.equal(want, got)


def test_feed_forward_parts_name_the_models_own_gelu(tiny):
    parts = tiny.adapter.feed_forward_parts(tiny.adapter.blocks()[0].ffn)
    assert parts.approximate == "tanh" and isinstance(parts.proj, torch.nn.Linear)
    assert tiny.adapter.feed_forward_parts(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("activation", ["gelu", "gelu-approximate"])
def test_fused_feed_forward_computes_the_models_gelu(tiny, activation):
    """GELU pinned: an erf FFN stays erf through the fused op, a tanh one tanh."""
    ffn = FeedForward(32, inner_dim=48, activation_fn=activation).eval()
    x = torch.randn(1, 5, 32)
    ops = KernelOps(tiny.adapter, frozenset({"linear_gelu"}))
    with torch.no_grad():
        got = ops.feed_forward(ffn, x, tiny.adapter.feed_forward_parts(ffn))
        want = ffn(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_probe_hook_name_matches_the_evaluators():
    assert PROBE_HOOK in _blocks.PROBE_HOOKS


# --- fusion.compile ------------------------------------------------------------------------------


def test_compile_runs_every_block_in_one_graph_and_counts_hidden_attention(tiny, tiny_workload):
    base = _gen(tiny.pipe, tiny_workload)
    probes = []

    def instrument():
        probes.append(Probes(tiny.adapter))
        return probes[-1]

    applied = apply_all(tiny.pipe, [CompileBlocks()], tiny.adapter, instrument=instrument)
    try:
        out = _gen(tiny.pipe, tiny_workload)
        work, counts = applied.counters(), dict(probes[0].counts)
        # The probes stepped aside only while each block ran: they are back on their modules.
        attn = tiny.adapter.blocks()[0].attn1
        assert "forward" in attn.__dict__ and PROBE_HOOK in attn._diffusers_hook.hooks
    finally:
        applied.revert()
    assert _close(base, out)
    blocks = counts["blocks"]
    assert blocks == 4 * counts["transformer"]
    # Attention inside the graph never reaches its probe; fusion counts it instead.
    assert counts.get("self_attention", 0) == 0
    assert work["fused_calls.self_attention"] == work["fused_calls.cross_attention"] == blocks
    assert work["fused_calls.text_kv_projection"] == blocks
    assert work["compiles"] == 1  # one graph for every block, probes or not


def test_step_cache_plus_compile_never_recompiles_across_steps(tiny, tiny_workload):
    """Cache decisions stay outside the compiled graphs: after the first step compiled each block,
    no later step (some skipped, some computed) and no second generation compiles again."""
    cfgs = [CompileBlocks(), BlockResidualCacheConfig(threshold=0.3, warmup_steps=1)]
    applied = apply_all(tiny.pipe, cfgs, tiny.adapter)
    after_step = []
    try:
        _gen(
            tiny.pipe, tiny_workload, step_callback=lambda: after_step.append(applied.counters()["compiles"])
        )
        _gen(tiny.pipe, tiny_workload)
        total = applied.counters()["compiles"]
    finally:
        applied.revert()
    assert after_step[0] == total == 1, after_step


def test_text_kv_reuse_runs_outside_the_graph_and_still_reuses(tiny, tiny_workload):
    ref_applied = apply_all(tiny.pipe, [TextKVCacheConfig()], tiny.adapter)
    try:
        want = _gen(tiny.pipe, tiny_workload)
    finally:
        ref_applied.revert()
    applied = apply_all(tiny.pipe, [CompileBlocks(), TextKVCacheConfig()], tiny.adapter)
    after_step = []
    try:
        got = _gen(
            tiny.pipe, tiny_workload, step_callback=lambda: after_step.append(applied.counters()["compiles"])
        )
        work = applied.counters()
    finally:
        applied.revert()
    assert _close(want, got)
    assert work["text_kv_reused"] > 0 and work["text_kv_computed"] == 2 * 4  # cond + uncond, 4 blocks
    assert "fused_calls.cross_attention" not in work  # it ran outside the graph, where probes count
    assert work["fused_calls.self_attention"] > 0
    assert after_step[0] == work["compiles"]  # graph breaks around attn2, no recompiles across steps


def test_quantized_layers_run_outside_the_graph(tiny, tiny_workload):
    """int8 dynamic linears cannot be traced (every call a graph break): the parts holding them run
    eagerly, so quantization and compiled chains compose and match quantization alone."""
    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
    alone = ev.evaluate([QuantizeLinear(scheme="int8_dynamic")])
    both = ev.evaluate([QuantizeLinear(scheme="int8_dynamic"), CompileBlocks()])
    assert alone.ok and both.ok, both.reason
    assert abs(alone.psnr - both.psnr) < 1.0
    assert "fused_calls.self_attention" not in both.work
    assert both.calls["self_attention"] == alone.calls["self_attention"]  # probes saw every call


def test_other_techniques_changes_are_detected(tiny):
    attn = tiny.adapter.blocks()[0].attn1
    assert not _blocks.changed_by_others(attn)
    probes = Probes(tiny.adapter)
    try:
        assert not _blocks.changed_by_others(attn)  # the work probes are compile-aware
    finally:
        probes.revert()
    applied = apply_all(tiny.pipe, [TextKVCacheConfig()], tiny.adapter)
    try:
        assert _blocks.changed_by_others(tiny.adapter.blocks()[0].attn2)
        assert not _blocks.changed_by_others(attn)
    finally:
        applied.revert()


def test_compile_refuses_blocks_that_already_carry_hooks(tiny):
    applied = apply_all(tiny.pipe, [BlockResidualCacheConfig(threshold=0.1)], tiny.adapter)
    try:
        with pytest.raises(SolError, match="before hooks on the blocks"):
            skill_for(CompileBlocks()).apply(tiny.pipe, CompileBlocks(), tiny.adapter)
    finally:
        applied.revert()


def test_config_spellings_compare_equal():
    assert CompileBlocks(inside=("self_attention", "feed_forward", "self_attention")) == CompileBlocks(
        inside=("feed_forward", "self_attention")
    )


# --- the effect check and availability -------------------------------------------------------------


def test_two_fusion_methods_are_refused_together(tiny):
    with pytest.raises(ConflictError) as err:
        compose([CompileBlocks(), FusedKernels()], tiny.adapter)
    msg = str(err.value)
    assert "fusion.compile" in msg and "fusion.triton" in msg and "kernel_fusion" in msg


def test_triton_method_is_offered_on_cuda_only():
    skill = skill_for(FusedKernels())
    assert ("triton" if skill.missing_packages() else "CUDA") in skill.available(detect_cpu())
    if skill.missing_packages():
        assert "triton" in skill.available(H100)
    else:
        assert skill.available(H100) is None
    assert skill_for(CompileBlocks()).available(detect_cpu()) is None


# --- fusion.triton -------------------------------------------------------------------------------


def test_fused_ops_on_the_cpu_match_eager(tiny, tiny_workload):
    """On the CPU the ops run their float32 references: the swap itself is checked here."""
    pytest.importorskip(
        "triton", reason="fusion.triton needs triton: pip install 'sol[gpu]' (the dev extra has it)"
    )
    base = _gen(tiny.pipe, tiny_workload)
    applied = apply_all(tiny.pipe, [FusedKernels()], tiny.adapter)
    try:
        out = _gen(tiny.pipe, tiny_workload)
        work = applied.counters()
    finally:
        applied.revert()
    assert _close(base, out)
    assert work["fused_calls.self_attention"] > 0


def test_fused_ops_in_the_triton_interpreter_match_eager(tiny, monkeypatch):
    """One transformer call with every block's chains in Triton kernels (CPU interpreter)."""
    pytest.importorskip("triton", reason="triton is not installed: pip install 'sol[gpu]'")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    t = tiny.pipe.transformer
    (args, kwargs), *_ = tiny.adapter.example_inputs(
        types.SimpleNamespace(num_frames=5, height=32, width=32, max_sequence_length=8), calls=1
    )
    with torch.no_grad():
        want = t(*args, **kwargs)[0]
        handle = skill_for(FusedKernels()).apply(tiny.pipe, FusedKernels(), tiny.adapter)
        try:
            got = t(*args, **kwargs)[0]
        finally:
            handle.revert()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fused_ops_compose_with_quantization(tiny, tiny_workload):
    pytest.importorskip(
        "triton", reason="fusion.triton needs triton: pip install 'sol[gpu]' (the dev extra has it)"
    )
    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
    alone = ev.evaluate([QuantizeLinear(scheme="int8_dynamic")])
    both = ev.evaluate([QuantizeLinear(scheme="int8_dynamic"), FusedKernels()])
    assert both.ok, both.reason
    assert abs(alone.psnr - both.psnr) < 1.0


# --- leave-one-out ----------------------------------------------------------------------------------


class _Timed:
    def __init__(self, speedup):
        self.speedup = speedup

    def summary(self):
        return {"speedup": self.speedup}


def _fake_search(monkeypatch, tiny, speedups: dict[str, float]):
    """Leave-one-out with its timings replaced by ``speedups`` (variant name -> speedup): timing is
    never asserted in tests, the decision is."""
    current = []

    class NoOp:
        def apply(self, pipe, cfg, adapter):
            from sol.hooks import Handle

            missing = [p for p in compiled.PARTS if p not in cfg.inside]
            current.append("all" if not missing else f"without {missing[0]}")
            return Handle(None)

    monkeypatch.setattr("sol.bench.timing.interleaved", lambda *a, **k: _Timed(speedups[current[-1]]))
    workload = types.SimpleNamespace(num_frames=5, height=32, width=32, max_sequence_length=8)
    ctx = SearchContext(adapter=tiny.adapter, hardware=detect_cpu(), workload=workload)
    return ctx, fsearch.leave_one_out(NoOp(), ctx, CompileBlocks(), "inside", compiled.PARTS)


def test_leave_one_out_keeps_only_parts_that_pay(monkeypatch, tiny):
    ctx, out = _fake_search(
        monkeypatch,
        tiny,
        {
            "all": 1.30,
            "without self_attention": 1.10,
            "without cross_attention": 1.29,
            "without feed_forward": 1.20,
        },
    )
    kept = CompileBlocks(inside=("self_attention", "feed_forward"))
    assert out == [kept, CompileBlocks()]
    notes = ctx.notes["fusion"]["leave_one_out"]["fusion.compile"]
    assert notes["kept"] == ["feed_forward", "self_attention"] and notes["why_none"] is None


def test_leave_one_out_proposes_nothing_when_fusion_does_not_pay(monkeypatch, tiny):
    ctx, out = _fake_search(
        monkeypatch,
        tiny,
        {
            "all": 1.01,
            "without self_attention": 1.0,
            "without cross_attention": 1.0,
            "without feed_forward": 1.0,
        },
    )
    assert out == []
    assert "gained 1.010x" in ctx.notes["fusion"]["leave_one_out"]["fusion.compile"]["why_none"]


@pytest.mark.slow
def test_inductor_end_to_end(tiny, tiny_workload, monkeypatch):
    """The real compiler (C++ codegen on the CPU): close outputs, one graph per block, counters."""
    monkeypatch.setattr(compiled, "COMPILER", "inductor")
    ev = Evaluator(tiny, tiny_workload, repeats=1, warmup=0, timing=False)
    r = ev.evaluate([CompileBlocks()])
    assert r.ok, r.reason
    assert r.psnr > 60 and r.work["compiles"] == 1
    assert r.work["fused_calls.self_attention"] == r.calls["blocks"]
