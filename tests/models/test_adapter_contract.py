"""The adapter contract new techniques build on, checked on the Wan adapter: attention from q/k/v,
per-token arguments, the token grid, linear layers, and every denoiser of a Wan 2.2 pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sol.bench.runner import Probes, generate
from sol.models import Capability, adapter_for, fingerprint, gather_tokens, load_model
from sol.plan import HardwareRef, ModelRef, Plan
from sol.runtime import apply_plan
from sol.skills import apply_all
from sol.skills.cache import BlockResidualCacheConfig, TextKVCacheConfig
from sol.skills.quantization import QuantizeLinear


def _run(pipe, workload):
    with torch.no_grad():
        return generate(pipe, workload)


def test_capabilities_are_an_enum(tiny):
    caps = tiny.adapter.capabilities
    assert all(isinstance(c, Capability) for c in caps)
    assert Capability.SELF_ATTENTION_QKV in caps and "block_residuals" in caps  # StrEnum: compares to values


def test_per_token_arguments_are_gathered_with_the_tokens(tiny):
    a = tiny.adapter
    assert {"hidden_states", "rotary_emb"} <= set(a.block_io.per_token)
    hs = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    idx = torch.tensor([[4, 0], [1, 2]])
    assert a.select_tokens("hidden_states", hs, idx).tolist() == [[hs[0, 4].tolist(), hs[0, 0].tolist()],
                                                                 [hs[1, 1].tolist(), hs[1, 2].tolist()]]  # fmt: skip
    cos = torch.randn(1, 5, 1, 4)
    got = a.select_tokens("rotary_emb", (cos, cos), idx)
    assert got[0].shape == (2, 2, 1, 4) and torch.equal(got[0][1, 0], cos[0, 1])
    temb = torch.randn(2, 6, 3)  # Wan 2.1: per sample, shared by every token
    assert a.select_tokens("temb", temb, idx) is temb
    assert a.select_tokens("encoder_hidden_states", hs, idx) is hs
    assert gather_tokens(hs, torch.tensor([3])).shape == (2, 1, 3)


def test_linear_layers_are_found_under_the_blocks_whatever_their_names(tiny):
    names = tiny.adapter.linear_layers()
    assert names and all(n.startswith("blocks.") for n in names)
    assert all(isinstance(m, nn.Linear) for m in names.values())
    assert "blocks.0.attn1.to_q" in names and not any(n.startswith("proj_out") for n in names)


@pytest.fixture(scope="module")
def wan22():
    return load_model("tiny-wan2.2-random")


def test_a_wan22_pipeline_has_two_experts_with_a_boundary(wan22):
    a = wan22.adapter
    assert [e.name for e in a.experts] == ["transformer", "transformer_2"]
    assert a.boundary_ratio == 0.875 and a.experts[1].transformer is wan22.pipe.transformer_2
    info = a.describe()
    assert [e["name"] for e in info["experts"]] == ["transformer", "transformer_2"]


def test_both_experts_are_fingerprinted(wan22, tmp_path):
    fp = fingerprint(wan22.pipe)
    assert fp.cls == "WanTransformer3DModel+WanTransformer3DModel" and len(fp.experts) == 2
    assert fp.experts[0]["weights_hash"] != fp.experts[1]["weights_hash"]
    one = fingerprint(wan22.pipe.transformer)
    assert (one.cls, one.weights_hash) == ("WanTransformer3DModel", fp.experts[0]["weights_hash"])
    # A plan made for this pipeline is refused once the second expert's weights change.
    plan = Plan.empty(
        model=ModelRef(name="w22", **fp.to_json()), hardware=HardwareRef(kind="cpu", name="cpu")
    )
    path = plan.save(tmp_path / "plan.json")
    apply_plan(wan22.pipe, path).revert()
    other = load_model("tiny-wan2.2-random")
    with torch.no_grad():
        other.pipe.transformer_2.blocks[0].ffn.net[2].weight.add_(1e-3)
    with pytest.raises(Exception, match=r"weights \(transformer_2\) differ"):
        apply_plan(other.pipe, path)


def test_both_experts_are_accelerated(wan22):
    wl_kwargs = dict(prompts=["a red circle moving right"], num_frames=5, height=32, width=32,
                     num_inference_steps=6, guidance_scale=4.5)  # fmt: skip
    from sol.workload import Workload

    wl = Workload(name="w22", **wl_kwargs)
    pipe = wan22.pipe
    base = _run(pipe, wl)
    with torch.no_grad():
        from sol.bench.runner import count_calls

        with count_calls(wan22.adapter) as base_calls:
            _run(pipe, wl)
    probes = []
    applied = apply_all(
        pipe,
        [BlockResidualCacheConfig(threshold=10.0), TextKVCacheConfig()],
        wan22.adapter,
        instrument=lambda: probes.append(Probes(wan22.adapter)) or probes[-1],
    )
    try:
        out = _run(pipe, wl)
        work = applied.counters()
    finally:
        applied.revert()
    assert len(applied.handles) == 0  # reverted
    # Each expert ran some steps (boundary), and on each the cache skipped blocks.
    assert base_calls["blocks"] == 2 * wl.num_inference_steps * 4
    assert probes[0].counts["blocks"] < base_calls["blocks"]
    assert work["text_kv_computed"] == 2 * 2 * 4  # prompt + negative prompt, 4 blocks, per expert
    assert all(np.isfinite(v).all() for v in out)
    assert all(np.array_equal(a, b) for a, b in zip(_run(pipe, wl), base, strict=True))


def test_quantization_reaches_both_experts(wan22):
    from sol.bench.evaluate import candidate_pipeline
    from sol.skills.quantization import quantize

    pipe, adapter = candidate_pipeline(wan22.pipe, wan22.adapter, share_weights=False)
    done = quantize(pipe, QuantizeLinear(scheme="int8_dynamic"))
    assert any(k.startswith("transformer_2:") for k in done) and any(":" not in k for k in done)
    assert not isinstance(pipe.transformer_2.blocks[0].attn1.to_q, nn.Linear)
    assert isinstance(wan22.pipe.transformer_2.blocks[0].attn1.to_q, nn.Linear)  # the original is untouched
    assert adapter_for(pipe).experts[1].transformer is pipe.transformer_2
