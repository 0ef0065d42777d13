"""Wan (2.1 / 2.2) adapter: ``WanTransformer3DModel`` inside ``WanPipeline``."""

from __future__ import annotations

import torch
from torch import nn

from sol.models.base import (
    BLOCK_RESIDUALS,
    CROSS_ATTENTION,
    LINEAR_LAYERS,
    PRUNABLE_TOKENS,
    STEP_MODULATION,
    SWAPPABLE_ATTENTION,
    BlockIO,
    ModelAdapter,
    register_adapter,
)


@register_adapter
class WanAdapter(ModelAdapter):
    family = "wan"
    capabilities = frozenset(
        {
            SWAPPABLE_ATTENTION,
            CROSS_ATTENTION,
            BLOCK_RESIDUALS,
            PRUNABLE_TOKENS,
            LINEAR_LAYERS,
            STEP_MODULATION,
        }
    )
    # WanTransformerBlock.forward(hidden_states, encoder_hidden_states, temb, rotary_emb) -> hidden_states
    block_io = BlockIO(
        args=("hidden_states", "encoder_hidden_states", "temb", "rotary_emb"),
        returns="hidden_states",
        hidden_states_layout="[B, S, D], S = frames * (H/ph) * (W/pw) in (t, h, w) raster order",
    )

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        return type(transformer).__name__ == "WanTransformer3DModel" and hasattr(transformer, "blocks")

    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    def self_attention_modules(self) -> dict[str, nn.Module]:
        return {f"blocks.{i}.attn1": b.attn1 for i, b in enumerate(self.transformer.blocks)}

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        return {f"blocks.{i}.attn2": b.attn2 for i, b in enumerate(self.transformer.blocks)}

    def call_probes(self) -> dict[str, list[nn.Module]]:
        """Modules whose calls mean work really ran (see ``sol.bench.runner.count_calls``)."""
        blocks = list(self.transformer.blocks)
        return {
            "transformer": [self.transformer],
            "blocks": [b.ffn for b in blocks],
            # norm_q, not the attention module: a cache that hooks the module's forward (diffusers'
            # PAB) still goes through its __call__ when it returns a cached output.
            "self_attention": [b.attn1.norm_q for b in blocks],
            "cross_attention": [b.attn2.norm_q for b in blocks],
            "text_kv_projection": [b.attn2.to_k for b in blocks],
        }

    def patch_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (frames, height, width) for latents of shape [B, C, F, H, W]."""
        pt, ph, pw = self.transformer.config.patch_size
        _, _, f, h, w = latent_shape
        return f // pt, h // ph, w // pw

    def modulated_input(
        self, block: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """``norm1(x) * (1 + scale_msa) + shift_msa``: the input of the block's self-attention.

        Same arithmetic as ``WanTransformerBlock.forward`` (temb is ``[B, 6, D]``, or ``[B, S, 6, D]`` on Wan 2.2 TI2V).
        """
        if temb.ndim == 4:
            shift, scale = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)[:2]
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (block.scale_shift_table + temb.float()).chunk(6, dim=1)[:2]
        return (block.norm1(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)

    def text_kv(self, attn: nn.Module, encoder_hidden_states: torch.Tensor):
        """Text keys/values as ``WanAttnProcessor`` computes them (after ``norm_k``, split into heads).

        None for image-conditioned cross-attention (I2V: image and text share the call and are split
        inside the processor).
        """
        if getattr(attn, "add_k_proj", None) is not None or not getattr(attn, "is_cross_attention", False):
            return None
        if getattr(attn, "fused_projections", False):
            key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
        else:
            key = attn.to_k(encoder_hidden_states)
            value = attn.to_v(encoder_hidden_states)
        key = attn.norm_k(key)
        return key.unflatten(2, (attn.heads, -1)), value.unflatten(2, (attn.heads, -1))

    def cross_attention_from_kv(self, attn: nn.Module, processor, hidden_states, key, value) -> torch.Tensor:
        """The rest of ``WanAttnProcessor.__call__`` for text-only cross-attention, op for op."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=None,
            dropout_p=0.0,
            is_causal=False,
            backend=getattr(processor, "_attention_backend", None),
            parallel_config=None,
        )
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))
