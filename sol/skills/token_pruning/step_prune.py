"""Prune across denoising steps: ``token_pruning.step_prune``.

On a *full* step every selected block runs on all tokens and its residual (``out - in``) is kept
per token, per block and per CFG branch. On a *pruned* step the first selected block scores every
token and keeps the ``keep_at(step) * N`` highest; every selected block runs on the kept tokens
only (per-token arguments gathered with them), and a dropped token gets the residual that block
gave it the last time it was computed: ``out_i = x_i + r_i`` — the previous steps' update carried
forward on top of this step's own input (the Sol engine's ``token_prune``, Jenga's token
carving, per token where TeaCache is per step). Kept tokens refresh their residual.

Scores (higher = computed):

- ``change``: the relative change of the token's input to the first selected block since that
  token was last computed, ``|x_i - x_i^last| / |x_i^last|``; a dropped token's change grows
  every step it stays dropped, so nothing stays stale for long;
- ``residual``: the size of the update the first selected block gave the token last time,
  ``|r_i|`` (a feature-norm score: tokens the blocks move most are computed).

Attention of the kept tokens (``attend``): to every token ("all", the default: the dropped
tokens' keys and values come from the last step that computed them, as in RAS and ToCa — a
self-attention processor keeps them), or to the kept tokens only ("kept": ``K x K`` pairs instead
of ``K x N``, and the dropped tokens' context is lost). ``scope="attention"`` prunes only the
self-attention queries: every token runs the rest of the block, keys and values are fresh.

``full_steps`` (``Span`` schedules) run at full size: at least the first step, to seed the cache
(a pruned step with no cache yet runs full). ``keep`` 1, or no pruned step, is bit-identical to the
unpruned pipeline.

Memory: one residual (and with ``attend="all"`` one key and one value) per selected block and per
CFG branch, ``[B, N, D]`` each (sol-tiny-wan at ``long``: 3 x 8 x 2 x 2,304 x 128 floats = 57 MB;
Wan2.1-1.3B at 480p: 3 x 30 x 2 x 32,760 x 1,536 floats = 36 GB — select fewer layers there).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sol.hooks import Installation, ModelHook, Span, WrappingProcessor, in_any, track_steps
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.token_pruning._common import (
    HOOKS,
    PRUNE_HOOK,
    BlockHook,
    BranchStates,
    Work,
    block_of,
    selected_layers,
)
from sol.skills.token_pruning.matching import gather_rows, scatter_rows, top_tokens


class StepPruneConfig(TechniqueConfig):
    """Run the selected blocks on the highest-scoring tokens; reuse the rest's last residual.

    >>> StepPruneConfig(keep=0.6, full_steps=(Span(stop=2),)).keep
    0.6
    """

    kind: Literal["token_pruning.step_prune"] = "token_pruning.step_prune"
    version: int = 1
    keep: float = Field(0.5, gt=0.0, le=1.0)  # share of tokens computed at the first pruned step
    # Share at the last step (None: ``keep``), geometric in between: later steps refine detail and
    # tolerate far less computed than the first pruned ones (measured: see docs/skills.md).
    keep_end: float | None = Field(None, gt=0.0, le=1.0)
    full_steps: tuple[Span, ...] = (Span(stop=1),)  # steps at full size (the first seeds the cache)
    layers: Span = Span()  # blocks that prune; the first of them scores the tokens
    score: Literal["change", "residual"] = "change"
    # Keys a kept token attends to: every token ("all": dropped ones' keys/values from the last
    # step that computed them, as RAS and ToCa do) or only the kept ones ("kept": cheaper, and the
    # dropped tokens' context is lost).
    attend: Literal["all", "kept"] = "all"
    # What a dropped token skips: the whole block ("block"), or only self-attention ("attention":
    # every token still runs the norms, the step's modulation, cross-attention and the FFN, and
    # keys/values are fresh for all; only dropped queries reuse their last attention output).
    scope: Literal["block", "attention"] = "block"

    @field_validator("full_steps")
    @classmethod
    def _spans(cls, v):
        if len(v) > 16:
            raise ValueError("at most 16 spans of full steps")
        return v

    def keep_at(self, step: int, num_steps: int | None) -> float:
        """The share of tokens computed at ``step`` (1.0 on a full step).

        >>> c = StepPruneConfig(keep=0.8, keep_end=0.1, full_steps=(Span(stop=2),))
        >>> [round(c.keep_at(i, 6), 2) for i in range(6)]
        [1.0, 1.0, 0.8, 0.4, 0.2, 0.1]
        """
        if in_any(self.full_steps, step, num_steps):
            return 1.0
        if self.keep_end is None or num_steps is None:
            return self.keep
        first = next((i for i in range(num_steps) if not in_any(self.full_steps, i, num_steps)), step)
        span = num_steps - 1 - first
        t = 1.0 if span <= 0 else min(max((step - first) / span, 0.0), 1.0)
        return self.keep * (self.keep_end / self.keep) ** t


class _Cache:
    """One CFG branch's memory within a generation."""

    def __init__(self):
        self.residual: dict[int, object] = {}  # block -> [B, N, D]
        self.kv: dict[int, tuple] = {}  # block -> self-attention keys, values [B, N, H, Dh] ("all")
        self.ref = None  # the scoring block's input when each token was last computed
        self.keep = None  # this step's kept tokens [B, K]
        self.keep_step = -1


