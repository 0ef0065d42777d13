"""Reduce keys and values only (AsymRnR for video): ``token_pruning.kv_merge``.

Self-attention keeps every query and attends to merged keys and values: in each selected
layer, at each selected step, the ``ratio * N`` keys most similar to a key of a strided
destination grid are merged into it (bipartite soft matching on the keys, after the family's
norms and RoPE), their values averaged the same way, and each merged key weighs ``log(size)``
more in the softmax (ToMe's proportional attention: a key standing for ``s`` similar keys gets
the attention mass those ``s`` keys would have had).

Why keys and values only: AsymRnR (Sun et al., 2024) found that merging queries — which
uniform ToMe does, since it merges the hidden states every projection reads — makes merged
tokens share one output, and on video this prints as blocky pixelation; reducing keys and
values leaves each query its own output and keeps the detail. What it saves is the attention
itself (``N x K`` query-key pairs instead of ``N x N``), not the projections or the FFN.

It swaps the self-attention processors (``Installation.processor``): attention is computed
through ``adapter.self_attention_qkv`` / ``attend`` / ``attention_output``, and a step or layer
outside the schedule (or ``ratio`` 0) calls the model's own processor: bit-identical.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from sol.errors import SolError
from sol.hooks import Installation, Span, WrappingProcessor, track_steps
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.token_pruning._common import HOOKS, Work, block_of, selected_layers
from sol.skills.token_pruning.matching import bipartite, destinations


class KVMergeConfig(TechniqueConfig):
    """Merge similar keys/values in self-attention; every query stays.

    >>> KVMergeConfig(ratio=0.6).stride
    (1, 2, 2)
    """

    kind: Literal["token_pruning.kv_merge"] = "token_pruning.kv_merge"
    version: int = 1
    ratio: float = Field(0.5, ge=0.0, lt=1.0)  # share of keys merged away (at most the sources' share)
    stride: tuple[int, int, int] = (1, 2, 2)  # destination grid (frames, height, width)
    steps: Span = Span()
    layers: Span = Span()
    rotate: bool = True  # move the destination within its cell every step


class KVMergeProcessor(WrappingProcessor):
    """Wraps a self-attention processor: merged keys/values when scheduled, the original otherwise."""

    def __init__(self, inner, index: int, config: KVMergeConfig, ctx, adapter, work: Work):
        self.inner = inner
        self.index = index
        self.config = config
        self.ctx = ctx
        self.adapter = adapter
        self.work = work
        self._dst: dict[tuple, object] = {}

    def _active(self) -> bool:
        cfg, ctx = self.config, self.ctx
        return cfg.ratio > 0 and ctx.active and cfg.steps.contains(ctx.step, ctx.num_steps)

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        rotary_emb=None,
        *rest,
        **kw,
    ):
        b, n = hidden_states.shape[0], hidden_states.shape[1]
        if (
            encoder_hidden_states is not None
            or attention_mask is not None
            or rest
            or kw
            or not self._active()
        ):
            out = self.inner(
                attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, *rest, **kw
            )
            self.work.pairs(self.index, n * n * b, n * n * b)
            return out
        cfg, ctx = self.config, self.ctx
        q, k, v = self.adapter.self_attention_qkv(attn, hidden_states, rotary_emb)
        offset = max(ctx.step, 0) if cfg.rotate else 0
        key = (n, ctx.grid, offset, str(k.device))
        dst = self._dst.get(key)
        if dst is None:
            dst = self._dst[key] = destinations(n, ctx.grid, cfg.stride, offset, k.device)
        out, kept = merged_attention(self.adapter, self.inner, q, k, v, dst, cfg.ratio)
        self.work.pairs(self.index, n * kept * b, n * n * b)
        return self.adapter.attention_output(attn, out, q)


def merged_attention(adapter, inner, q, k, v, dst, ratio: float):
    """``(out, keys kept)``: every query against the keys and values left after merging ``ratio`` of
    them into the destinations ``dst``, each merged key weighted by ``log(size)``."""
    heads, n = k.shape[2], k.shape[1]
    red = bipartite(k.flatten(2), dst, int(ratio * n))
    k2 = red.merge(k.flatten(2)).unflatten(2, (heads, -1))
    v2 = red.merge(v.flatten(2)).unflatten(2, (heads, -1))
    bias = red.size.log().to(q.dtype)[:, None, None, :]  # [B, 1, 1, K]: proportional attention
    return adapter.attend(inner, q, k2, v2, bias), red.k


@register_skill(KVMergeConfig)
class KVMergeSkill(Skill):
    name = "token_pruning"
    # It replaces self-attention with attention over merged keys (a proportional-attention bias):
    # an attention backend of its own, exclusive with sparse attention's.
    writes = frozenset({Seam.TOKEN_SET, Seam.ATTENTION_BACKEND})
    requires = frozenset(
        {Capability.PRUNABLE_TOKENS, Capability.SELF_ATTENTION_QKV, Capability.SWAPPABLE_ATTENTION}
    )
    phase = Phase.TOKENS

    def apply(self, pipe, config: KVMergeConfig, adapter) -> Installation:
        blocks = list(adapter.blocks())
        layers = set(selected_layers(config.layers, len(blocks), config.kind))
        modules = adapter.self_attention_modules()
        inst = Installation(config.kind)
        inst.refuse_foreign_processors(modules)
        inst.refuse_hooked(blocks, *HOOKS)
        ctx = track_steps(inst, adapter)
        work = Work()
        for name, m in modules.items():
            i = block_of(blocks, m)
            if i is None:
                raise SolError(
                    f"{config.kind}: self-attention {name} is in no block; fix the {adapter.family} adapter"
                )
            if i in layers:
                inst.processor(m, KVMergeProcessor(m.processor, i, config, ctx, adapter, work))
        inst.counter_fn = work.counters
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [KVMergeConfig(ratio=0.5), KVMergeConfig(ratio=0.7, steps=Span(start=1), layers=Span(every=2))]

    def ceiling(self, context, cost_model) -> dict | None:
        """Merged attention against dense on one layer's captured q, k, v (``sol.skills.probe``), at
        the search space's ratios and at the most the stride allows (every source merged): what it
        saves is attention only. On sol-tiny-wan at ``default`` (320 tokens) on the 2-core CPU the
        matching cost more than the pairs it saved, so it cannot beat the baseline there."""
        from sol.skills.probe import attention_ceiling, probe_layer

        p = probe_layer(context) if cost_model is not None else None
        if p is None:
            return None
        variants = {}
        for cfg in self.search_space(context):
            most = 1.0 - 1.0 / math.prod(cfg.stride)  # every source merged into its destination
            dst = destinations(p.k.shape[1], p.grid, cfg.stride, 0, p.k.device)
            for ratio in sorted({cfg.ratio, round(most, 3)}):
                variants[cfg.model_copy(update={"ratio": ratio}).label()] = lambda dst=dst, ratio=ratio: (
                    merged_attention(context.adapter, p.inner, p.q, p.k, p.v, dst, ratio)
                )
        return attention_ceiling(context, cost_model, variants, layer=p.layer)

    def search_space(self, context) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import kv_space

        return kv_space(context)

    def refine(self, context, results) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import refine_merge

        return refine_merge(context, results, KVMergeConfig)
