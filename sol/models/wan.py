"""Wan (2.1 / 2.2) adapter: ``WanTransformer3DModel`` inside ``WanPipeline``.

Wan 2.2 A14B pipelines hold two experts: ``transformer`` for high-noise steps (timestep >=
``boundary_ratio`` x 1000) and ``transformer_2`` for the rest; both are denoisers here.
"""

from __future__ import annotations

import torch
from diffusers.models.activations import GELU
from torch import nn

from sol.hooks.core import ArgRef
from sol.models.base import BlockIO, BlockOps, Capability, FeedForwardParts, ModelAdapter, register_adapter


def _rope(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """``WanAttnProcessor``'s rotary embedding, op for op (interleaved pairs)."""
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


_EAGER = BlockOps()


def _fusable_rms(*norms: nn.Module) -> bool:
    """RMSNorm with a weight (Wan's ``rms_norm_across_heads``): what the fused norm + RoPE computes."""
    return all(isinstance(n, nn.RMSNorm) and n.weight is not None for n in norms)


def _eps(norm: nn.Module, x: torch.Tensor) -> float:
    return float(norm.eps) if norm.eps is not None else float(torch.finfo(x.dtype).eps)


@register_adapter
class WanAdapter(ModelAdapter):
    family = "wan"
    title = "Wan 2.1 / 2.2"
    pipeline_class = "WanPipeline"
    transformer_class = "WanTransformer3DModel"
    capabilities = frozenset(
        {
            Capability.SWAPPABLE_ATTENTION,
            Capability.SELF_ATTENTION_QKV,
            Capability.CROSS_ATTENTION,
            Capability.BLOCK_RESIDUALS,
            Capability.PRUNABLE_TOKENS,
            Capability.LINEAR_LAYERS,
            Capability.STEP_MODULATION,
            Capability.FUSABLE_BLOCKS,
            Capability.DIFFUSERS_BLOCK_CACHE,
        }
    )
    # WanTransformerBlock.forward(hidden_states, encoder_hidden_states, temb, rotary_emb) -> hidden_states.
    # temb is [B, 6, D] (per sample), or [B, S, 6, D] on Wan 2.2 TI2V (per token).
    block_io = BlockIO(
        args=("hidden_states", "encoder_hidden_states", "temb", "rotary_emb"),
        returns="hidden_states",
        hidden_states_layout="[B, S, D], S = frames * (H/ph) * (W/pw) in (t, h, w) raster order",
        per_token=("hidden_states", "rotary_emb", "temb"),
    )
    input_argument = ArgRef("hidden_states", 0)
    timestep_argument = ArgRef("timestep", 1)
    text_argument = ArgRef("encoder_hidden_states", 2)
    denoiser_attributes = ("transformer", "transformer_2")
    pipeline_size_multiple = 16  # WanPipeline.check_inputs: height and width divisible by 16

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
        """Modules whose calls mean work really ran (see ``sol.bench.runner.Probes``)."""
        blocks = list(self.transformer.blocks)
        return {
            "transformer": [self.transformer],
            "blocks": blocks,
            "self_attention": [b.attn1 for b in blocks],
            "cross_attention": [b.attn2 for b in blocks],
            "text_kv_projection": [b.attn2.to_kv if getattr(b.attn2, "fused_projections", False) else b.attn2.to_k
                                   for b in blocks],
        }  # fmt: skip

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (frames, height, width) for latents of shape [B, C, F, H, W]."""
        pt, ph, pw = self.transformer.config.patch_size
        _, _, f, h, w = input_shape
        return f // pt, h // ph, w // pw

    def spatial_patch(self) -> int:
        return int(self.transformer.config.patch_size[1])

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        """Gaussian latents ``[1, C, F', H/8, W/8]`` (Wan's VAE: 4 frames and 8x8 pixels per latent) and
        text states of the workload's length, timesteps spread over the schedule."""
        cfg = self.transformer.config
        param = next(self.transformer.parameters())
        frames = (workload.num_frames - 1) // 4 + 1
        shape = (1, cfg.in_channels, frames, workload.height // 8, workload.width // 8)
        out = []
        for i in range(calls):
            kwargs = {
                "hidden_states": torch.randn(shape, generator=generator).to(param),
                "timestep": torch.tensor([1000.0 * (calls - i) / (calls + 1)]).to(param.device),
                "encoder_hidden_states": torch.randn(
                    (1, workload.max_sequence_length, cfg.text_dim), generator=generator
                ).to(param),
                "return_dict": False,
            }
            out.append(((), kwargs))
        return out

    def select_tokens(self, name: str, value, index: torch.Tensor):
        if name == "temb" and value is not None and value.ndim != 4:
            return value  # per-sample modulation (Wan 2.1 / T2V): shared by every token
        return super().select_tokens(name, value, index)

    # --- attention, as WanAttnProcessor computes it ---------------------------------------------

    def self_attention_qkv(
        self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb=None, *, norm_rope=None
    ):
        """``norm_rope(x, weight, eps, heads, cos, sin) -> [B, S, H, D]``, when given, replaces RMSNorm
        (across heads), the head split and RoPE of q and k with one fused op (``sol.kernels``)."""
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if norm_rope is not None and rotary_emb is not None and _fusable_rms(attn.norm_q, attn.norm_k):
            q, k = ((x, n.weight, _eps(n, x)) for x, n in ((query, attn.norm_q), (key, attn.norm_k)))
            value = value.unflatten(2, (attn.heads, -1))
            return norm_rope(*q, attn.heads, *rotary_emb), norm_rope(*k, attn.heads, *rotary_emb), value
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _rope(query, *rotary_emb)
            key = _rope(key, *rotary_emb)
        return query, key, value

    def attend(self, processor, query, key, value, attention_mask=None, *, cross=False) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=getattr(processor, "_attention_backend", None),
            # As WanAttnProcessor: context parallelism applies to self-attention only.
            parallel_config=None if cross else getattr(processor, "_parallel_config", None),
        )

    def attention_output(self, attn: nn.Module, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    # --- kernel fusion --------------------------------------------------------------------------

    def block_forward(
        self, block: nn.Module, hidden_states, encoder_hidden_states, temb, rotary_emb, *, ops=None
    ):
        """``WanTransformerBlock.forward`` over :class:`BlockOps` chains, op for op (diffusers 0.42)."""
        ops = _EAGER if ops is None else ops
        if temb.ndim == 4:  # [B, S, 6, D]: per-token modulation (Wan 2.2 TI2V)
            mods = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
            mods = [m.squeeze(2) for m in mods]
        else:  # [B, 6, D]
            mods = (block.scale_shift_table + temb.float()).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = mods
        norm_hidden_states = ops.norm_modulate(hidden_states, block.norm1, shift_msa, scale_msa)
        attn_output = ops.self_attention(block.attn1, norm_hidden_states, rotary_emb)
        hidden_states = ops.gated_residual(hidden_states, attn_output, gate_msa)
        norm_hidden_states = ops.norm(hidden_states, block.norm2)
        attn_output = ops.cross_attention(block.attn2, norm_hidden_states, encoder_hidden_states)
        hidden_states = hidden_states + attn_output
        norm_hidden_states = ops.norm_modulate(hidden_states, block.norm3, c_shift_msa, c_scale_msa)
        ff_output = ops.feed_forward(block.ffn, norm_hidden_states, self.feed_forward_parts(block.ffn))
        return ops.gated_residual(hidden_states, ff_output, c_gate_msa)

    def feed_forward_parts(self, ffn: nn.Module) -> FeedForwardParts | None:
        """diffusers ``FeedForward``: ``net = [GELU(proj, approximate), Dropout, Linear(, Dropout)]``."""
        net = getattr(ffn, "net", None)
        if not isinstance(net, nn.ModuleList) or not net or type(net[0]) is not GELU:
            return None
        return FeedForwardParts(net[0].proj, net[0].approximate, tuple(net[1:]))

    # --- caching --------------------------------------------------------------------------------

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

    def cross_attention_from_kv(
        self, attn: nn.Module, processor, hidden_states, key, value, attention_mask=None
    ) -> torch.Tensor:
        """The rest of ``WanAttnProcessor.__call__`` for text-only cross-attention, op for op (the
        processor hands ``attention_mask`` to the attention call unchanged)."""
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        out = self.attend(processor, query, key, value, attention_mask, cross=True)
        return self.attention_output(attn, out, query)
