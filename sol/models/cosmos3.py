"""Cosmos3 adapter: ``Cosmos3OmniTransformer`` inside ``Cosmos3OmniPipeline`` (text-to-video).

Cosmos3 is a mixture of transformers over one packed, unbatched sequence: the prompt's tokens
form a causal "understanding" prefix (``und_seq``), the noisy video latents a "generation" part
(``gen_seq``), each with its own projections, norms and MLPs in every layer. In attention the
prefix attends causally to itself; the video attends to prefix and video together. The timestep
enters as an embedding added to the noisy tokens before the first layer (no adaLN in the layers).
Each layer returns ``(und_seq, gen_seq)``.

What that means for Sol (the reasons are the adapter's ``capability_gaps``):

- quantization applies (every linear of both pathways, found by structure);
- there is no cross-attention: text K/V reuse is refused. The prefix does not depend on the
  latents, so its per-layer keys and values are the same at every step of a generation; reusing
  them needs a prefix cache of the understanding pathway, not a cross-attention K/V cache;
- attention is one packed dual-pathway call, so the q/k/v contract of sparse attention (one
  stream's self-attention) does not describe it, and token pruning has no per-stream contract;
- Sol's block cache applies: it bypasses both streams together (a residual per stream; the decision
  watches the video). diffusers registers this layer for its block caches, but in 0.42.1 their hooks
  fail on its argument names; step-output caching needs a timestep-modulated input, which these
  layers do not have.
"""

from __future__ import annotations

import torch
from torch import nn

from sol.errors import SolError
from sol.hooks.core import ArgRef
from sol.models.base import BlockIO, Capability, ModelAdapter, WorkloadRules, register_adapter


@register_adapter
class Cosmos3Adapter(ModelAdapter):
    family = "cosmos3"
    title = "Cosmos3"
    pipeline_class = "Cosmos3OmniPipeline"
    transformer_class = "Cosmos3OmniTransformer"
    capabilities = frozenset({Capability.LINEAR_LAYERS, Capability.BLOCK_RESIDUALS})
    capability_gaps = {
        Capability.DIFFUSERS_BLOCK_CACHE: "diffusers 0.42.1 registers Cosmos3's layer, but its FirstBlockCache"
        " and MagCache hooks read the block's arguments as hidden_states / encoder_hidden_states and fail on"
        " (und_seq, gen_seq); Sol's own block cache applies",
        Capability.CROSS_ATTENTION: "Cosmos3 has no cross-attention: the prompt is a causal prefix of one"
        " packed sequence, run through every layer at every step (its keys and values do not change"
        " during a generation, but reusing them needs a prefix cache, not text K/V reuse)",
        Capability.SELF_ATTENTION_QKV: "Cosmos3 attention is one packed dual-pathway call (video queries"
        " attend to the text prefix and the video together, with separate projections per pathway); the"
        " q/k/v contract covers one stream's self-attention",
        Capability.SWAPPABLE_ATTENTION: "Cosmos3's attention processor takes (und_seq, gen_seq, rotary_emb),"
        " not the (hidden_states, encoder_hidden_states, ...) call Sol's attention techniques wrap",
        Capability.PRUNABLE_TOKENS: "Cosmos3 packs text and video into one unbatched sequence per layer;"
        " there is no per-stream token contract to prune",
        Capability.STEP_MODULATION: "Cosmos3 layers have no timestep modulation: the timestep embedding is"
        " added to the noisy tokens before the first layer",
    }
    block_io = BlockIO(
        args=("und_seq", "gen_seq", "rotary_emb"),
        returns="(und_seq, gen_seq)",
        hidden_states_layout="[N, D] packed without a batch axis; gen_seq = video tokens in (t, h, w) raster order",
        per_token=("gen_seq",),
        token_dim=0,
        hidden_states="gen_seq",
        modulation="",
        streams=("und_seq", "gen_seq"),
    )
    input_argument = ArgRef("vision_tokens", 5)
    timestep_argument = ArgRef("vision_timesteps", 10)
    text_argument = ArgRef("input_ids", 0)

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        return type(transformer).__name__ == "Cosmos3OmniTransformer"

    def blocks(self) -> nn.ModuleList:
        return self.transformer.layers

    def self_attention_modules(self) -> dict[str, nn.Module]:
        return {f"layers.{i}.self_attn": b.self_attn for i, b in enumerate(self.blocks())}

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        return {}

    def call_probes(self) -> dict[str, list[nn.Module]]:
        blocks = list(self.blocks())
        return {
            "transformer": [self.transformer],
            "blocks": blocks,
            "self_attention": [b.self_attn for b in blocks],
        }

    # --- tokens -------------------------------------------------------------------------------------

    def _patch(self) -> int:
        return int(self.transformer.config.latent_patch_size)

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """For one item's latents ``[C, F, H, W]`` (or ``[B, C, F, H, W]``)."""
        f, h, w = input_shape[-3:]
        p = self._patch()
        return f, h // p, w // p

    def call_token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int, int] | None:
        shapes = ArgRef("vision_token_shapes", 6).get(args, kwargs)
        if shapes:
            return tuple(int(x) for x in shapes[0])
        tokens = self.input_argument.get(args, kwargs)
        if isinstance(tokens, list | tuple) and tokens and isinstance(tokens[0], torch.Tensor):
            return self.token_grid(tuple(tokens[0].shape))
        return None

    # --- workloads ----------------------------------------------------------------------------------

    def spatial_patch(self) -> int:
        return self._patch()

    def workload_rules(self, pipe=None) -> WorkloadRules:
        t = int(getattr(pipe, "vae_scale_factor_temporal", 4))
        s = int(getattr(pipe, "vae_scale_factor_spatial", 16))
        return WorkloadRules(
            frame_step=t,
            size_multiple=s * self._patch(),
            max_text_tokens=None,
            text_length="the prompt's own tokens (Cosmos3 does not pad the prompt; max_sequence_length is unused)",
        )

    def pipe_kwargs(self, workload, prompt: str, pipe=None) -> dict:
        """The pipeline's own prompt templates and system-prompt default are kept (they are part of the
        model's conditioning); frame rate 24."""
        return {
            "prompt": prompt,
            "negative_prompt": workload.negative_prompt,
            "num_frames": workload.num_frames,
            "height": workload.height,
            "width": workload.width,
            "num_inference_steps": workload.num_inference_steps,
            "guidance_scale": workload.guidance_scale,
            "fps": 24.0,
        }

    def video_output(self, output):
        return output.video

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        raise SolError(
            "Cosmos3's packed inputs (token indexes, mRoPE positions) are built by its pipeline;"
            " calibrate with the pipeline (quantization's scan does when one is given)"
        )
