"""``fusion.triton``: a block's op chains swapped for the fused ``torch.ops.sol`` kernels (CUDA).

``ops`` names the fused kernels used (see :mod:`sol.kernels`):

- ``norm_modulate``: LayerNorm + adaLN scale/shift (and the plain LayerNorm before
  cross-attention) — one read and one write instead of five passes;
- ``qk_norm_rope``: RMSNorm of q and k across heads + interleaved RoPE, in self-attention
  computed through the adapter (``self_attention_qkv(..., norm_rope=...)``);
- ``gated_residual``: ``x + y * gate`` after self-attention and after the feed-forward;
- ``linear_gelu``: the feed-forward's first projection with its GELU in the GEMM epilogue,
  with the model's own approximation (tanh or erf: pinned, they differ by up to 4.7e-4).

A module another technique changed runs as it is (see :mod:`._blocks`); a quantized projection
(not a float ``nn.Linear``) keeps its own kernel, so quantization and fused ops compose. On the
CPU the ops run their float32 torch reference (or the Triton interpreter under
``TRITON_INTERPRET=1``): correct, not faster — the search offers this method on CUDA only.

Counting: with ``qk_norm_rope`` self-attention is computed through the adapter instead of the
attention module's call, so its probe does not see it: counted as ``fused_calls.self_attention``.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import torch
from pydantic import field_validator
from torch import nn

import sol.kernels  # noqa: F401  (registers torch.ops.sol.*)
from sol.hooks import Installation
from sol.kernels.linear_gelu import APPROXIMATIONS
from sol.models.base import BlockOps, Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.fusion._blocks import Fuser, changed_by_others, install

Op = Literal["gated_residual", "linear_gelu", "norm_modulate", "qk_norm_rope"]
OPS: tuple[str, ...] = ("gated_residual", "linear_gelu", "norm_modulate", "qk_norm_rope")


class FusedKernels(TechniqueConfig):
    """Swap a block's chains for fused Triton kernels; ``ops``: which ones.

    >>> FusedKernels(ops=("norm_modulate",)).label()
    "fusion.triton(ops=('norm_modulate',))"
    """

    kind: Literal["fusion.triton"] = "fusion.triton"
    version: int = 1
    ops: tuple[Op, ...] = OPS

    @field_validator("ops")
    @classmethod
    def _sorted(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))


def _layer_norm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1


class KernelOps(BlockOps):
    """Block chains through ``torch.ops.sol`` where ``ops`` allows and the module is plain."""

    def __init__(self, adapter, ops: frozenset[str], hidden: frozenset[str] = frozenset()):
        self.adapter = adapter
        self.ops = ops
        self.hidden = hidden  # attention parts computed through the adapter, not their module

    def norm_modulate(self, x, norm, shift, scale):
        if "norm_modulate" in self.ops and _layer_norm(norm):
            return torch.ops.sol.layernorm_modulate(x, norm.weight, norm.bias, scale, shift, norm.eps)
        return super().norm_modulate(x, norm, shift, scale)

    def norm(self, x, norm):
        if "norm_modulate" in self.ops and _layer_norm(norm):
            return torch.ops.sol.layernorm_modulate(x, norm.weight, norm.bias, None, None, norm.eps)
        return super().norm(x, norm)

    def gated_residual(self, x, y, gate):
        if "gated_residual" in self.ops:
            return torch.ops.sol.gated_residual(x, y, gate)
        return super().gated_residual(x, y, gate)

    def self_attention(self, attn, x, rotary_emb):
        if "self_attention" not in self.hidden:
            return super().self_attention(attn, x, rotary_emb)
        a = self.adapter
        q, k, v = a.self_attention_qkv(attn, x, rotary_emb, norm_rope=torch.ops.sol.rmsnorm_rope)
        return a.attention_output(attn, a.attend(attn.processor, q, k, v), q)

    def feed_forward(self, ffn, x, parts=None):
        if (
            "linear_gelu" not in self.ops
            or parts is None
            or type(parts.proj) is not nn.Linear  # a quantized projection keeps its own kernel
            or parts.approximate not in APPROXIMATIONS
            or changed_by_others(ffn)
        ):
            return super().feed_forward(ffn, x, parts)
        h = torch.ops.sol.linear_gelu(x, parts.proj.weight, parts.proj.bias, parts.approximate)
        for m in parts.tail:
            h = m(h)
        return h


def _run_block(adapter, block, ops, *args, **kwargs):
    return adapter.block_forward(block, *args, ops=ops, **kwargs)


class KernelFuser(Fuser):
    """Eager blocks over :class:`KernelOps`; self-attention is hidden from its module (computed
    through the adapter with the fused RMSNorm + RoPE) when ``qk_norm_rope`` is on."""

    def __init__(self, adapter, config: FusedKernels):
        self.adapter, self.ops = adapter, frozenset(config.ops)
        self.wants = frozenset({"self_attention"}) if "qk_norm_rope" in self.ops else frozenset()
        self.variants: dict[frozenset[str], tuple] = {}

    def variant(self, hidden: frozenset[str]):
        if hidden not in self.variants:
            self.variants[hidden] = (_run_block, KernelOps(self.adapter, self.ops, hidden))
        return self.variants[hidden]


@register_skill(FusedKernels)
class FusedKernelsSkill(Skill):
    name = "fusion"
    reads = frozenset({Seam.KERNEL_FUSION})
    writes = frozenset({Seam.KERNEL_FUSION})
    requires = frozenset({Capability.FUSABLE_BLOCKS})
    phase = Phase.KERNELS
    packages = ("triton",)

    def apply(self, pipe, config: FusedKernels, adapter) -> Installation:
        inst = Installation(config.kind)
        counts: Counter = Counter()
        install(inst, adapter, config.kind, config.label(), KernelFuser(adapter, config), counts)
        inst.counter_fn = lambda: dict(counts)
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [FusedKernels(), FusedKernels(ops=("gated_residual", "norm_modulate"))]

    def available(self, hardware) -> str | None:
        why = super().available(hardware)
        if why:
            return why
        if getattr(hardware, "kind", "cpu") != "cuda":
            return "needs a CUDA GPU (Triton kernels); on the CPU, fusion.compile fuses with inductor's C++ backend"
        return None

    def search_space(self, context) -> list[TechniqueConfig]:
        from sol.skills.fusion.search import leave_one_out

        return leave_one_out(self, context, FusedKernels(), "ops", OPS)
