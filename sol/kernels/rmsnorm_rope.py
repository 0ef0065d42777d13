"""RMSNorm on Q or K (across every head) + interleaved RoPE, fused.

Wan's self-attention normalises the projected query and key over all heads at once
(``rms_norm_across_heads``), splits heads, and rotates interleaved pairs ``(x[2i], x[2i+1])``
by the angle whose cosine is ``freqs_cos[..., 2i]`` and sine ``freqs_sin[..., 2i+1]``
(``WanAttnProcessor.apply_rotary_emb``). Eagerly that is about a dozen passes (square, mean,
rsqrt, scale, weight, strided slices, four multiplies, two adds, two strided stores); fused it
is one read of the row and one write. Math in float32 (the eager RoPE runs in float64 because
Wan's frequency tables are float64; the two agree to ~1e-7).

``torch.ops.sol.rmsnorm_rope(x [B, S, H*D], weight [H*D], eps, heads, cos, sin) -> [B, S, H, D]``
with ``cos``/``sin`` ``[1 or B, S, 1, D]`` (Wan's rotary table).
"""

from __future__ import annotations

import torch

from sol.kernels._triton import Built, lazy_kernel, row_block, use_triton

# --- autotune configs ------------------------------------------------------------------------
CONFIGS = [(1, 4), (2, 4), (4, 8), (8, 8)]  # (ROWS, num_warps)
INTERPRETER_ROWS = 64


# Bound on first use by _kernel() (triton is optional): ``tl`` is triton.language. Annotations stay
# strings (``from __future__ import annotations``), so ``tl.constexpr`` needs no triton at import.
tl = None


# --- the kernel (decorated with @triton.jit on first use) ------------------------------------


