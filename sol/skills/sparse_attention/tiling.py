"""3-D tiles of the (frames, height, width) token grid, and tile-level masks.

Sparsity pays on a CPU only when it is tile-aligned (``../shared/FIELD-NOTES.md``: a tile gather +
batched SDPA with 81% of blocks skipped ran 2x faster than dense; a raster-order local window, whose
blocks are partial, ran slower than dense). So every pattern here is a boolean mask over *tiles*
(query tile x key tile), and the tokens are put in tile order before attention and back after.

A :class:`Tiling` is computed once per (grid, tile) and cached: the index that takes raster-order
tokens to tile order, its inverse, and each tile's coordinates. The reorder happens inside each
self-attention call (a gather of q, k, v and one of the output): about 1 % of the attention it serves
at 2,304 tokens (measured: 0.6 ms against 69 ms dense on this CPU), and the block stream between
layers stays in the model's own raster order, so caches, probes and every other hook see the tokens
where the model put them.

**Grids that are not a multiple of the tile** are padded up to one (``ceil`` per axis). Padded
positions are zero rows: as keys they are masked out (an additive ``-inf`` bias, so a padded key
never takes attention weight), as queries their rows are computed and dropped. Every tile holds at
least one real token (the padding per axis is smaller than the tile), so no query row is all
``-inf``. The work counters count what the kernel computes, padding included: a padded tile is work
done, and a density is never flattered by leaving it out.

>>> t = Tiling.build((3, 4, 4), (1, 2, 2))
>>> t.tiles, t.tile_size, t.padded
(12, 4, False)
>>> t.to_tiles[:4].tolist()  # tile 0: tokens (0,0,0) (0,0,1) (0,1,0) (0,1,1)
[0, 1, 4, 5]
>>> window_mask(t, (1, 3, 3)).sum(1).tolist()[:3]  # 3x3 tiles per frame, shifted inside the grid
[4, 4, 4]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class Tiling:
    """Tokens of a ``grid`` (frames, height, width) in ``tile``-shaped blocks.

    ``to_tiles[j]`` is the raster index of the token at tile-order position ``j`` (``tokens`` for a
    padding position, which reads an appended zero row); ``from_tiles[i]`` is the tile-order
    position of raster token ``i``; ``coords[t]`` the (frame, row, column) of tile ``t`` in tiles;
    ``key_bias`` ``[tiles, tile_size]`` is 0 for real tokens and ``-inf`` for padding.
    """

    grid: Grid
    tile: Grid
    shape: Grid  # tiles per axis
    to_tiles: torch.Tensor
    from_tiles: torch.Tensor
    coords: torch.Tensor
    key_bias: torch.Tensor | None
    real: torch.Tensor  # [tiles] real tokens per tile

    @property
    def tiles(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def tile_size(self) -> int:
        return self.tile[0] * self.tile[1] * self.tile[2]

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def padded_tokens(self) -> int:
        return self.tiles * self.tile_size

    @property
    def padded(self) -> bool:
        return self.padded_tokens != self.tokens

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def build(grid: Grid, tile: Grid) -> Tiling:
        """The tiling of ``grid`` by ``tile`` (each tile axis clipped to the grid), cached."""
        grid = tuple(int(g) for g in grid)
        tile = tuple(max(1, min(int(t), g)) for t, g in zip(tile, grid, strict=True))
        shape = tuple(math.ceil(g / t) for g, t in zip(grid, tile, strict=True))
        f, h, w = grid
        nf, nh, nw = shape
        a, b, c = tile
        # Raster index of every padded-grid position, padding -> `tokens` (the appended zero row).
        pf, ph, pw = nf * a, nh * b, nw * c
        ff = torch.arange(pf).view(pf, 1, 1)
        hh = torch.arange(ph).view(1, ph, 1)
        ww = torch.arange(pw).view(1, 1, pw)
        raster = ff * h * w + hh * w + ww
        inside = (ff < f) & (hh < h) & (ww < w)
        raster = torch.where(inside, raster, torch.full_like(raster, f * h * w))
        order = raster.view(nf, a, nh, b, nw, c).permute(0, 2, 4, 1, 3, 5).reshape(-1)
        real_mask = inside.expand(pf, ph, pw).reshape(nf, a, nh, b, nw, c).permute(0, 2, 4, 1, 3, 5)
        real_mask = real_mask.reshape(nf * nh * nw, a * b * c)
        from_tiles = torch.empty(f * h * w, dtype=torch.long)
        pos = torch.nonzero(order < f * h * w).flatten()
        from_tiles[order[pos]] = pos
        coords = torch.stack(
            torch.meshgrid(torch.arange(nf), torch.arange(nh), torch.arange(nw), indexing="ij"), -1
        ).reshape(-1, 3)
        bias = None
        if not bool(real_mask.all()):
            bias = torch.zeros(real_mask.shape).masked_fill_(~real_mask, float("-inf"))
        return Tiling(grid, tile, shape, order, from_tiles, coords, bias, real_mask.sum(1))

    # --- reorder ---------------------------------------------------------------------------------

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, H, D]`` raster tokens -> ``[B, H, tiles, tile_size, D]`` (one copy)."""
        b, s, h, d = x.shape
        x = x.transpose(1, 2)
        if self.padded:
            x = torch.cat([x, x.new_zeros(b, h, 1, d)], 2)
        idx = self.to_tiles.to(x.device)
        return x.index_select(2, idx).view(b, h, self.tiles, self.tile_size, d)

    def scatter(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, H, tiles, tile_size, D]`` -> ``[B, S, H, D]`` raster tokens (padding dropped)."""
        b, h = out.shape[:2]
        out = out.reshape(b, h, self.padded_tokens, out.shape[-1])
        return out.index_select(2, self.from_tiles.to(out.device)).transpose(1, 2)

    def pairs(self, mask: torch.Tensor) -> int:
        """Query-key token pairs a tile mask ``[..., tiles, tiles]`` computes (padding included), per
        batch row and head summed over the mask's leading axes."""
        return int(mask.sum()) * self.tile_size * self.tile_size


