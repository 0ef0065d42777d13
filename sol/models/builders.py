"""Random-weight pipelines built in code: tiny test models and architecture presets (Wan here, the
other families in :mod:`sol.models.family_builders`).

Presets keep the real width and attention layout of a published model (so per-block
latency is real) with random weights and a tiny text encoder / VAE in front of it:
they are for latency work, never for quality.
"""

from __future__ import annotations

import torch

# Words the random models' tokenizer knows; enough for the shipped workloads' prompts.
BASE_VOCAB = (
    "a an the of and with on in over moving left right up down bouncing growing shrinking "
    "red green blue yellow white black orange purple circle square triangle ball box star "
    "plain textured background slowly quickly cat dog walking"
).split()

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def word_tokenizer(words, max_length: int):
    """A word-level fast tokenizer (lower-cased, whitespace split) that ``from_pretrained`` reads back."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=max_length
    )


def build_wan_pipeline(
    *,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    ffn_dim: int,
    text_dim: int,
    in_channels: int,
    vae_base_dim: int = 8,
    vae_dim_mult: tuple[int, ...] = (1, 2, 2, 2),
    seed: int = 0,
    max_length: int = 16,
    boundary_ratio: float | None = None,
):
    """A complete ``WanPipeline`` with random weights (seeded, so fingerprints are stable).

    With ``boundary_ratio`` it is a Wan 2.2 A14B-style pipeline: a second expert transformer
    (``transformer_2``, its own random weights) takes the steps below the boundary.
    """
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(BASE_VOCAB, max_length)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=32,
            d_ff=4 * 32,
            num_layers=1,
            num_heads=1,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()

    def expert():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=num_heads,
            attention_head_dim=head_dim,
            in_channels=in_channels,
            out_channels=in_channels,
            text_dim=text_dim,
            freq_dim=256,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        ).eval()

    transformer = expert()
    vae = AutoencoderKLWan(
        base_dim=vae_base_dim,
        z_dim=in_channels,
        dim_mult=list(vae_dim_mult),
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * in_channels,
        latents_std=[1.0] * in_channels,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    if boundary_ratio is None:
        return WanPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
        )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        transformer_2=expert(),
        vae=vae,
        scheduler=scheduler,
        boundary_ratio=boundary_ratio,
    )


# name -> (description, builder kwargs). Widths are the published configs'.
PRESETS: dict[str, tuple[str, dict]] = {
    "tiny-wan-random": (
        "random tiny Wan (4 layers, dim 128) for fast tests",
        dict(num_layers=4, num_heads=4, head_dim=32, ffn_dim=256, text_dim=64, in_channels=8),
    ),
    "tiny-wan2.2-random": (
        "random tiny Wan 2.2 A14B-style pipeline: two expert transformers (4 layers, dim 128), boundary 0.875",
        dict(
            num_layers=4,
            num_heads=4,
            head_dim=32,
            ffn_dim=256,
            text_dim=64,
            in_channels=8,
            boundary_ratio=0.875,
        ),
    ),
    "wan2.1-1.3b-arch": (
        "Wan2.1-T2V-1.3B transformer width (30 layers, dim 1536, 12 heads, ffn 8960), random weights",
        dict(num_layers=30, num_heads=12, head_dim=128, ffn_dim=8960, text_dim=4096, in_channels=16),
    ),
    "wan2.1-14b-arch": (
        "Wan2.1-T2V-14B transformer width (40 layers, dim 5120, 40 heads, ffn 13824), random weights",
        dict(num_layers=40, num_heads=40, head_dim=128, ffn_dim=13824, text_dim=4096, in_channels=16),
    ),
    "wan2.2-a14b-arch": (
        "Wan2.2-T2V-A14B: two expert transformers of 14B width (40 layers each, dim 5120, 40 heads, ffn 13824),"
        " boundary 0.875, random weights",
        dict(
            num_layers=40,
            num_heads=40,
            head_dim=128,
            ffn_dim=13824,
            text_dim=4096,
            in_channels=16,
            boundary_ratio=0.875,
        ),
    ),
    # --- other families (sol/models/family_builders.py) -------------------------------------------
    "tiny-sana-video-random": (
        "random tiny SANA-Video (4 layers, dim 128, linear attention) for fast tests",
        dict(
            builder="sana_video",
            num_layers=4,
            num_heads=4,
            head_dim=32,
            cross_heads=4,
            cross_head_dim=32,
            caption_channels=64,
            in_channels=8,
        ),
    ),
    "sana-video-2b-arch": (
        "SANA-Video 2B transformer width (20 layers, dim 2240, 20 heads, linear attention, mlp ratio 2.5),"
        " random weights",
        dict(
            builder="sana_video",
            num_layers=20,
            num_heads=20,
            head_dim=112,
            cross_heads=20,
            cross_head_dim=112,
            caption_channels=2304,
            in_channels=16,
        ),
    ),
    "tiny-ltx2-random": (
        "random tiny LTX-2 audio-video pipeline (4 layers, video dim 128, audio dim 32) for fast tests",
        dict(
            builder="ltx2",
            num_layers=4,
            num_heads=4,
            head_dim=32,
            audio_heads=2,
            audio_head_dim=16,
            caption_channels=64,
        ),
    ),
    "ltx2-arch": (
        "LTX-2 (19B) transformer width (48 layers, video dim 4096 = 32 heads x 128, audio dim 2048, 128 latent"
        " channels, 32x spatial / 8x temporal VAE), random weights",
        dict(
            builder="ltx2",
            num_layers=48,
            num_heads=32,
            head_dim=128,
            audio_heads=32,
            audio_head_dim=64,
            caption_channels=3840,
            connector_heads=30,
            in_channels=128,
            audio_in_channels=128,
            vae_patch=4,
        ),
    ),
    "tiny-cosmos3-random": (
        "random tiny Cosmos3 omni pipeline (4 layers, dim 128, mixture of transformers) for fast tests",
        dict(
            builder="cosmos3",
            num_layers=4,
            hidden_size=128,
            head_dim=32,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=256,
        ),
    ),
    "cosmos3-nano-arch": (
        "Cosmos3-Nano (16B) width: diffusers' Cosmos3OmniTransformer defaults (36 layers, dim 4096, 32 query /"
        " 8 KV heads, MLP 12288, two towers), 48 latent channels, random weights",
        dict(
            builder="cosmos3",
            num_layers=36,
            hidden_size=4096,
            head_dim=128,
            num_heads=32,
            num_kv_heads=8,
            intermediate_size=12288,
            latent_channels=48,
        ),
    ),
    "cosmos3-super-arch": (
        "Cosmos3-Super (~65B) width as assumed here (a Qwen3-32B-style tower twice: 64 layers, dim 5120, 64 query"
        " / 8 KV heads, MLP 25600; the published config was not available offline), random weights",
        dict(
            builder="cosmos3",
            num_layers=64,
            hidden_size=5120,
            head_dim=128,
            num_heads=64,
            num_kv_heads=8,
            intermediate_size=25600,
            latent_channels=48,
        ),
    ),
    "tiny-hunyuan-video1.5-random": (
        # 2 layers, dim 64: the pipeline fixes ~2,000 text, glyph and image tokens in every joint attention
        "random tiny HunyuanVideo 1.5 (2 layers, dim 64, dual-stream) for fast tests",
        dict(builder="hunyuan_video15", num_layers=2, num_heads=2, head_dim=32),
    ),
    "hunyuan-video-1.5-arch": (
        "HunyuanVideo 1.5 (8.3B) transformer width (54 layers, dim 2048 = 16 heads x 128, MLP ratio 4, 32 latent"
        " channels), random weights",
        dict(
            builder="hunyuan_video15",
            num_layers=54,
            num_heads=16,
            head_dim=128,
            text_dim=3584,
            text_2_dim=1472,
            image_dim=1152,
            latent_channels=32,
            text_heads=28,
        ),
    ),
}


def build_preset(name: str, layers: int | None = None):
    """The pipeline of preset ``name`` (``layers`` overrides its transformer depth)."""
    desc, kwargs = PRESETS[name]
    kwargs = dict(kwargs)
    if layers is not None:
        kwargs["num_layers"] = layers
    builder = kwargs.pop("builder", "wan")
    if builder == "wan":
        return build_wan_pipeline(**kwargs)
    from sol.models import family_builders

    return getattr(family_builders, f"build_{builder}_pipeline")(**kwargs)