def rmsnorm_rope_kernel(
    X, W, COS, SIN, Y,
    M, HD, D, S, stride_x, cos_sb, cos_ss, sin_sb, sin_ss, eps,
    BLOCK_P: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """X: [M, HD] rows (M = B * S tokens, HD = heads * D, row stride stride_x). W: [HD].
    COS, SIN: [B|1, S, D] (strides cos_sb/cos_ss, 0 where broadcast; unit column stride).
    Y: [M, HD] contiguous (= [B, S, H, D]). Pair p of a row is columns (2p, 2p + 1), at
    position d = 2p % D inside its head. Grid: (cdiv(M, ROWS),); BLOCK_P >= HD / 2."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    pairs = tl.arange(0, BLOCK_P)
    rmask = rows < M
    pmask = pairs < HD // 2
    mask = rmask[:, None] & pmask[None, :]
    even = rows[:, None] * stride_x + 2 * pairs[None, :]
    x1 = tl.load(X + even, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + even + 1, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(
        (tl.reduce(x1 * x1, 1, tl.standard._sum_combine) + tl.reduce(x2 * x2, 1, tl.standard._sum_combine))
        / HD
        + eps
    )
    w1 = tl.load(W + 2 * pairs, mask=pmask, other=0.0).to(tl.float32)
    w2 = tl.load(W + 2 * pairs + 1, mask=pmask, other=0.0).to(tl.float32)
    x1 = x1 * rstd[:, None] * w1[None, :]
    x2 = x2 * rstd[:, None] * w2[None, :]
    b = rows // S
    s = rows % S
    d = (2 * pairs) % D
    cos = tl.load(COS + (b * cos_sb + s * cos_ss)[:, None] + d[None, :], mask=mask, other=0.0)
    sin = tl.load(SIN + (b * sin_sb + s * sin_ss)[:, None] + d[None, :] + 1, mask=mask, other=0.0)
    cos = cos.to(tl.float32)
    sin = sin.to(tl.float32)
    out = rows[:, None] * HD + 2 * pairs[None, :]
    tl.store(Y + out, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + out + 1, (x1 * sin + x2 * cos).to(Y.dtype.element_ty), mask=mask)


@lazy_kernel
def _kernel() -> Built:
    import triton

    autotuned = triton.autotune(
        configs=[triton.Config({"ROWS": r}, num_warps=w) for r, w in CONFIGS], key=["M", "HD"]
    )(triton.jit(rmsnorm_rope_kernel))
    return Built(triton.jit(rmsnorm_rope_kernel), autotuned)


# --- wrapper: check, allocate, launch --------------------------------------------------------


def _table(t: torch.Tensor, b: int, s: int, d: int) -> tuple[torch.Tensor, int, int]:
    """A rotary table ``[1|B, S, 1, D]`` (or ``[1|B, S, D]``) as ``(tensor, stride_b, stride_s)``."""
    if t.ndim == 4:
        t = t.squeeze(2)
    if t.ndim != 3 or t.shape[1] != s or t.shape[2] != d or t.shape[0] not in (1, b):
        raise ValueError(
            f"rmsnorm_rope: rotary table of shape {tuple(t.shape)}, expected [1|{b}, {s}, 1, {d}]"
        )
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t, (t.stride(0) if t.shape[0] == b and b > 1 else 0), t.stride(1)


def _check(x, weight, heads: int, cos, sin) -> tuple[int, int, int, int]:
    if x.ndim != 3:
        raise ValueError(f"rmsnorm_rope: x must be [B, S, H*D], got {tuple(x.shape)}")
    b, s, hd = x.shape
    if hd % heads or (hd // heads) % 2:
        raise ValueError(f"rmsnorm_rope: {hd} channels do not split into {heads} heads of an even size")
    if weight.shape != (hd,):
        raise ValueError(f"rmsnorm_rope: weight of shape {tuple(weight.shape)}, expected ({hd},)")
    return b, s, hd, hd // heads


def rmsnorm_rope_triton(x, weight, eps: float, heads: int, cos, sin) -> torch.Tensor:
    """The Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    import triton

    from sol.kernels._triton import interpreting

    b, s, hd, d = _check(x, weight, heads, cos, sin)
    x2 = x.reshape(b * s, hd)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    cos, cos_b, cos_s = _table(cos, b, s, d)
    sin, sin_b, sin_s = _table(sin, b, s, d)
    y = torch.empty((b, s, heads, d), dtype=x.dtype, device=x.device)
    m = b * s
    built = _kernel()
    args = (x2, weight, cos, sin, y, m, hd, d, s, x2.stride(0), cos_b, cos_s, sin_b, sin_s, float(eps))
    block = row_block(hd // 2)
    if interpreting():
        built.plain[(triton.cdiv(m, INTERPRETER_ROWS),)](*args, BLOCK_P=block, ROWS=INTERPRETER_ROWS)
    else:
        built.autotuned[lambda meta: (triton.cdiv(m, meta["ROWS"]),)](*args, BLOCK_P=block)
    return y


# --- float32 torch reference -----------------------------------------------------------------


def rmsnorm_rope_reference(x, weight, eps: float, heads: int, cos, sin) -> torch.Tensor:
    """RMSNorm over the last dim, split into heads, interleaved RoPE; float32, cast to ``x``'s dtype.

    >>> x, w = torch.randn(1, 3, 8), torch.ones(8)
    >>> rmsnorm_rope_reference(x, w, 1e-6, 2, torch.ones(1, 3, 1, 4), torch.zeros(1, 3, 1, 4)).shape
    torch.Size([1, 3, 2, 4])
    """
    _check(x, weight, heads, cos, sin)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    y = y.unflatten(-1, (heads, -1))
    x1, x2 = y[..., 0::2], y[..., 1::2]
    c, s = cos.float()[..., 0::2], sin.float()[..., 1::2]
    out = torch.empty_like(y)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.to(x.dtype)


# --- the op ------------------------------------------------------------------------------------


@torch.library.custom_op("sol::rmsnorm_rope", mutates_args=())
def rmsnorm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, heads: int, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Fused RMSNorm (across heads) + interleaved RoPE: ``[B, S, H*D] -> [B, S, H, D]``.

    >>> x, w, c, s = torch.randn(1, 3, 8), torch.ones(8), torch.ones(1, 3, 1, 4), torch.zeros(1, 3, 1, 4)
    >>> torch.ops.sol.rmsnorm_rope(x, w, 1e-6, 2, c, s).shape
    torch.Size([1, 3, 2, 4])
    """
    if use_triton(x):
        return rmsnorm_rope_triton(x, weight, eps, heads, cos, sin)
    return rmsnorm_rope_reference(x, weight, eps, heads, cos, sin)


@rmsnorm_rope.register_fake
def _(x, weight, eps, heads, cos, sin):
    b, s, hd = x.shape
    return x.new_empty((b, s, heads, hd // heads))
