"""What every cache technique shares: per-generation reset, hook bookkeeping, distances.

Caches keep state across the calls of one generation (one ``pipe(...)``) and must start every
generation empty: a second identical generation has to give the same video as the first.
diffusers resets its stateful hooks only at the *end* of a pipeline call
(``maybe_free_model_hooks``), so a generation that stops early (an exception, a time limit)
would leave stale residuals for the next one. Sol's :class:`GenerationResetHook` sits on the
transformer and resets every stateful hook under it when a new generation *starts*.

The hooks are diffusers ``ModelHook``s in diffusers' ``HookRegistry``: the pipeline's
``cache_context("cond" | "uncond", step_index=...)`` reaches them through their
``StateManager``s, so classifier-free guidance's two calls per step keep separate states.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from sol.errors import SolError

# The cache context name used when a caller runs the transformer without a pipeline's cache_context.
DEFAULT_CONTEXT = "inference"
GENERATION_RESET_HOOK = "sol_cache_generation_reset"


def _hooks():
    from diffusers.hooks.hooks import BaseState, CacheContext, HookRegistry, ModelHook, StateManager

    return BaseState, CacheContext, HookRegistry, ModelHook, StateManager


def registry(module: nn.Module):
    """The diffusers hook registry of ``module`` (created on first use)."""
    return _hooks()[2].check_if_exists_or_initialize(module)


def arg(args: tuple, kwargs: dict, name: str, index: int):
    """A call argument by keyword or position (None when absent)."""
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def with_arg(args: tuple, kwargs: dict, name: str, index: int, value) -> tuple[tuple, dict]:
    """``args``/``kwargs`` with one argument replaced wherever it was passed."""
    if name in kwargs or len(args) <= index:
        return args, {**kwargs, name: value}
    args = list(args)
    args[index] = value
    return tuple(args), kwargs


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """Relative L1 distance ``mean|a - b| / mean|b|`` (the change measure of FBC/TeaCache)."""
    den = previous.abs().mean()
    return float((current - previous).abs().mean() / den.clamp_min(1e-12))


def blocks_path(adapter) -> str:
    """Qualified name of the adapter's block list inside the transformer, e.g. ``blocks``."""
    target = adapter.blocks()
    for name, module in adapter.transformer.named_modules():
        if module is target:
            return name
    raise SolError(f"the {adapter.family} adapter's blocks are not inside its transformer; fix the adapter")


def block_index_pattern(adapter) -> str:
    """A ``re.fullmatch`` pattern for every block's qualified name (``blocks\\.\\d+`` on Wan)."""
    return re.escape(blocks_path(adapter)) + r"\.\d+"


def context_of(state_manager):
    """Set a default context when the caller gave none; return the current one."""
    if state_manager._context is None:
        state_manager.set_context(_hooks()[1](name=DEFAULT_CONTEXT))
    return state_manager._context


class _Nothing:
    """A placeholder state: the reset hook keeps a StateManager only to receive the context."""

    def reset(self):
        pass


def _reset_hook_class():
    _, _, HookRegistry, ModelHook, StateManager = _hooks()
    from diffusers.hooks.hooks import _set_cache_context

    class GenerationResetHook(ModelHook):
        """Resets every stateful hook under the transformer when a new generation starts.

        A call starts a new generation when its step index goes back (``step < last``), or when
        the same context name comes again at the same step (a one-step schedule, or a repeated
        run). Without a pipeline context it falls back on the timestep: a larger timestep than
        the last call's starts a new generation (denoising timesteps only decrease).
        """

        _is_stateful = True

        def __init__(self, timestep_argument: tuple[str, int]):
            super().__init__()
            self.state_manager = StateManager(_Nothing)  # receives the pipeline's cache context
            self.users = 0
            self.timestep_argument = timestep_argument
            self.generations = 0
            self._forget()

        def _forget(self):
            self._last_step = None
            self._seen: set[str] = set()
            self._last_t = None

        def _is_new(self, ctx, args, kwargs) -> bool:
            if ctx is not None and ctx.step_index is not None:
                step, name = int(ctx.step_index), ctx.name
                new = (
                    self._last_step is None
                    or step < self._last_step
                    or (step == self._last_step and name in self._seen)
                )
                if new or step != self._last_step:
                    self._seen = set()
                self._seen.add(name)
                self._last_step = step
                return new
            t = arg(args, kwargs, *self.timestep_argument)
            if t is None:
                return False
            t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
            new = self._last_t is None or t > self._last_t
            self._last_t = t
            return new

        def new_forward(self, module, *args, **kwargs):
            ctx = self.state_manager._context
            if self._is_new(ctx, args, kwargs):
                seen, last_step, last_t = self._seen, self._last_step, self._last_t
                HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks(recurse=True)
                self._seen, self._last_step, self._last_t = seen, last_step, last_t
                if ctx is not None:
                    _set_cache_context(module, ctx)  # the reset cleared every hook's context
                self.generations += 1
            return self.fn_ref.original_forward(*args, **kwargs)

        def reset_state(self, module):
            # Called by the pipeline at the end of a generation and by our own reset: the
            # tracker's memory is restored by new_forward in the second case.
            self.state_manager.reset()
            self._forget()
            return module

    return GenerationResetHook


def acquire_generation_reset(transformer: nn.Module, timestep_argument=("timestep", 1)):
    """Install (or share) the per-generation reset hook on ``transformer``; pair with release."""
    reg = registry(transformer)
    hook = reg.get_hook(GENERATION_RESET_HOOK)
    if hook is None:
        hook = _reset_hook_class()(timestep_argument)
        reg.register_hook(hook, GENERATION_RESET_HOOK)
        reg.invalidate_child_registries_cache()
    hook.users += 1
    return hook


def release_generation_reset(transformer: nn.Module) -> None:
    reg = registry(transformer)
    hook = reg.get_hook(GENERATION_RESET_HOOK)
    if hook is None:
        return
    hook.users -= 1
    if hook.users <= 0:
        reg.remove_hook(GENERATION_RESET_HOOK, recurse=False)
        reg.invalidate_child_registries_cache()


def reset_caches(transformer: nn.Module) -> None:
    """Forget every cached tensor under ``transformer`` (all stateful diffusers/Sol hooks)."""
    if hasattr(transformer, "_diffusers_hook"):
        transformer._diffusers_hook.reset_stateful_hooks(recurse=True)


def register(module: nn.Module, hook, name: str) -> None:
    registry(module).register_hook(hook, name)


def unregister(module: nn.Module, name: str) -> None:
    if hasattr(module, "_diffusers_hook"):
        module._diffusers_hook.remove_hook(name, recurse=False)


def refuse_if_hooked(modules: list[nn.Module], names: tuple[str, ...], kind: str) -> None:
    """Apply-twice guard: refuse before registering anything (no half-applied technique)."""
    for m in modules:
        reg = getattr(m, "_diffusers_hook", None)
        if reg is not None and any(n in reg.hooks for n in names):
            raise SolError(f"{kind} is already applied to this model; revert it before applying it again")
