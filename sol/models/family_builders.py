"""Random-weight pipelines of the other families, built in code the way diffusers' own fast tests
build their dummy components (there is no hub here): SANA-Video, LTX-2, Cosmos3, HunyuanVideo 1.5.

Each builder makes a complete diffusers pipeline that ``save_pretrained`` writes and
``DiffusionPipeline.from_pretrained`` reads back offline. ``tiny=True`` sizes (a few layers, dim
32-64) are for tests; the architecture presets keep the transformer's published width (layers
set by ``--layers``) with a tiny text encoder and VAE in front of it, for latency work only.
Text encoders read the word-level tokenizer of :mod:`sol.models.builders`.
"""

from __future__ import annotations

import torch

from sol.models.builders import BASE_VOCAB, word_tokenizer

# Jinja chat template for tokenizers of pipelines that call ``apply_chat_template`` (Cosmos3,
# HunyuanVideo 1.5): the messages' text in order, then nothing for the generation prompt.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def _tokenizer(max_length: int, extra_special: tuple[str, ...] = ()):
    tok = word_tokenizer(BASE_VOCAB, max_length)
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": list(extra_special)})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _one_layer_lm(tokenizer, width: int) -> dict:
    """A one-layer, one-head Gemma text encoder's settings (SANA-Video and LTX-2 both use Gemma)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        pad_token_id=0,
        attn_implementation="eager",
    )


# --- SANA-Video ------------------------------------------------------------------------------------


def build_sana_video_pipeline(
    *,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    cross_heads: int,
    cross_head_dim: int,
    caption_channels: int,
    mlp_ratio: float = 2.5,
    in_channels: int = 16,
    vae_base_dim: int = 8,
    seed: int = 0,
    max_length: int = 16,
):
    """A ``SanaVideoPipeline``: ``SanaVideoTransformer3DModel`` (linear self-attention, a temporal
    conv FFN), a one-layer Gemma2 text encoder of ``caption_channels`` width, Wan's VAE layout."""
    from diffusers import (
        AutoencoderKLWan,
        DPMSolverMultistepScheduler,
        SanaVideoPipeline,
        SanaVideoTransformer3DModel,
    )
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tokenizer = _tokenizer(max_length)
    text_encoder = Gemma2Model(Gemma2Config(**_one_layer_lm(tokenizer, caption_channels))).eval()
    transformer = SanaVideoTransformer3DModel(
        in_channels=in_channels,
        out_channels=in_channels,
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_cross_attention_heads=cross_heads,
        cross_attention_head_dim=cross_head_dim,
        cross_attention_dim=cross_heads * cross_head_dim,
        caption_channels=caption_channels,
        mlp_ratio=mlp_ratio,
        attention_bias=False,
        patch_size=(1, 2, 2),
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=vae_base_dim,
        z_dim=in_channels,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * in_channels,
        latents_std=[1.0] * in_channels,
    ).eval()
    # SANA-Video's published scheduler: flow-matching DPM-Solver++.
    scheduler = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0
    )
    return SanaVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


# --- LTX-2 -------------------------------------------------------------------------------------------


