"""The plan file: a versioned JSON description of an approved acceleration stack.

Loading only parses JSON and resolves technique ``kind``s among registered skills: it never
imports a name read from the file and never unpickles, so a plan cannot run code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from sol.errors import MAX_JSON_BYTES, SolError, parse_json
from sol.skills.base import TechniqueConfig, config_from_dict
from sol.workload import Workload

# Bump whenever a plan written by this sol could hold a field an older sol refuses (every model
# here forbids unknown fields), so the older sol says "upgrade sol" in one line instead of "Extra
# inputs are not permitted". 2: the workload's held-out split (validation_prompts, validation_seeds).
SCHEMA_VERSION = 2
# A plan holds a few techniques; each kind bounds its own data (quantization: its rule count).
MAX_TECHNIQUES = 64


class ExpertRef(BaseModel):
    """One denoiser of a pipeline with several (Wan 2.2's ``transformer`` and ``transformer_2``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cls: str
    config_hash: str
    weights_hash: str


class ModelRef(BaseModel):
    """The model a plan was made for: hashes over every denoiser, and each one's own (``experts``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cls: str
    config_hash: str
    weights_hash: str
    experts: list[ExpertRef] = Field(default_factory=list)


class HardwareRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str
    description: str = ""
    compute_capability: list[int] | None = None


class Measured(BaseModel):
    """What the search measured for this stack on its workload (interleaved ratio of medians)."""

    model_config = ConfigDict(extra="allow")

    speedup: float | None = None
    baseline_s: float | None = None
    latency_s: float | None = None
    fidelity: dict[str, Any] = Field(default_factory=dict)
    vbench: dict[str, Any] = Field(default_factory=dict)


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved_by: str
    approved_at: str
    candidate: str
    verdict: dict[str, Any] = Field(default_factory=dict)
    note: str = ""


class Plan(BaseModel):
    """An ordered stack of technique configs tied to one model and one device.

    >>> plan = Plan.empty(model=ModelRef(name="m", cls="C", config_hash="a", weights_hash="b"),
    ...                   hardware=HardwareRef(kind="cpu", name="cpu"))
    >>> Plan.from_json(plan.to_json()).techniques
    []
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    sol_version: str = ""
    model: ModelRef
    hardware: HardwareRef
    versions: dict[str, str] = Field(default_factory=dict)
    techniques: list[TechniqueConfig] = Field(default_factory=list)
    workload: Workload | None = None
    measured: Measured = Field(default_factory=Measured)
    approval: Approval | None = None

    @field_validator("techniques", mode="before")
    @classmethod
    def _resolve_kinds(cls, v):
        if not isinstance(v, list):
            raise ValueError("techniques must be a list")
        if len(v) > MAX_TECHNIQUES:
            raise ValueError(f"{len(v)} techniques, more than {MAX_TECHNIQUES}; re-export the plan")
        return [c if isinstance(c, TechniqueConfig) else _technique(c, i) for i, c in enumerate(v)]

    @field_serializer("techniques")
    def _dump_techniques(self, v: list[TechniqueConfig]):
        return [c.model_dump(mode="json") for c in v]

    @classmethod
    def empty(cls, model: ModelRef, hardware: HardwareRef, **kw) -> Plan:
        return cls(model=model, hardware=hardware, versions=library_versions(), **kw)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "plan") -> Plan:
        """Parse a plan; size, nesting, every field and every technique are checked, and each problem
        is one :class:`SolError` line (tests/reliability: generated plans load or say so, quickly)."""
        data = parse_json(text, source, "re-export the plan")
        if not isinstance(data, dict):
            raise SolError(f"{source} must hold a JSON object (a Sol plan); re-export the plan")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SolError(
                f"{source} has no valid schema_version (a whole number from 1, got {json.dumps(version)});"
                " is it a Sol plan file?"
            )
        if version > SCHEMA_VERSION:
            raise SolError(
                f"{source} has plan schema version {version}, newer than this sol supports ({SCHEMA_VERSION});"
                " upgrade sol"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "plan"
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = (
                    f"unknown field (this sol reads plan schema {SCHEMA_VERSION}); remove it, or upgrade sol"
                    " if a newer one wrote the plan"
                )
            raise SolError(f"{source}: {where}: {msg}") from None
        except SolError as e:  # a technique entry, refused by its kind's own check
            raise SolError(f"{source}: {str(e).replace('Value error, ', '')}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)  # atomic: a reader never sees half a plan
        return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan file; every problem is a one-line :class:`SolError`.

    >>> plan = load_plan("runs/x/plan.json")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        raise SolError(f"plan {path} is a folder; pass the plan.json file (e.g. {path / 'plan.json'})")
    if not path.is_file():
        raise SolError(f"plan file {path} does not exist; pass the plan.json that `sol optimize` exported")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:  # refused before it is read
            raise SolError(
                f"plan file {path} is {path.stat().st_size / 2**20:.1f} MiB, more than the"
                f" {MAX_JSON_BYTES / 2**20:.0f} MiB a plan may hold; re-export the plan"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise SolError(
            f"cannot read plan file {path} ({e.strerror}); check the path and its permissions"
        ) from None
    if raw[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or raw[:4] == b"PK\x03\x04":
        raise SolError(
            f"plan file {path} is a pickled or zipped file; Sol plans are JSON and are never unpickled"
        )
    return Plan.from_json(raw, source=str(path))


def _technique(entry: Any, index: int) -> TechniqueConfig:
    """One technique entry: its kind and version checked here, the rest by its registered config."""
    where = f"techniques.{index}"
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise SolError(f"{where}: a technique must be an object with a string 'kind'; fix the plan file")
    version = entry.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SolError(
            f"{where} ({entry['kind']}): version must be a whole number from 1, got {json.dumps(version)};"
            " fix the plan file"
        )
    try:
        return config_from_dict(entry)
    except SolError as e:
        raise SolError(f"{where}: {str(e).replace('Value error, ', '')}") from None


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a plan depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sol", "torch", "diffusers", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
