"""Fused kernels for DiT blocks, registered as ``torch.ops.sol.<name>`` (runtime layer).

One op per module, each in the Triton tutorial's order (autotune configs, the ``@triton.jit``
kernel with its shapes, a wrapper that checks, allocates and launches, a float32 torch
reference) and registered with ``torch.library.custom_op`` with a fake implementation, so
``torch.compile`` treats each as one op:

- ``layernorm_modulate(x, weight, bias, scale, shift, eps)`` — LayerNorm + adaLN scale/shift;
- ``rmsnorm_rope(x, weight, eps, heads, cos, sin)`` — RMSNorm on Q/K across heads + Wan's
  interleaved RoPE;
- ``gated_residual(x, y, gate)`` — ``x + y * gate``;
- ``linear_gelu(x, weight, bias, approximate)`` — FFN projection + GELU (tanh or erf, pinned).

Triton is optional: an op launches its kernel on CUDA tensors when triton is installed (and on
the CPU under ``TRITON_INTERPRET=1``), and otherwise runs its torch reference, so importing
``sol.kernels`` works everywhere.

>>> import sol.kernels, torch
>>> torch.ops.sol.gated_residual(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 1, 4))[0, 0]
tensor([2., 2., 2., 2.])
"""

from sol.kernels._triton import available, interpreting, use_triton
from sol.kernels.gated_residual import gated_residual, gated_residual_reference, gated_residual_triton
from sol.kernels.layernorm_modulate import (
    layernorm_modulate,
    layernorm_modulate_reference,
    layernorm_modulate_triton,
)
from sol.kernels.linear_gelu import linear_gelu, linear_gelu_reference, linear_gelu_triton
from sol.kernels.rmsnorm_rope import rmsnorm_rope, rmsnorm_rope_reference, rmsnorm_rope_triton

# name -> (op, Triton wrapper, float32 reference): what the tests and the benchmark sweep.
OPS = {
    "layernorm_modulate": (layernorm_modulate, layernorm_modulate_triton, layernorm_modulate_reference),
    "rmsnorm_rope": (rmsnorm_rope, rmsnorm_rope_triton, rmsnorm_rope_reference),
    "gated_residual": (gated_residual, gated_residual_triton, gated_residual_reference),
    "linear_gelu": (linear_gelu, linear_gelu_triton, linear_gelu_reference),
}

__all__ = [
    "OPS",
    "available",
    "gated_residual",
    "gated_residual_reference",
    "gated_residual_triton",
    "interpreting",
    "layernorm_modulate",
    "layernorm_modulate_reference",
    "layernorm_modulate_triton",
    "linear_gelu",
    "linear_gelu_reference",
    "linear_gelu_triton",
    "rmsnorm_rope",
    "rmsnorm_rope_reference",
    "rmsnorm_rope_triton",
    "use_triton",
]