class _Current:
    """The block call in progress (set by its hook, read by its self-attention processor)."""

    def __init__(self):
        self.index: int | None = None
        self.cache: _Cache | None = None
        self.keep = None  # None: the block runs at full size


class AllKeysProcessor(WrappingProcessor):
    """Self-attention of a pruned block with every token as a key: the kept tokens' keys and values
    are fresh, the dropped ones' come from the last call that computed them. On a full-size call it
    computes attention as the model does (the adapter's q/k/v, attend, output: bit-identical) and
    keeps the keys and values."""

    def __init__(self, inner, index: int, current: _Current, adapter):
        self.inner = inner
        self.index = index
        self.current = current
        self.adapter = adapter

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
        cur = self.current
        if (
            cur.index != self.index
            or encoder_hidden_states is not None
            or attention_mask is not None
            or rest
            or kw
        ):
            return self.inner(
                attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, *rest, **kw
            )
        q, k, v = self.adapter.self_attention_qkv(attn, hidden_states, rotary_emb)
        if cur.keep is None:
            cur.cache.kv[self.index] = (k, v)
        else:
            k_all, v_all = cur.cache.kv[self.index]
            keep = cur.keep
            # In place: the cached keys and values are this processor's own tensors.
            scatter_rows(k_all.flatten(2), keep, k.flatten(2), inplace=True)
            scatter_rows(v_all.flatten(2), keep, v.flatten(2), inplace=True)
            k, v = k_all, v_all
        out = self.adapter.attend(self.inner, q, k, v)
        return self.adapter.attention_output(attn, out, q)


class _AttentionCache:
    """One CFG branch's memory of one self-attention layer ("attention" scope)."""

    def __init__(self):
        self.out = None  # last attention output per token [B, N, D]
        self.ref = None  # input per token when last computed [B, N, D]


