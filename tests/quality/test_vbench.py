"""VBench through its own environment (.venv-vbench, built by `make vbench-env`)."""

from __future__ import annotations

import numpy as np
import pytest

from sol.quality import gate, run_vbench, temporal_flickering
from sol.quality.vbench import NO_ENV_REASON, dimension_status, find_vbench_python
from sol.quality.video import read_mp4, write_mp4

VBENCH_PYTHON = find_vbench_python()
needs_vbench = pytest.mark.skipif(
    VBENCH_PYTHON is None, reason="no VBench environment: run `make vbench-env` (CI builds it in `make test`)"
)


def test_missing_environment_marks_every_dimension(videos, tmp_path):
    result = run_vbench(videos, ["temporal_flickering", "aesthetic_quality"], vbench_python=tmp_path / "nope")
    assert result == {
        "temporal_flickering": {"available": False, "reason": NO_ENV_REASON},
        "aesthetic_quality": {"available": False, "reason": NO_ENV_REASON},
    }


def test_weights_checked_before_calling(tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path))
    assert dimension_status("temporal_flickering") is None
    reason = dimension_status("motion_smoothness")
    assert reason.startswith("not available: weights missing") and "amt-s.pth" in reason
    (tmp_path / "amt_model").mkdir()
    (tmp_path / "amt_model" / "amt-s.pth").write_bytes(b"x")
    assert dimension_status("motion_smoothness") is None
    assert "prompt suite" in dimension_status("color")


@needs_vbench
def test_vbench_temporal_flickering_matches_sol(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "empty-cache"))  # no weights at all
    # Arrays (written losslessly by Sol) and a lossy yuv420p mp4 as a user would have it.
    lossy = write_mp4(videos[1], tmp_path / "user.mp4", lossless=False)
    dims = ["temporal_flickering", "subject_consistency", "imaging_quality"]
    result = run_vbench([videos[0], videos[1], lossy], dims, workdir=tmp_path / "work")

    flick = result["temporal_flickering"]
    assert set(flick) == {"score", "videos"}
    # Same frames: Sol's value on the array equals VBench's on the lossless mp4 (float32 sums in VBench).
    for i in (0, 1):
        assert flick["videos"][i] == pytest.approx(temporal_flickering(videos[i]), abs=1e-6)
        decoded = read_mp4(tmp_path / "work" / "videos" / f"video-{i:03d}.mp4")
        assert temporal_flickering(decoded) == pytest.approx(flick["videos"][i], abs=1e-6)
    # The lossy file: OpenCV there and imageio-ffmpeg here decode it to the same RGB (measured ~1e-9).
    assert temporal_flickering(read_mp4(lossy)) == pytest.approx(flick["videos"][2], abs=1e-6)
    assert flick["score"] == pytest.approx(np.mean(flick["videos"]), abs=1e-6)
    for dim in ("subject_consistency", "imaging_quality"):
        assert result[dim]["available"] is False
        assert result[dim]["reason"].startswith("not available: weights missing")

    # The gate reads these results: a frozen candidate moves temporal_flickering up, not down (passes
    # that dimension) — but the frozen check fails it anyway.
    frozen = [videos[0], np.repeat(videos[1][:1], len(videos[1]), axis=0)]
    cand = run_vbench(frozen, ["temporal_flickering"], workdir=tmp_path / "work2")
    verdict = gate(videos, frozen, "near-lossless", result, cand)
    assert "video[1].frozen" in verdict.failed_checks()
    assert "vbench.temporal_flickering.drop" not in verdict.failed_checks()


@needs_vbench
def test_one_broken_dimension_does_not_hide_the_others(videos, tmp_path, monkeypatch):
    # A corrupt checkpoint: VBench's loader fails; temporal_flickering is still computed.
    cache = tmp_path / "cache"
    (cache / "amt_model").mkdir(parents=True)
    (cache / "amt_model" / "amt-s.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(cache))
    result = run_vbench(
        videos[:1],
        ["motion_smoothness", "temporal_flickering"],
        workdir=tmp_path / "w",
        prompts=["a red square"],
    )
    assert result["motion_smoothness"]["available"] is False
    assert result["motion_smoothness"]["reason"].startswith("failed:")
    assert "score" in result["temporal_flickering"]
    # The prompt reached VBench (custom_input maps file name -> prompt).
    info = (tmp_path / "w" / "vbench_out" / "temporal_flickering" / "sol_full_info.json").read_text()
    assert "a red square" in info
