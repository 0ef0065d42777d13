"""SANA-Video adapter: ``SanaVideoTransformer3DModel`` inside ``SanaVideoPipeline``.

Block: ``norm1 -> modulate -> linear self-attention (attn1) -> gate``, then cross-attention to the
caption (``attn2``, softmax, masked), then ``norm2 -> modulate -> GLUMBTempConv`` (a 1x1 / 3x3 /
temporal convolution stack over the whole ``(frames, height, width)`` grid) -> gate.

What that means for Sol:

- self-attention is *linear* attention (ReLU feature maps, ``K^T V`` first): there is no
  query-key score matrix to make sparse, and its cost is already linear in the tokens, so sparse
  attention is refused here with that reason;
- the feed-forward is a convolution over the full token grid: a block cannot run on a subset of
  its tokens, so token pruning is refused;
- blocks map hidden states to hidden states with a per-sample modulation: block and step caches
  apply; cross-attention to the caption is masked (the pipeline pads the prompt and passes its
  mask), and text K/V reuse applies the mask at every call exactly as the processor does.
"""

from __future__ import annotations

import torch
from torch import nn

from sol.hooks.core import ArgRef
from sol.models.base import BlockIO, Capability, ModelAdapter, register_adapter


@register_adapter
class SanaVideoAdapter(ModelAdapter):
    family = "sana_video"
    title = "SANA-Video"
    pipeline_class = "SanaVideoPipeline"
    transformer_class = "SanaVideoTransformer3DModel"
    capabilities = frozenset(
        {
            Capability.SWAPPABLE_ATTENTION,
            Capability.CROSS_ATTENTION,
            Capability.BLOCK_RESIDUALS,
            Capability.LINEAR_LAYERS,
            Capability.STEP_MODULATION,
        }
    )
    capability_gaps = {
        Capability.DIFFUSERS_BLOCK_CACHE: "SanaVideoTransformer3DModel has no diffusers CacheMixin"
        " (enable_cache), so diffusers' FirstBlockCache, TaylorSeer and MagCache cannot attach; Sol's own"
        " block and step caches apply",
        Capability.SELF_ATTENTION_QKV: "SANA-Video's self-attention is linear attention (ReLU kernels, K^T V"
        " computed first): there is no query-key score map to sparsify, and its cost is already linear"
        " in the tokens",
        Capability.PRUNABLE_TOKENS: "SANA-Video's feed-forward (GLUMBTempConv) convolves the full"
        " (frames, height, width) token grid, so a block cannot run on a subset of its tokens",
    }
    # SanaVideoTransformerBlock.forward(hidden_states, attention_mask, encoder_hidden_states,
    # encoder_attention_mask, timestep, frames, height, width, rotary_emb) -> hidden_states; the
    # transformer passes them positionally. timestep is the adaLN-single output [B, 1, 6D].
    block_io = BlockIO(
        args=(
            "hidden_states",
            "attention_mask",
            "encoder_hidden_states",
            "encoder_attention_mask",
            "timestep",
            "frames",
            "height",
            "width",
            "rotary_emb",
        ),
        returns="hidden_states",
        hidden_states_layout="[B, S, D], S = frames * (H/2) * (W/2) in (t, h, w) raster order",
        per_token=("hidden_states", "rotary_emb"),
        modulation="timestep",
    )
    input_argument = ArgRef("hidden_states", 0)
    timestep_argument = ArgRef("timestep", 2)
    text_argument = ArgRef("encoder_hidden_states", 1)
    pipeline_size_multiple = 32  # SanaVideoPipeline.check_inputs: height and width divisible by 32

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        return type(transformer).__name__ == "SanaVideoTransformer3DModel"

    def blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    def self_attention_modules(self) -> dict[str, nn.Module]:
        return {f"transformer_blocks.{i}.attn1": b.attn1 for i, b in enumerate(self.blocks())}

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        return {
            f"transformer_blocks.{i}.attn2": b.attn2
            for i, b in enumerate(self.blocks())
            if b.attn2 is not None
        }

    def call_probes(self) -> dict[str, list[nn.Module]]:
        blocks = list(self.blocks())
        cross = [b.attn2 for b in blocks if b.attn2 is not None]
        return {
            "transformer": [self.transformer],
            "blocks": blocks,
            "self_attention": [b.attn1 for b in blocks],
            "cross_attention": cross,
            "text_kv_projection": [a.to_k for a in cross],
        }

    def spatial_patch(self) -> int:
        return int(self.transformer.config.patch_size[1])

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        pt, ph, pw = self.transformer.config.patch_size
        _, _, f, h, w = input_shape
        return f // pt, h // ph, w // pw

    # --- workloads --------------------------------------------------------------------------------

    def pipe_kwargs(self, workload, prompt: str, pipe=None) -> dict:
        """``frames`` (not ``num_frames``); no resolution binning (it would resize the workload) and no
        complex-human-instruction prefix (the text is the prompt, padded to ``max_sequence_length``)."""
        return {
            "prompt": prompt,
            "negative_prompt": workload.negative_prompt,
            "frames": workload.num_frames,
            "height": workload.height,
            "width": workload.width,
            "num_inference_steps": workload.num_inference_steps,
            "guidance_scale": workload.guidance_scale,
            "max_sequence_length": workload.max_sequence_length,
            "use_resolution_binning": False,
            "complex_human_instruction": [],
        }

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        cfg = self.transformer.config
        param = next(self.transformer.parameters())
        frames = (workload.num_frames - 1) // 4 + 1  # Wan's VAE layout: 4 frames, 8x8 pixels per latent
        shape = (1, cfg.in_channels, frames, workload.height // 8, workload.width // 8)
        out = []
        for i in range(calls):
            kwargs = {
                "hidden_states": torch.randn(shape, generator=generator).to(param),
                "encoder_hidden_states": torch.randn(
                    (1, workload.max_sequence_length, cfg.caption_channels), generator=generator
                ).to(param),
                "timestep": torch.tensor([1000.0 * (calls - i) / (calls + 1)]).to(param.device),
                "encoder_attention_mask": torch.ones(1, workload.max_sequence_length, device=param.device),
                "return_dict": False,
            }
            out.append(((), kwargs))
        return out

    # --- attention ----------------------------------------------------------------------------------

    def attend(self, processor, query, key, value, attention_mask=None, *, cross=False) -> torch.Tensor:
        """``SanaAttnProcessor2_0``'s (softmax, cross-attention) call."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=getattr(processor, "_attention_backend", None),
            parallel_config=getattr(processor, "_parallel_config", None),
        )

    def attention_output(self, attn: nn.Module, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor

    # --- caching ------------------------------------------------------------------------------------

    def modulated_input(
        self, block: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """``norm1(x) * (1 + scale_msa) + shift_msa``, as ``SanaVideoTransformerBlock.forward``."""
        b = hidden_states.shape[0]
        shift, scale = (block.scale_shift_table[None, None] + temb.reshape(b, temb.shape[1], 6, -1)).unbind(
            dim=2
        )[:2]
        return (block.norm1(hidden_states) * (1 + scale) + shift).to(hidden_states.dtype)

    def text_kv(self, attn: nn.Module, encoder_hidden_states: torch.Tensor):
        """Caption keys/values as ``SanaAttnProcessor2_0`` computes them (``norm_k``, split into heads)."""
        b = encoder_hidden_states.shape[0]
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        head_dim = key.shape[-1] // attn.heads
        return key.view(b, -1, attn.heads, head_dim), value.view(b, -1, attn.heads, head_dim)

    def cross_attention_from_kv(
        self, attn: nn.Module, processor, hidden_states, key, value, attention_mask=None
    ) -> torch.Tensor:
        """The rest of ``SanaAttnProcessor2_0.__call__``, op for op: the caption mask (a bias
        ``[B, 1, L]``) repeated per head as the processor prepares it."""
        b, length = key.shape[0], key.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, b)
            attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])
        query = attn.to_q(hidden_states)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        query = query.view(b, -1, attn.heads, key.shape[-1])
        out = self.attend(processor, query, key, value, attention_mask, cross=True)
        return self.attention_output(attn, out, query)
