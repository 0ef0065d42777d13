"""Gated residual add, fused: ``out = x + y * gate``.

A DiT block closes self-attention and the feed-forward with it: eagerly a cast of ``x``, a
multiply, an add and a cast back (four passes; three reads of ``[B, S, N]``); fused it reads
``x`` and ``y`` once and writes once. ``gate`` is per sample (``[B, 1, N]``) or per token
(``[B, S, N]``). Math in float32, stored in ``x``'s dtype.

``torch.ops.sol.gated_residual(x, y, gate)``.
"""

from __future__ import annotations

import torch

from sol.kernels._triton import Built, as_3d, as_rows, lazy_kernel, modulation_rows, use_triton

# --- autotune configs ------------------------------------------------------------------------
# (ROWS, BLOCK_N, num_warps): a pointwise op tiles rows and columns.
CONFIGS = [(4, 256, 4), (8, 512, 4), (16, 1024, 8), (32, 512, 8)]
INTERPRETER_TILE = (64, 256)


# Bound on first use by _kernel() (triton is optional): ``tl`` is triton.language. Annotations stay
# strings (``from __future__ import annotations``), so ``tl.constexpr`` needs no triton at import.
tl = None


# --- the kernel (decorated with @triton.jit on first use) ------------------------------------


def gated_residual_kernel(
    X, Yin, G, OUT,
    M, N, S, stride_x, stride_y, stride_o, gate_sb, gate_ss,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """X, Yin, OUT: [M, N] rows (M = B * S tokens; row strides given, unit column stride).
    G: row r reads r // S * gate_sb + r % S * gate_ss (0 strides broadcast).
    Grid: (cdiv(M, ROWS), cdiv(N, BLOCK_N)); one tile per program."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.load(Yin + rows[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + ((rows // S) * gate_sb + (rows % S) * gate_ss)[:, None] + cols[None, :], mask=mask)
    out = x + y * g.to(tl.float32)
    tl.store(OUT + rows[:, None] * stride_o + cols[None, :], out.to(OUT.dtype.element_ty), mask=mask)


@lazy_kernel
def _kernel() -> Built:
    import triton

    autotuned = triton.autotune(
        configs=[triton.Config({"ROWS": r, "BLOCK_N": n}, num_warps=w) for r, n, w in CONFIGS],
        key=["M", "N"],
    )(triton.jit(gated_residual_kernel))
    return Built(triton.jit(gated_residual_kernel), autotuned, {})


# --- wrapper: check, allocate, launch --------------------------------------------------------


def gated_residual_triton(x, y, gate) -> torch.Tensor:
    """The Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    import triton

    from sol.kernels._triton import interpreting

    if x.shape != y.shape:
        raise ValueError(f"gated_residual: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
    x3 = as_3d(x)
    x2, y2 = as_rows(x3), as_rows(as_3d(y))
    m, n = x2.shape
    g, g_b, g_s = modulation_rows(gate, x3)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    built = _kernel()
    args = (x2, y2, g, out, m, n, x3.shape[1], x2.stride(0), y2.stride(0), out.stride(0), g_b, g_s)
    if interpreting():
        rows, block = INTERPRETER_TILE
        built.plain[(triton.cdiv(m, rows), triton.cdiv(n, block))](*args, ROWS=rows, BLOCK_N=block)
    else:
        built.autotuned[lambda meta: (triton.cdiv(m, meta["ROWS"]), triton.cdiv(n, meta["BLOCK_N"]))](*args)
    return out.view(x.shape)


# --- float32 torch reference -----------------------------------------------------------------


def gated_residual_reference(x, y, gate) -> torch.Tensor:
    """``x + y * gate`` in float32, cast to ``x``'s dtype.

    >>> gated_residual_reference(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.full((1, 1, 4), 2.0))[0, 0]
    tensor([3., 3., 3., 3.])
    """
    return (x.float() + y.float() * gate.float()).to(x.dtype)


# --- the op ------------------------------------------------------------------------------------


@torch.library.custom_op("sol::gated_residual", mutates_args=())
def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Fused gated residual add (Triton where it runs, else the float32 reference).

    >>> torch.ops.sol.gated_residual(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 1, 4)).shape
    torch.Size([1, 2, 4])
    """
    if use_triton(x):
        return gated_residual_triton(x, y, gate)
    return gated_residual_reference(x, y, gate)


@gated_residual.register_fake
def _(x, y, gate):
    return torch.empty_like(x)
