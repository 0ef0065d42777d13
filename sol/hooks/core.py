"""Installing and reverting what a technique changes, with one handle.

Every skill changes a pipeline in three ways at most: diffusers ``ModelHook``s on modules
(``HookRegistry``), attention processors swapped on attention modules, and attributes set on
modules or objects. :class:`Installation` records each change as it is made and undoes them all,
in reverse order, with one ``revert()`` — so no skill writes its own install/revert bookkeeping,
and a failure half-way through ``apply`` unwinds what was already done.

It also refuses to stack: a hook name already registered on a module (the same technique applied
twice), or an attention processor that another Sol technique installed, is refused with a one-line
:class:`~sol.errors.SolError` before anything of the new technique is installed.

>>> inst = Installation("cache.block_residual")  # doctest: +SKIP
>>> inst.hook(block, MyHook(), "sol_block_cache")  # doctest: +SKIP
>>> inst.revert()  # every hook, processor and attribute back as it was  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from diffusers.hooks.hooks import BaseState, CacheContext, HookRegistry, ModelHook, StateManager
from torch import nn

from sol.errors import SolError

__all__ = [
    "ArgRef",
    "BaseState",
    "CacheContext",
    "Handle",
    "Installation",
    "ModelHook",
    "StateManager",
    "WrappingProcessor",
    "arg",
    "registry",
    "with_arg",
]

# Attribute set on every processor Sol installs: the technique kind that owns it.
OWNER_ATTR = "_sol_owner"


def registry(module: nn.Module) -> HookRegistry:
    """The diffusers hook registry of ``module`` (created on first use)."""
    return HookRegistry.check_if_exists_or_initialize(module)


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


class ArgRef(NamedTuple):
    """One argument of a call, by name and position (from an adapter's block I/O contract).

    >>> ref = ArgRef("temb", 2)
    >>> ref.get((1, 2, 3), {})
    3
    >>> ref.set((1, 2, 3), {}, 9)
    ((1, 2, 9), {})
    """

    name: str
    index: int

    def get(self, args: tuple, kwargs: dict):
        return arg(args, kwargs, self.name, self.index)

    def set(self, args: tuple, kwargs: dict, value) -> tuple[tuple, dict]:
        return with_arg(args, kwargs, self.name, self.index, value)


def hooked(module: nn.Module, name: str) -> bool:
    reg = getattr(module, "_diffusers_hook", None)
    return reg is not None and name in reg.hooks


def owner_of(processor) -> str | None:
    """The Sol technique that installed ``processor`` (None for the model's own or a user's)."""
    return getattr(processor, OWNER_ATTR, None)


class WrappingProcessor:
    """Base of a processor that wraps the model's own (``inner``) and calls it where it changes
    nothing. Attention-backend switches (diffusers' ``set_attention_backend``) set
    ``_attention_backend`` on whatever processor is installed: it passes through to ``inner``."""

    inner: object

    @property
    def _attention_backend(self):
        return getattr(self.inner, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.inner._attention_backend = value


class Handle:
    """What ``Skill.apply`` returns: ``revert()`` restores the pipeline (idempotent), and
    ``counters()`` reports the work the technique counted itself (tokens kept, density, …)."""

    def __init__(self, revert_fn: Callable[[], None] | None = None):
        self._revert_fn = revert_fn
        self.reverted = False
        self.counter_fn: Callable[[], dict[str, float]] | None = None

    def counters(self) -> dict[str, float]:
        """Work this technique counted itself (see ``docs/skills.md``, "Counting work")."""
        return dict(self.counter_fn()) if self.counter_fn is not None else {}

    def revert(self) -> None:
        if not self.reverted:
            if self._revert_fn is not None:
                self._revert_fn()
            self.reverted = True


class Installation(Handle):
    """Everything one technique installed on one pipeline; ``revert()`` undoes it in reverse order.

    It is the handle a skill returns from ``Skill.apply``, so the evidence a technique collects
    (counters, decisions) hangs off it too.
    """

    def __init__(self, owner: str):
        super().__init__()
        self.owner = owner
        self._undo: list[Callable[[], None]] = []
        self._roots: set[int] = set()
        self._root_modules: list[nn.Module] = []

    # --- refusals, before anything is installed -------------------------------------------------

    def refuse_hooked(self, modules, *names: str) -> None:
        """Refuse when any of ``modules`` already carries a hook named in ``names`` (applied twice)."""
        for m in modules:
            if any(hooked(m, n) for n in names):
                raise SolError(
                    f"{self.owner} is already applied to this model; revert it before applying it again"
                )

    def refuse_foreign_processors(self, modules: dict[str, nn.Module]) -> None:
        """Refuse when another Sol technique already replaced one of these attention processors."""
        for name, m in modules.items():
            other = owner_of(getattr(m, "processor", None))
            if other is not None:
                what = "is already applied" if other == self.owner else f"conflicts with {other}"
                raise SolError(
                    f"{self.owner} {what}: {other} replaced the attention processor of {name};"
                    " revert it first"
                )

    # --- installing ------------------------------------------------------------------------------

    def hook(self, module: nn.Module, hook: ModelHook, name: str, *, root: nn.Module | None = None):
        """Register ``hook`` on ``module`` under ``name``; undone by :meth:`revert`.

        ``root`` (the transformer) gets its child-registry cache invalidated on install and revert,
        which diffusers needs to reach hooks added below it (cache contexts, resets).
        """
        if hooked(module, name):
            raise SolError(
                f"{self.owner} is already applied to this model; revert it before applying it again"
            )
        registry(module).register_hook(hook, name)

        def undo(module=module, name=name):
            reg = getattr(module, "_diffusers_hook", None)
            if reg is not None:
                reg.remove_hook(name, recurse=False)

        self._undo.append(undo)
        if root is not None:
            self._touch(root)
        return hook

    def processor(self, module: nn.Module, processor) -> None:
        """Install ``processor`` on an attention module (marked as this technique's); undone on revert."""
        old = module.processor
        setattr(processor, OWNER_ATTR, self.owner)
        module.set_processor(processor)
        self._undo.append(lambda module=module, old=old: module.set_processor(old))

    def attr(self, obj: Any, name: str, value: Any) -> None:
        """``setattr(obj, name, value)``, restoring the previous value (or absence) on revert."""
        missing = object()
        old = obj.__dict__.get(name, missing) if hasattr(obj, "__dict__") else getattr(obj, name, missing)

        def undo(obj=obj, name=name, old=old):
            if old is missing:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass
            else:
                setattr(obj, name, old)

        setattr(obj, name, value)
        self._undo.append(undo)

    def on_revert(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on revert (in reverse order with everything else)."""
        self._undo.append(fn)

    def _touch(self, root: nn.Module) -> None:
        registry(root).invalidate_child_registries_cache()
        if id(root) not in self._roots:
            self._roots.add(id(root))
            self._root_modules.append(root)

    # --- revert ----------------------------------------------------------------------------------

    def revert(self) -> None:
        """Undo every change in reverse order (idempotent)."""
        if self.reverted:
            return
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as e:  # noqa: BLE001 — keep undoing; report the first failure after
                errors.append(e)
        for root in self._root_modules:
            registry(root).invalidate_child_registries_cache()
        self.reverted = True
        if errors:
            raise errors[0]
