"""Workloads: the typed, named description of what is measured.

A workload fixes everything that changes latency or output: prompts, seeds, frames, size,
steps, guidance. Named workloads ship in ``sol/workloads/*.json``; a user may pass
the path of a JSON file of the same shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sol.errors import SolError, parse_json

WORKLOAD_DIR = Path(__file__).parent / "workloads"

# Bounds on what a workload may ask for. Numbers are strict (``true`` is not 1, "17" is not 17) and
# finite; sizes beyond these are typos, and what is within them but too large for this machine is
# refused by the memory estimate (sol.models.loading.check_fits) before a model is loaded.
MAX_FRAMES = 10_000
MAX_PIXELS = 16_384  # per side
MAX_STEPS = 1_000
MAX_RUNS = 1_000  # (prompt, seed) pairs: each one is a generation
MAX_PROMPT_CHARS = 10_000
MAX_GUIDANCE = 100.0
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
Prompt = Annotated[StrictStr, Field(max_length=MAX_PROMPT_CHARS)]


class Workload(BaseModel):
    """What one measurement runs: every (prompt, seed) pair is one generation.

    >>> Workload(name="x", prompts=["a red circle moving left"], num_frames=17).num_frames
    17
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=100)
    description: StrictStr = Field("", max_length=MAX_PROMPT_CHARS)
    prompts: list[Prompt] = Field(min_length=1, max_length=MAX_RUNS)
    negative_prompt: Prompt = ""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_RUNS)
    num_frames: StrictInt = Field(17, le=MAX_FRAMES)
    height: StrictInt = Field(64, le=MAX_PIXELS)
    width: StrictInt = Field(64, le=MAX_PIXELS)
    num_inference_steps: StrictInt = Field(20, le=MAX_STEPS)
    guidance_scale: float = Field(5.0, strict=True, allow_inf_nan=False, le=MAX_GUIDANCE)
    max_sequence_length: StrictInt = Field(
        8, le=4096
    )  # sol-tiny-wan was trained with prompts padded to 8 tokens
    # Held-out split: prompts and seeds the search never sees; the chosen plan is re-checked on
    # them before approval (empty: no validation split, the search split's verdict stands alone).
    validation_prompts: list[Prompt] = Field(default_factory=list, max_length=MAX_RUNS)
    validation_seeds: list[Seed] = Field(default_factory=list, max_length=MAX_RUNS)

    # Family rules (Wan's 4k+1 frames and multiples of 16, LTX-2's 8k+1 and 32, ...) live in the
    # model adapters (`adapter.check_workload`), checked where a workload meets a pipeline; only
    # what holds for every model is checked here.
    @field_validator("num_frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @field_validator("height", "width")
    @classmethod
    def _size(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"must be a positive number of pixels (got {v})")
        return v

    @field_validator("num_inference_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @field_validator("guidance_scale")
    @classmethod
    def _cfg(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"must be >= 0 (got {v}; <= 1 disables classifier-free guidance)")
        return v

    @field_validator("max_sequence_length")
    @classmethod
    def _msl(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name becomes part of file names (profiles, run folders): no folders, no hidden files.
        if not v.strip() or "/" in v or "\\" in v or v.startswith(".") or any(ord(c) < 32 for c in v):
            raise ValueError(
                f"name {v!r} must be a plain name (letters, digits, '-', '_'; no '/' or leading '.')"
            )
        return v

    @model_validator(mode="after")
    def _prompts(self) -> Workload:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty strings")
        if len(self.prompts) * len(self.seeds) > MAX_RUNS:
            raise ValueError(
                f"{len(self.prompts)} prompts x {len(self.seeds)} seeds is more than {MAX_RUNS} generations"
            )
        return self

    @model_validator(mode="after")
    def _held_out(self) -> Workload:
        if any(not p.strip() for p in self.validation_prompts):
            raise ValueError("validation_prompts must not be empty strings")
        seen = set(self.runs)
        shared = [r for r in ((p, s) for p in self.validation_prompts for s in self.validation_seeds or self.seeds)
                  if r in seen]  # fmt: skip
        if shared:
            raise ValueError(
                f"validation run {shared[0]} is also a search run: the validation split must be held out"
                " (use other prompts or other validation_seeds)"
            )
        return self

    @property
    def runs(self) -> list[tuple[str, int]]:
        """The (prompt, seed) pairs, in the fixed order outputs are stored."""
        return [(p, s) for p in self.prompts for s in self.seeds]

    def pipe_kwargs(self, prompt: str, pipe=None) -> dict:
        """The pipeline call arguments for ``prompt``; with ``pipe``, as its model family names them,
        after the family's workload rules (``adapter.check_workload``: a one-line error naming the rule)."""
        if pipe is not None:
            from sol.models.base import pipeline_kwargs

            return pipeline_kwargs(pipe, self, prompt)
        return {
            "prompt": prompt,
            "negative_prompt": self.negative_prompt,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "max_sequence_length": self.max_sequence_length,
        }

    def validation(self) -> Workload | None:
        """The held-out split as a workload of its own (same sizes, steps and guidance), or None.

        >>> load_workload("default").validation().name
        'default-validation'
        """
        if not self.validation_prompts:
            return None
        return self.model_copy(
            update={
                "name": f"{self.name}-validation",
                "prompts": list(self.validation_prompts),
                "seeds": list(self.validation_seeds or self.seeds),
                "validation_prompts": [],
                "validation_seeds": [],
            }
        )

    def shortened(self, steps: int | None = None, prompts: int | None = None) -> Workload:
        """A cheaper variant for screening (fewer prompts); same sizes and steps by default."""
        update = {"name": f"{self.name}-screen"}
        if steps is not None:
            update["num_inference_steps"] = steps
        if prompts is not None:
            update["prompts"] = self.prompts[:prompts]
            update["seeds"] = self.seeds[:1]
        return self.model_copy(update=update)


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "workload"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}"


def _failed_field(err: ValidationError) -> str | None:
    loc = err.errors()[0]["loc"]
    return str(loc[0]) if loc else None


def list_workloads() -> list[str]:
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.json"))


def load_workload(name_or_path: str | Path, *, flags: dict[str, str] | None = None, **overrides) -> Workload:
    """A named workload (``smoke``, ``default``, ``long``…) or a JSON file; ``overrides`` replace fields.

    An override that breaks a rule is blamed on the command line, not on the file: ``flags`` maps a
    field to the option that set it (``{"num_frames": "--frames"}``).

    >>> load_workload("default", num_frames=9).num_frames
    9
    """
    if not str(name_or_path).strip():
        raise SolError(
            f"the workload name is empty; use one of {', '.join(list_workloads())} or a JSON file path"
        )
    path = Path(name_or_path)
    if not path.suffix and (WORKLOAD_DIR / f"{name_or_path}.json").is_file():
        path = WORKLOAD_DIR / f"{name_or_path}.json"
    if path.is_dir():
        raise SolError(f"workload {str(name_or_path)!r} is a folder; pass a workload JSON file or a name")
    if not path.is_file():
        raise SolError(
            f"unknown workload {str(name_or_path)!r}; use one of {', '.join(list_workloads())} or a JSON file path"
        )
    fix = "fix the file (see sol/workloads/default.json for the shape)"
    try:
        if path.stat().st_size > 2**20:
            raise SolError(f"workload file {path} is larger than 1 MiB; {fix}")
        raw = path.read_bytes()
    except OSError as e:
        raise SolError(f"cannot read workload file {path} ({e.strerror}); {fix}") from None
    data = parse_json(raw, f"workload file {path}", fix)
    if not isinstance(data, dict):
        raise SolError(f"workload file {path} must hold a JSON object with prompts, num_frames, height, …")
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return Workload.model_validate(data)
    except ValidationError as e:
        field = _failed_field(e)
        if field in given:  # a command-line value broke the rule, not the file
            flag = (flags or {}).get(field, field)
            msg = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise SolError(f"{flag} {given[field]}: {msg}") from None
        raise SolError(f"{path}: {_one_line(e)}") from None


def parse_workload(data: dict, source: str = "workload") -> Workload:
    try:
        return Workload.model_validate(data)
    except ValidationError as e:
        raise SolError(f"{source}: {_one_line(e)}") from None
