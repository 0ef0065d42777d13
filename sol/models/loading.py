"""Load a pipeline by built-in name, architecture preset, local folder, or cached hub id.

Nothing is ever downloaded: every ``from_pretrained`` runs with ``local_files_only=True``,
so a missing model is a one-line error instead of a download that hangs on a closed network.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cache, cached_property
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
# Depth overrides beyond this are typos (the deepest published video transformer has 64 layers).
MAX_LAYERS = 1_000


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
    here = machine_memory()
    for row in rows:  # whether it fits in this machine's memory at its default depth, float32
        if row["kind"] == "family" or not row["available"]:
            row["fits"], row["memory_gb"] = None, None
            continue
        need = estimate_memory(row["name"])
        row["memory_gb"] = None if need is None else round(need.total / GB, 1)
        row["fits"] = None if need is None else need.total <= here.bytes
    return rows


# --- memory: refuse what cannot fit before building or loading it -------------------------------

GB = 1024**3
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}  # fmt: skip
# Parameter counts of the presets (all components: with one block, and per further block) from a
# build on the meta device, keyed by a hash of the preset's arguments: a preset added or changed
# since is counted by such a build when first asked (~1 s; tests/reliability/test_memory.py checks
# the table against one), so `sol models` and every load stay instant.
PRESET_PARAMS: dict[str, tuple[str, int, int]] = {
    "tiny-wan-random": ("84e8eddc", 694091, 199552),
    "tiny-wan2.2-random": ("d657e5a0", 1141099, 399104),
    "wan2.1-1.3b-arch": ("5d862a21", 75152147, 46440704),
    "wan2.1-14b-arch": ("a15ec18f", 587049491, 351394304),
    "wan2.2-a14b-arch": ("6f458789", 1171425363, 702788608),
    "tiny-sana-video-random": ("0b31d4b2", 791908, 312064),
    "sana-video-2b-arch": ("5e88c05d", 140470828, 92982400),
    "tiny-ltx2-random": ("1e9ba096", 925308, 303968),
    "ltx2-arch": ("a5ce7b22", 1118870177, 386074624),
    "tiny-cosmos3-random": ("3b5c5a3e", 608812, 295552),
    "cosmos3-nano-arch": ("00be9658", 405952380, 385892864),
    "cosmos3-super-arch": ("9a99dc81", 1005441916, 975196672),
    "tiny-hunyuan-video1.5-random": ("ffb207c4", 4825489, 149504),
    "hunyuan-video-1.5-arch": ("e0d6ae89", 445020923, 151056896),
}


@dataclass(frozen=True)
class MemoryNeed:
    """What loading a model and running one generation of a workload needs, at least.

    ``weights``: parameters and buffers x bytes per element; ``activations``: the decoded video
    (float32) and the VAE decoder's working set at full resolution (at least four video-sized
    tensors); the transformer's own activations are smaller than these at every supported size.
    Both are lower bounds: a refusal is never a false alarm.
    """

    params: int
    weights: int
    activations: int = 0
    copies: int = 1

    @property
    def total(self) -> int:
        return self.weights * self.copies + self.activations * self.copies


@dataclass(frozen=True)
class MachineMemory:
    bytes: int
    what: str  # "RAM" or "GPU memory"


def machine_memory(hardware=None) -> MachineMemory:
    """This machine's memory for a model: the GPU's when running on one, else RAM (a cgroup's
    limit when lower than the physical memory)."""
    import torch

    if hardware is not None and getattr(hardware, "kind", "cpu") == "cuda" and torch.cuda.is_available():
        return MachineMemory(torch.cuda.get_device_properties(0).total_memory, "GPU memory")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return MachineMemory(total, "RAM")


def _count_params(pipe) -> int:
    import torch

    n = 0
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            n += sum(p.numel() for p in comp.parameters()) + sum(b.numel() for b in comp.buffers())
    return n


def _preset_key(name: str) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(PRESETS[name][1], sort_keys=True).encode()).hexdigest()[:8]


@cache
def _preset_params(name: str) -> tuple[int, int] | None:
    """(parameters with one block, parameters per further block) of preset ``name``."""
    known = PRESET_PARAMS.get(name)
    if known is not None and known[0] == _preset_key(name):
        return known[1], known[2]
    try:
        from accelerate import init_empty_weights

        with init_empty_weights(), warnings.catch_warnings():  # parameters on the meta device: no memory
            warnings.simplefilter("ignore")
            one, two = _count_params(build_preset(name, 1)), _count_params(build_preset(name, 2))
    except Exception:  # noqa: BLE001 — no estimate rather than no model
        return None
    return one, two - one


def _folder_params(folder: Path) -> int | None:
    """Elements in a diffusers folder's safetensors files, from their headers (no weights read)."""
    total = 0
    files = list(folder.rglob("*.safetensors"))
    if not files:
        return None
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 0 < n <= 100 * 2**20:
                    return None
                header = json.loads(fh.read(n))
        except (OSError, ValueError):
            return None
        for key, t in header.items():
            if key != "__metadata__" and isinstance(t, dict) and t.get("dtype") in _DTYPE_BYTES:
                total += math.prod(int(x) for x in t.get("shape", []))
    return total


