"""Running a diffusers cache (``transformer.enable_cache``) behind a Sol config.

What Sol adds around diffusers' own hooks:

- one diffusers cache per model: ``CacheMixin`` keeps a single ``_cache_config`` and refuses a
  second; Sol declares it as the exclusive ``diffusers_cache`` seam, so the effect check
  refuses the pair before anything is applied;
- a per-generation reset (the shared step tracker): diffusers resets its hooks only at the end
  of a pipeline call, so an interrupted generation would leak state into the next;
- no silent no-ops: after ``enable_cache`` Sol counts the modules that got the technique's
  hooks and refuses (reverting) when none did — TaylorSeer's default patterns, for one, match
  nothing on Wan.
"""

from __future__ import annotations

from sol.errors import SolError
from sol.hooks import Installation, hooked, track_steps


def hooked_modules(transformer, hook_names: tuple[str, ...]) -> int:
    return sum(any(hooked(m, h) for h in hook_names) for _, m in transformer.named_modules())


def enable(adapter, diffusers_config, kind: str, hook_names: tuple[str, ...]) -> Installation:
    """``enable_cache`` + checks + per-generation reset; reverting disables it."""
    transformer = adapter.transformer
    if not hasattr(transformer, "enable_cache"):
        raise SolError(f"{kind}: {type(transformer).__name__} has no diffusers cache support (CacheMixin)")
    if transformer.is_cache_enabled:
        active = type(transformer._cache_config).__name__
        raise SolError(
            f"{kind}: a diffusers cache ({active}) is already enabled on this model and diffusers allows one;"
            " revert it first"
        )
    inst = Installation(kind)
    transformer.enable_cache(diffusers_config)

    def disable():
        transformer.disable_cache()
        transformer._reset_stateful_cache()

    inst.on_revert(disable)
    if hooked_modules(transformer, hook_names) == 0:
        inst.revert()
        raise SolError(
            f"{kind} hooked no module of {type(transformer).__name__} (its patterns match nothing):"
            " it would run as a silent no-op; fix the module patterns"
        )
    transformer._reset_stateful_cache()
    track_steps(inst, adapter)
    return inst
