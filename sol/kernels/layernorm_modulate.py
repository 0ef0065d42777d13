"""LayerNorm + adaLN modulate, fused: ``y = LN(x) * (1 + scale) + shift``.

A DiT block runs this chain twice per call (before self-attention and before the
feed-forward): eagerly it is a cast, a LayerNorm, a multiply, an add and a cast, five passes
over the activations; fused it is one read of ``x`` and one write of ``y``. ``scale`` and
``shift`` are per sample (``[B, 1, N]``, Wan 2.1) or per token (``[B, S, N]``, Wan 2.2 TI2V).
Without them it is a plain LayerNorm (Wan's ``norm2``). Math in float32, stored in ``x``'s dtype.

``torch.ops.sol.layernorm_modulate(x, weight, bias, scale, shift, eps)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sol.kernels._triton import Built, as_3d, as_rows, lazy_kernel, modulation_rows, row_block, use_triton

# --- autotune configs ------------------------------------------------------------------------
# Rows per program: one row per program is latency-bound on short rows; several rows amortise
# the per-program cost (~5-10 ms per program in the interpreter: give it many rows).
CONFIGS = [(1, 4), (2, 4), (4, 8), (8, 8)]  # (ROWS, num_warps)
INTERPRETER_ROWS = 64


# Bound on first use by _kernel() (triton is optional): ``tl`` is triton.language. Annotations stay
# strings (``from __future__ import annotations``), so ``tl.constexpr`` needs no triton at import.
tl = None


# --- the kernel (decorated with @triton.jit on first use) ------------------------------------


def layernorm_modulate_kernel(
    X, W, B, SCALE, SHIFT, Y,
    M, N, S, stride_x, stride_y, scale_sb, scale_ss, shift_sb, shift_ss, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_MOD: tl.constexpr,
    BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """X, Y: [M, N] rows (M = B * S tokens; row strides stride_x, stride_y; unit column stride).
    W, B: [N]. SCALE, SHIFT: row r reads r // S * s*_sb + r % S * s*_ss (0 strides broadcast).
    Grid: (cdiv(M, ROWS),); each program normalises ROWS whole rows (BLOCK_N >= N)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.reduce(x, 1, tl.standard._sum_combine) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.reduce(xc * xc, 1, tl.standard._sum_combine) / N
    y = xc * (1.0 / tl.sqrt(var + eps))[:, None]
    if HAS_W:
        y = y * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_MOD:
        b = rows // S
        s = rows % S
        sc = tl.load(SCALE + (b * scale_sb + s * scale_ss)[:, None] + cols[None, :], mask=mask, other=0.0)
        sh = tl.load(SHIFT + (b * shift_sb + s * shift_ss)[:, None] + cols[None, :], mask=mask, other=0.0)
        y = y * (1.0 + sc.to(tl.float32)) + sh.to(tl.float32)
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@lazy_kernel
def _kernel() -> Built:
    import triton

    autotuned = triton.autotune(
        configs=[triton.Config({"ROWS": r}, num_warps=w) for r, w in CONFIGS], key=["M", "N"]
    )(triton.jit(layernorm_modulate_kernel))
    return Built(triton.jit(layernorm_modulate_kernel), autotuned)


# --- wrapper: check, allocate, launch --------------------------------------------------------


def layernorm_modulate_triton(x, weight, bias, scale, shift, eps: float) -> torch.Tensor:
    """The Triton kernel on ``x`` ``[..., N]`` (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    import triton

    from sol.kernels._triton import interpreting

    n = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (n,):
            raise ValueError(f"layernorm_modulate: {name} of shape {tuple(t.shape)}, expected ({n},)")
    if (scale is None) != (shift is None):
        raise ValueError("layernorm_modulate: give both scale and shift, or neither")
    x3 = as_3d(x)
    x2 = as_rows(x3)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    has_mod = scale is not None
    if has_mod:
        scale, sc_b, sc_s = modulation_rows(scale, x3)
        shift, sh_b, sh_s = modulation_rows(shift, x3)
    else:
        scale = shift = x2
        sc_b = sc_s = sh_b = sh_s = 0
    built = _kernel()
    args = (
        x2, weight if weight is not None else x2, bias if bias is not None else x2, scale, shift, y,
        m, n, x3.shape[1], x2.stride(0), y.stride(0), sc_b, sc_s, sh_b, sh_s, float(eps),
    )  # fmt: skip
    meta = dict(HAS_W=weight is not None, HAS_B=bias is not None, HAS_MOD=has_mod, BLOCK_N=row_block(n))
    if interpreting():
        built.plain[(triton.cdiv(m, INTERPRETER_ROWS),)](*args, **meta, ROWS=INTERPRETER_ROWS)
    else:
        built.autotuned[lambda meta: (triton.cdiv(m, meta["ROWS"]),)](*args, **meta)
    return y.view(x.shape)


# --- float32 torch reference -----------------------------------------------------------------


def layernorm_modulate_reference(x, weight, bias, scale, shift, eps: float) -> torch.Tensor:
    """``(LN(x) * (1 + scale) + shift)`` in float32, cast to ``x``'s dtype.

    >>> x = torch.randn(2, 3, 8)
    >>> layernorm_modulate_reference(x, None, None, None, None, 1e-6).shape
    torch.Size([2, 3, 8])
    """
    w = weight.float() if weight is not None else None
    b = bias.float() if bias is not None else None
    y = F.layer_norm(x.float(), (x.shape[-1],), w, b, eps)
    if scale is not None:
        y = y * (1 + scale.float()) + shift.float()
    return y.to(x.dtype)


# --- the op ------------------------------------------------------------------------------------


@torch.library.custom_op("sol::layernorm_modulate", mutates_args=())
def layernorm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """Fused LayerNorm + adaLN modulate (Triton where it runs, else the float32 reference).

    >>> torch.ops.sol.layernorm_modulate(torch.randn(1, 4, 8), None, None, None, None, 1e-6).shape
    torch.Size([1, 4, 8])
    """
    if use_triton(x):
        return layernorm_modulate_triton(x, weight, bias, scale, shift, eps)
    return layernorm_modulate_reference(x, weight, bias, scale, shift, eps)


@layernorm_modulate.register_fake
def _(x, weight, bias, scale, shift, eps):
    return torch.empty_like(x)
