"""Where a transformer call is: generation, denoising step, CFG branch, token grid.

One :class:`StepTracker` hook sits outermost on each denoising transformer and is shared by every
technique applied to it (reference-counted). On each call it

- decides whether a new generation (one ``pipe(...)``) starts and, if so, resets every stateful
  hook under the transformer *before* the call runs — diffusers resets its hooks only at the *end*
  of a pipeline call, so a generation that stopped early (an exception, a time limit) would
  otherwise leak cached tensors into the next one;
- fills the shared :class:`ForwardContext` that hooks and attention processors read: the step
  index, the number of steps, the CFG branch (``cond`` / ``uncond``) and the token grid
  ``(frames, height, width)`` after patching.

A call starts a new generation when its step index goes back, or when the same branch comes again
at the same step (a one-step schedule, or a repeated run). Without a pipeline ``cache_context`` the
tracker falls back on the timestep: denoising timesteps only decrease, so a larger one than the
last call's starts a new generation, and a smaller one starts the next step.

:class:`Span` is the schedule type of every knob that depends on the step or the layer
("dense for the first 3 steps", "every 2nd layer from 4 on").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import _set_cache_context
from pydantic import BaseModel, ConfigDict, Field

from sol.hooks.core import HookRegistry, Installation, ModelHook, StateManager, registry

TRACKER_HOOK = "sol_step_tracker"
DEFAULT_BRANCH = "inference"  # the branch name when a caller runs the transformer without a context


@dataclass
class ForwardContext:
    """What a hook or processor may read about the current transformer call."""

    generation: int = 0
    step: int = -1
    num_steps: int | None = None
    branch: str = DEFAULT_BRANCH
    grid: tuple[int, int, int] | None = None  # (frames, height, width) tokens after patching
    active: bool = False  # inside a transformer call

    @property
    def tokens(self) -> int | None:
        return None if self.grid is None else self.grid[0] * self.grid[1] * self.grid[2]


class _Nothing:
    """A placeholder state: the tracker keeps a StateManager only to receive the cache context."""

    def reset(self):
        pass


class StepTracker(ModelHook):
    """Outermost hook on a transformer: generation resets and the :class:`ForwardContext`."""

    _is_stateful = True

    def __init__(self, adapter):
        super().__init__()
        self.state_manager = StateManager(_Nothing)  # receives the pipeline's cache context
        self.users = 0
        self.timestep = adapter.timestep_argument
        # The grid comes from the call (some families pass packed tokens and the grid beside them).
        self.grid_fn = adapter.call_token_grid
        self.context = ForwardContext()
        self._resetting = False
        self._forget()

    def _forget(self):
        self._last_step: int | None = None
        self._seen: set[str] = set()
        self._last_t: float | None = None

    def _advance(self, cc, args, kwargs) -> tuple[bool, int]:
        """(starts a new generation, step index) of this call."""
        if cc is not None and cc.step_index is not None:
            step, name = int(cc.step_index), cc.name
            new = (
                self._last_step is None
                or step < self._last_step
                or (step == self._last_step and name in self._seen)
            )
            if new or step != self._last_step:
                self._seen = set()
            self._seen.add(name)
            self._last_step = step
            return new, step
        t = self.timestep.get(args, kwargs)
        if t is None:
            return self._last_step is None, max(self._last_step or 0, 0)
        t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
        new = self._last_t is None or t > self._last_t
        if new:
            step = 0
        elif t < self._last_t:
            step = (self._last_step or 0) + 1
        else:
            step = self._last_step or 0
        self._last_t, self._last_step = t, step
        return new, step

    def new_forward(self, module, *args, **kwargs):
        cc = self.state_manager._context
        new, step = self._advance(cc, args, kwargs)
        if new:
            self._resetting = True
            try:
                HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks(recurse=True)
            finally:
                self._resetting = False
            if cc is not None:
                _set_cache_context(module, cc)  # the reset cleared every hook's context
            self.context.generation += 1
        c = self.context
        c.step = step
        c.num_steps = getattr(cc, "num_inference_steps", None) if cc is not None else None
        c.branch = cc.name if cc is not None else DEFAULT_BRANCH
        c.grid = self.grid_fn(args, kwargs)
        c.active = True
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            c.active = False

    def reset_state(self, module):
        # Called by the pipeline at the end of a generation: forget where we were. Our own
        # reset (a new generation starting) must keep the memory of the call that triggered it.
        if not self._resetting:
            self.state_manager.reset()
            self._forget()
        return module


def tracker_of(transformer) -> StepTracker | None:
    reg = getattr(transformer, "_diffusers_hook", None)
    return None if reg is None else reg.get_hook(TRACKER_HOOK)


def track_steps(installation: Installation, adapter) -> ForwardContext:
    """Install (or share) the step tracker on ``adapter.transformer`` for ``installation``;
    released when the installation reverts. Returns the live :class:`ForwardContext`.

    The tracker stays the outermost hook of the transformer (it is moved out again when a
    technique registered a transformer-level hook after it), so every other hook sees the
    context of the call it is in.
    """
    transformer = adapter.transformer
    reg = registry(transformer)
    hook = reg.get_hook(TRACKER_HOOK)
    if hook is None:
        hook = StepTracker(adapter)
        reg.register_hook(hook, TRACKER_HOOK)
    elif reg._hook_order[-1] != TRACKER_HOOK:
        reg.remove_hook(TRACKER_HOOK, recurse=False)
        reg.register_hook(hook, TRACKER_HOOK)
    reg.invalidate_child_registries_cache()
    hook.users += 1

    def release():
        hook.users -= 1
        if hook.users <= 0 and reg.get_hook(TRACKER_HOOK) is hook:
            reg.remove_hook(TRACKER_HOOK, recurse=False)
            reg.invalidate_child_registries_cache()

    installation.on_revert(release)
    return hook.context


def reset_caches(transformer) -> None:
    """Forget every cached tensor under ``transformer`` (all stateful diffusers/Sol hooks)."""
    if hasattr(transformer, "_diffusers_hook"):
        transformer._diffusers_hook.reset_stateful_hooks(recurse=True)


class Span(BaseModel):
    """Indices ``start <= i < stop``, every ``every``-th from ``start``; negative bounds count from
    the end (``Span(start=-2)`` is the last two steps). Used for steps and for layers.

    >>> Span(start=0, stop=3).contains(2, 25), Span(start=0, stop=3).contains(3, 25)
    (True, False)
    >>> Span(start=-2).indices(6)
    [4, 5]
    >>> Span(start=1, every=2).indices(6)
    [1, 3, 5]
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = 0
    stop: int | None = None
    every: int = Field(1, ge=1)

    def _bounds(self, n: int | None) -> tuple[int, int | None]:
        start, stop = self.start, self.stop
        if n is not None:
            start = start + n if start < 0 else start
            stop = n if stop is None else (stop + n if stop < 0 else min(stop, n))
        elif start < 0 or (stop is not None and stop < 0):
            return 0, 0  # relative to an unknown end: matches nothing rather than guessing
        return max(start, 0), stop

    def contains(self, i: int, n: int | None = None) -> bool:
        """Whether index ``i`` (of ``n``, when known) is in the span."""
        start, stop = self._bounds(n)
        return i >= start and (stop is None or i < stop) and (i - start) % self.every == 0

    def indices(self, n: int) -> list[int]:
        return [i for i in range(n) if self.contains(i, n)]


def in_any(spans: tuple[Span, ...] | list[Span], i: int, n: int | None = None) -> bool:
    """Whether ``i`` is in any of ``spans``."""
    return any(s.contains(i, n) for s in spans)
