"""The skill framework: technique configs, seams, the registry, the effect check.

A skill is a technique config type (frozen pydantic data with a ``kind``), the seams it
reads and writes, the capabilities it needs, a search space, and ``apply`` -> handle with
``revert``. Skills register by decorator keyed on their config type; the plan loader and
the runtime know techniques only through this registry (no isinstance chains elsewhere).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sol.errors import ConflictError, SolError


class Seam(enum.StrEnum):
    """Places in a pipeline that techniques change."""

    ATTENTION_BACKEND = "attention_backend"  # which kernel/pattern computes self-attention
    TOKEN_SET = "token_set"  # which tokens flow through the blocks
    STEP_OUTPUT = "step_output"  # whether the transformer runs at a step, or its output is reused
    LINEAR_PRECISION = "linear_precision"  # the numeric format of linear layers
    BLOCK_OUTPUT = "block_output"  # whether blocks run, or their residuals are reused
    TEXT_KV = "text_kv"  # cross-attention keys/values of the prompt
    KERNEL_FUSION = "kernel_fusion"  # fused or compiled kernels for op chains
    # diffusers' CacheMixin holds one cache config per model (enable_cache refuses a second one)
    DIFFUSERS_CACHE = "diffusers_cache"


# One writer at a time: two techniques writing one of these are refused.
EXCLUSIVE_SEAMS = frozenset(
    {Seam.ATTENTION_BACKEND, Seam.TOKEN_SET, Seam.STEP_OUTPUT, Seam.LINEAR_PRECISION, Seam.DIFFUSERS_CACHE}
)


class TechniqueConfig(BaseModel):
    """Base of every technique config: data only, frozen, versioned, ``kind``-discriminated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    version: int = 1

    def label(self) -> str:
        """A short human label, e.g. ``cache.block_residual(threshold=0.1)``.

        Sequences longer than 4 (calibrated per-step ratios) shorten to a count and a hash, so the
        label stays readable and still tells two calibrations apart.
        """
        fields = {k: v for k, v in self.model_dump().items() if k not in ("kind", "version")}
        inner = ", ".join(f"{k}={_compact(v)}" for k, v in fields.items())
        return f"{self.kind}({inner})"


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 4:
        digest = hashlib.sha256(repr(tuple(value)).encode()).hexdigest()[:8]
        return f"<{len(value)} values #{digest}>"
    return str(value)


class Handle:
    """What ``apply`` returns; ``revert()`` restores the pipeline (idempotent)."""

    def __init__(self, revert_fn=None):
        self._revert_fn = revert_fn
        self.reverted = False

    def revert(self) -> None:
        if not self.reverted:
            if self._revert_fn is not None:
                self._revert_fn()
            self.reverted = True


