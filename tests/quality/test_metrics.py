"""Fidelity metrics on real computations: torchmetrics PSNR/SSIM, VBench's flicker formula, sanity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from sol.errors import SolError
from sol.quality import (
    fidelity,
    json_safe,
    lpips,
    lpips_status,
    psnr,
    ssim,
    temporal_flickering,
    video_sanity,
)
from sol.quality import metrics as metrics_module
from sol.quality.video import load_video, read_mp4, to_uint8, write_mp4
from tests.quality.conftest import moving_square


def test_identical_videos_are_perfect(videos):
    v = videos[0]
    assert psnr(v, v.copy()) == math.inf
    assert ssim(v, v.copy()) == pytest.approx(1.0, abs=1e-6)
    result = fidelity(videos, [x.copy() for x in videos])
    assert result["psnr"] == math.inf and result["psnr_min"] == math.inf
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["flicker"] == result["flicker_ref"]
    assert len(result["videos"]) == 2


def test_psnr_and_ssim_match_torchmetrics_on_whole_video(videos):
    rng = np.random.default_rng(3)
    ref = videos[0]
    cand = np.clip(ref + rng.normal(0, 0.03, ref.shape), 0, 1).astype(np.float32)
    expected_psnr = peak_signal_noise_ratio(
        torch.from_numpy(cand).double(), torch.from_numpy(ref).double(), data_range=1.0
    )
    assert psnr(ref, cand) == pytest.approx(float(expected_psnr), rel=1e-9)
    # Known value: sigma 0.03 noise (a little clipped) → ~30.5 dB.
    assert 29.5 < psnr(ref, cand) < 31.5
    to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    expected_ssim = structural_similarity_index_measure(to_nchw(cand), to_nchw(ref), data_range=1.0)
    assert ssim(ref, cand) == pytest.approx(float(expected_ssim), abs=1e-5)


def test_workload_psnr_pools_mse_so_one_identical_video_does_not_hide_another(videos):
    noisy = np.clip(videos[1] + 0.05, 0, 1).astype(np.float32)
    result = fidelity(videos, [videos[0].copy(), noisy])
    assert result["videos"][0]["psnr"] == math.inf
    assert math.isfinite(result["psnr"]) and result["psnr"] > result["psnr_min"]
    assert result["psnr_min"] == pytest.approx(psnr(videos[1], noisy))


def test_shape_or_count_mismatch_is_a_user_error(videos):
    with pytest.raises(SolError, match="shapes differ"):
        psnr(videos[0], videos[0][:-1])
    with pytest.raises(SolError, match="1 candidate videos for 2"):
        fidelity(videos, videos[:1])


def test_temporal_flickering_is_vbench_formula(videos):
    v = videos[0]
    frames = to_uint8(v).astype(np.float32)
    maes = [np.mean(np.abs(frames[i] - frames[i + 1])) for i in range(len(frames) - 1)]
    assert temporal_flickering(v) == pytest.approx((255.0 - np.mean(maes)) / 255.0, abs=1e-6)  # float32 sums
    static = np.repeat(v[:1], 5, axis=0)
    assert temporal_flickering(static) == 1.0
    # Alternating black and white frames: mean abs diff 255 → score 0.
    strobe = np.stack([np.zeros_like(v[0]), np.ones_like(v[0])] * 3)
    assert temporal_flickering(strobe) == pytest.approx(0.0)


def test_sanity_flags_nan_black_frozen():
    good = moving_square()
    assert video_sanity(good).ok and video_sanity(good).problems == []
    nan = good.copy()
    nan[2, 3, 4, 0] = np.nan
    assert not video_sanity(nan).finite
    assert video_sanity(np.full_like(good, 0.01)).black
    # Dark but alive (a night scene) is not black.
    assert not video_sanity(good * 0.2).black
    frozen = np.repeat(good[:1], len(good), axis=0)
    assert video_sanity(frozen).frozen and not video_sanity(frozen).black


def test_lpips_absent_is_reported_not_raised(videos, monkeypatch, tmp_path):
    value, reason = lpips(videos[0], videos[0])
    if value is not None:  # lpips + torchvision + backbone present on this machine
        assert reason is None and value == pytest.approx(0.0, abs=1e-6)
    else:
        assert reason.startswith("not available:")
    # The package "installed" but the backbone not in torch.hub's cache: reported, nothing fetched.
    real_find_spec = metrics_module.importlib.util.find_spec
    monkeypatch.setattr(
        metrics_module.importlib.util,
        "find_spec",
        lambda name, *a: object() if name in ("lpips", "torchvision") else real_find_spec(name, *a),
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reason = lpips_status()
    assert reason is not None and "weights missing" in reason and str(tmp_path) in reason
    assert lpips(videos[0], videos[0]) == (None, reason)
    assert fidelity(videos, videos)["lpips"] is None


def test_json_safe_writes_inf_as_string_and_reads_back(videos):
    result = fidelity(videos, [v.copy() for v in videos])
    text = json.dumps(json_safe(result), allow_nan=False)
    back = json.loads(text)
    assert back["psnr"] == "inf" and float(back["psnr"]) == math.inf


def test_mp4_round_trip_lossless_and_lossy(tmp_path, videos):
    v = videos[0]
    exact = read_mp4(write_mp4(v, tmp_path / "a.mp4", lossless=True))
    np.testing.assert_array_equal(exact, to_uint8(v))
    lossy = load_video(write_mp4(v, tmp_path / "b.mp4"))
    assert lossy.shape == v.shape and psnr(v, lossy) > 25
    np.save(tmp_path / "c.npy", v)
    np.testing.assert_array_equal(load_video(tmp_path / "c.npy"), v)
    with pytest.raises(SolError, match="does not exist"):
        load_video(tmp_path / "missing.npy")
