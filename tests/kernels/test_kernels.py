"""Every fused op under the Triton interpreter against its float32 reference (Liger-Kernel style):
odd shapes, float32/float16/bfloat16 loads with float32 math, tolerances per dtype.

Shapes are small: the interpreter costs ~5-10 ms per program instance.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import sol.kernels as K
from tests.kernels.conftest import needs_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (atol, rtol) against the float32 reference computed from the same rounded inputs: the kernel and
# the reference differ only in float32 summation order and the final rounding to the dtype.
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}
# [B, S, N]: odd token counts and widths that are not powers of two (masked tails).
SHAPES = [(1, 1, 16), (2, 37, 72), (1, 129, 96)]


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOL[dtype]
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


def test_ops_are_registered_under_torch_ops_sol():
    for name in ("layernorm_modulate", "rmsnorm_rope", "gated_residual", "linear_gelu"):
        assert hasattr(torch.ops.sol, name), name
    assert set(K.OPS) == {"layernorm_modulate", "rmsnorm_rope", "gated_residual", "linear_gelu"}


def test_import_and_ops_work_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, sol.kernels as K\n"
        "assert not K.available()\n"
        "x = torch.randn(1, 3, 8)\n"
        "y = torch.ops.sol.layernorm_modulate(x, None, None, None, None, 1e-6)\n"
        "assert torch.allclose(y, torch.nn.functional.layer_norm(x, (8,), eps=1e-6))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# --- each kernel in the interpreter ------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variant", ["modulate-per-sample", "modulate-per-token", "affine-only"])
def test_layernorm_modulate(interpret, shape, dtype, variant):
    g = torch.Generator().manual_seed(0)
    b, s, n = shape
    x = torch.randn(shape, generator=g).to(dtype)
    w = b_ = scale = shift = None
    if variant == "affine-only":
        w, b_ = torch.randn(n, generator=g), torch.randn(n, generator=g)
    else:
        mod = (b, 1, n) if variant == "modulate-per-sample" else (b, s, n)
        scale, shift = torch.randn(mod, generator=g), torch.randn(mod, generator=g)
    got = K.layernorm_modulate_triton(x, w, b_, scale, shift, 1e-6)
    _close(got, K.layernorm_modulate_reference(x, w, b_, scale, shift, 1e-6), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 5, 2, 8), (2, 37, 3, 24), (1, 66, 4, 32)], ids=str)
def test_rmsnorm_rope(interpret, shape, dtype):
    g = torch.Generator().manual_seed(1)
    b, s, h, d = shape
    x = torch.randn((b, s, h * d), generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(h * d, generator=g)).to(dtype)
    # Wan's rotary tables are float64 [1, S, 1, D] with (cos, cos) / (sin, sin) pairs interleaved.
    angle = torch.rand((1, s, 1, d // 2), generator=g, dtype=torch.float64) * 6.28
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
    got = K.rmsnorm_rope_triton(x, w, 1e-6, h, cos, sin)
    assert got.shape == (b, s, h, d)
    _close(got, K.rmsnorm_rope_reference(x, w, 1e-6, h, cos, sin), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("per_token", [False, True])
def test_gated_residual(interpret, shape, dtype, per_token):
    g = torch.Generator().manual_seed(2)
    b, s, n = shape
    x, y = torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)
    gate = torch.randn((b, s if per_token else 1, n), generator=g)
    _close(K.gated_residual_triton(x, y, gate), K.gated_residual_reference(x, y, gate), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mnk", [(1, 16, 16), (37, 45, 29), (70, 96, 72)], ids=str)
@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_linear_gelu(interpret, mnk, dtype, approximate):
    g = torch.Generator().manual_seed(3)
    m, n, k = mnk
    x = torch.randn((m, k), generator=g).to(dtype)
    w = (torch.randn((n, k), generator=g) / k**0.5).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    got = K.linear_gelu_triton(x, w, bias, approximate)
    _close(got, K.linear_gelu_reference(x, w, bias, approximate), dtype)


@needs_triton
def test_linear_gelu_pins_tanh_against_erf(interpret):
    """The fused FFN computes the GELU it is asked for: tanh and erf differ far beyond the
    tolerance, so a kernel (or an adapter) that swapped them would fail here."""
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn((33, 40), generator=g), torch.randn((24, 40), generator=g) / 6
    tanh = K.linear_gelu_triton(x, w, None, "tanh")
    _close(tanh, F.gelu(F.linear(x, w), approximate="tanh"), torch.float32)
    erf = F.gelu(F.linear(x, w), approximate="none")
    # The two GELUs differ by up to 4.7e-4 (at x = 2.7): 10x the float32 tolerance here.
    assert (tanh - erf).abs().max() > 10 * TOL[torch.float32][0]
    with pytest.raises(ValueError, match="approximate"):
        K.linear_gelu_triton(x, w, None, "sigmoid")


# --- the registered ops ---------------------------------------------------------------------------


def _example_args():
    g = torch.Generator().manual_seed(5)
    x = torch.randn((1, 6, 16), generator=g)
    mod = torch.randn((1, 1, 16), generator=g)
    angle = torch.rand((1, 6, 1, 4), generator=g, dtype=torch.float64)
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
    return {
        "layernorm_modulate": (x, None, None, mod, mod.clone(), 1e-6),
        "rmsnorm_rope": (x, torch.ones(16), 1e-6, 2, cos, sin),
        "gated_residual": (x, x.clone(), mod),
        "linear_gelu": (x, torch.randn((12, 16), generator=g), torch.randn(12, generator=g), "tanh"),
    }


@pytest.mark.parametrize("name", sorted(K.OPS))
def test_op_schema_fake_and_reference(name):
    """torch.library's own checks (schema, fake tensor, autograd registration), on the CPU path."""
    op = getattr(torch.ops.sol, name).default
    args = _example_args()[name]
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    torch.testing.assert_close(op(*args), K.OPS[name][2](*args))


def test_compile_sees_each_op_as_one_node():
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    args = _example_args()

    def f(x, y, gate):
        return torch.ops.sol.gated_residual(x, y, gate) * 2

    torch._dynamo.reset()
    out = torch.compile(f, backend=backend, fullgraph=True)(*args["gated_residual"])
    assert seen == ["sol.gated_residual", "<built-in function mul>"]  # one op, not its decomposition
    torch.testing.assert_close(out, 2 * K.gated_residual_reference(*args["gated_residual"]))