def build_ltx2_pipeline(
    *,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    audio_heads: int,
    audio_head_dim: int,
    caption_channels: int,
    in_channels: int = 8,
    audio_in_channels: int = 4,  # the tiny audio VAE packs 2 channels x 2 mel bins per token
    connector_heads: int | None = None,
    vae_channels: tuple[int, ...] = (8, 8, 8),
    vae_patch: int = 1,
    seed: int = 0,
    max_length: int = 16,
):
    """An ``LTX2Pipeline`` (audio + video): ``LTX2VideoTransformer3DModel``, a one-layer Gemma3 text
    model, text connectors of ``caption_channels`` width, a small LTX-2 video VAE (8x in time and
    space: LTX-2's 8k+1 frames), a tiny audio VAE and vocoder (as diffusers' LTX-2 fast tests build them)."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer(max_length)
    text_encoder = Gemma3TextModel(Gemma3TextConfig(**_one_layer_lm(tokenizer, caption_channels))).eval()
    connector_heads = connector_heads or max(1, caption_channels // 32)
    connectors = LTX2TextConnectors(
        caption_channels=caption_channels,
        text_proj_in_factor=text_encoder.config.num_hidden_layers + 1,
        video_connector_num_attention_heads=connector_heads,
        video_connector_attention_head_dim=caption_channels // connector_heads,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=connector_heads,
        audio_connector_attention_head_dim=caption_channels // connector_heads,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_double_precision=False,
        rope_type="split",
    ).eval()
    vae = AutoencoderKLLTX2Video(
        in_channels=3,
        out_channels=3,
        latent_channels=in_channels,
        block_out_channels=vae_channels,
        down_block_types=("LTX2VideoDownBlock3D",) * len(vae_channels),
        decoder_block_out_channels=vae_channels,
        layers_per_block=(1,) * (len(vae_channels) + 1),
        decoder_layers_per_block=(1,) * (len(vae_channels) + 1),
        spatio_temporal_scaling=(True,) * len(vae_channels),
        decoder_spatio_temporal_scaling=(True,) * len(vae_channels),
        decoder_inject_noise=(False,) * (len(vae_channels) + 1),
        downsample_type=("spatiotemporal",) * len(vae_channels),
        upsample_type=("spatiotemporal",) * len(vae_channels),
        upsample_residual=(False,) * len(vae_channels),
        upsample_factor=(1,) * len(vae_channels),
        timestep_conditioning=False,
        patch_size=vae_patch,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    transformer = LTX2VideoTransformer3DModel(
        in_channels=in_channels,
        out_channels=in_channels,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        cross_attention_dim=num_heads * head_dim,
        vae_scale_factors=(
            vae.temporal_compression_ratio,
            vae.spatial_compression_ratio,
            vae.spatial_compression_ratio,
        ),
        audio_in_channels=audio_in_channels,
        audio_out_channels=audio_in_channels,
        audio_num_attention_heads=audio_heads,
        audio_attention_head_dim=audio_head_dim,
        audio_cross_attention_dim=audio_heads * audio_head_dim,
        num_layers=num_layers,
        caption_channels=caption_channels,
        rope_double_precision=False,
        rope_type="split",
    ).eval()
    # The audio VAE compresses mel bins 4x: a token carries latent_channels x mel_bins / 4 values.
    mel_bins = 8 if audio_in_channels <= 16 else 64
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=audio_in_channels,  # its latents_mean/std have base_channels entries, one per token value
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=audio_in_channels * 4 // mel_bins,
        norm_type="pixel",
        causality_axis="height",
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=mel_bins,
    ).eval()
    vocoder = LTX2Vocoder(
        in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=16000,
    ).eval()
    return LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


# --- Cosmos3 -----------------------------------------------------------------------------------------


def build_cosmos3_pipeline(
    *,
    num_layers: int,
    hidden_size: int,
    head_dim: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    hidden_act: str = "silu",
    latent_channels: int = 16,
    patch: int = 2,
    vae_base_dim: int = 8,
    seed: int = 0,
    max_length: int = 64,
):
    """A ``Cosmos3OmniPipeline`` (text-to-video, no sound, no safety checker): the MoT transformer
    embeds the prompt's tokens itself, so the word tokenizer's vocabulary sizes its embedding;
    Wan 2.2's VAE layout (16x spatial, 4x temporal) at ``latent_channels``."""
    from diffusers import (
        AutoencoderKLWan,
        Cosmos3OmniPipeline,
        Cosmos3OmniTransformer,
        UniPCMultistepScheduler,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer(max_length, extra_special=("<|vision_start|>",))
    half = head_dim // 2
    axes = [half - 2 * (half // 3), half // 3, half // 3]  # mRoPE sections (t, h, w) summing to head_dim/2
    transformer = Cosmos3OmniTransformer(
        head_dim=head_dim,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        hidden_act=hidden_act,
        latent_channel=latent_channels,
        latent_patch_size=patch,
        num_attention_heads=num_heads,
        num_hidden_layers=num_layers,
        num_key_value_heads=num_kv_heads,
        patch_latent_dim=latent_channels * patch * patch,
        rope_axes_dim=axes,
        vocab_size=len(tokenizer),
        dtype="float32",
    ).eval()
    # Wan 2.2's VAE: 16x spatial (a 2x2 patchify around the 8x convolutions), 4x temporal.
    vae = AutoencoderKLWan(
        base_dim=vae_base_dim,
        decoder_base_dim=vae_base_dim,
        z_dim=latent_channels,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=[0.0] * latent_channels,
        latents_std=[1.0] * latent_channels,
    ).eval()
    return Cosmos3OmniPipeline(
        transformer=transformer,
        text_tokenizer=tokenizer,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
        sound_tokenizer=None,
        safety_checker=None,
        enable_safety_checker=False,
        default_use_system_prompt=False,
    )


# --- HunyuanVideo 1.5 -----------------------------------------------------------------------------


def build_hunyuan_video15_pipeline(
    *,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    text_dim: int = 32,
    text_2_dim: int = 32,
    image_dim: int = 16,
    latent_channels: int = 8,
    mlp_ratio: float = 4.0,
    text_heads: int = 2,
    guidance_scale: float = 5.0,
    seed: int = 0,
):
    """A ``HunyuanVideo15Pipeline`` (text-to-video): dual-stream transformer, a two-layer Qwen2.5-VL
    text model and a one-layer T5 (ByT5 glyphs) as text encoders, a small HunyuanVideo 1.5 VAE
    (16x spatial, 4x temporal) and a classifier-free-guidance guider at ``guidance_scale``."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        T5Config,
        T5EncoderModel,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer(1200)
    half = text_dim // text_heads // 2  # Qwen2.5-VL's mRoPE sections (t, h, w) sum to half a head
    sections = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_dim,
            intermediate_size=text_dim,
            num_hidden_layers=2,  # the pipeline reads the third hidden state from the end
            num_attention_heads=text_heads,
            num_key_value_heads=text_heads,
            bos_token_id=1,
            eos_token_id=1,
            rope_scaling={"mrope_section": sections, "rope_type": "default", "type": "default"},
            max_position_embeddings=2048,
        )
    ).eval()
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=384, d_model=text_2_dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).eval()
    half = head_dim // 2
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent_channels + 1,
        out_channels=latent_channels,
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_refiner_layers=1,
        mlp_ratio=mlp_ratio,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=text_dim,
        text_embed_2_dim=text_2_dim,
        image_embed_dim=image_dim,
        rope_axes_dim=(2 * (half - 2 * (half // 3)), 2 * (half // 3), 2 * (half // 3)),
        target_size=64,
        task_type="t2v",
    ).eval()
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=latent_channels,
        # The decoder adds its input repeated block_out_channels[-1] // latent_channels times: at least once.
        block_out_channels=(max(8, latent_channels),) * 5,
        layers_per_block=1,
        spatial_compression_ratio=16,
        temporal_compression_ratio=4,
        downsample_match_channel=False,
        upsample_match_channel=False,
    ).eval()
    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=ByT5Tokenizer(),
        guider=ClassifierFreeGuidance(guidance_scale=guidance_scale),
    )
