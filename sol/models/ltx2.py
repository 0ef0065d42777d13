"""LTX-2 adapter: ``LTX2VideoTransformer3DModel`` (audio + video) inside ``LTX2Pipeline``.

Each block carries two streams: video ``hidden_states`` and ``audio_hidden_states``. Video runs
self-attention (``attn1``), cross-attention to the prompt (``attn2``, masked), audio-to-video
cross-attention, and an FFN; audio does the same on its side, plus video-to-audio attention. A block
returns ``(video, audio)``.

What that means for Sol:

- video self-attention is softmax attention computed from q/k/v (RMSNorm across heads, then
  interleaved or split RoPE, then heads): sparse attention can swap it. LTX-2.3's gated attention
  (per-head gates from the block's input) is kept by :meth:`LTX2Adapter.self_attention`;
- the transformer's input is already packed (``[B, S, C]``): the token grid comes from its
  ``num_frames``/``height``/``width`` arguments;
- text K/V reuse applies to the video prompt cross-attention (``attn2``) and honours its mask;
  on LTX-2.3 checkpoints whose prompt modulation depends on the timestep (``prompt_adaln``), the
  text entering ``attn2`` changes every step and reuse is refused;
- Sol's block and step caches bypass both streams together (a residual per stream; the decision
  watches the video stream); diffusers' block caches do not know this block. Token pruning has no
  two-stream contract and is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from sol.errors import SolError
from sol.hooks.core import ArgRef
from sol.models.base import (
    BlockIO,
    Capability,
    ModelAdapter,
    WorkloadRules,
    register_adapter,
    tokenizer_max_length,
)


def _rope(attn, x: torch.Tensor, freqs) -> torch.Tensor:
    from diffusers.models.transformers.transformer_ltx2 import (
        apply_interleaved_rotary_emb,
        apply_split_rotary_emb,
    )

    if attn.rope_type == "interleaved":
        return apply_interleaved_rotary_emb(x, freqs)
    if attn.rope_type == "split":
        return apply_split_rotary_emb(x, freqs)
    return x


@register_adapter
class LTX2Adapter(ModelAdapter):
    family = "ltx2"
    title = "LTX-2"
    pipeline_class = "LTX2Pipeline"
    transformer_class = "LTX2VideoTransformer3DModel"
    capabilities = frozenset(
        {
            Capability.SWAPPABLE_ATTENTION,
            Capability.SELF_ATTENTION_QKV,
            Capability.CROSS_ATTENTION,
            Capability.BLOCK_RESIDUALS,
            Capability.LINEAR_LAYERS,
            Capability.STEP_MODULATION,
        }
    )
    capability_gaps = {
        Capability.DIFFUSERS_BLOCK_CACHE: "diffusers' block caches do not register LTX2VideoTransformerBlock"
        " (TransformerBlockRegistry); Sol's own block and step caches apply",
        Capability.PRUNABLE_TOKENS: "LTX-2 blocks return (video, audio) and mix the streams through audio-video"
        " cross-attention inside the block; pruning video tokens needs a two-stream block contract",
    }
    block_io = BlockIO(
        args=(
            "hidden_states",
            "audio_hidden_states",
            "encoder_hidden_states",
            "audio_encoder_hidden_states",
            "temb",
            "temb_audio",
            "temb_ca_scale_shift",
            "temb_ca_audio_scale_shift",
            "temb_ca_gate",
            "temb_ca_audio_gate",
            "temb_prompt",
            "temb_prompt_audio",
            "video_rotary_emb",
            "audio_rotary_emb",
            "ca_video_rotary_emb",
            "ca_audio_rotary_emb",
            "encoder_attention_mask",
            "audio_encoder_attention_mask",
            "self_attention_mask",
            "audio_self_attention_mask",
            "a2v_cross_attention_mask",
            "v2a_cross_attention_mask",
            "use_a2v_cross_attention",
            "use_v2a_cross_attention",
            "perturbation_mask",
            "all_perturbed",
        ),
        returns="(hidden_states, audio_hidden_states)",
        hidden_states_layout="[B, S, D] video tokens, S = F' * H' * W' in (t, h, w) raster order (packed latents)",
        per_token=("hidden_states", "video_rotary_emb", "ca_video_rotary_emb"),
        modulation="temb",
        streams=("hidden_states", "audio_hidden_states"),
    )
    input_argument = ArgRef("hidden_states", 0)
    timestep_argument = ArgRef("timestep", 4)
    text_argument = ArgRef("encoder_hidden_states", 2)

    @classmethod
    def matches(cls, transformer: nn.Module) -> bool:
        return type(transformer).__name__ == "LTX2VideoTransformer3DModel"

    def blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    def self_attention_modules(self) -> dict[str, nn.Module]:
        """The video self-attention of every block (audio self-attention is left alone)."""
        return {f"transformer_blocks.{i}.attn1": b.attn1 for i, b in enumerate(self.blocks())}

    def cross_attention_modules(self) -> dict[str, nn.Module]:
        """Video-to-prompt cross-attention (``attn2``); the audio stream's prompt attention reads another
        text tensor (``audio_encoder_hidden_states``) and is left alone."""
        return {f"transformer_blocks.{i}.attn2": b.attn2 for i, b in enumerate(self.blocks())}

    def call_probes(self) -> dict[str, list[nn.Module]]:
        blocks = list(self.blocks())
        return {
            "transformer": [self.transformer],
            "blocks": blocks,
            "self_attention": [b.attn1 for b in blocks],
            "cross_attention": [b.attn2 for b in blocks],
            "text_kv_projection": [b.attn2.to_k for b in blocks],
        }

    # --- tokens -------------------------------------------------------------------------------------

    def token_grid(self, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """For unpacked latents ``[B, C, F, H, W]`` (what the VAE gives); calls carry packed tokens."""
        cfg = self.transformer.config
        _, _, f, h, w = input_shape
        return f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

    def call_token_grid(self, args: tuple, kwargs: dict) -> tuple[int, int, int] | None:
        f, h, w = (kwargs.get(k) for k in ("num_frames", "height", "width"))
        if not all(isinstance(v, int) for v in (f, h, w)):
            return None
        cfg = self.transformer.config
        return f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

    def select_tokens(self, name: str, value, index: torch.Tensor):
        # Split RoPE is [B, H, S, r] (tokens on dim 2); interleaved is [B, S, D].
        if name in ("video_rotary_emb", "ca_video_rotary_emb") and value is not None and value[0].ndim == 4:
            from sol.models.base import gather_tokens

            return type(value)(gather_tokens(v, index, 2) for v in value)
        return super().select_tokens(name, value, index)

    # --- workloads ----------------------------------------------------------------------------------

    def spatial_patch(self) -> int:
        return int(self.transformer.config.patch_size)

    def workload_rules(self, pipe=None) -> WorkloadRules:
        t = int(getattr(pipe, "vae_temporal_compression_ratio", 8))
        s = int(getattr(pipe, "vae_spatial_compression_ratio", 32))
        # LTX2Pipeline.check_inputs refuses sizes not divisible by 32, whatever the VAE.
        return WorkloadRules(
            frame_step=t,
            size_multiple=max(32, s * self.spatial_patch()),
            max_text_tokens=tokenizer_max_length(pipe),
        )

    def pipe_kwargs(self, workload, prompt: str, pipe=None) -> dict:
        """LTX-2.0 sampling: classifier-free guidance on video and audio at the workload's scale;
        spatio-temporal guidance, modality guidance and guidance rescale off (LTX-2.3's defaults
        add two transformer calls per step; a workload states one guidance scale)."""
        return {
            "prompt": prompt,
            "negative_prompt": workload.negative_prompt,
            "num_frames": workload.num_frames,
            "height": workload.height,
            "width": workload.width,
            "num_inference_steps": workload.num_inference_steps,
            "guidance_scale": workload.guidance_scale,
            "audio_guidance_scale": workload.guidance_scale,
            "stg_scale": 0.0,
            "audio_stg_scale": 0.0,
            "modality_scale": 1.0,
            "audio_modality_scale": 1.0,
            "guidance_rescale": 0.0,
            "audio_guidance_rescale": 0.0,
            "spatio_temporal_guidance_blocks": None,
            "use_cross_timestep": False,
            "frame_rate": 24.0,
            "max_sequence_length": workload.max_sequence_length,
        }

    def example_inputs(self, workload, *, calls: int = 2, generator: torch.Generator | None = None):
        """Packed video tokens of the workload's latent grid (8x frames, 32x pixels per latent), a short
        audio stream, prompt states of the connector's width."""
        cfg = self.transformer.config
        param = next(self.transformer.parameters())
        tv, sv, _ = cfg.vae_scale_factors
        f, h, w = (workload.num_frames - 1) // tv + 1, workload.height // sv, workload.width // sv
        grid = (f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size)
        s = grid[0] * grid[1] * grid[2]
        audio_frames = max(1, round(workload.num_frames / 24.0 * 25))  # 25 audio latents per second
        dim = cfg.num_attention_heads * cfg.attention_head_dim
        adim = cfg.audio_num_attention_heads * cfg.audio_attention_head_dim
        text_in = cfg.caption_channels if cfg.use_prompt_embeddings else dim
        atext_in = cfg.caption_channels if cfg.use_prompt_embeddings else adim
        L = workload.max_sequence_length
        out = []
        for i in range(calls):
            t = torch.tensor([1000.0 * (calls - i) / (calls + 1)]).to(param.device)
            kwargs = {
                "hidden_states": torch.randn((1, s, cfg.in_channels), generator=generator).to(param),
                "audio_hidden_states": torch.randn(
                    (1, audio_frames, cfg.audio_in_channels), generator=generator
                ).to(param),
                "encoder_hidden_states": torch.randn((1, L, text_in), generator=generator).to(param),
                "audio_encoder_hidden_states": torch.randn((1, L, atext_in), generator=generator).to(param),
                "timestep": t,
                "sigma": t / 1000.0,
                "encoder_attention_mask": torch.ones(1, L, device=param.device),
                "audio_encoder_attention_mask": torch.ones(1, L, device=param.device),
                "num_frames": f,
                "height": h,
                "width": w,
                "audio_num_frames": audio_frames,
                "return_dict": False,
            }
            out.append(((), kwargs))
        return out

    # --- attention, as LTX2AudioVideoAttnProcessor computes it ---------------------------------------

    def self_attention_qkv(self, attn: nn.Module, hidden_states: torch.Tensor, rotary_emb=None):
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if rotary_emb is not None:
            query = _rope(attn, query, rotary_emb)
            key = _rope(attn, key, rotary_emb)
        return (
            query.unflatten(2, (attn.heads, -1)),
            key.unflatten(2, (attn.heads, -1)),
            value.unflatten(2, (attn.heads, -1)),
        )

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
            parallel_config=getattr(processor, "_parallel_config", None),
        )

    def processor_rotary_emb(self, rest: tuple, kwargs: dict):
        """``query_rotary_emb``: LTX2Attention passes it (then ``key_rotary_emb``) after the mask."""
        return rest[0] if rest else kwargs.get("query_rotary_emb")

    def attention_output(self, attn: nn.Module, out: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if attn.to_gate_logits is not None:
            raise SolError(
                "LTX-2 gated attention needs the block input for its gates: call adapter.self_attention(...),"
                " not attention_output"
            )
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    def _gated_output(self, attn, out, query, gate_logits) -> torch.Tensor:
        out = out.flatten(2, 3).to(query.dtype)
        if gate_logits is not None:
            gates = 2.0 * torch.sigmoid(gate_logits)  # as the processor: zero logits give gates of 1
            out = (out.unflatten(2, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(2, 3)
        return attn.to_out[1](attn.to_out[0](out))

    def self_attention(self, attn, processor, hidden_states, rotary_emb=None, attend=None) -> torch.Tensor:
        """As the processor (gates included on LTX-2.3); ``attend`` replaces dense attention."""
        gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None
        q, k, v = self.self_attention_qkv(attn, hidden_states, rotary_emb)
        out = self.attend(processor, q, k, v) if attend is None else attend(q, k, v)
        return self._gated_output(attn, out, q, gate_logits)

    # --- caching ------------------------------------------------------------------------------------

    def modulated_input(
        self, block: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> torch.Tensor:
        """``norm1(x) * (1 + scale_msa) + shift_msa`` of the video stream, as the block computes it."""
        shift, scale = block.get_mod_params(block.scale_shift_table, temb, hidden_states.size(0))[:2]
        return block.norm1(hidden_states) * (1 + scale) + shift

    def text_kv_refusal(self) -> str | None:
        cfg = self.transformer.config
        if getattr(self.transformer, "prompt_modulation", False) and cfg.use_prompt_adaln_single:
            return (
                "this LTX-2 checkpoint modulates the prompt by the timestep before cross-attention"
                " (prompt_adaln), so the text keys and values change at every step"
            )
        return super().text_kv_refusal()

    def text_kv(self, attn: nn.Module, encoder_hidden_states: torch.Tensor):
        """Prompt keys/values as the processor computes them (``norm_k``; no RoPE on text; heads)."""
        key = attn.norm_k(attn.to_k(encoder_hidden_states))
        value = attn.to_v(encoder_hidden_states)
        return key.unflatten(2, (attn.heads, -1)), value.unflatten(2, (attn.heads, -1))

    def cross_attention_from_kv(
        self, attn: nn.Module, processor, hidden_states, key, value, attention_mask=None
    ) -> torch.Tensor:
        """The rest of ``LTX2AudioVideoAttnProcessor.__call__`` for prompt cross-attention, op for op:
        the prompt mask (a bias ``[B, 1, L]``) prepared per head as the processor does."""
        b, length = key.shape[0], key.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, b)
            attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])
        gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        out = self.attend(processor, query, key, value, attention_mask, cross=True)
        return self._gated_output(attn, out, query, gate_logits)
