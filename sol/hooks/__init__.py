"""The hook toolkit every skill is built on (runtime layer).

- :mod:`sol.hooks.core` — argument access by name (:class:`ArgRef`), diffusers hook registries,
  and :class:`Installation`: one handle that installs hooks, attention processors and attributes,
  refuses to stack on itself or on another technique's processor, and reverts everything at once;
- :mod:`sol.hooks.steps` — the shared :class:`StepTracker` (generation resets, the current step,
  CFG branch and token grid in a :class:`ForwardContext`) and :class:`Span` schedules;
- :mod:`sol.hooks.ranges` — bypassing a range of blocks with a cached residual.

>>> from sol.hooks import Installation, track_steps
>>> inst = Installation("sparse_attention.tiles")  # doctest: +SKIP
>>> ctx = track_steps(inst, adapter)  # ctx.step, ctx.grid inside every call  # doctest: +SKIP
>>> inst.revert()  # doctest: +SKIP
"""

from sol.hooks.core import (
    ArgRef,
    BaseState,
    CacheContext,
    Handle,
    Installation,
    ModelHook,
    StateManager,
    WrappingProcessor,
    arg,
    hooked,
    owner_of,
    registry,
    with_arg,
)
from sol.hooks.steps import (
    DEFAULT_BRANCH,
    TRACKER_HOOK,
    ForwardContext,
    Span,
    StepTracker,
    in_any,
    reset_caches,
    track_steps,
    tracker_of,
)

__all__ = [
    "DEFAULT_BRANCH",
    "TRACKER_HOOK",
    "ArgRef",
    "BaseState",
    "CacheContext",
    "ForwardContext",
    "Handle",
    "Installation",
    "ModelHook",
    "Span",
    "StateManager",
    "StepTracker",
    "WrappingProcessor",
    "arg",
    "hooked",
    "in_any",
    "owner_of",
    "registry",
    "reset_caches",
    "track_steps",
    "tracker_of",
    "with_arg",
]
