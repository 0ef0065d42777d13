"""Architecture of `sol-tiny-wan`: every component's config in one place.

The sizes are chosen for Sol's benchmarks, not for quality alone: at the native size the
transformer must be >= 90% of a generation's wall time (profile: `python -m
benchmarks.reference_model.profile_arch`), so the VAE works at half resolution (pixel-unshuffle
patch 2, then two 2x stages: 8x spatial, 4x temporal) and stays narrow, while the transformer
sees one token per latent pixel (patch 1x1x1: 320 tokens at 17x64x64).
"""

from __future__ import annotations

import torch

from sol.models.reference_data import vocabulary

NATIVE = {"num_frames": 17, "height": 64, "width": 64}
MAX_SEQUENCE_LENGTH = 8  # longest caption is 5 words + </s>; pass this to pipe(...) (training pads to it)
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

TEXT_DIM = 64
VAE_CONFIG = dict(
    base_dim=24,
    decoder_base_dim=16,  # decode is in every generation: 16 keeps it ~5% of one (24 would be ~10%)
    z_dim=16,
    dim_mult=[1, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[True, True],
    in_channels=12,  # 3 x (2x2 pixel-unshuffle)
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=8,
    is_residual=False,
)
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 1, 1),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=64,
    ffn_dim=512,
    num_layers=8,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=2.0)


def build_tokenizer():
    """Word-level tokenizer over the captions' words; `from_pretrained` reads it back."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for w in vocabulary():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like T5: every sequence ends with </s>, so the empty negative prompt is one token, not zero.
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_SEQUENCE_LENGTH,
        padding_side="right",
    )


def build_text_encoder(vocab_size: int, seed: int = 0):
    """Tiny UMT5 encoder, frozen at its seeded initialisation."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    cfg = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(cfg).eval().requires_grad_(False)


def build_vae(seed: int = 0, **overrides):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    cfg = {**VAE_CONFIG, **overrides}
    cfg.setdefault("latents_mean", [0.0] * cfg["z_dim"])
    cfg.setdefault("latents_std", [1.0] * cfg["z_dim"])
    return AutoencoderKLWan(**cfg)


def build_transformer(seed: int = 0, **overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**TRANSFORMER_CONFIG, **overrides})


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_pipeline(vae=None, transformer=None, seed: int = 0):
    """A complete WanPipeline; untrained parts are seeded random."""
    from diffusers import WanPipeline

    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer), seed=seed)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae if vae is not None else build_vae(seed),
        transformer=transformer if transformer is not None else build_transformer(seed),
        scheduler=build_scheduler(),
    )


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Text embeddings exactly as `WanPipeline.__call__` makes them (same padding length)."""
    with torch.no_grad():
        return pipe._get_t5_prompt_embeds(prompts, max_sequence_length=MAX_SEQUENCE_LENGTH, device="cpu")
