"""The shared hook toolkit on the tiny Wan: one handle installs and reverts everything, refuses to
stack, and tells hooks and processors where a call is (step, branch, token grid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sol.bench.runner import generate
from sol.errors import SolError
from sol.hooks import Installation, ModelHook, Span, hooked, owner_of, track_steps, tracker_of


def _run(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


class _Seen(ModelHook):
    """Records the forward context at every call of the module it hooks."""

    def __init__(self, ctx, log):
        super().__init__()
        self.ctx, self.log = ctx, log

    def new_forward(self, module, *args, **kwargs):
        c = self.ctx
        self.log.append((c.generation, c.step, c.num_steps, c.branch, c.grid))
        return self.fn_ref.original_forward(*args, **kwargs)


class _Dense:
    """A self-attention processor computing attention through the adapter (dense)."""

    def __init__(self, adapter, inner, log=None, ctx=None):
        self.adapter, self.inner, self.log, self.ctx = adapter, inner, log, ctx

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if self.log is not None:
            self.log.append(self.ctx.grid)
        return self.adapter.self_attention(attn, self.inner, hidden_states, rotary_emb)


def test_installation_reverts_hooks_processors_and_attributes(tiny, tiny_workload):
    base = _run(tiny.pipe, tiny_workload)
    adapter = tiny.adapter
    block = adapter.blocks()[0]
    attn = block.attn1
    old = attn.processor
    inst = Installation("test.toolkit")
    ctx = track_steps(inst, adapter)
    log: list = []
    inst.hook(block, _Seen(ctx, log), "test_seen", root=adapter.transformer)
    inst.processor(attn, _Dense(adapter, old))
    inst.attr(block, "sol_test_marker", 1)
    out = _run(tiny.pipe, tiny_workload)
    # A dense processor through the adapter is bit-identical to the model's own.
    assert all(np.array_equal(a, b) for a, b in zip(out, base, strict=True))
    assert owner_of(attn.processor) == "test.toolkit" and hooked(block, "test_seen")
    steps, branches = tiny_workload.num_inference_steps, {"cond", "uncond"}
    assert len(log) == 2 * steps
    assert {b for *_x, b, _g in log} == branches and {s for _g, s, *_x in log} == set(range(steps))
    assert {n for _g, _s, n, _b, _gr in log} == {steps}
    assert log[0][4] == adapter.token_grid((1, 8, 2, 4, 4)) == (2, 2, 2)  # 5 frames, 32x32 latents /8
    inst.revert()
    assert (
        attn.processor is old and not hooked(block, "test_seen") and tracker_of(adapter.transformer) is None
    )
    assert not hasattr(block, "sol_test_marker")
    assert all(np.array_equal(a, b) for a, b in zip(_run(tiny.pipe, tiny_workload), base, strict=True))


def test_generations_are_told_apart_and_a_second_install_is_refused(tiny, tiny_workload):
    adapter = tiny.adapter
    inst = Installation("test.toolkit")
    ctx = track_steps(inst, adapter)
    log: list = []
    inst.hook(adapter.blocks()[1], _Seen(ctx, log), "test_seen", root=adapter.transformer)
    try:
        _run(tiny.pipe, tiny_workload)
        _run(tiny.pipe, tiny_workload)
        assert [g for g, *_ in log].count(log[0][0]) == len(log) // 2  # two generations, numbered apart
        with pytest.raises(SolError, match="already applied"):
            Installation("test.toolkit").refuse_hooked([adapter.blocks()[1]], "test_seen")
        with pytest.raises(SolError, match="already applied"):
            inst.hook(adapter.blocks()[1], _Seen(ctx, log), "test_seen")
    finally:
        inst.revert()


def test_a_foreign_processor_is_refused(tiny):
    mods = tiny.adapter.self_attention_modules()
    first = Installation("test.first")
    m = next(iter(mods.values()))
    first.processor(m, _Dense(tiny.adapter, m.processor))
    try:
        with pytest.raises(SolError, match="conflicts with test.first"):
            Installation("test.second").refuse_foreign_processors(mods)
    finally:
        first.revert()


def test_the_tracker_counts_steps_without_a_pipeline_context(tiny, tiny_workload):
    """A caller running the transformer directly: steps follow the timesteps, a larger one restarts."""
    adapter = tiny.adapter
    t = adapter.transformer
    inst = Installation("test.toolkit")
    ctx = track_steps(inst, adapter)
    log: list = []
    inst.hook(adapter.blocks()[0], _Seen(ctx, log), "test_seen", root=t)
    x = torch.randn(1, t.config.in_channels, 2, 4, 4)
    text = torch.randn(1, 8, 64)
    try:
        with torch.no_grad():
            for ts in (999, 999, 500, 500, 10, 999):
                t(hidden_states=x, timestep=torch.tensor([ts]), encoder_hidden_states=text)
    finally:
        inst.revert()
    assert [s for _g, s, *_ in log] == [0, 0, 1, 1, 2, 0]
    assert log[-1][0] == log[0][0] + 1 and log[0][3] == "inference"


def test_span_schedules():
    assert Span(start=0, stop=3).indices(6) == [0, 1, 2]
    assert Span(start=-2).indices(6) == [4, 5]
    assert Span(start=1, every=2).indices(7) == [1, 3, 5]
    assert not Span(start=-2).contains(5)  # relative to an unknown end: nothing
    with pytest.raises(ValueError):
        Span(every=0)
