"""Which device this machine has, and the check that tuning runs on the target hardware.

Latency found on one device says nothing about another, so ``--gpu h100`` on a machine
without an H100 is refused instead of silently tuning for the wrong hardware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from sol.errors import SolError

# Marketing names as users type them -> substrings of torch.cuda.get_device_name().
KNOWN_GPUS: dict[str, tuple[str, ...]] = {
    "h100": ("h100",),
    "h200": ("h200",),
    "h20": ("h20 ",),
    "b200": ("b200",),
    "gb200": ("gb200",),
    "a100": ("a100",),
    "a10g": ("a10g",),
    "a10": ("a10",),
    "l40s": ("l40s",),
    "l40": ("l40",),
    "l4": ("l4",),
    "rtx4090": ("4090",),
    "rtx5090": ("5090",),
    "rtx3090": ("3090",),
    "v100": ("v100",),
    "t4": ("t4",),
}


@dataclass(frozen=True)
class Hardware:
    """The device Sol measures on: ``kind`` is ``cpu`` or ``cuda``; ``name`` is a short id."""

    kind: str
    name: str
    description: str
    compute_capability: tuple[int, int] | None = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda" if self.kind == "cuda" else "cpu")

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "compute_capability": list(self.compute_capability) if self.compute_capability else None,
        }


def _short_gpu_name(full: str) -> str:
    low = full.lower()
    for short, needles in KNOWN_GPUS.items():
        if any(n in low for n in needles):
            return short
    return re.sub(r"[^a-z0-9]+", "-", low).strip("-")


def detect() -> Hardware:
    """The device this process would run on: the first CUDA GPU, else the CPU."""
    if torch.cuda.is_available():
        full = torch.cuda.get_device_name(0)
        return Hardware("cuda", _short_gpu_name(full), full, torch.cuda.get_device_capability(0))
    return detect_cpu()


def resolve(gpu: str) -> Hardware:
    """Turn a ``--gpu`` value (``cpu``, ``auto`` or a GPU name) into this machine's device.

    >>> resolve("auto").kind in ("cpu", "cuda")
    True
    """
    want = gpu.strip().lower().replace(" ", "")
    here = detect()
    if want in ("auto", ""):
        return here
    if want == "cpu":
        return detect_cpu()
    if want not in KNOWN_GPUS and not re.fullmatch(r"[a-z0-9-]+", want):
        raise SolError(f"unknown --gpu {gpu!r}; use cpu, auto, or a GPU name such as {', '.join(KNOWN_GPUS)}")
    if here.kind == "cuda" and here.name == want:
        return here
    raise SolError(
        f"--gpu {gpu}: tuning must run on the target hardware; this machine has: {here.name}"
        f" (run Sol on a {gpu} machine, or pass --gpu auto)"
    )


def detect_cpu() -> Hardware:
    import platform

    return Hardware("cpu", "cpu", platform.processor() or platform.machine() or "cpu")


def configure_cpu_threads() -> int:
    """Use one intra-op thread on small CPUs, unless ``SOL_THREADS`` says otherwise.

    Measured here (2 cores): two threads are no faster than one, and while any other process
    runs, OpenMP's spinning threads make a tiny generation 100x slower (11 s instead of 0.08 s).
    Timings must not depend on what else the machine is doing, so small CPUs get one thread.
    """
    import os

    want = os.environ.get("SOL_THREADS")
    if want:
        n = int(want)
    elif torch.cuda.is_available() or (os.cpu_count() or 1) > 4:
        return torch.get_num_threads()
    else:
        n = 1
    torch.set_num_threads(n)
    # Child processes (plan re-application, VBench, scripts) start their own torch: let them inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return n
