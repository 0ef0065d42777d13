"""Kernel fusion: a transformer block's op chains run as fused kernels (family ``fusion``).

- ``fusion.compile`` — each block compiled into one ``torch.compile`` graph (inductor: C++ on
  the CPU, Triton on a GPU); ``inside`` picks the parts traced into it;
- ``fusion.triton`` — the chains swapped for the ``torch.ops.sol`` Triton kernels (CUDA).

Both install the adapter's block forward over :class:`~sol.models.base.BlockOps` (phase
``kernels``, before any hook), leave modules other techniques changed as they are, count the
attention calls the probes cannot see, and pick their parts by leave-one-out timing
(:mod:`sol.skills.fusion.search`). See docs/skills.md, "Kernel fusion".
"""

from sol.skills.fusion.compiled import CompileBlocks
from sol.skills.fusion.fused_ops import FusedKernels

__all__ = ["CompileBlocks", "FusedKernels"]
