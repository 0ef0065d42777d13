"""The shipped reference model `sol-tiny-wan`: a standard WanPipeline folder that follows its prompts.

Generation runs the model's native call (17x64x64, 25 steps, CFG 5, max_sequence_length 8) for
trained and held-out (colour, shape, motion) combinations and checks each video with
`sol.models.reference_data.check_video`: dominant colour and direction of motion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sol.models.reference_data import (
    HELD_OUT,
    MOTIONS,
    NATIVE_CALL,
    TRAIN_COMBOS,
    caption_for,
    check_video,
    generate,
    render,
    sample_clip,
)

MODEL = Path(__file__).resolve().parents[2] / "sol" / "models" / "assets" / "sol-tiny-wan"
needs_model = pytest.mark.skipif(
    not (MODEL / "model_index.json").is_file(), reason="sol-tiny-wan not in checkout"
)

# Fixed spread: every colour, shape and motion appears; 6 trained + 6 held-out prompts.
TRAINED = [
    "a red circle moving left",
    "a green diamond moving up",
    "a blue square moving right",
    "a yellow triangle moving down",
    "a white square bouncing",
    "a red square growing",
]
# One held-out combination per motion (the first in sorted order).
HELD = [caption_for(*next(c for c in sorted(HELD_OUT) if c[2] == m)) for m in MOTIONS]


def test_prompt_lists_are_what_they_claim():
    train = {caption_for(*c) for c in TRAIN_COMBOS}
    held = {caption_for(*c) for c in HELD_OUT}
    assert set(TRAINED) <= train and set(HELD) <= held and not train & held


def test_check_accepts_ground_truth_and_rejects_wrong_captions():
    for seed in range(40):
        clip = sample_clip(seed)
        assert check_video(clip.video, clip.caption).passed, clip.meta
    v = render("red", "circle", "moving left", seed=3).video
    assert not check_video(v, "a blue circle moving left").passed  # wrong colour
    assert not check_video(v, "a red circle moving right").passed  # wrong direction
    assert not check_video(v, "a red circle moving up").passed
    assert not check_video(np.zeros_like(v), "a red circle moving left").passed  # nothing there


@needs_model
def test_folder_loads_offline_and_holds_only_safetensors():
    weights = [
        p for p in MODEL.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl"}
    ]
    assert weights and all(p.suffix == ".safetensors" for p in weights), weights
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) < 30 * 2**20
    # A fresh process with the hub forced offline, so nothing cached in this one can help.
    code = (
        "import json, torch\n"
        "from diffusers import WanPipeline\n"
        f"pipe = WanPipeline.from_pretrained({str(MODEL)!r})\n"
        "print(json.dumps({k: type(v).__name__ for k, v in pipe.components.items() if v is not None}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    comps = json.loads(out.stdout.strip().splitlines()[-1])
    assert comps["transformer"] == "WanTransformer3DModel"
    assert comps["vae"] == "AutoencoderKLWan"
    assert comps["text_encoder"] == "UMT5EncoderModel"
    assert comps["scheduler"] in {"FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"}
    tok_cfg = json.loads((MODEL / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == NATIVE_CALL["max_sequence_length"]


@pytest.fixture(scope="module")
def pipe():
    import torch
    from diffusers import WanPipeline

    torch.manual_seed(0)
    p = WanPipeline.from_pretrained(MODEL)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def results(pipe):
    videos = generate(pipe, TRAINED + HELD, seed=0)
    assert videos.shape == (12, 17, 64, 64, 3)
    res = [check_video(v, p) for v, p in zip(videos, TRAINED + HELD, strict=True)]
    tr = [r.passed for r in res[: len(TRAINED)]]
    ho = [r.passed for r in res[len(TRAINED) :]]
    print(f"\nprompt-following: trained {sum(tr)}/{len(tr)}, held-out {sum(ho)}/{len(ho)}")
    for p, r in zip(TRAINED + HELD, res, strict=True):
        print(f"  {'ok  ' if r.passed else 'FAIL'} {p:34s} colour={r.colour} {r.detail}")
    return res


@needs_model
@pytest.mark.timeout(180)
def test_generations_show_the_prompted_colour(results):
    # 95% of 40 generations get their colour (docs/reference-model.md); yellow/green mix-ups remain.
    assert sum(r.colour_ok for r in results) >= 9, [r.colour for r in results]


@needs_model
@pytest.mark.timeout(180)
def test_most_generations_follow_prompts(results):
    tr = [r.passed for r in results[: len(TRAINED)]]
    assert sum(tr) >= 5, "trained prompts must nearly all pass"
    assert sum(r.passed for r in results) >= 7, "most prompts must pass"
