"""Running a diffusers cache (``transformer.enable_cache``) behind a Sol config.

What Sol adds around diffusers' own hooks:

- one diffusers cache per model: ``CacheMixin`` keeps a single ``_cache_config`` and refuses a
  second; Sol declares it as the exclusive ``diffusers_cache`` seam, so the effect check
  refuses the pair before anything is applied;
- a per-generation reset (``_common.GenerationResetHook``): diffusers resets its hooks only at
  the end of a pipeline call, so an interrupted generation would leak state into the next;
- no silent no-ops: after ``enable_cache`` Sol counts the modules that got the technique's
  hooks and refuses (reverting) when none did — TaylorSeer's default patterns, for one, match
  nothing on Wan.
"""

from __future__ import annotations

from sol.errors import SolError
from sol.skills.base import Handle
from sol.skills.cache import _common


def hooked_modules(transformer, hook_names: tuple[str, ...]) -> int:
    n = 0
    for _, m in transformer.named_modules():
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None and any(h in reg.hooks for h in hook_names):
            n += 1
    return n


def enable(adapter, diffusers_config, kind: str, hook_names: tuple[str, ...]) -> Handle:
    """``enable_cache`` + checks + per-generation reset; the handle's revert disables it."""
    transformer = adapter.transformer
    if not hasattr(transformer, "enable_cache"):
        raise SolError(f"{kind}: {type(transformer).__name__} has no diffusers cache support (CacheMixin)")
    if transformer.is_cache_enabled:
        active = type(transformer._cache_config).__name__
        raise SolError(
            f"{kind}: a diffusers cache ({active}) is already enabled on this model and diffusers allows one;"
            " revert it first"
        )
    transformer.enable_cache(diffusers_config)
    if hooked_modules(transformer, hook_names) == 0:
        transformer.disable_cache()
        raise SolError(
            f"{kind} hooked no module of {type(transformer).__name__} (its patterns match nothing):"
            " it would run as a silent no-op; fix the module patterns"
        )
    transformer._reset_stateful_cache()
    _common.acquire_generation_reset(transformer)

    def revert():
        _common.release_generation_reset(transformer)
        transformer.disable_cache()
        transformer._reset_stateful_cache()

    return Handle(revert)