class AttentionPruneProcessor(WrappingProcessor):
    """Self-attention that computes the outputs of the highest-scoring queries only (every token's
    fresh key and value), reusing the others' last output ("attention" scope)."""

    def __init__(self, inner, index: int, config: StepPruneConfig, ctx, adapter, states: BranchStates, work):
        self.inner = inner
        self.index = index
        self.config = config
        self.ctx = ctx
        self.adapter = adapter
        self.states = states
        self.work = work

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
        cfg, ctx = self.config, self.ctx
        x = hidden_states
        b, n = x.shape[0], x.shape[1]
        if encoder_hidden_states is not None or attention_mask is not None or rest or kw or not ctx.active:
            self.work.tokens(self.index, ctx.step, n * b, n * b)
            self.work.pairs(self.index, n * n * b, n * n * b)
            return self.inner(attn, x, encoder_hidden_states, attention_mask, rotary_emb, *rest, **kw)
        st = self.states.get(ctx.branch).setdefault(self.index, _AttentionCache())
        q, k, v = self.adapter.self_attention_qkv(attn, x, rotary_emb)
        share = cfg.keep_at(ctx.step, ctx.num_steps)
        prune = share < 1.0 and st.out is not None and st.out.shape == x.shape
        kept = round(share * n)
        if not prune or kept >= n:
            out = self.adapter.attention_output(attn, self.adapter.attend(self.inner, q, k, v), q)
            st.out, st.ref = out, x
            self.work.tokens(self.index, ctx.step, n * b, n * b)
            self.work.pairs(self.index, n * n * b, n * n * b)
            return out
        if cfg.score == "residual":
            score = st.out.float().norm(dim=-1)
        else:
            ref = st.ref.float()
            score = (x.float() - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-6)
        keep = top_tokens(score, kept).keep
        heads = q.shape[2]
        q_kept = gather_rows(q.flatten(2), keep).unflatten(2, (heads, -1))
        out_kept = self.adapter.attention_output(attn, self.adapter.attend(self.inner, q_kept, k, v), q_kept)
        st.out = scatter_rows(st.out, keep, out_kept)
        st.ref = scatter_rows(st.ref, keep, gather_rows(x, keep))
        # Every token still runs the block's other layers: only attention pairs are saved.
        self.work.tokens(self.index, ctx.step, n * b, n * b)
        self.work.pairs(self.index, keep.shape[1] * n * b, n * n * b)
        return st.out


class _ResetHook(ModelHook):
    """Forgets the processors' per-generation state when a generation starts."""

    _is_stateful = True

    def __init__(self, states: BranchStates):
        super().__init__()
        self.states = states

    def reset_state(self, module):
        self.states.reset()
        return module


class PruneHook(BlockHook):
    def __init__(self, index, ctx, adapter, states, work, config: StepPruneConfig, scorer: bool, current):
        super().__init__(index, ctx, adapter, states, work)
        self.config = config
        self.scorer = scorer
        self.current: _Current | None = current  # None: attention among the kept tokens only

    def _pruned_step(self) -> bool:
        cfg, ctx = self.config, self.ctx
        return ctx.active and cfg.keep_at(ctx.step, ctx.num_steps) < 1.0

    def _choose(self, st: _Cache, x):
        cfg = self.config
        if cfg.score == "residual":
            score = st.residual[self.index].float().norm(dim=-1)
        else:
            ref = st.ref.float()
            score = (x.float() - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-6)
        return top_tokens(score, round(cfg.keep_at(self.ctx.step, self.ctx.num_steps) * x.shape[1])).keep

    def new_forward(self, module, *args, **kwargs):
        x = self.hs.get(args, kwargs)
        if x is None or x.ndim != 3:
            return self.dense_call(module, args, kwargs, x)
        st: _Cache = self.states.get(self.ctx.branch)
        cached = st.residual.get(self.index)
        seeded = cached is not None and cached.shape == x.shape and (not self.scorer or st.ref is not None)
        if self.current is not None:
            seeded = seeded and self.index in st.kv and st.kv[self.index][0].shape[:2] == x.shape[:2]
        if self.scorer and self._pruned_step() and seeded and st.ref.shape == x.shape:
            st.keep, st.keep_step = self._choose(st, x), self.ctx.step
        prune = self._pruned_step() and seeded and st.keep_step == self.ctx.step and st.keep is not None
        prune = prune and st.keep.shape[1] < x.shape[1]
        cur = self.current
        if cur is not None:
            cur.index, cur.cache, cur.keep = self.index, st, (st.keep if prune else None)
        try:
            if not prune:
                out = self.dense_call(module, args, kwargs, x)
                st.residual[self.index] = out - x
                if self.scorer:
                    st.ref = x
                return out
            keep = st.keep
            x_red = gather_rows(x, keep)
            keys = x.shape[1] if cur is not None else None
            out_red = self.reduced_call(module, args, kwargs, x, x_red, keep, keys)
        finally:
            if cur is not None:
                cur.index = cur.cache = cur.keep = None
        out = scatter_rows(x + cached, keep, out_red, inplace=True)
        # The cached residual is this hook's own tensor (made by ``out - x`` or here): updated in place.
        scatter_rows(cached, keep, out_red - x_red, inplace=True)
        if self.scorer:
            st.ref = scatter_rows(st.ref, keep, x_red)  # a copy: ``ref`` may be the block's own input
        return out


