"""HunyuanVideo 1.5 adapter: ``HunyuanVideo15Transformer3DModel`` inside ``HunyuanVideo15Pipeline``.

A dual-stream (MMDiT) transformer: every block modulates the video tokens and the text tokens
(AdaLayerNormZero on each), runs one joint attention over ``[video; text]`` with a padding mask,
and an FFN per stream; it returns ``(video, text)``. The text stream is built per call from the
prompt embeddings by a timestep-conditioned token refiner, plus ByT5 glyph and image tokens.

What that means for Sol (the reasons are the adapter's ``capability_gaps``):

- quantization applies; the video stream's timestep-modulated input is exposed
  (``modulated_input``) for step caching;
- text K/V reuse is refused: the text is a stream that the refiner conditions on the timestep and
  every block updates, so its keys and values change at every step;
- sparse attention is refused: attention is joint over video and text tokens with one mask, and
  the q/k/v contract covers video self-attention alone;
- Sol's block and step caches bypass both streams together (a residual per stream; the decision
  watches the video stream); diffusers' block caches do not register this block; token pruning
  has no two-stream contract.
"""

from __future__ import annotations

import torch
from torch import nn

from sol.hooks.core import ArgRef
from sol.models.base import BlockIO, Capability, ModelAdapter, WorkloadRules, register_adapter


@register_adapter
class HunyuanVideo15Adapter(ModelAdapter):
    family = "hunyuan_video15"
    title = "HunyuanVideo 1.5"
    pipeline_class = "HunyuanVideo15Pipeline"
    transformer_class = "HunyuanVideo15Transformer3DModel"
    capabilities = frozenset(
        {
            Capability.SWAPPABLE_ATTENTION,
            Capability.BLOCK_RESIDUALS,
            Capability.LINEAR_LAYERS,
            Capability.STEP_MODULATION,
        }
    )
    capability_gaps = {
        Capability.CROSS_ATTENTION: "HunyuanVideo 1.5 has no cross-attention: the text is a second stream,"
        " conditioned on the timestep by its token refiner and updated by every block, so its keys and"
        " values change at every step",
        Capability.SELF_ATTENTION_QKV: "HunyuanVideo 1.5 attention is joint over video and text tokens with"
        " one padding mask (MMDiT); the q/k/v contract covers video self-attention alone",
        Capability.DIFFUSERS_BLOCK_CACHE: "diffusers' block caches do not register"
        " HunyuanVideo15TransformerBlock (TransformerBlockRegistry); Sol's own block and step caches apply",
        Capability.PRUNABLE_TOKENS: "HunyuanVideo 1.5 blocks return (video, text) from one joint attention;"
        " pruning video tokens needs a two-stream block contract",
    }
    # HunyuanVideo15TransformerBlock.forward(hidden_states, encoder_hidden_states, temb, attention_mask,
    # freqs_cis) -> (hidden_states, encoder_hidden_states); temb is per sample [B, D].
    block_io = BlockIO(
        args=("hidden_states", "encoder_hidden_states", "temb", "attention_mask", "freqs_cis"),
        returns="(hidden_states, encoder_hidden_states)",
        hidden_states_layout="[B, S, D], S = F' * H' * W' in (t, h, w) raster order",
        per_token=("hidden_states", "freqs_cis"),
        modulation="temb",
        streams=("hidden_states", "encoder_hidden_states"),
    )
    input_argument = ArgRef("hidden_states", 0)
    timestep_argument = ArgRef("timestep", 1)
    text_argument = ArgRef("encoder_hidden_states", 2)

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        return type(transformer).__name__ == "HunyuanVideo15Transformer3DModel"

    def blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    def self_attention_modules(self) -> dict[str, nn.Module]:
        """The joint attention of every block (video and text in one call)."""
        return {f"transformer_blocks.{i}.attn": b.attn for i, b in enumerate(self.blocks())}

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        return {}

    def call_probes(self) -> dict[str, list[nn.Module]]:
        blocks = list(self.blocks())
        return {
            "transformer": [self.transformer],
            "blocks": blocks,
            "self_attention": [b.attn for b in blocks],
        }

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        cfg = self.transformer.config
        _, _, f, h, w = input_shape
        return f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

    def spatial_patch(self) -> int:
        return int(self.transformer.config.patch_size)

    # --- workloads ----------------------------------------------------------------------------------

    def workload_rules(self, pipe=None) -> WorkloadRules:
        t = int(getattr(pipe, "vae_scale_factor_temporal", 4))
        s = int(getattr(pipe, "vae_scale_factor_spatial", 16))
        guider = getattr(pipe, "guider", None)
        scale = getattr(guider, "guidance_scale", None)
        return WorkloadRules(
            frame_step=t,
            size_multiple=s * self.spatial_patch(),
            max_text_tokens=None,
            text_length="fixed by the pipeline (1000 Qwen2.5-VL tokens + 256 ByT5 glyph tokens; max_sequence_length"
            " is unused)",
            guidance_scale=float(scale) if isinstance(scale, int | float) else None,
        )

    def pipe_kwargs(self, workload, prompt: str, pipe=None) -> dict:
        """No guidance argument (the pipeline's guider holds the scale; the workload rules check it)."""
        return {
            "prompt": prompt,
            "negative_prompt": workload.negative_prompt,
            "num_frames": workload.num_frames,
            "height": workload.height,
            "width": workload.width,
            "num_inference_steps": workload.num_inference_steps,
        }

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        """Latents ``[1, 2C+1, F', H/16, W/16]`` (noisy latents, condition latents, mask: text-to-video
        passes zeros for the condition), text states of the pipeline's lengths, no image tokens."""
        cfg = self.transformer.config
        param = next(self.transformer.parameters())
        frames = (workload.num_frames - 1) // 4 + 1
        c = cfg.out_channels
        shape = (1, c, frames, workload.height // 16, workload.width // 16)
        out = []
        for i in range(calls):
            latents = torch.randn(shape, generator=generator)
            hs = torch.cat([latents, torch.zeros(shape), torch.zeros((1, 1, *shape[2:]))], dim=1)
            kwargs = {
                "hidden_states": hs.to(param),
                "timestep": torch.tensor([1000.0 * (calls - i) / (calls + 1)]).to(param.device),
                "encoder_hidden_states": torch.randn((1, 1000, cfg.text_embed_dim), generator=generator).to(
                    param
                ),
                "encoder_attention_mask": torch.ones(1, 1000, device=param.device),
                "encoder_hidden_states_2": torch.zeros((1, 256, cfg.text_embed_2_dim)).to(param),
                "encoder_attention_mask_2": torch.zeros(1, 256, device=param.device),
                "image_embeds": torch.zeros((1, 729, cfg.image_embed_dim)).to(param),
                "return_dict": False,
            }
            out.append(((), kwargs))
        return out

    # --- caching ------------------------------------------------------------------------------------

    def modulated_input(
        self, block: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """``norm1(x) * (1 + scale_msa) + shift_msa`` of the video stream (``AdaLayerNormZero``)."""
        return block.norm1(hidden_states, emb=temb)[0]
