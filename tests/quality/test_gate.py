"""The gate passes a lossless candidate and fails each kind of corrupted one, naming the check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sol.errors import SolError
from sol.quality import BUDGETS, QualityBudget, Verdict, gate, get_budget


def test_lossless_candidate_passes_every_budget(videos):
    for name in BUDGETS:
        verdict = gate(videos, [v.copy() for v in videos], name)
        assert verdict.passed, verdict.summary()
        assert verdict.failed_checks() == []
        names = {c.name for c in verdict.checks}
        assert {"outputs.count", "video[0].psnr", "video[1].ssim", "video[1].frozen", "flicker.drop"} <= names


def test_default_budget_is_near_lossless(videos):
    assert gate(videos, videos).budget.name == "near-lossless"
    assert get_budget(None) == BUDGETS["near-lossless"]


def test_small_noise_passes_near_lossless_but_not_lossless(videos):
    rng = np.random.default_rng(0)
    cand = [np.clip(v + rng.normal(0, 0.006, v.shape), 0, 1).astype(np.float32) for v in videos]
    assert gate(videos, cand, "near-lossless").passed
    lossless = gate(videos, cand, "lossless")  # ~44.5 dB
    assert not lossless.passed and "video[0].psnr" in lossless.failed_checks()
    # Flicker is gated too: i.i.d. per-frame noise at 40 dB is visible as flicker.
    cand = [np.clip(v + rng.normal(0, 0.01, v.shape), 0, 1).astype(np.float32) for v in videos]
    assert gate(videos, cand, "near-lossless").failed_checks() == ["flicker.drop"]


def _corrupt(kind: str, videos: list[np.ndarray]) -> list[np.ndarray | None]:
    cand: list[np.ndarray | None] = [v.copy() for v in videos]
    v = videos[1]
    if kind == "noise":
        cand[1] = np.clip(v + np.random.default_rng(1).normal(0, 0.15, v.shape), 0, 1).astype(np.float32)
    elif kind == "frozen":
        cand[1] = np.repeat(v[:1], len(v), axis=0)
    elif kind == "nan":
        cand[1] = v.copy()
        cand[1][4, 10, 10, 1] = np.nan
    elif kind == "black":
        cand[1] = np.zeros_like(v)
    elif kind == "missing":
        cand[1] = None
    elif kind == "short":
        cand = cand[:1]
    elif kind == "shape":
        cand[1] = v[:-1].copy()
    return cand


@pytest.mark.parametrize(
    ("kind", "must_fail"),
    [
        ("noise", {"video[1].psnr", "video[1].ssim"}),
        ("frozen", {"video[1].frozen"}),
        ("nan", {"video[1].finite"}),
        ("black", {"video[1].black"}),
        ("missing", {"video[1].present"}),
        ("short", {"outputs.count", "video[1].present"}),
        ("shape", {"video[1].shape"}),
    ],
)
def test_corrupted_candidate_fails_naming_the_check(videos, kind, must_fail):
    # Even the loosest budget fails these.
    verdict = gate(videos, _corrupt(kind, videos), "aggressive")
    assert not verdict.passed
    assert must_fail <= set(verdict.failed_checks()), verdict.summary()
    assert not any(name.startswith("video[0]") for name in verdict.failed_checks())
    for name in must_fail:
        assert name in verdict.summary()


def test_frozen_baseline_does_not_fail_its_own_copy(videos):
    base = [np.repeat(videos[0][:1], 5, axis=0)]
    verdict = gate(base, [base[0].copy()], "lossless")
    assert verdict.passed, verdict.summary()
    frozen = next(c for c in verdict.checks if c.name == "video[0].frozen")
    assert frozen.detail == "as the baseline video"


def test_vbench_relative_drop_per_dimension(videos):
    base_vb = {
        "temporal_flickering": {"score": 0.95, "videos": [0.95, 0.95]},
        "subject_consistency": {"score": 0.90},
        "aesthetic_quality": {"available": False, "reason": "not available: weights missing (x)"},
    }
    ok = {"temporal_flickering": {"score": 0.949}, "subject_consistency": {"score": 0.899}}
    verdict = gate(
        videos, videos, "near-lossless", base_vb, {**ok, "aesthetic_quality": base_vb["aesthetic_quality"]}
    )
    assert verdict.passed, verdict.summary()
    aes = next(c for c in verdict.checks if c.name == "vbench.aesthetic_quality.drop")
    assert aes.skipped and "weights missing" in aes.detail
    bad = gate(videos, videos, "near-lossless", base_vb, {**ok, "subject_consistency": 0.85})
    assert bad.failed_checks() == ["vbench.subject_consistency.drop"]
    # A dimension the baseline has and the candidate lost is a failure, not a skip.
    lost = gate(videos, videos, "near-lossless", base_vb, {"temporal_flickering": {"score": 0.95}})
    assert "vbench.subject_consistency.drop" in lost.failed_checks()


def test_unknown_budget_names_the_valid_ones(videos):
    with pytest.raises(SolError) as err:
        gate(videos, videos, "super-lossless")
    for name in BUDGETS:
        assert name in str(err.value)


def test_custom_budget_and_verdict_json_round_trip(videos):
    budget = QualityBudget(min_psnr=60, min_ssim=0.5, max_vbench_drop=0.5, max_flicker_drop=0.5)
    noisy = [np.clip(v + 0.002, 0, 1).astype(np.float32) for v in videos]
    verdict = gate(videos, [videos[0].copy(), noisy[1]], budget)
    text = verdict.model_dump_json()
    data = json.loads(text)  # strict JSON: inf is written as the string "inf"
    psnr0 = next(c for c in data["checks"] if c["name"] == "video[0].psnr")
    assert psnr0["value"] == "inf" and psnr0["passed"] is True
    assert Verdict.model_validate_json(text) == verdict
    assert verdict.failed_checks() == ["video[1].psnr"]
    with pytest.raises(ValueError):
        QualityBudget(min_psnr=30, min_ssim=0.9, max_vbench_drop=0.01, max_flicker_drop=0.01, typo=1)