@register_skill(StepPruneConfig)
class StepPruneSkill(Skill):
    name = "token_pruning"
    # See merge.py. With attend="all" or scope="attention" it also replaces the self-attention
    # processors (the model's own dense attention over the pairs it counts), so a sparse-attention
    # processor already there is refused when it is applied (Installation.refuse_foreign_processors).
    writes = frozenset({Seam.TOKEN_SET})
    requires = frozenset(
        {Capability.PRUNABLE_TOKENS, Capability.SELF_ATTENTION_QKV, Capability.SWAPPABLE_ATTENTION}
    )
    phase = Phase.TOKENS

    def apply(self, pipe, config: StepPruneConfig, adapter) -> Installation:
        blocks = list(adapter.blocks())
        layers = selected_layers(config.layers, len(blocks), config.kind)
        inst = Installation(config.kind)
        inst.refuse_hooked(blocks, *HOOKS)
        if config.scope == "attention":
            return self._apply_attention(inst, config, adapter, blocks, layers)
        current = _Current() if config.attend == "all" else None
        if current is not None:
            modules = {
                n: m for n, m in adapter.self_attention_modules().items() if block_of(blocks, m) in layers
            }
            inst.refuse_foreign_processors(modules)
            for m in modules.values():
                inst.processor(m, AllKeysProcessor(m.processor, block_of(blocks, m), current, adapter))
        ctx = track_steps(inst, adapter)
        states, work = BranchStates(_Cache), Work()
        for i in layers:
            hook = PruneHook(i, ctx, adapter, states, work, config, i == layers[0], current)
            inst.hook(blocks[i], hook, PRUNE_HOOK, root=adapter.transformer)
        inst.on_revert(states.reset)
        inst.counter_fn = work.counters
        return inst

    def _apply_attention(self, inst, config, adapter, blocks, layers) -> Installation:
        modules = {n: m for n, m in adapter.self_attention_modules().items() if block_of(blocks, m) in layers}
        inst.refuse_foreign_processors(modules)
        inst.refuse_hooked([adapter.transformer], PRUNE_HOOK)
        states, work = BranchStates(dict), Work()
        # The processors keep state per generation: a hook on the transformer resets it when the
        # step tracker starts a new generation (stateful hooks are reset; processors are not).
        # Registered before the tracker, which must stay the outermost hook.
        inst.hook(adapter.transformer, _ResetHook(states), PRUNE_HOOK, root=adapter.transformer)
        ctx = track_steps(inst, adapter)
        for m in modules.values():
            proc = AttentionPruneProcessor(
                m.processor, block_of(blocks, m), config, ctx, adapter, states, work
            )
            inst.processor(m, proc)
        inst.on_revert(states.reset)
        inst.counter_fn = work.counters
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [
            StepPruneConfig(keep=0.5),
            StepPruneConfig(keep=0.4, scope="attention", full_steps=(Span(stop=1),), layers=Span(start=1)),
            StepPruneConfig(
                keep=0.7, full_steps=(Span(stop=1), Span(start=-1)), layers=Span(start=1), score="residual"
            ),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import prune_space

        return prune_space(context)

    def refine(self, context, results) -> list[TechniqueConfig]:
        from sol.skills.token_pruning.search import refine_prune

        return refine_prune(context, results, StepPruneConfig)
