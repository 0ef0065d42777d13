"""When a ``sol.kernels`` op launches its Triton kernel, and how kernels are built lazily.

Row sums in kernels are ``tl.reduce(x, 1, tl.standard._sum_combine)``, not ``tl.sum``: ``tl.sum``
is a ``@jit`` function of triton.language, decorated when triton was imported, and if that was
before ``TRITON_INTERPRET=1`` (``torch._dynamo`` imports triton) the interpreter refuses to call
it. ``tl.reduce`` is a builtin; with triton's own sum combiner the interpreter takes its numpy
path (any other combiner runs element by element in Python, ~100x slower) and the compiler emits
what ``tl.sum`` emits. Likewise ``tl.full`` / ``tl.minimum`` / integer division replace
``tl.zeros`` / ``min`` / ``tl.cdiv``.

Triton is optional (the ``gpu`` extra): an op runs its Triton kernel on a CUDA tensor when
triton is installed, and on a CPU tensor only under ``TRITON_INTERPRET=1`` (the interpreter,
used by the tests); otherwise it runs its float32 torch reference.

Kernels are built on first use, never at import: ``@triton.jit`` reads ``TRITON_INTERPRET``
when it decorates (set afterwards, the kernel fails with "0 active drivers"), and importing
``sol.kernels`` must work without triton. Builds are cached per interpreter setting.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def available() -> bool:
    """Whether triton is importable here."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Launch the Triton kernel for ``t`` (else the torch reference runs).

    >>> use_triton(torch.zeros(1))  # a CPU tensor without TRITON_INTERPRET=1  # doctest: +SKIP
    False
    """
    if not available():
        return False
    return t.is_cuda or (t.device.type == "cpu" and interpreting())


@dataclass(frozen=True)
class Built:
    """Kernels decorated in one interpreter setting: the plain kernel (launched with an explicit
    config), its autotuned twin, and any ``@triton.jit`` helpers its body calls by global name."""

    plain: Any
    autotuned: Any
    helpers: dict = field(default_factory=dict)


def lazy_kernel(build: Callable[[], Built]) -> Callable[[], Built]:
    """``build()`` once per interpreter setting; each use binds ``tl`` and the helpers as globals of
    the kernel's module (kernel bodies resolve names there, in the interpreter too, which re-executes
    the kernel's source in its module's globals: closures are lost)."""
    cached = functools.cache(lambda interpret: build())

    @functools.wraps(build)
    def get() -> Built:
        import triton.language as tl

        built = cached(interpreting())
        build.__globals__.update(tl=tl, **built.helpers)
        return built

    return get


def row_block(n: int) -> int:
    """The power of two that holds a whole row of ``n`` elements in one program."""
    return max(16, 1 << (max(1, n) - 1).bit_length())


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``[M, N]`` rows with a unit last stride (a copy only when it must)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def modulation_rows(mod: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """A per-sample ``[B, 1, N]`` / ``[B, N]`` or per-token ``[B, S, N]`` modulation of ``x``
    ``[B, S, N]`` as ``(tensor, stride_b, stride_s)``: row ``r`` of ``x`` reads
    ``mod[r // S * stride_b + r % S * stride_s + n]`` (stride 0 where it broadcasts)."""
    b, s, n = x.shape
    if mod.ndim == 2:
        mod = mod.unsqueeze(1)
    if mod.ndim != 3 or mod.shape[-1] != n or mod.shape[0] not in (1, b) or mod.shape[1] not in (1, s):
        raise ValueError(f"modulation of shape {tuple(mod.shape)} does not broadcast to {tuple(x.shape)}")
    if mod.stride(-1) != 1:
        mod = mod.contiguous()
    stride_b = mod.stride(0) if mod.shape[0] == b and b > 1 else 0
    stride_s = mod.stride(1) if mod.shape[1] == s and s > 1 else 0
    return mod, stride_b, stride_s


def as_3d(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``[B, S, N]`` (leading dims folded into S; a 2-D input is one sample)."""
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3:
        return x
    return x.reshape(x.shape[0], -1, x.shape[-1])
