"""Sliding Tile Attention (FastVideo's STA): each query tile attends to a window of key tiles.

The window is ``window`` tiles per axis (frames, height, width), centred on the query tile and
shifted inside the grid at its borders, so every query tile keeps the same number of key tiles and
the whole call is one batched gather + SDPA. ``window`` >= the tile grid on every axis is dense: the
model's own attention runs (bit-identical, counted dense).

>>> StaConfig(window=(1, 3, 3)).label()
'sparse_attention.sta(tile=(1, 4, 4), dense_steps=None, layers=start=0 stop=None every=1, dense_layers=(), backend=auto, window=(1, 3, 3))'
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from sol.hooks import Span
from sol.skills.base import TechniqueConfig, register_skill
from sol.skills.sparse_attention._base import SparseAttentionConfig, SparseAttentionSkill, choose_tile
from sol.skills.sparse_attention.tiling import Tiling, window_mask


class StaConfig(SparseAttentionConfig):
    """Local spatial-temporal windows in tiles."""

    kind: Literal["sparse_attention.sta"] = "sparse_attention.sta"
    version: int = 1
    window: tuple[int, int, int] = (3, 3, 3)  # key tiles per axis around each query tile

    @field_validator("window")
    @classmethod
    def _window(cls, v):
        if any(int(x) < 1 for x in v):
            raise ValueError("every window axis needs at least 1 tile")
        return v


@register_skill(StaConfig)
class StaSkill(SparseAttentionSkill):
    def tile_mask(self, call, qt, kt):
        cfg = call.config
        return self.static_mask(call, lambda t: window_mask(t, cfg.window)[None])

    def examples(self) -> list[TechniqueConfig]:
        return [
            StaConfig(tile=(1, 1, 2), window=(1, 1, 1)),
            StaConfig(tile=(1, 1, 1), window=(1, 2, 2), dense_steps=Span(stop=1), dense_layers=(0,)),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        """Windows at about 50 % and 25 % of the key tiles, and the 25 % window with the first
        step dense and with the first half of the layers dense (cheap knobs first: the share of
        attention kept decides the speed; what quality costs is measured)."""
        from sol.skills.sparse_attention import _search as S

        grid = S.grid_of(context)
        tile = choose_tile(grid, S.tile_target(context))
        tiling = Tiling.build(grid, tile)
        half, quarter = S.window_for(tiling, 0.5), S.window_for(tiling, 0.25)
        n_layers = S.layer_count(context)
        out = [StaConfig(tile=tile, window=quarter), StaConfig(tile=tile, window=half)]
        if S.step_count(context) > 2:
            out.append(StaConfig(tile=tile, window=quarter, dense_steps=Span(stop=1)))
        if n_layers > 1:
            # The pattern on the last half of the layers only: the first layers are where an error
            # costs most (measured per layer; _search's module doc).
            out.append(StaConfig(tile=tile, window=quarter, layers=Span(start=n_layers // 2)))
        return S.unique(out)

    def refine(self, context, results) -> list[TechniqueConfig]:
        """Between the densest window that missed the floor and the sparsest that met it (by
        measured density), or gentler than all when none met it: one step more of each knob."""
        from sol.skills.sparse_attention._search import refine_windows, window_for

        def between(cfg, target, tiling):
            return cfg.model_copy(update={"window": window_for(tiling, target)})

        return refine_windows(context, results, StaConfig, between)
