"""diffusers' First Block Cache behind a Sol config (``FirstBlockCacheConfig``).

Block 0 always runs; when its residual changed less than ``threshold`` (relative mean absolute
difference) since the last computed step, the remaining blocks are skipped and their cached
residual added. diffusers' documented default threshold is 0.05. Sol's own
``cache.block_residual`` does the same with Fn/Bn, warm-up and a skip cap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sol.hooks import Handle
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache import _diffusers
from sol.skills.search import bisect_threshold

DOCUMENTED_THRESHOLD = 0.05


class DiffusersFirstBlockCacheConfig(TechniqueConfig):
    """diffusers ``FirstBlockCacheConfig(threshold=...)``.

    >>> DiffusersFirstBlockCacheConfig().threshold
    0.05
    """

    kind: Literal["cache.diffusers_fbc"] = "cache.diffusers_fbc"
    version: int = 1
    threshold: float = Field(DOCUMENTED_THRESHOLD, ge=0.0)


@register_skill(DiffusersFirstBlockCacheConfig)
class DiffusersFirstBlockCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.BLOCK_OUTPUT})
    writes = frozenset({Seam.STEP_OUTPUT, Seam.BLOCK_OUTPUT, Seam.DIFFUSERS_CACHE})
    requires = frozenset({Capability.BLOCK_RESIDUALS, Capability.DIFFUSERS_BLOCK_CACHE})
    phase = Phase.STEPS

    def apply(self, pipe, config: DiffusersFirstBlockCacheConfig, adapter) -> Handle:
        from diffusers.hooks import FirstBlockCacheConfig
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

        return _diffusers.enable(
            adapter,
            FirstBlockCacheConfig(threshold=config.threshold),
            config.kind,
            (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK),
        )

    def examples(self) -> list[TechniqueConfig]:
        return [DiffusersFirstBlockCacheConfig(), DiffusersFirstBlockCacheConfig(threshold=0.3)]

    def search_space(self, context) -> list[TechniqueConfig]:
        return [DiffusersFirstBlockCacheConfig(threshold=t) for t in (DOCUMENTED_THRESHOLD, 0.1, 0.2)]

    def refine(self, context, results) -> list[TechniqueConfig]:
        return bisect_threshold(results, DiffusersFirstBlockCacheConfig, context.min_psnr)
