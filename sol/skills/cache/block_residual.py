"""Block-residual caching (First-Block-Cache / DBCache style).

The first ``leading_blocks`` blocks (cache-dit's Fn) always run. Their residual
``out(block Fn-1) - in(block 0)`` is compared with the same residual at the last *fully
computed* step (relative L1); when it changed less than ``threshold``, the middle blocks are
bypassed and their cached residual is added instead. The last ``trailing_blocks`` (Bn) always
run, on top of the reused middle, to correct it. ``warmup_steps`` first steps always compute,
``max_skip_steps`` bounds cached steps in a row.

threshold 0 (or warmup_steps >= the step count) never skips: outputs are bit-identical to the
uncached pipeline (the hooks only read tensors on computed steps).

Seams: it decides per step whether most of the transformer runs, so it writes the exclusive
``step_output`` seam as well as ``block_output``: it cannot stack on step-output caching or
on a diffusers step cache, because each keeps its reference from "the last full step", which
the other's skipping would make stale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sol.errors import SolError
from sol.hooks import ArgRef, Installation, ModelHook, StateManager, track_steps
from sol.hooks.ranges import SkipState, context_state, install_range
from sol.models.base import Capability
from sol.skills.base import Phase, Seam, Skill, TechniqueConfig, register_skill
from sol.skills.cache._common import rel_l1
from sol.skills.search import bisect_threshold

DECIDE_HOOK = "sol_block_cache_decide"
RANGE_HOOK = "sol_block_cache_range"


class BlockResidualCacheConfig(TechniqueConfig):
    """Reuse the middle blocks' residual while the leading blocks' residual barely changes.

    >>> BlockResidualCacheConfig(threshold=0.1).label()
    'cache.block_residual(threshold=0.1, leading_blocks=1, trailing_blocks=0, warmup_steps=1, max_skip_steps=None)'
    """

    kind: Literal["cache.block_residual"] = "cache.block_residual"
    version: int = 1
    threshold: float = Field(0.1, ge=0.0)  # relative L1 change of the Fn residual since the last full step
    leading_blocks: int = Field(1, ge=1)  # Fn: always run; their residual drives the decision
    trailing_blocks: int = Field(0, ge=0)  # Bn: always run after the reused middle
    warmup_steps: int = Field(1, ge=0)  # first steps always computed
    max_skip_steps: int | None = Field(None, ge=1)  # cached steps in a row (None: unbounded)

    @model_validator(mode="after")
    def _blocks(self):
        if self.leading_blocks + self.trailing_blocks > 64:
            raise ValueError("leading_blocks + trailing_blocks is implausibly large")
        return self


class BlockCacheDecideHook(ModelHook):
    """On block 0 (records its input) and/or block Fn-1 (decides after running it)."""

    _is_stateful = True

    def __init__(
        self,
        state_manager,
        config: BlockResidualCacheConfig,
        record: bool,
        decide: bool,
        hs: ArgRef,
        primary=lambda out: out,
    ):
        super().__init__()
        self.state_manager = state_manager
        self.config = config
        self.record, self.decide = record, decide
        self.hs = hs
        self.primary = primary  # the hidden_states stream of a block's output (blocks may return several)

    def new_forward(self, module, *args, **kwargs):
        st = context_state(self.state_manager)
        if self.record:
            st.step += 1
            st.skipping = False
            st.head_input = self.hs.get(args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.decide:
            self._decide(st, self.primary(out) - st.head_input)
            st.head_input = None
        return out

    def _decide(self, st, fn_residual) -> None:
        cfg = self.config
        compute = True
        if (
            st.residual is not None
            and st.ref is not None
            and st.step >= cfg.warmup_steps
            and cfg.threshold > 0
        ):
            within = cfg.max_skip_steps is None or st.consecutive < cfg.max_skip_steps
            if within and rel_l1(fn_residual, st.ref) < cfg.threshold:
                compute = False
        if compute:
            st.ref = fn_residual
            st.consecutive = 0
        else:
            st.consecutive += 1
        st.skipping = not compute
        st.decisions.append(compute)

    def reset_state(self, module):
        self.state_manager.reset()
        return module


@register_skill(BlockResidualCacheConfig)
class BlockResidualCacheSkill(Skill):
    name = "cache"
    reads = frozenset({Seam.BLOCK_OUTPUT})
    writes = frozenset({Seam.STEP_OUTPUT, Seam.BLOCK_OUTPUT})
    requires = frozenset({Capability.BLOCK_RESIDUALS})
    phase = Phase.STEPS

    def apply(self, pipe, config: BlockResidualCacheConfig, adapter) -> Installation:
        blocks = list(adapter.blocks())
        n = len(blocks)
        fn, bn = config.leading_blocks, config.trailing_blocks
        if fn + bn >= n:
            raise SolError(
                f"cache.block_residual: leading_blocks {fn} + trailing_blocks {bn} leave no block to cache"
                f" in a {n}-block model; lower them below {n} together"
            )
        inst = Installation(config.kind)
        inst.refuse_hooked(blocks, DECIDE_HOOK, RANGE_HOOK)
        root = adapter.transformer
        sm = StateManager(SkipState)
        io = adapter.block_io
        hs = io.ref(io.hidden_states)
        install_range(inst, root, blocks, fn, n - bn - 1, sm, RANGE_HOOK, io.stream_refs())
        if fn == 1:
            decide = BlockCacheDecideHook(sm, config, True, True, hs, io.primary_output)
            inst.hook(blocks[0], decide, DECIDE_HOOK, root=root)
        else:
            inst.hook(blocks[0], BlockCacheDecideHook(sm, config, True, False, hs), DECIDE_HOOK, root=root)
            decide = BlockCacheDecideHook(sm, config, False, True, hs, io.primary_output)
            inst.hook(blocks[fn - 1], decide, DECIDE_HOOK, root=root)
        inst.on_revert(sm.reset)
        track_steps(inst, adapter)
        inst.state_manager = sm  # evidence: per-context decisions
        return inst

    def examples(self) -> list[TechniqueConfig]:
        return [
            BlockResidualCacheConfig(threshold=0.2, warmup_steps=1),
            BlockResidualCacheConfig(threshold=0.3, leading_blocks=2, trailing_blocks=1, max_skip_steps=2),
        ]

    def search_space(self, context) -> list[TechniqueConfig]:
        """FBC (Fn=1) at three thresholds spanning "barely" to "aggressive", the middle one again
        after a fifth of the steps as warm-up (threshold x warm-up; ``refine`` bisects the threshold
        per warm-up), and one DBCache-style Fn=1/Bn=1 variant where the model is deep enough for a
        corrective tail block."""
        n = len(context.adapter.blocks())
        steps = int(getattr(context.workload, "num_inference_steps", 0) or 0)
        out = [BlockResidualCacheConfig(threshold=t) for t in (0.08, 0.16, 0.32)]
        if steps >= 10:
            out.append(BlockResidualCacheConfig(threshold=0.16, warmup_steps=round(0.2 * steps)))
        if n >= 6:
            out.append(BlockResidualCacheConfig(threshold=0.32, trailing_blocks=1))
        return out

    def refine(self, context, results) -> list[TechniqueConfig]:
        return bisect_threshold(results, BlockResidualCacheConfig, context.min_psnr)
