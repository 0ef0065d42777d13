"""The quality gate: does a candidate's output stay within the quality budget of the baseline's?

A budget is a named preset (``lossless``, ``near-lossless`` — the default —, ``balanced``,
``aggressive``) or a ``QualityBudget``. ``gate`` returns a ``Verdict`` that lists every check it
made — name, measured value, threshold, passed — so a person sees why a candidate failed.

>>> import numpy as np
>>> base = [np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)]
>>> v = gate(base, [base[0].copy()], "near-lossless")
>>> v.passed, v.failed_checks()
(True, [])

What always fails, whatever the budget: a missing candidate output, a shape that differs from the
baseline's, NaN/Inf, a black video, a frozen video (unless the baseline video is itself black or
frozen: then the candidate only reproduces it). VBench dimensions are compared with the baseline's
own score as a relative drop; a dimension that was not computed is listed as skipped, not passed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from sol.errors import SolError
from sol.quality.metrics import lpips, lpips_status, psnr, ssim, temporal_flickering, video_sanity
from sol.quality.video import VideoLike, load_video


def _float_to_json(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float_from_json(x: Any) -> Any:
    return float(x) if isinstance(x, str) else x


# A float that writes inf/nan as the strings "inf"/"nan" in JSON (JSON has no infinity) and reads
# them back: PSNR of identical videos is inf.
JsonFloat = Annotated[
    float | None,
    BeforeValidator(_float_from_json),
    PlainSerializer(_float_to_json, when_used="json"),
]


class QualityBudget(BaseModel):
    """How far a candidate may move from the baseline. Absolute floors for fidelity to the baseline
    (PSNR, SSIM, LPIPS where it can run); relative drops for no-reference scores, compared with the
    baseline's own score: ``(baseline - candidate) / baseline`` ≤ the budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    min_psnr: float = Field(description="dB, every video")
    min_ssim: float = Field(description="mean over frames, every video")
    max_lpips: float | None = Field(default=None, description="every video; only where LPIPS runs")
    max_vbench_drop: float = Field(description="relative drop, every computed VBench dimension")
    max_flicker_drop: float = Field(description="relative drop of the workload's mean temporal_flickering")


# Why these numbers: ~30 dB is where differences stop being visible side by side on natural video,
# and the measured cache settings that keep the tiny Wan model's look land at 33–42 dB (FIELD-NOTES);
# 45 dB / SSIM 0.995 is what fp32 reordering and kernel swaps give, no more. A 1% VBench drop is
# about the gap between neighbouring models on VBench's leaderboard dimensions. The flicker budget
# equals the VBench one (it is the same measure, temporal_flickering, computed by Sol): i.i.d. noise
# of sigma 0.004 (48 dB) costs ~0.4% of it, sigma 0.01 (40 dB) ~1.1% — temporally incoherent error
# shows as flicker before it shows in PSNR.
BUDGETS: dict[str, QualityBudget] = {
    b.name: b
    for b in (
        QualityBudget(
            name="lossless",
            min_psnr=45.0,
            min_ssim=0.995,
            max_lpips=0.01,
            max_vbench_drop=0.005,
            max_flicker_drop=0.005,
        ),
        QualityBudget(
            name="near-lossless",
            min_psnr=30.0,
            min_ssim=0.90,
            max_lpips=0.05,
            max_vbench_drop=0.01,
            max_flicker_drop=0.01,
        ),
        QualityBudget(
            name="balanced",
            min_psnr=25.0,
            min_ssim=0.80,
            max_lpips=0.15,
            max_vbench_drop=0.03,
            max_flicker_drop=0.03,
        ),
        QualityBudget(
            name="aggressive",
            min_psnr=20.0,
            min_ssim=0.65,
            max_lpips=0.30,
            max_vbench_drop=0.05,
            max_flicker_drop=0.05,
        ),
    )
}
DEFAULT_BUDGET = "near-lossless"


