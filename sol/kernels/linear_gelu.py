"""FFN projection + GELU, fused: ``gelu(x @ W^T + b)`` with the GELU computed in the matmul's epilogue.

The feed-forward's first projection is the widest activation of a DiT block (``ffn_dim``, ~4x
the model width); eagerly the GEMM writes it, GELU reads it back and writes it again. Fused,
the bias and GELU are applied to the float32 accumulator before the single store.

GELU is pinned: ``approximate="tanh"`` (Wan's ``gelu-approximate``) or ``"none"`` (erf). They
differ by up to 4.7e-4 per element (at x = 2.7), which compounds over blocks and steps into a visible drift:
the kernel computes exactly the one asked for, and the adapter passes the model's own.

``torch.ops.sol.linear_gelu(x [..., K], weight [N, K], bias [N] | None, approximate) -> [..., N]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sol.kernels._triton import Built, lazy_kernel, use_triton

APPROXIMATIONS = ("tanh", "none")

# --- autotune configs ------------------------------------------------------------------------
# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps): the Triton matmul tutorial's
# CUDA configs, large tiles first.
CONFIGS = [
    (128, 256, 64, 8, 3, 8),
    (64, 256, 32, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (128, 64, 32, 8, 4, 4),
    (64, 128, 32, 8, 4, 4),
    (64, 32, 32, 8, 5, 2),
]
INTERPRETER_TILE = (32, 32, 32, 8)


# Bound on first use by _kernel() (triton is optional): ``tl`` is triton.language. Annotations stay
# strings (``from __future__ import annotations``), so ``tl.constexpr`` needs no triton at import.
tl = None


# --- the kernel (decorated with @triton.jit on first use) ------------------------------------


def linear_gelu_kernel(
    X, W, B, Y,
    M, N, K, stride_xm, stride_xk, stride_wn, stride_wk, stride_ym,
    HAS_B: tl.constexpr, TANH: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """X: [M, K]; W: [N, K] (nn.Linear's layout, read transposed); B: [N]; Y: [M, N] (unit
    column stride). Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), programs grouped GROUP_M
    row-tiles at a time (L2 reuse of W). Accumulates in float32; UPCAST casts the loaded
    tiles to float32 before tl.dot (the interpreter's bf16 arithmetic is wrong; float32 models)."""
    pid = tl.program_id(0)
    # Plain arithmetic, tl.full and tl.minimum, not tl.cdiv / tl.zeros / min: those are @jit
    # functions of triton.language, which the interpreter cannot call when triton was imported
    # before TRITON_INTERPRET=1.
    num_m = (M + BLOCK_M - 1) // BLOCK_M
    num_n = (N + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % per_group) % group_m)
    pid_n = (pid % per_group) // group_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, (K + BLOCK_K - 1) // BLOCK_K):
        kk = k0 * BLOCK_K + rk
        a = tl.load(
            X + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=(rm < M)[:, None] & (kk < K)[None, :],
            other=0.0,
        )
        b = tl.load(
            W + rn[None, :] * stride_wn + kk[:, None] * stride_wk,
            mask=(rn < N)[None, :] & (kk < K)[:, None],
            other=0.0,
        )
        if UPCAST:
            # float32 tiles: IEEE products, not tf32 (a float32 model asked for float32 math)
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    if HAS_B:
        acc = acc + tl.load(B + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if TANH:
        # tanh(u) = 1 - 2 / (exp(2u) + 1): exact limits at +-inf, no tanh in tl.
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
        y = 0.5 * acc * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))
    else:
        y = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    tl.store(Y + rm[:, None] * stride_ym + rn[None, :], y.to(Y.dtype.element_ty), mask=mask)


@lazy_kernel
def _kernel() -> Built:
    import triton

    autotuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": g}, num_stages=s, num_warps=w)
            for m, n, k, g, s, w in CONFIGS
        ],
        key=["M", "N", "K"],
    )(triton.jit(linear_gelu_kernel))
    return Built(triton.jit(linear_gelu_kernel), autotuned, {})


# --- wrapper: check, allocate, launch --------------------------------------------------------


def _check(x, weight, bias, approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"linear_gelu: approximate={approximate!r}; use one of {APPROXIMATIONS}")
    if weight.ndim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"linear_gelu: weight {tuple(weight.shape)} does not take {x.shape[-1]} inputs")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear_gelu: bias {tuple(bias.shape)}, expected ({weight.shape[0]},)")


def linear_gelu_triton(x, weight, bias, approximate: str) -> torch.Tensor:
    """The Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    import triton

    from sol.kernels._triton import interpreting

    _check(x, weight, bias, approximate)
    x2 = x.reshape(-1, x.shape[-1])
    m, k = x2.shape
    n = weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    built = _kernel()
    args = (
        x2, weight, bias if bias is not None else weight, y,
        m, n, k, x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1), y.stride(0),
    )  # fmt: skip
    meta = dict(HAS_B=bias is not None, TANH=approximate == "tanh")
    if interpreting():
        bm, bn, bk, g = INTERPRETER_TILE
        grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
        built.plain[grid](*args, **meta, UPCAST=True, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=g)
    else:
        upcast = x.dtype == torch.float32  # fp16/bf16 feed the tensor cores as they are
        built.autotuned[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)](
            *args, **meta, UPCAST=upcast
        )
    return y.view(*x.shape[:-1], n)


# --- float32 torch reference -----------------------------------------------------------------


def linear_gelu_reference(x, weight, bias, approximate: str) -> torch.Tensor:
    """``gelu(x @ W^T + b)`` in float32, cast to ``x``'s dtype.

    >>> linear_gelu_reference(torch.zeros(2, 4), torch.ones(3, 4), None, "tanh").shape
    torch.Size([2, 3])
    """
    _check(x, weight, bias, approximate)
    b = bias.float() if bias is not None else None
    return F.gelu(F.linear(x.float(), weight.float(), b), approximate=approximate).to(x.dtype)


# --- the op ------------------------------------------------------------------------------------


@torch.library.custom_op("sol::linear_gelu", mutates_args=())
def linear_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approximate: str
) -> torch.Tensor:
    """Fused linear + GELU (``approximate``: ``"tanh"`` or ``"none"``; Triton where it runs).

    >>> torch.ops.sol.linear_gelu(torch.randn(2, 4), torch.randn(3, 4), None, "tanh").shape
    torch.Size([2, 3])
    """
    if use_triton(x):
        return linear_gelu_triton(x, weight, bias, approximate)
    return linear_gelu_reference(x, weight, bias, approximate)


@linear_gelu.register_fake
def _(x, weight, bias, approximate):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