# --- tile masks ----------------------------------------------------------------------------------


def _window_start(coords: torch.Tensor, size: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    # STA's window: centred on the query tile, shifted inside the grid at its borders, so every
    # query tile sees the same number of key tiles (one batched call, no ragged rows).
    return torch.minimum((coords - (size - 1) // 2).clamp_min(0), shape - size)


def window_mask(tiling: Tiling, window: Grid) -> torch.Tensor:
    """``[tiles, tiles]``: key tiles inside a ``window`` (tiles per axis) around each query tile.

    >>> window_mask(Tiling.build((1, 4, 4), (1, 1, 1)), (1, 2, 2)).sum().item()  # 16 tiles x 4
    64
    """
    shape = torch.tensor(tiling.shape)
    size = torch.minimum(torch.tensor([max(1, int(w)) for w in window]), shape)
    start = _window_start(tiling.coords, size, shape)
    c = tiling.coords[None, :, :]
    return ((c >= start[:, None, :]) & (c < start[:, None, :] + size)).all(-1)


def spatial_mask(tiling: Tiling) -> torch.Tensor:
    """Key tiles of the query tile's own frame group (Sparse VideoGen's spatial head)."""
    f = tiling.coords[:, 0]
    return f[:, None] == f[None, :]


def temporal_mask(tiling: Tiling) -> torch.Tensor:
    """Key tiles at the query tile's own spatial place, in every frame (Sparse VideoGen's temporal head)."""
    hw = tiling.coords[:, 1:]
    return (hw[:, None, :] == hw[None, :, :]).all(-1)


def radial_mask(tiling: Tiling, window: int, decay: int, min_window: int = 1) -> torch.Tensor:
    """Energy-decay mask (Radial Attention): the spatial window (tiles per side) halves every
    ``decay`` tiles of temporal distance, down to ``min_window``; 0 drops those frames.

    >>> m = radial_mask(Tiling.build((4, 4, 4), (1, 1, 1)), window=4, decay=1, min_window=1)
    >>> [int(m[0].view(4, 4, 4)[dt].sum()) for dt in range(4)]  # 4x4, 2x2, 1x1, 1x1 tiles
    [16, 4, 1, 1]
    """
    c = tiling.coords
    dt = (c[:, None, 0] - c[None, :, 0]).abs()
    size = torch.clamp(torch.div(window, 2 ** torch.div(dt, max(1, decay), rounding_mode="floor"),
                                 rounding_mode="floor"), min=min_window)  # fmt: skip
    shape = torch.tensor(tiling.shape[1:])
    size2 = torch.minimum(size[..., None].expand(*size.shape, 2), shape)
    start = torch.minimum((c[:, None, 1:] - (size2 - 1) // 2).clamp_min(0), shape - size2)
    inside = ((c[None, :, 1:] >= start) & (c[None, :, 1:] < start + size2)).all(-1)
    return inside & (size > 0)


def with_diagonal(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with every query tile attending to its own tile (no query row is ever empty)."""
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    return mask | eye


def density(mask: torch.Tensor) -> float:
    """The share of tile pairs a mask keeps."""
    return float(mask.float().mean())
