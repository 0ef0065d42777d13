"""Radial Attention: attention energy decays with distance, so the spatial window shrinks with time.

A query tile keeps the key tiles of its own frame group within ``window`` tiles per side; every
``decay`` frame groups further away the window halves (``window // 2**(dt // decay)``), down to
``min_window`` (0: those frame groups are dropped). Static per grid, so the mask and its gather plan
are built once; rows keep different numbers of key tiles (the border shifts the window, and the
window shrinks), so the gather path runs one batched call per count.

>>> RadialConfig(window=4, decay=1).kind
'sparse_attention.radial'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sol.hooks import Span
from sol.skills.base import TechniqueConfig, register_skill
from sol.skills.sparse_attention._base import SparseAttentionConfig, SparseAttentionSkill, choose_tile
from sol.skills.sparse_attention.tiling import Tiling, density, radial_mask, with_diagonal


class RadialConfig(SparseAttentionConfig):
    """Energy-decay mask: a spatial window that halves every ``decay`` frame groups of distance."""

    kind: Literal["sparse_attention.radial"] = "sparse_attention.radial"
    version: int = 1
    window: int = Field(4, ge=1)  # spatial tiles per side in the query's own frame group
    decay: int = Field(1, ge=1)  # frame groups per halving of the window
    min_window: int = Field(1, ge=0)  # the smallest window; 0 drops distant frame groups


def mask_of(tiling: Tiling, cfg: RadialConfig):
    return with_diagonal(radial_mask(tiling, cfg.window, cfg.decay, cfg.min_window))[None]


@register_skill(RadialConfig)
class RadialSkill(SparseAttentionSkill):
    def tile_mask(self, call, qt, kt):
        return self.static_mask(call, lambda t: mask_of(t, call.config))

    def examples(self) -> list[TechniqueConfig]:
        return [
            RadialConfig(tile=(1, 1, 1), window=2, decay=1, min_window=0),
            RadialConfig(tile=(1, 1, 1), window=1, decay=2, layers=Span(start=1)),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        """The widest window whose mask keeps about 50 % and 25 % of the tiles, decay 1 and 2."""
        from sol.skills.sparse_attention import _search as S

        grid = S.grid_of(context)
        tile = choose_tile(grid, S.tile_target(context))
        tiling = Tiling.build(grid, tile)
        side = max(tiling.shape[1], tiling.shape[2])
        out = []
        for target in (0.5, 0.25):
            best = None
            for decay in (1, 2):
                for w in range(1, side + 1):
                    cfg = RadialConfig(tile=tile, window=w, decay=decay)
                    d = density(mask_of(tiling, cfg))
                    if best is None or abs(d - target) < best[0]:
                        best = (abs(d - target), cfg)
            out.append(best[1])
        return S.unique(out)

    def refine(self, context, results) -> list[TechniqueConfig]:
        from sol.skills.sparse_attention._search import refine_windows

        def between(cfg, target, tiling):
            side = max(tiling.shape[1], tiling.shape[2])
            options = [cfg.model_copy(update={"window": w}) for w in range(1, side + 1)]
            return min(options, key=lambda c: abs(density(mask_of(tiling, c)) - target))

        return refine_windows(context, results, RadialConfig, between)
