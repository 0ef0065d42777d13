"""Load a pipeline by built-in name, architecture preset, local folder, or cached hub id.

Nothing is ever downloaded: every ``from_pretrained`` runs with ``local_files_only=True``,
so a missing model is a one-line error instead of a download that hangs on a closed network.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from sol.errors import SolError
from sol.models.base import (
    Fingerprint,
    ModelAdapter,
    adapter_for,
    denoisers,
    fingerprint,
    registered_families,
)
from sol.models.builders import PRESETS, build_preset

ASSETS = Path(__file__).parent / "assets"
REFERENCE_MODEL = "sol-tiny-wan"
# Built-in trained models shipped inside the package: name -> (folder, description).
BUILTIN_MODELS: dict[str, tuple[Path, str]] = {
    REFERENCE_MODEL: (
        ASSETS / REFERENCE_MODEL,
        "Sol's trained reference text-to-video Wan (shapes and colours)",
    ),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class LoadedModel:
    """A loaded pipeline with its adapter; ``source`` says where it came from."""

    name: str
    pipe: object = field(repr=False)
    source: str
    trained: bool

    @cached_property
    def adapter(self) -> ModelAdapter:
        return adapter_for(self.pipe)

    @cached_property
    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.pipe)


def reference_model_path() -> Path | None:
    """Folder of the shipped reference model, or None while it is not in this checkout."""
    path = BUILTIN_MODELS[REFERENCE_MODEL][0]
    return path if (path / "model_index.json").is_file() else None


def list_models() -> list[dict]:
    """Model families (a local diffusers folder of any of them loads), built-in models and presets,
    for ``sol models``; every row names its ``family``."""
    rows = []
    for cls in sorted(registered_families(), key=lambda c: (c.family != "wan", c.title.lower())):
        rows.append(
            {
                "name": cls.family,
                "kind": "family",
                "family": cls.family,
                "description": f"{cls.title}: {cls.pipeline_class} ({cls.transformer_class});"
                " --model <folder> loads a local diffusers folder of it",
                "available": True,
            }
        )
    for name, (path, desc) in BUILTIN_MODELS.items():
        present = (path / "model_index.json").is_file()
        rows.append(
            {
                "name": name,
                "kind": "built-in (trained)",
                "family": "wan",
                "description": desc,
                "available": present,
            }
        )
    for name, (desc, kwargs) in PRESETS.items():
        family = kwargs.get("builder", "wan")
        rows.append(
            {
                "name": name,
                "kind": "preset (random weights)",
                "family": family,
                "description": desc,
                "available": True,
            }
        )
    return rows


def _check_pickle(folder: Path, allow_pickle: bool) -> bool:
    """Refuse pickled weights (they run code when loaded) unless the user allows them."""
    pickled = [p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file()]
    safes = {p.parent for p in folder.rglob("*.safetensors")}
    unsafe = [p for p in pickled if p.parent not in safes]
    if unsafe and not allow_pickle:
        raise SolError(
            f"{folder} holds pickled weights ({unsafe[0].relative_to(folder)}), which can run code when loaded;"
            " convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    return not unsafe


def _load_folder(folder: Path, allow_pickle: bool, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    if not (folder / "model_index.json").is_file():
        raise SolError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); pass the folder that holds it"
        )
    safe_only = _check_pickle(folder, allow_pickle)
    try:
        return DiffusionPipeline.from_pretrained(
            # None lets each component fall back to its pickled file once the user allowed it.
            str(folder),
            torch_dtype=dtype,
            local_files_only=True,
            use_safetensors=True if safe_only else None,
        )
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SolError(f"could not load the pipeline in {folder}: {first}") from e


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache (or no hub library): the caller explains
        return None


def load_model(
    model: str,
    *,
    layers: int | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load ``model``: a built-in name, a preset, a local diffusers folder, or a cached hub id.

    >>> load_model("wan2.1-1.3b-arch", layers=2).adapter.describe()["blocks"]  # doctest: +SKIP
    2
    """
    if layers is not None and layers < 1:
        raise SolError(f"--layers {layers}: the number of layers must be at least 1")
    if layers is not None and model not in PRESETS:
        raise SolError(
            f"--layers only applies to architecture presets ({', '.join(PRESETS)}), not to {model!r}"
        )
    if model in BUILTIN_MODELS:
        path = reference_model_path() if model == REFERENCE_MODEL else BUILTIN_MODELS[model][0]
        if path is None:
            warnings.warn(
                f"{model}: the trained weights are not in this checkout; using random tiny Wan weights",
                stacklevel=2,
            )
            loaded = LoadedModel(
                model, build_preset("tiny-wan-random"), "random (reference not present)", False
            )
        else:
            loaded = LoadedModel(model, _load_folder(path, False, dtype), f"built-in: {path}", True)
    elif model in PRESETS:
        loaded = LoadedModel(model, build_preset(model, layers), f"preset: {PRESETS[model][0]}", False)
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser().resolve()
        loaded = LoadedModel(model, _load_folder(folder, allow_pickle, dtype), f"folder: {folder}", True)
    elif re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", model):
        snap = _hub_snapshot(model)
        if snap is None:
            raise SolError(
                f"{model!r} is not in the local Hugging Face cache and Sol never downloads;"
                f" fetch it first (huggingface-cli download {model}) or pass a local folder"
            )
        loaded = LoadedModel(model, _load_folder(snap, allow_pickle, dtype), f"hub cache: {snap}", True)
    elif "/" in model or Path(model).suffix or model.startswith((".", "~")):
        raise SolError(
            f"model folder {model!r} does not exist; pass an existing diffusers folder or a built-in name"
        )
    else:
        names = ", ".join([*BUILTIN_MODELS, *PRESETS])
        raise SolError(
            f"unknown model {model!r}; use a built-in name ({names}), a local folder, or a cached hub id"
        )
    pipe = loaded.pipe
    if dtype != torch.float32 and not loaded.trained:
        for _name, transformer in denoisers(pipe):
            transformer.to(dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return loaded
