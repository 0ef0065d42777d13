"""diffusers' MagCache behind a Sol config (``MagCacheConfig``), with Sol's calibration.

MagCache skips the block stack while the accumulated error ``sum |1 - prod(mag_ratio)|`` of
the residual's magnitude ratios stays below ``threshold`` (and at most ``max_skip_steps`` in
a row, never in the first ``retention_ratio`` of the steps). The ratios are model-specific:
diffusers ships Flux's only and otherwise needs a ``calibrate=True`` run whose printed list a
user pastes into the config. Sol computes the same ratios (same formula) in its calibration
run (:mod:`sol.skills.cache.calibration`) and stores them in this config, so a plan
re-applies without calibrating. The ratios are per step of the calibrated schedule
(``num_inference_steps``); diffusers interpolates them to another step count.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sol.hooks import Handle
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache import _diffusers
from sol.skills.cache.step_output import calibration_for
from sol.skills.search import bisect_threshold

# diffusers' documented defaults
DOCUMENTED = {"threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.2}
TARGET_COMPUTE = (0.45, 0.35)  # shares of steps computed (ideal ~2.2x, ~2.9x)


class DiffusersMagCacheConfig(TechniqueConfig):
    """diffusers ``MagCacheConfig`` with calibrated ``mag_ratios`` (one per step).

    >>> DiffusersMagCacheConfig(mag_ratios=(1.0, 0.99, 0.98)).num_inference_steps
    3
    """

    kind: Literal["cache.diffusers_magcache"] = "cache.diffusers_magcache"
    version: int = 1
    threshold: float = Field(DOCUMENTED["threshold"], ge=0.0)
    max_skip_steps: int = Field(DOCUMENTED["max_skip_steps"], ge=0)
    retention_ratio: float = Field(DOCUMENTED["retention_ratio"], ge=0.0, le=1.0)
    mag_ratios: tuple[float, ...] = Field(min_length=2, max_length=1000)
    num_inference_steps: int | None = Field(None, ge=1)  # None: len(mag_ratios)

    @model_validator(mode="after")
    def _steps(self):
        if self.num_inference_steps is None:
            object.__setattr__(self, "num_inference_steps", len(self.mag_ratios))
        return self


def simulate(mag_ratios, threshold: float, max_skip_steps: int, retention_ratio: float) -> float:
    """Share of steps MagCache computes with these ratios (diffusers' rule, step by step)."""
    n = len(mag_ratios)
    retention = int(retention_ratio * n + 0.5)
    ratio, err, k, computed = 1.0, 0.0, 0, 0
    for t in range(n):
        compute = True
        if t >= retention:
            ratio *= mag_ratios[t]
            k += 1
            err += abs(1.0 - ratio)
            if t > 0 and err <= threshold and k <= max_skip_steps:
                compute = False
            else:
                ratio, err, k = 1.0, 0.0, 0
        computed += compute
    return computed / n


def threshold_for(mag_ratios, target: float, max_skip_steps: int, retention_ratio: float) -> float | None:
    """Bisection on the simulated share of computed steps; None when ``target`` is out of reach
    (retention and the skip cap bound how few steps MagCache computes)."""
    args = (max_skip_steps, retention_ratio)
    lo, hi = 0.0, 1e-3
    while simulate(mag_ratios, hi, *args) > target and hi < 1e3:
        hi *= 2
    if simulate(mag_ratios, hi, *args) > target + 0.02:
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        if simulate(mag_ratios, mid, *args) > target:
            lo = mid
        else:
            hi = mid
    return float(f"{hi:.4g}")


@register_skill(DiffusersMagCacheConfig)
class DiffusersMagCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.STEP_OUTPUT})
    writes = frozenset({Seam.STEP_OUTPUT, Seam.BLOCK_OUTPUT, Seam.DIFFUSERS_CACHE})
    requires = frozenset({Capability.BLOCK_RESIDUALS, Capability.DIFFUSERS_BLOCK_CACHE})
    phase = Phase.STEPS

    def apply(self, pipe, config: DiffusersMagCacheConfig, adapter) -> Handle:
        from diffusers.hooks import MagCacheConfig
        from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

        dcfg = MagCacheConfig(
            threshold=config.threshold,
            max_skip_steps=config.max_skip_steps,
            retention_ratio=config.retention_ratio,
            num_inference_steps=config.num_inference_steps,
            mag_ratios=list(config.mag_ratios),
        )
        return _diffusers.enable(
            adapter, dcfg, config.kind, (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
        )

    def examples(self) -> list[TechniqueConfig]:
        ratios = (1.0, 1.02, 1.0, 0.99)
        return [
            DiffusersMagCacheConfig(mag_ratios=ratios),
            DiffusersMagCacheConfig(mag_ratios=ratios, threshold=0.5, retention_ratio=0.0, max_skip_steps=2),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        cal = calibration_for(context)
        if cal is None:
            return []  # MagCache cannot run without ratios of this model
        ratios = tuple(round(r, 5) for r in cal.mag_ratios())
        out = [DiffusersMagCacheConfig(mag_ratios=ratios)]  # documented settings
        for f in TARGET_COMPUTE:
            # The documented skip cap and retention first; a looser pair where they cannot reach f.
            for k, keep in ((DOCUMENTED["max_skip_steps"], DOCUMENTED["retention_ratio"]), (5, 0.1)):
                t = threshold_for(ratios, f, k, keep)
                if t:
                    c = DiffusersMagCacheConfig(
                        mag_ratios=ratios, threshold=t, max_skip_steps=k, retention_ratio=keep
                    )
                    if c not in out:
                        out.append(c)
                    break
        return out

    def refine(self, context, results) -> list[TechniqueConfig]:
        return bisect_threshold(results, DiffusersMagCacheConfig, context.min_psnr)
