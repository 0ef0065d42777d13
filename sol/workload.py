"""Workloads: the typed, named description of what is measured.

A workload fixes everything that changes latency or output: prompts, seeds, frames, size,
steps, guidance. Named workloads ship in ``sol/workloads/*.json``; a user may pass
the path of a JSON file of the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sol.errors import SolError

WORKLOAD_DIR = Path(__file__).parent / "workloads"


class Workload(BaseModel):
    """What one measurement runs: every (prompt, seed) pair is one generation.

    >>> Workload(name="x", prompts=["a red circle moving left"], num_frames=17).num_frames
    17
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    prompts: list[str] = Field(min_length=1)
    negative_prompt: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    num_frames: int = 17
    height: int = 64
    width: int = 64
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    max_sequence_length: int = 8  # sol-tiny-wan was trained with prompts padded to 8 tokens
    # Held-out split: prompts and seeds the search never sees; the chosen plan is re-checked on
    # them before approval (empty: no validation split, the search split's verdict stands alone).
    validation_prompts: list[str] = Field(default_factory=list)
    validation_seeds: list[int] = Field(default_factory=list)

    # Family rules (Wan's 4k+1 frames and multiples of 16, LTX-2's 8k+1 and 32, ...) live in the
    # model adapters (`adapter.check_workload`), checked where a workload meets a pipeline; only
    # what holds for every model is checked here.
    @field_validator("num_frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num_frames={v} must be at least 1")
        return v

    @field_validator("height", "width")
    @classmethod
    def _size(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name}={v} must be a positive number of pixels")
        return v

    @field_validator("num_inference_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"num_inference_steps={v} must be at least 1")
        return v

    @field_validator("guidance_scale")
    @classmethod
    def _cfg(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"guidance_scale={v} must be >= 0 (<= 1 disables classifier-free guidance)")
        return v

    @field_validator("max_sequence_length")
    @classmethod
    def _msl(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"max_sequence_length={v} must be at least 1")
        return v

    @model_validator(mode="after")
    def _prompts(self) -> Workload:
        if any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must not be empty strings")
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


def list_workloads() -> list[str]:
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.json"))


def load_workload(name_or_path: str | Path, **overrides) -> Workload:
    """A named workload (``smoke``, ``default``, ``long``…) or a JSON file; ``overrides`` replace fields."""
    path = Path(name_or_path)
    if not path.suffix and (WORKLOAD_DIR / f"{name_or_path}.json").is_file():
        path = WORKLOAD_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise SolError(
            f"unknown workload {str(name_or_path)!r}; use one of {', '.join(list_workloads())} or a JSON file path"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SolError(f"workload file {path} is not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict):
        raise SolError(f"workload file {path} must hold a JSON object with prompts, num_frames, height, …")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_workload(data, source=str(path))


def parse_workload(data: dict, source: str = "workload") -> Workload:
    try:
        return Workload.model_validate(data)
    except ValidationError as e:
        raise SolError(f"{source}: {_one_line(e)}") from None
