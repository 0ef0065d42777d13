"""Wan (2.1 / 2.2) adapter: ``WanTransformer3DModel`` inside ``WanPipeline``."""

from __future__ import annotations

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
            "self_attention": [b.attn1 for b in blocks],
            "cross_attention": [b.attn2 for b in blocks],
            "text_kv_projection": [b.attn2.to_k for b in blocks],
        }

    def patch_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (frames, height, width) for latents of shape [B, C, F, H, W]."""
        pt, ph, pw = self.transformer.config.patch_size
        _, _, f, h, w = latent_shape
        return f // pt, h // ph, w // pw