class Skill:
    """A technique: subclass, set the class attributes, implement ``apply``; register it.

    ``phase`` orders composition (lower applies first): weights (quantization) before
    attention backends before token sets before caches that wrap whole blocks or steps.
    """

    config_type: ClassVar[type[TechniqueConfig]]
    name: ClassVar[str]  # the skill family, e.g. "cache" — one agent per family
    reads: ClassVar[frozenset[Seam]] = frozenset()
    writes: ClassVar[frozenset[Seam]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    phase: ClassVar[int] = 50
    # False: apply changes weights in place; the evaluator restores them between candidates.
    reversible: ClassVar[bool] = True

    def apply(self, pipe, config: TechniqueConfig, adapter) -> Handle:
        raise NotImplementedError

    def search_space(self, context: SearchContext) -> list[TechniqueConfig]:
        """Candidate configs for screening, cheap first. ``context`` says model, hardware, workload."""
        return []

    def refine(self, context: SearchContext, results: list[Any]) -> list[TechniqueConfig]:
        """Second-round candidates from screening results (a local search); none by default."""
        return []

    def examples(self) -> list[TechniqueConfig]:
        """A few cheap, valid configs the shared skill tests apply (at least one)."""
        raise NotImplementedError

    def available(self, hardware) -> str | None:
        """Why this technique cannot run on ``hardware`` (None when it can)."""
        return None

    def unavailable_options(self, hardware) -> dict[str, str]:
        """Options (e.g. quantization schemes) the search leaves out on ``hardware``, and why."""
        return {}


DEFAULT_MIN_PSNR = 30.0  # dB: a search's floor when no quality budget is given (near-lossless)


@dataclass
class SearchContext:
    """What a skill's search may look at: small data, no tensors."""

    adapter: Any
    hardware: Any
    workload: Any
    budget: Any = None
    notes: dict = field(default_factory=dict)
    # The pipeline under search, for skills that calibrate on the target model before proposing
    # configs (step caching fits its rescaling polynomial on one run); never serialised.
    pipe: Any = None

    @property
    def min_psnr(self) -> float:
        """The budget's PSNR floor (a QualityBudget or a dict with ``min_psnr``); 30 dB without one."""
        b = self.budget
        value = b.get("min_psnr") if isinstance(b, dict) else getattr(b, "min_psnr", None)
        return DEFAULT_MIN_PSNR if value is None else float(value)


_SKILLS: dict[type[TechniqueConfig], Skill] = {}
_KINDS: dict[str, type[TechniqueConfig]] = {}


def register_skill(config_type: type[TechniqueConfig]):
    """Class decorator keyed on the config type (torchao's ``register_quantize_module_handler`` idea).

    >>> @register_skill(MyConfig)  # doctest: +SKIP
    ... class MySkill(Skill): ...
    """
    kind_field = config_type.model_fields.get("kind")
    kind = getattr(kind_field, "default", None)
    if not isinstance(kind, str):
        raise TypeError(f"{config_type.__name__} needs a `kind: Literal[...] = '...'` default")

    def deco(cls: type[Skill]) -> type[Skill]:
        if kind in _KINDS and _KINDS[kind] is not config_type:
            raise TypeError(f"technique kind {kind!r} is registered twice")
        cls.config_type = config_type
        _SKILLS[config_type] = cls()
        _KINDS[kind] = config_type
        return cls

    return deco


def _load_builtin_skills() -> None:
    # Import for the side effect of registration; one line per technique package.
    import sol.skills.builtin  # noqa: F401


def registered_kinds() -> dict[str, type[TechniqueConfig]]:
    _load_builtin_skills()
    return dict(_KINDS)


def skill_for(config: TechniqueConfig) -> Skill:
    _load_builtin_skills()
    try:
        return _SKILLS[type(config)]
    except KeyError:
        raise SolError(f"technique {config.kind!r} has no registered skill") from None


def skills_by_family() -> dict[str, list[Skill]]:
    _load_builtin_skills()
    out: dict[str, list[Skill]] = {}
    for s in _SKILLS.values():
        out.setdefault(s.name, []).append(s)
    return out


def config_from_dict(data: Any) -> TechniqueConfig:
    """Resolve a technique dict by its ``kind`` among registered kinds only; never imports a name."""
    kinds = registered_kinds()
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise SolError("a technique entry must be an object with a string 'kind'; fix the plan file")
    cls = kinds.get(data["kind"])
    if cls is None:
        raise SolError(
            f"unknown technique kind {data['kind']!r}; known kinds: {', '.join(sorted(kinds)) or 'none'}"
            " (upgrade sol, or remove it from the plan)"
        )
    if int(data.get("version", 1)) > cls.model_fields["version"].default:
        raise SolError(
            f"technique {data['kind']!r} version {data.get('version')} is newer than this sol supports"
            f" ({cls.model_fields['version'].default}); upgrade sol"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise SolError(f"technique {data['kind']!r}: {where}: {first['msg']}; fix the plan file") from None


def compose(configs: Iterable[TechniqueConfig], adapter=None) -> list[TechniqueConfig]:
    """The effect check: refuse conflicts, return configs in application (phase) order.

    Two techniques writing one exclusive seam are refused with a message naming both and
    the seam; a technique needing a capability the model lacks is refused likewise.
    """
    configs = list(configs)
    writers: dict[Seam, TechniqueConfig] = {}
    for c in configs:
        skill = skill_for(c)
        if adapter is not None:
            missing = sorted(skill.requires - adapter.capabilities)
            if missing:
                raise ConflictError(
                    f"{c.kind} needs the model capability {', '.join(missing)}, which {adapter.family}"
                    f" ({type(adapter.transformer).__name__}) does not offer; drop {c.kind}"
                )
        for seam in sorted(skill.writes & EXCLUSIVE_SEAMS):
            if seam in writers:
                other = writers[seam]
                # Name every exclusive seam the two share, not just the first one found.
                shared = sorted(s.value for s in skill.writes & skill_for(other).writes & EXCLUSIVE_SEAMS)
                which = (
                    f"the {shared[0]} seam, which takes one writer"
                    if len(shared) == 1
                    else f"the {', '.join(shared)} seams, which take one writer each"
                )
                raise ConflictError(f"{other.kind} and {c.kind} both write {which}; keep one of them")
            writers[seam] = c
    order = {id(c): i for i, c in enumerate(configs)}
    return sorted(configs, key=lambda c: (skill_for(c).phase, order[id(c)]))


@dataclass
class Applied:
    """Techniques applied to one pipeline, reverted together in reverse order."""

    handles: list[Handle] = field(default_factory=list)

    def revert(self) -> None:
        while self.handles:
            self.handles.pop().revert()


def apply_all(pipe, configs: Iterable[TechniqueConfig], adapter) -> Applied:
    """Check, order and apply techniques; on failure, revert what was applied and re-raise."""
    applied = Applied()
    try:
        for c in compose(configs, adapter):
            applied.handles.append(skill_for(c).apply(pipe, c, adapter))
    except BaseException:
        applied.revert()
        raise
    return applied
