"""Bypassing a contiguous range of transformer blocks and adding their cached residual instead.

Block-residual caching and step-output caching both reduce to this: blocks ``start..end`` run
(and their residual ``out(end) - in(start)`` is stored), or they are bypassed and the stored
residual is added to the range's input. What differs is the *decision*, which each technique
makes in its own hook before the range starts and writes to the shared per-context state.

Hook roles on the blocks of the range (state per cache context, so classifier-free guidance's
cond and uncond calls never share a residual):

- start: skipping -> return ``input + residual`` (the whole range's output, at once), where the
  residual is the last computed one, or (``extrapolate``) its first-order extrapolation from the
  last two computed steps, ``r1 + (r1 - r0) * (t - t1) / (t1 - t0)`` — TaylorSeer's first order,
  applied to the residual of the whole range while the input stays exact; computing -> remember
  the range input;
- middle: skipping -> return the input unchanged (the start already added the residual);
- end: computing -> store ``out - range input`` as the residual.
"""

from __future__ import annotations

from sol.hooks.core import ArgRef, BaseState, Installation, ModelHook, StateManager
from sol.hooks.steps import DEFAULT_BRANCH

__all__ = ["RangeHook", "SkipState", "context_state", "install_range"]


def context_state(state_manager: StateManager):
    """The state of the current cache context (a default one when the caller set none)."""
    if state_manager._context is None:
        from sol.hooks.core import CacheContext

        state_manager.set_context(CacheContext(name=DEFAULT_BRANCH))
    return state_manager.get_state()


class SkipState(BaseState):
    """What one cache context (cond / uncond / inference) remembers within one generation."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.step = -1  # transformer calls seen in this context (= denoising step index)
        self.skipping = False
        self.range_input = None
        self.residual = None  # a tuple: one residual per stream the range carries
        self.residual_step = None
        self.prev_residual = None  # the computed residual before ``residual`` (extrapolation)
        self.prev_residual_step = None
        self.ref = None  # the decision's reference signal (previous modulated input / Fn residual)
        self.acc = 0.0  # accumulated distance since the last computed step
        self.consecutive = 0  # cached steps in a row
        self.head_input = None  # block-0 input (block-residual caching)
        self.decisions: list[bool] = []  # True = computed, per step (evidence)


class RangeHook(ModelHook):
    """One block of a skippable range (see the module docstring for the roles).

    ``hs`` is the block's stream argument, or a tuple of them for blocks that carry several streams
    and return them as a tuple in that order (LTX-2: video, audio; HunyuanVideo 1.5: video, text;
    Cosmos3: text prefix, video): each stream gets its own residual.
    """

    _is_stateful = True

    def __init__(
        self,
        state_manager: StateManager,
        start: bool,
        end: bool,
        hs: ArgRef | tuple[ArgRef, ...],
        extrapolate=False,
    ):
        super().__init__()
        self.state_manager = state_manager
        self.start, self.end = start, end
        self.multi = isinstance(hs, tuple) and not isinstance(hs, ArgRef)
        self.refs = tuple(hs) if self.multi else (hs,)
        self.extrapolate = extrapolate

    def _out(self, streams):
        streams = tuple(streams)
        return streams if self.multi else streams[0]

    def new_forward(self, module, *args, **kwargs):
        st = context_state(self.state_manager)
        xs = tuple(r.get(args, kwargs) for r in self.refs)
        if st.skipping:
            if not self.start:
                return self._out(xs)
            if self.extrapolate and st.prev_residual is not None:
                slope = (st.step - st.residual_step) / (st.residual_step - st.prev_residual_step)
                return self._out(
                    x + (r + (r - p) * slope)
                    for x, r, p in zip(xs, st.residual, st.prev_residual, strict=True)
                )
            return self._out(x + r for x, r in zip(xs, st.residual, strict=True))
        if self.start:
            st.range_input = xs
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.end:
            if self.extrapolate and st.residual is not None and st.residual_step != st.step:
                st.prev_residual, st.prev_residual_step = st.residual, st.residual_step
            outs = tuple(out) if self.multi else (out,)
            st.residual = tuple(o - i for o, i in zip(outs, st.range_input, strict=True))
            st.residual_step = st.step
            st.range_input = None
        return out

    def reset_state(self, module):
        self.state_manager.reset()
        return module


def install_range(
    inst: Installation,
    root,
    blocks,
    start: int,
    end: int,
    state_manager,
    name: str,
    hs: ArgRef | tuple[ArgRef, ...],
    extrapolate=False,
) -> None:
    """Register range hooks on ``blocks[start..end]`` through ``inst`` (reverted with it); ``hs``: the
    stream argument, or the tuple of stream arguments (``adapter.block_io.stream_refs()``)."""
    for i in range(start, end + 1):
        inst.hook(blocks[i], RangeHook(state_manager, i == start, i == end, hs, extrapolate), name, root=root)
