"""Merge and restore inside blocks (ToMe for video): ``token_pruning.merge``.

In each selected block, at each selected step, the ``ratio * N`` tokens most similar to a token of
a strided destination grid (one destination per ``stride`` cell) are merged into it by bipartite
soft matching on the block's input hidden states (ToMe; ToMe for Stable Diffusion's destination
grid). The block — self-attention, cross-attention and FFN — runs on the merged tokens; then its
residual is restored to every original token from the token it was merged into:
``out_i = x_i + (block(m)_slot(i) - m_slot(i))``. Each token keeps its own input, so what merging
loses is confined to one block's update, and the next block matches afresh.

``rotate`` moves the destination's position inside its cell every step, so no token is a merge
target at every step (a fixed destination grid prints as a grid pattern into the video).

``ratio`` 0, or a step or layer outside ``steps`` / ``layers``, runs the block untouched: outputs
are bit-identical to the unpruned pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sol.hooks import Installation, Span, track_steps
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.token_pruning._common import (
    HOOKS,
    MERGE_HOOK,
    BlockHook,
    BranchStates,
    Work,
    selected_layers,
)
from sol.skills.token_pruning.matching import bipartite, destinations


class TokenMergeConfig(TechniqueConfig):
    """Merge similar tokens before each selected block and restore them after it.

    >>> TokenMergeConfig(ratio=0.5, layers=Span(start=1)).ratio
    0.5
    """

    kind: Literal["token_pruning.merge"] = "token_pruning.merge"
    version: int = 1
    # Share of a block's tokens merged away; at most the sources' share (3/4 for stride (1, 2, 2)).
    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    stride: tuple[int, int, int] = (1, 2, 2)  # destination grid (frames, height, width)
    steps: Span = Span()  # denoising steps that merge
    layers: Span = Span()  # blocks that merge
    rotate: bool = True  # move the destination within its cell every step


class MergeHook(BlockHook):
    def __init__(self, index, ctx, adapter, states, work, config: TokenMergeConfig):
        super().__init__(index, ctx, adapter, states, work)
        self.config = config
        self._dst: dict[tuple, object] = {}

    def _destinations(self, n: int, device):
        cfg, ctx = self.config, self.ctx
        offset = max(ctx.step, 0) if cfg.rotate else 0
        key = (n, ctx.grid, offset, str(device))
        dst = self._dst.get(key)
        if dst is None:
            dst = self._dst[key] = destinations(n, ctx.grid, cfg.stride, offset, device)
        return dst

    def new_forward(self, module, *args, **kwargs):
        cfg, ctx = self.config, self.ctx
        x = self.hs.get(args, kwargs)
        if (
            cfg.ratio <= 0
            or not ctx.active
            or x is None
            or x.ndim != 3
            or not cfg.steps.contains(ctx.step, ctx.num_steps)
        ):
            return self.dense_call(module, args, kwargs, x)
        n = x.shape[1]
        red = bipartite(x, self._destinations(n, x.device), int(cfg.ratio * n))
        if red.k == n:
            return self.dense_call(module, args, kwargs, x)
        m = red.merge(x)
        out = self.reduced_call(module, args, kwargs, x, m, red.keep)
        return x + red.restore(out - m)


@register_skill(TokenMergeConfig)
class TokenMergeSkill(Skill):
    name = "token_pruning"
    # Which tokens run inside blocks (one pruning method per stack). Attention itself is the
    # model's own, on fewer tokens: the counted work prices it (tokens, attention pairs). Sparse
    # attention reads token_set and runs dense on a merged call (see docs/skills.md).
    writes = frozenset({Seam.TOKEN_SET})
    requires = frozenset({Capability.PRUNABLE_TOKENS})
    phase = Phase.TOKENS

    def apply(self, pipe, config: TokenMergeConfig, adapter) -> Installation:
        blocks = list(adapter.blocks())
        layers = selected_layers(config.layers, len(blocks), config.kind)
        inst = Installation(config.kind)
        inst.refuse_hooked(blocks, *HOOKS)
        ctx = track_steps(inst, adapter)
        states, work = BranchStates(dict), Work()
        for i in layers:
            hook = MergeHook(i, ctx, adapter, states, work, config)
            inst.hook(blocks[i], hook, MERGE_HOOK, root=adapter.transformer)
        inst.on_revert(states.reset)
        inst.counter_fn = work.counters
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [
            TokenMergeConfig(ratio=0.5),
            TokenMergeConfig(ratio=0.3, stride=(1, 2, 1), steps=Span(start=1), layers=Span(start=1, every=2)),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import merge_space

        return merge_space(context)

    def refine(self, context, results) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import refine_merge

        return refine_merge(context, results, TokenMergeConfig)