def estimate_memory(model: str, *, layers: int | None = None, workload=None, dtype=None,
                    copies: int = 1) -> MemoryNeed | None:  # fmt: skip
    """The memory ``model`` needs (None when Sol cannot tell, e.g. a hub id not in the cache).

    >>> round(estimate_memory("wan2.1-14b-arch").weights / 2**30)  # doctest: +SKIP
    53
    """
    import torch

    dtype = dtype or torch.float32
    size = torch.empty((), dtype=dtype).element_size()
    if model in PRESETS:
        counts = _preset_params(model)
        if counts is None:
            return None
        depth = layers if layers is not None else int(PRESETS[model][1].get("num_layers", 1))
        params = counts[0] + max(0, depth - 1) * counts[1]
    elif model in BUILTIN_MODELS:
        path = reference_model_path() if model == REFERENCE_MODEL else BUILTIN_MODELS[model][0]
        params = _folder_params(path) if path is not None else _preset_params("tiny-wan-random")[0]
    elif Path(model).expanduser().is_dir():
        params = _folder_params(Path(model).expanduser())
    else:
        return None
    if params is None:
        return None
    act = 0
    if workload is not None:
        video = workload.num_frames * workload.height * workload.width * 3 * 4
        act = 5 * video  # the decoded video, and at least four video-sized tensors inside the VAE decoder
    return MemoryNeed(params=params, weights=params * size, activations=act, copies=copies)


def check_fits(model: str, *, layers: int | None = None, workload=None, hardware=None, dtype=None,
               copies: int = 1) -> None:  # fmt: skip
    """Refuse, in one line, a model (and workload) this machine cannot hold, before building or
    loading anything: ``--layers 100000`` once used all 23 GB and drew the out-of-memory killer.

    >>> check_fits("wan2.1-14b-arch")  # doctest: +SKIP
    SolError: wan2.1-14b-arch needs at least 53.2 GB (14.29 B parameters in float32), more than this machine's 23.4 GB of RAM; ...
    """
    import torch

    if layers is not None and layers < 1:
        raise SolError(f"--layers {layers}: the number of layers must be at least 1")
    need = estimate_memory(model, layers=layers, workload=workload, dtype=dtype, copies=copies)
    here = machine_memory(hardware)
    if need is None or here.bytes <= 0 or need.total <= here.bytes:
        if layers is not None and layers > MAX_LAYERS:  # a backstop where no estimate could be made
            raise SolError(f"--layers {layers}: the number of layers must be from 1 to {MAX_LAYERS}")
        return
    dtype_name = str(dtype or torch.float32).removeprefix("torch.")
    count = f"{need.params / 1e9:.2f} B" if need.params >= 1e9 else f"{need.params / 1e6:.1f} M"
    parts = [f"{count} parameters in {dtype_name}"]
    if need.activations >= 0.05 * GB:
        parts.append(f"{need.activations / GB:.1f} GB for one {workload.num_frames}x{workload.height}x{workload.width}"
                     f" video of {workload.name}")  # fmt: skip
    if copies > 1:
        parts.append(f"x {copies} agents running at once, each with its own copy")
    weights_alone = need.weights * copies <= here.bytes
    if weights_alone:
        fix = "use a smaller workload (frames, height, width)"
    elif model in PRESETS:
        fix = "pass --layers N for fewer layers, or use a smaller preset"
    else:
        fix = "use a machine with more memory"
    if copies > 1 and need.total / copies <= here.bytes:
        fix = "search fewer skills at once (--skills), or " + fix
    raise SolError(
        f"{model} needs at least {need.total / GB:.1f} GB ({', '.join(parts)}), more than this machine's"
        f" {here.bytes / GB:.1f} GB of {here.what}; {fix}"
    )


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


def _device_kind(device):
    from types import SimpleNamespace

    return SimpleNamespace(kind="cuda" if str(device).startswith("cuda") else "cpu")


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
    # Before anything is built or read: a model larger than this machine's memory is refused here.
    check_fits(model, layers=layers, dtype=dtype, hardware=_device_kind(device))
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