def get_budget(budget: str | QualityBudget | None = None) -> QualityBudget:
    """A preset by name (None → near-lossless), or the budget given. Unknown names are a SolError."""
    if budget is None:
        budget = DEFAULT_BUDGET
    if isinstance(budget, QualityBudget):
        return budget
    if budget not in BUDGETS:
        raise SolError(f"unknown quality budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    return BUDGETS[budget]


class Check(BaseModel):
    """One comparison. ``passed`` is None for a check that could not be made (``skipped``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: JsonFloat = None
    threshold: JsonFloat = None
    op: Literal[">=", "<=", "=="] = ">="
    passed: bool | None
    detail: str = ""

    @property
    def skipped(self) -> bool:
        return self.passed is None


class Verdict(BaseModel):
    """The gate's answer: every check, and ``passed`` = no check failed (skipped ones do not count)."""

    budget: QualityBudget
    passed: bool
    checks: list[Check]

    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.passed is False]

    def summary(self) -> str:
        """One line: ``passed (12 checks, 1 skipped)`` or ``failed: video[0].psnr 21.3 < 30``."""
        skipped = sum(c.skipped for c in self.checks)
        if self.passed:
            return f"passed ({len(self.checks)} checks, {skipped} skipped)"
        parts = []
        for c in self.checks:
            if c.passed is False:
                parts.append(
                    f"{c.name} {c.detail}".strip()
                    if c.value is None
                    else f"{c.name} {_fmt(c.value)} (needs {c.op} {_fmt(c.threshold)})"
                )
        return "failed: " + "; ".join(parts)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.4g}"


def _relative_drop(base: float, cand: float) -> float:
    if base == 0:
        return 0.0 if cand >= 0 else math.inf
    return (base - cand) / abs(base)


def gate(
    baseline_videos: list[VideoLike],
    candidate_videos: list[VideoLike | None],
    budget: str | QualityBudget | None = None,
    vbench_baseline: dict[str, Any] | None = None,
    vbench_candidate: dict[str, Any] | None = None,
) -> Verdict:
    """Check a candidate's videos against the baseline's under ``budget``.

    ``candidate_videos`` is in the baseline's order; a None or absent entry is a missing output.
    ``vbench_*`` are ``run_vbench`` results (or ``{dim: score}``); dimensions computed for both are
    gated on their relative drop, the others are listed as skipped with the reason.
    """
    b = get_budget(budget)
    checks: list[Check] = []
    n = len(baseline_videos)
    checks.append(
        Check(
            name="outputs.count",
            value=float(len(candidate_videos)),
            threshold=float(n),
            op="==",
            passed=len(candidate_videos) == n,
            detail=""
            if len(candidate_videos) == n
            else f"{len(candidate_videos)} outputs for {n} baseline videos",
        )
    )
    lp_reason = lpips_status()
    flick_base, flick_cand = [], []
    for i in range(max(n, len(candidate_videos))):
        tag = f"video[{i}]"
        if i >= n:
            checks.append(
                Check(name=f"{tag}.present", passed=False, detail="an output the baseline does not have")
            )
            continue
        base = load_video(baseline_videos[i])
        cand_like = candidate_videos[i] if i < len(candidate_videos) else None
        if cand_like is None:
            checks.append(Check(name=f"{tag}.present", passed=False, detail="missing output"))
            continue
        try:
            cand = load_video(cand_like)
        except SolError as err:
            checks.append(Check(name=f"{tag}.present", passed=False, detail=str(err)))
            continue
        checks.append(Check(name=f"{tag}.present", passed=True))
        if cand.shape != base.shape:
            checks.append(
                Check(
                    name=f"{tag}.shape",
                    passed=False,
                    detail=f"{tuple(cand.shape)} vs baseline {tuple(base.shape)}",
                )
            )
            continue
        sane, sane_base = video_sanity(cand), video_sanity(base)
        checks.append(
            Check(
                name=f"{tag}.finite", passed=sane.finite, detail="" if sane.finite else "contains NaN or Inf"
            )
        )
        for prop, what in (("black", "near-constant dark"), ("frozen", "all frames equal")):
            bad, base_bad = getattr(sane, prop), getattr(sane_base, prop)
            detail = f"{what}" if bad and not base_bad else ("as the baseline video" if bad else "")
            checks.append(Check(name=f"{tag}.{prop}", passed=not bad or base_bad, detail=detail))
        if not sane.finite:
            continue  # fidelity of a NaN video is meaningless; the finite check already failed
        p, s = psnr(base, cand), ssim(base, cand)
        checks.append(Check(name=f"{tag}.psnr", value=p, threshold=b.min_psnr, passed=p >= b.min_psnr))
        checks.append(Check(name=f"{tag}.ssim", value=s, threshold=b.min_ssim, passed=s >= b.min_ssim))
        if b.max_lpips is not None:
            if lp_reason is None:
                lp, _ = lpips(base, cand)
                checks.append(
                    Check(
                        name=f"{tag}.lpips",
                        value=lp,
                        threshold=b.max_lpips,
                        op="<=",
                        passed=lp <= b.max_lpips,
                    )
                )
        flick_base.append(temporal_flickering(base))
        flick_cand.append(temporal_flickering(cand))
    if b.max_lpips is not None and lp_reason is not None:
        checks.append(Check(name="lpips", threshold=b.max_lpips, op="<=", passed=None, detail=lp_reason))
    if flick_base:
        fb, fc = float(np.mean(flick_base)), float(np.mean(flick_cand))
        drop = _relative_drop(fb, fc)
        checks.append(
            Check(
                name="flicker.drop",
                value=drop,
                threshold=b.max_flicker_drop,
                op="<=",
                passed=drop <= b.max_flicker_drop,
                detail=f"temporal_flickering {fc:.5f} vs baseline {fb:.5f}",
            )
        )
    checks.extend(_vbench_checks(vbench_baseline, vbench_candidate, b))
    return Verdict(budget=b, passed=all(c.passed is not False for c in checks), checks=checks)


