"""Sparse VideoGen: per head, a spatial or a temporal pattern, chosen from a short attention profile.

Video DiT heads tend to be either *spatial* (a query attends to its own frame) or *temporal* (to its
own place in every frame). At every call, ``samples`` query tokens (evenly spread over the grid) are
attended densely — ``samples x S`` pairs per head — and the
same logits are masked with each pattern; a head takes the pattern whose output on the samples is
closest to dense (relative L2 error), if that error is at most ``max_error``, and stays dense
otherwise (the per-head dense fallback). The profile is not free: at 2,304 tokens (4 heads x 32)
it took ~7 ms with 32 samples and 15-19 ms with 64, against 63 ms for the dense call (thread CPU
time, one thread) — most of it the ``exp`` over the sampled rows — so 32 is the default. Sparse heads run through the tile path with one mask per
head; dense heads through the model's own attention.

With tiles of one frame group (``tile[0]`` frames), the spatial pattern keeps the key tiles of the
query tile's frame group and the temporal one the key tiles at its spatial place in every frame
group: both are tile-aligned.

``max_error`` is the knob (larger: more heads sparse); the search bisects it toward the PSNR floor.
The profile's pairs count as computed work; counters ``svg_heads.spatial``, ``svg_heads.temporal``
and ``svg_heads.dense`` sum the choice over calls.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sol.hooks import Span
from sol.skills.base import TechniqueConfig, register_skill
from sol.skills.sparse_attention._base import (
    SparseAttentionConfig,
    SparseAttentionSkill,
    choose_tile,
    run_tiles,
)
from sol.skills.sparse_attention.tiling import Tiling, spatial_mask, temporal_mask

PATTERNS = ("spatial", "temporal")


class SvgConfig(SparseAttentionConfig):
    """Per-head spatial / temporal choice from a per-call profile of sampled queries."""

    kind: Literal["sparse_attention.svg"] = "sparse_attention.svg"
    version: int = 1
    max_error: float = Field(0.1, ge=0.0)  # relative L2 error of a head's sampled outputs to go sparse
    samples: int = Field(32, ge=1)  # query tokens profiled per call


def pattern_mask(tiling: Tiling, name: str) -> torch.Tensor:
    """The ``[n, n]`` tile mask of a pattern."""
    return spatial_mask(tiling) if name == "spatial" else temporal_mask(tiling)


def sample_queries(tokens: int, samples: int) -> torch.Tensor:
    """``samples`` raster indices spread evenly over the tokens (deterministic: the same per call)."""
    samples = min(samples, tokens)
    return torch.linspace(0, tokens - 1, samples).round().long().unique()


def choose_patterns(q, k, v, tiling: Tiling, samples: int, max_error: float) -> tuple[list[str], float]:
    """``(pattern per head, profiled pairs)``: for q, k, v ``[B, S, H, D]`` (raster order)."""
    b, s, h, d = q.shape
    idx = sample_queries(s, samples).to(q.device)
    qs = q[:, idx].transpose(1, 2).float()  # [B, H, m, D]
    kh, vh = (x.transpose(1, 2).float().contiguous() for x in (k, v))
    logits = qs @ kh.transpose(-1, -2) * d**-0.5  # [B, H, m, S]
    # exp once; each pattern only zeroes keys and renormalises (its own max is not needed: a
    # pattern whose kept keys all underflow gets an infinite error and is never chosen).
    p = (logits - logits.amax(-1, keepdim=True)).exp()
    dense = (p @ vh) / p.sum(-1, keepdim=True)
    tile_of = tiling.from_tiles.to(q.device) // tiling.tile_size  # [S] tile of each raster token
    q_tiles = tile_of[idx]
    norm = dense.pow(2).sum((0, 2, 3)).sqrt().clamp_min(1e-12)
    errors = []
    for name in PATTERNS:
        tile_mask = pattern_mask(tiling, name).to(q.device)
        if bool(tile_mask.all()):  # keeps every tile (e.g. one frame group): not sparse, never chosen
            errors.append(torch.full((h,), float("inf"), device=q.device))
            continue
        # Zero the keys outside the pattern (a gather of the kept keys measured 2x slower: tiny matmuls).
        pm = p * tile_mask[q_tiles][:, tile_of].to(p.dtype)  # [B, H, m, S]
        out = (pm @ vh) / pm.sum(-1, keepdim=True)
        err = (out - dense).pow(2).sum((0, 2, 3)).sqrt() / norm
        errors.append(torch.nan_to_num(err, nan=float("inf")))
    errors = torch.stack(errors)  # [patterns, H]
    best = errors.argmin(0)
    choice = [PATTERNS[int(best[i])] if float(errors[best[i], i]) <= max_error else "dense" for i in range(h)]
    return choice, float(b * h * len(idx) * s)


@register_skill(SvgConfig)
class SvgSkill(SparseAttentionSkill):
    def attend(self, call, q, k, v):
        cfg, tiling = call.config, call.tiling
        b, s, h, _ = q.shape
        choice, profiled = choose_patterns(q, k, v, tiling, cfg.samples, cfg.max_error)
        for name in ("spatial", "temporal", "dense"):
            call.work.add(f"svg_heads.{name}", choice.count(name))
        dense_heads = [i for i, c in enumerate(choice) if c == "dense"]
        sparse_heads = [i for i, c in enumerate(choice) if c != "dense"]
        if not sparse_heads:
            return self.adapter_attend(call, q, k, v), float(b * h * s * s) + profiled
        mask = torch.stack([pattern_mask(tiling, choice[i]) for i in sparse_heads]).to(q.device)  # [H', n, n]
        out = torch.empty_like(q)
        sh = torch.tensor(sparse_heads, device=q.device)
        qt, kt, vt = (tiling.gather(x.index_select(2, sh)) for x in (q, k, v))
        out[:, :, sparse_heads] = tiling.scatter(run_tiles(call.backend, qt, kt, vt, mask, tiling)).to(
            q.dtype
        )
        computed = float(tiling.pairs(mask) * b) + profiled
        if dense_heads:
            dh = torch.tensor(dense_heads, device=q.device)
            sub = (x.index_select(2, dh) for x in (q, k, v))
            out[:, :, dense_heads] = self.adapter_attend(call, *sub, whole=False).to(q.dtype)
            computed += float(b * len(dense_heads) * s * s)
        return out, computed

    def examples(self) -> list[TechniqueConfig]:
        return [
            SvgConfig(tile=(1, 1, 2), max_error=1.0, samples=4),
            SvgConfig(tile=(1, 1, 1), max_error=0.5, samples=4, dense_steps=Span(stop=1)),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        """Three error bounds spanning "only heads that are nearly exact" to "most heads"."""
        from sol.skills.sparse_attention import _search as S

        grid = S.grid_of(context)
        tile = choose_tile((1, grid[1], grid[2]), S.tile_target(context))  # one frame per tile
        return [SvgConfig(tile=tile, max_error=e) for e in (0.05, 0.15, 0.4)]

    def refine(self, context, results) -> list[TechniqueConfig]:
        from sol.skills.search import bisect_threshold

        return bisect_threshold(results, SvgConfig, context.min_psnr, field="max_error")
