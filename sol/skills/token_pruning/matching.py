"""Which tokens stand for which: destination grids, bipartite soft matching, merge and restore.

Every token-pruning method reduces ``N`` tokens to ``K`` representatives and later restores ``N``.
One structure describes any such reduction, a :class:`Reduction`:

- ``keep`` ``[B, K]``: the original position of each representative, ascending (raster order is
  kept, so per-token block arguments such as RoPE are gathered at the representative's own
  position, and neighbouring tokens stay neighbours);
- ``slot`` ``[B, N]``: for each original token, the representative that carries it (a kept
  token is its own slot; a merged token points at the token it was merged into; ``None`` when
  dropped tokens are not represented at all: pruning);
- ``size`` ``[B, K]``: how many original tokens each representative carries (merging).

Merging averages each slot's tokens (``scatter_add`` by ``slot`` / ``size``); restoring gathers by
``slot``. Bipartite soft matching (ToMe, Bolya et al. 2023) splits the tokens into destinations
(a strided sub-grid: one token per ``stride`` cell, as ToMe for Stable Diffusion does) and sources,
gives every source its most similar destination (cosine), and merges the ``r`` sources whose best
match is strongest.

>>> x = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]])
>>> red = bipartite(x, torch.tensor([0, 2]), r=2)
>>> red.keep.tolist(), red.slot.tolist(), red.size.tolist()
([[0, 2]], [[0, 0, 1, 1]], [[2.0, 2.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Reduction:
    """``N`` tokens represented by ``K`` (see the module docstring)."""

    keep: torch.Tensor  # [B, K] long, ascending
    slot: torch.Tensor | None  # [B, N] long in [0, K), or None (pruned tokens are not represented)
    size: torch.Tensor | None  # [B, K] float, or None (every representative carries itself)
    n: int  # N

    @property
    def k(self) -> int:
        return int(self.keep.shape[1])

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, K, C]``: the mean of each slot's tokens (a gather when nothing merged)."""
        if self.slot is None or self.size is None:
            return gather_rows(x, self.keep)
        b, _n, c = x.shape
        out = torch.zeros(b, self.k, c, dtype=torch.float32, device=x.device)
        out.scatter_add_(1, self.slot.unsqueeze(-1).expand(b, self.n, c), x.float())
        return (out / self.size.unsqueeze(-1)).to(x.dtype)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, K, C]`` -> ``[B, N, C]``: each original token gets its slot's row."""
        if self.slot is None:
            raise ValueError("a pruning reduction restores through a cache, not by itself")
        return gather_rows(y, self.slot)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for ``x`` ``[B, N, C]`` and ``index`` ``[B, K]``."""
    b, k = index.shape
    if x.shape[0] != b:
        x = x.expand(b, *x.shape[1:])
    return x.gather(1, index.unsqueeze(-1).expand(b, k, x.shape[-1]))


def scatter_rows(
    base: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``base`` ``[B, N, C]`` with ``rows`` ``[B, K, C]`` written at ``index`` ``[B, K]``: a copy, or
    ``base`` itself changed (``inplace``, for tensors only the caller holds)."""
    idx = index.unsqueeze(-1).expand(*index.shape, base.shape[-1])
    rows = rows.to(base.dtype)
    return base.scatter_(1, idx, rows) if inplace else base.scatter(1, idx, rows)


def destinations(
    n: int,
    grid: tuple[int, int, int] | None,
    stride: tuple[int, int, int],
    offset: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Positions of the destination tokens: one per ``stride`` cell of the ``(frames, height, width)``
    grid, at the cell position ``offset`` (taken modulo the cell size, so rotating it step by step
    visits every position of the cell); tokens are in ``(t, h, w)`` raster order.

    When the grid does not describe ``n`` tokens (a packed sequence), every ``prod(stride)``-th token.

    >>> destinations(8, (1, 2, 4), (1, 2, 2)).tolist()
    [0, 2]
    >>> destinations(8, (1, 2, 4), (1, 2, 2), offset=3).tolist()
    [5, 7]
    """
    cell = stride[0] * stride[1] * stride[2]
    offset %= cell
    if grid is None or grid[0] * grid[1] * grid[2] != n:
        return torch.arange(offset, n, cell, device=device)
    f, h, w = grid
    sf, sh, sw = stride
    of, rem = divmod(offset, sh * sw)
    oh, ow = divmod(rem, sw)
    t = torch.arange(f, device=device)
    y = torch.arange(h, device=device)
    x = torch.arange(w, device=device)
    # A grid side shorter than its stride offset keeps its first row/column rather than none.
    t = t[(t % sf) == min(of, f - 1)]
    y = y[(y % sh) == min(oh, h - 1)]
    x = x[(x % sw) == min(ow, w - 1)]
    return ((t[:, None, None] * h + y[None, :, None]) * w + x[None, None, :]).reshape(-1)


def bipartite(metric: torch.Tensor, dst: torch.Tensor, r: int) -> Reduction:
    """Bipartite soft matching: merge the ``r`` source tokens most similar to a destination.

    ``metric`` ``[B, N, C]`` (hidden states or keys; cosine similarity), ``dst`` ``[Nd]`` destination
    positions. ``r`` is capped at the number of sources; ``r == 0`` keeps every token.
    """
    b, n, _c = metric.shape
    device = metric.device
    is_dst = torch.zeros(n, dtype=torch.bool, device=device)
    is_dst[dst] = True
    src = torch.nonzero(~is_dst).squeeze(1)
    r = max(0, min(int(r), int(src.numel())))
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    scores = m[:, src] @ m[:, dst].transpose(1, 2)  # [B, Ns, Nd]
    best, best_dst = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged = order[:, :r]  # source indices (into src) that merge
    # Representatives: every destination and every unmerged source, in raster order.
    keep_mask = torch.ones(b, n, dtype=torch.bool, device=device)
    keep_mask[torch.arange(b, device=device)[:, None], src[merged]] = False
    keep = torch.nonzero(keep_mask)[:, 1].reshape(b, n - r)
    # slot: position of each token's representative within ``keep``.
    rank = torch.cumsum(keep_mask.long(), dim=1) - 1  # for kept tokens, their index in ``keep``
    slot = rank.clone()
    target = dst[best_dst.gather(1, merged)]  # original position of each merged source's destination
    slot.scatter_(1, src[merged], rank.gather(1, target))
    size = torch.zeros(b, n - r, dtype=torch.float32, device=device)
    size.scatter_add_(1, slot, torch.ones(b, n, dtype=torch.float32, device=device))
    return Reduction(keep=keep, slot=slot, size=size, n=n)


def top_tokens(score: torch.Tensor, k: int) -> Reduction:
    """Keep the ``k`` highest-scoring tokens of ``score`` ``[B, N]`` (pruning: no slots)."""
    b, n = score.shape
    k = max(1, min(int(k), n))
    keep = score.topk(k, dim=1).indices.sort(dim=1).values
    return Reduction(keep=keep, slot=None, size=None, n=n)