def _scores(results: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, str]]:
    scores, reasons = {}, {}
    for dim, entry in (results or {}).items():
        if isinstance(entry, int | float):
            scores[dim] = float(entry)
        elif isinstance(entry, dict) and "score" in entry:
            scores[dim] = float(entry["score"])
        elif isinstance(entry, dict):
            reasons[dim] = str(entry.get("reason", "not available"))
    return scores, reasons


def _vbench_checks(base: dict[str, Any] | None, cand: dict[str, Any] | None, b: QualityBudget) -> list[Check]:
    if base is None and cand is None:
        return []
    base_scores, base_reasons = _scores(base)
    cand_scores, cand_reasons = _scores(cand)
    checks = []
    for dim in sorted(set(base_scores) | set(cand_scores) | set(base_reasons) | set(cand_reasons)):
        name = f"vbench.{dim}.drop"
        if dim in base_scores and dim in cand_scores:
            drop = _relative_drop(base_scores[dim], cand_scores[dim])
            checks.append(
                Check(
                    name=name,
                    value=drop,
                    threshold=b.max_vbench_drop,
                    op="<=",
                    passed=drop <= b.max_vbench_drop,
                    detail=f"{cand_scores[dim]:.5f} vs baseline {base_scores[dim]:.5f}",
                )
            )
        elif dim in base_scores:
            # The baseline could be scored and the candidate not: the candidate's run broke VBench.
            reason = cand_reasons.get(dim, "no candidate score")
            checks.append(
                Check(
                    name=name,
                    threshold=b.max_vbench_drop,
                    op="<=",
                    passed=False,
                    detail=f"candidate: {reason}",
                )
            )
        else:
            reason = base_reasons.get(dim) or cand_reasons.get(dim) or "no baseline score"
            checks.append(Check(name=name, threshold=b.max_vbench_drop, op="<=", passed=None, detail=reason))
    return checks
