"""Random-weight Wan pipelines built in code: the tiny test model and architecture presets.

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
}


def build_preset(name: str, layers: int | None = None):
    desc, kwargs = PRESETS[name]
    kwargs = dict(kwargs)
    if layers is not None:
        kwargs["num_layers"] = layers
    return build_wan_pipeline(**kwargs)
