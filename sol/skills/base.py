"""The skill framework: technique configs, seams, phases, the registry, the effect check.

A skill is a technique config type (frozen pydantic data with a ``kind``), the seams it
reads and writes, the phase it applies in, the capabilities it needs, the optional packages
it imports, a search space, and ``apply`` -> handle with ``revert``. Skills register by
decorator keyed on their config type; the plan loader and the runtime know techniques only
through this registry (no isinstance chains elsewhere).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sol.errors import ConflictError, SolError
from sol.hooks.core import Handle


class Seam(enum.StrEnum):
    """Places in a pipeline that techniques change."""

    ATTENTION_BACKEND = "attention_backend"  # which kernel/pattern computes self-attention
    TOKEN_SET = "token_set"  # which tokens flow through the blocks
    STEP_OUTPUT = "step_output"  # whether the transformer runs at a step, or its output is reused
    LINEAR_PRECISION = "linear_precision"  # the numeric format of linear layers
    BLOCK_OUTPUT = "block_output"  # whether blocks run, or their residuals are reused
    ATTENTION_OUTPUT = "attention_output"  # whether attention runs, or its last output is reused
    TEXT_KV = "text_kv"  # cross-attention keys/values of the prompt
    KERNEL_FUSION = "kernel_fusion"  # fused or compiled kernels for op chains
    # diffusers' CacheMixin holds one cache config per model (enable_cache refuses a second one)
    DIFFUSERS_CACHE = "diffusers_cache"


# One writer at a time: two techniques writing one of these are refused.
EXCLUSIVE_SEAMS = frozenset(
    {Seam.ATTENTION_BACKEND, Seam.TOKEN_SET, Seam.STEP_OUTPUT, Seam.LINEAR_PRECISION, Seam.DIFFUSERS_CACHE}
)


class Phase(enum.IntEnum):
    """When a technique applies; lower first, so later phases wrap what earlier ones left.

    See the table in ``docs/skills.md``. Within one phase, a technique may not read a seam that
    another technique of the same phase writes (their order would decide the result).
    """

    WEIGHTS = 10  # linear precision: replaces modules (quantization)
    KERNELS = 20  # fused or compiled op chains inside blocks (fusion)
    ATTENTION = 30  # self-attention processors (sparse attention)
    TOKENS = 40  # which tokens run inside blocks (token pruning)
    TEXT = 70  # cross-attention keys/values of the prompt (text K/V reuse)
    STEPS = 80  # hooks that skip whole blocks or steps (step and block caches)


# The evaluator counts work with probes installed after this phase: outside every compiled
# region (earlier phases), inside every cache (later phases).
PROBE_AFTER = Phase.KERNELS
GPU_EXTRA = "pip install 'sol[gpu]'"


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


class Skill:
    """A technique: subclass, set the class attributes, implement ``apply``; register it.

    ``phase`` (a :class:`Phase`) orders composition. ``apply`` is called once per denoising
    transformer of the pipeline (``adapter`` is that transformer's; Wan 2.2 has two).
    ``packages`` are import names of optional dependencies the technique needs at apply time:
    import them inside ``apply``, never at module level, so the skill stays registered (and says
    what to install) where they are missing.
    """

    config_type: ClassVar[type[TechniqueConfig]]
    name: ClassVar[str]  # the skill family, e.g. "cache" — one agent per family
    reads: ClassVar[frozenset[Seam]] = frozenset()
    writes: ClassVar[frozenset[Seam]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()  # Capability values
    phase: ClassVar[Phase] = Phase.STEPS
    packages: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = GPU_EXTRA
    # False: apply changes weights in place; the evaluator restores them between candidates.
    reversible: ClassVar[bool] = True

    def apply(self, pipe, config: TechniqueConfig, adapter) -> Handle:
        raise NotImplementedError

    def missing_packages(self) -> list[str]:
        """Optional packages this technique needs that are not installed here."""
        return [p for p in self.packages if importlib.util.find_spec(p) is None]

    def search_space(self, context: SearchContext) -> list[TechniqueConfig]:
        """Candidate configs for screening, cheap first. ``context`` says model, hardware, workload."""
        return []

    def refine(self, context: SearchContext, results: list[Any]) -> list[TechniqueConfig]:
        """Second-round candidates from screening results (a local search); none by default."""
        return []

    def ceiling(self, context: SearchContext, cost_model) -> dict | None:
        """The most this technique could gain on this hardware, measured before any video is made
        (``{"speedup": x, "why": "..."}``), or None when unknown (the default). The search skips a
        technique whose ceiling cannot beat the baseline (``sol.integrator.skill_search``)."""
        return None

    def examples(self) -> list[TechniqueConfig]:
        """A few cheap, valid configs the shared skill tests apply (at least one)."""
        raise NotImplementedError

    def available(self, hardware) -> str | None:
        """Why this technique cannot run on ``hardware`` (None when it can); by default, the
        optional packages it lacks. Overrides should call ``super().available(hardware)``."""
        missing = self.missing_packages()
        if missing:
            return f"needs the {', '.join(missing)} package{'s' if len(missing) > 1 else ''}: {self.install_hint}"
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


def unregister_skill(config_type: type[TechniqueConfig]) -> None:
    """Remove a registered technique (tests register throw-away skills in fixtures)."""
    _SKILLS.pop(config_type, None)
    kind = config_type.model_fields["kind"].default
    if _KINDS.get(kind) is config_type:
        del _KINDS[kind]


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


def capability_refusal(skill: Skill, adapter) -> str | None:
    """Why ``skill`` cannot apply to ``adapter``'s model: the capabilities it needs that the family
    lacks, with the family's reasons (None when it can).

    >>> capability_refusal(skill_for(SparseConfig()), sana_adapter)  # doctest: +SKIP
    "needs the model capability self_attention_qkv, which sana_video (...) does not offer: ... linear attention ..."
    """
    missing = sorted(str(x) for x in skill.requires - set(adapter.capabilities))
    if not missing:
        return None
    # The adapter says why (e.g. SANA-Video's linear attention has no q/k/v to sparsify).
    from sol.models.base import Capability

    reason = getattr(adapter, "missing_reason", lambda _c: None)
    why = "; ".join(r for r in (reason(Capability(m)) for m in missing) if r)
    return (
        f"needs the model capability {', '.join(missing)}, which {adapter.family}"
        f" ({type(adapter.transformer).__name__}) does not offer{f': {why}' if why else ''}"
    )


def compose(configs: Iterable[TechniqueConfig], adapter=None) -> list[TechniqueConfig]:
    """The effect check: refuse conflicts, return configs in application (phase) order.

    Refused, with a message naming both techniques and the seam:
    - two techniques writing one exclusive seam;
    - within one phase, a technique reading a seam another one writes (the result would
      depend on their order);
    and a technique needing a capability the model lacks.
    """
    configs = list(configs)
    writers: dict[Seam, TechniqueConfig] = {}
    for c in configs:
        skill = skill_for(c)
        refused = capability_refusal(skill, adapter) if adapter is not None else None
        if refused:
            raise ConflictError(f"{c.kind} {refused}; drop {c.kind}")
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
    for a in configs:
        for b in configs:
            sa, sb = skill_for(a), skill_for(b)
            if a is b or sa.phase != sb.phase:
                continue
            seams = sorted(s.value for s in sa.writes & sb.reads)
            if seams:
                raise ConflictError(
                    f"{a.kind} writes the {seams[0]} seam that {b.kind} reads, in the same phase"
                    f" ({Phase(sa.phase).name.lower()}): their order would decide the result; keep one of them"
                )
    order = {id(c): i for i, c in enumerate(configs)}
    return sorted(configs, key=lambda c: (skill_for(c).phase, order[id(c)]))


@dataclass
class Applied:
    """Techniques applied to one pipeline, reverted together in reverse order."""

    handles: list[Handle] = field(default_factory=list)

    def revert(self) -> None:
        while self.handles:
            self.handles.pop().revert()

    def counters(self) -> dict[str, float]:
        """Every technique's own counters, summed by name (over experts)."""
        out: dict[str, float] = {}
        for h in self.handles:
            for k, v in h.counters().items():
                out[k] = out.get(k, 0.0) + float(v)
        return out


def require_packages(config: TechniqueConfig) -> None:
    """Refuse, in one line, a technique whose optional packages are missing here."""
    skill = skill_for(config)
    missing = skill.missing_packages()
    if missing:
        raise SolError(
            f"technique {config.kind!r} needs the {', '.join(missing)} package"
            f"{'s' if len(missing) > 1 else ''}, which is not installed: {skill.install_hint}"
        )


def apply_all(
    pipe, configs: Iterable[TechniqueConfig], adapter, *, instrument: Callable[[], Handle] | None = None
) -> Applied:
    """Check, order and apply techniques to every denoiser; on failure, revert what was applied.

    ``instrument`` (the evaluator's work probes) runs once, after the :data:`PROBE_AFTER` phase,
    and its handle joins the others: probes then sit outside compiled regions and inside every
    cache, and are removed in their place in the reverse order.
    """
    applied = Applied()
    experts = getattr(adapter, "experts", None) or [adapter]
    try:
        ordered = compose(configs, adapter)
        for c in ordered:
            require_packages(c)
        for c in ordered:
            if instrument is not None and skill_for(c).phase > PROBE_AFTER:
                applied.handles.append(instrument())
                instrument = None
            for expert in experts:
                applied.handles.append(skill_for(c).apply(pipe, c, expert))
        if instrument is not None:
            applied.handles.append(instrument())
    except BaseException:
        applied.revert()
        raise
    return applied
