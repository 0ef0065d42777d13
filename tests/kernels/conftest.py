"""Kernel tests run every Triton kernel in the CPU interpreter (``TRITON_INTERPRET=1``).

The variable is set per test (not for the whole session): other tests must see the ops run their
torch reference on the CPU. Kernels are built per interpreter setting (``sol.kernels._triton``),
so a kernel built earlier without it is never reused here.
"""

from __future__ import annotations

import importlib.util

import pytest

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install 'sol[gpu]'): interpreter tests skipped"
)


@pytest.fixture
def interpret(monkeypatch):
    """Run Triton kernels in the CPU interpreter for this test."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
