"""diffusers' Pyramid Attention Broadcast behind a Sol config (``PyramidAttentionBroadcastConfig``).

Within a timestep range, an attention module's output is computed once every ``*_skip_range``
calls and broadcast (reused) in between. The block identifiers come from the adapter (Wan:
``blocks.N.attn1`` self-attention, ``blocks.N.attn2`` cross-attention).

Trap (measured, diffusers 0.42.1): PAB counts *calls*, not steps, on one state per module,
while Wan's pipeline runs classifier-free guidance as two calls per step (cond, uncond). With
``spatial_skip_range=2`` the uncond call reuses the cond call's attention output at every step
inside the range; other ranges interleave the two. The measured PSNR includes that.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from sol.errors import SolError
from sol.hooks import Handle
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache import _diffusers
from sol.skills.search import bisect_threshold


class DiffusersPABConfig(TechniqueConfig):
    """diffusers ``PyramidAttentionBroadcastConfig`` (documented example: spatial skip 2 in (100, 800)).

    >>> DiffusersPABConfig().spatial_skip_range
    2
    """

    kind: Literal["cache.diffusers_pab"] = "cache.diffusers_pab"
    version: int = 1
    spatial_skip_range: int | None = Field(2, ge=2)
    spatial_timestep_range: tuple[int, int] = (100, 800)
    cross_skip_range: int | None = Field(None, ge=2)
    cross_timestep_range: tuple[int, int] = (100, 800)

    @model_validator(mode="after")
    def _some(self):
        if self.spatial_skip_range is None and self.cross_skip_range is None:
            raise ValueError("set spatial_skip_range or cross_skip_range (both None broadcasts nothing)")
        return self


@register_skill(DiffusersPABConfig)
class DiffusersPABSkill(Skill):
    name = "cache"
    # It reuses attention outputs inside blocks: step and block caches wrap it (hooks nest by
    # module), so it stacks on Sol's own step caches; diffusers allows one cache per model.
    reads = frozenset()
    writes = frozenset({Seam.ATTENTION_OUTPUT, Seam.DIFFUSERS_CACHE})
    requires = frozenset({Capability.SWAPPABLE_ATTENTION})
    phase = Phase.STEPS

    def apply(self, pipe, config: DiffusersPABConfig, adapter) -> Handle:
        from diffusers.hooks import PyramidAttentionBroadcastConfig
        from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

        # On the class: an instance's property can raise before its first call (HunyuanVideo 1.5
        # sets _current_timestep only inside __call__), so a fresh process refused a plan it had made.
        if not hasattr(type(pipe), "current_timestep") and not hasattr(pipe, "current_timestep"):
            raise SolError(
                f"cache.diffusers_pab needs pipe.current_timestep, which {type(pipe).__name__} lacks"
            )
        ident = (re.escape(adapter.blocks_path()) + r"\.",)
        dcfg = PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=config.spatial_skip_range,
            spatial_attention_timestep_skip_range=config.spatial_timestep_range,
            cross_attention_block_skip_range=config.cross_skip_range,
            cross_attention_timestep_skip_range=config.cross_timestep_range,
            spatial_attention_block_identifiers=ident,
            temporal_attention_block_identifiers=(),
            cross_attention_block_identifiers=ident,
            current_timestep_callback=lambda: pipe.current_timestep,
        )
        return _diffusers.enable(adapter, dcfg, config.kind, (_PYRAMID_ATTENTION_BROADCAST_HOOK,))

    def examples(self) -> list[TechniqueConfig]:
        return [DiffusersPABConfig(), DiffusersPABConfig(spatial_skip_range=3, cross_skip_range=4)]

    def search_space(self, context) -> list[TechniqueConfig]:
        return [DiffusersPABConfig(spatial_skip_range=2), DiffusersPABConfig(spatial_skip_range=3)]

    def refine(self, context, results) -> list[TechniqueConfig]:
        return bisect_threshold(
            results,
            DiffusersPABConfig,
            context.min_psnr,
            field="spatial_skip_range",
            integer=True,
        )
