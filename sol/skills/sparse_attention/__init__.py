"""Sparse attention (family ``sparse_attention``): self-attention restricted to tile-aligned patterns.

One module per method, on a shared tiling (:mod:`.tiling`) and shared paths (:mod:`.kernels`: gather +
batched SDPA on the CPU, FlexAttention on a GPU; :mod:`.triton_kernel`: a Triton block-sparse kernel):

- ``sparse_attention.sta`` — Sliding Tile Attention: a window of key tiles around each query tile;
- ``sparse_attention.svg`` — Sparse VideoGen: per head spatial / temporal / dense, from a profile;
- ``sparse_attention.radial`` — Radial Attention: a spatial window that shrinks with temporal distance;
- ``sparse_attention.pisa`` — piecewise: top tiles exact, the rest by a Taylor approximation.

Every method shares dense warm-up steps (``dense_steps``), the layers it applies to (``layers``), a
dense fallback per layer (``dense_layers``) and the path (``backend``). What each measured, what pays
on a CPU and on a GPU, and the traps: docs/skills.md, "Sparse attention".

>>> from sol.skills.sparse_attention import StaConfig
>>> StaConfig(window=(1, 3, 3)).kind
'sparse_attention.sta'
"""

from sol.skills.sparse_attention._base import SparseAttentionConfig, SparseAttentionSkill, Work

# isort: off
# Registration order is the family's order: the search races candidates the cost model cannot price
# (attention_backend writers) in this order, so the methods cheapest per kept pair come first.
from sol.skills.sparse_attention.sta import StaConfig, StaSkill
from sol.skills.sparse_attention.radial import RadialConfig, RadialSkill
from sol.skills.sparse_attention.svg import SvgConfig, SvgSkill
from sol.skills.sparse_attention.pisa import PisaConfig, PisaSkill

# isort: on
from sol.skills.sparse_attention.tiling import Tiling

__all__ = [
    "PisaConfig",
    "PisaSkill",
    "RadialConfig",
    "RadialSkill",
    "SparseAttentionConfig",
    "SparseAttentionSkill",
    "StaConfig",
    "StaSkill",
    "SvgConfig",
    "SvgSkill",
    "Tiling",
    "Work",
]
