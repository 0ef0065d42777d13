"""Block-sparse attention over tiles as one Triton kernel (a flash-attention loop over kept tiles).

Same contract as :func:`sol.skills.sparse_attention.kernels.attend_gather`: tokens in tile order
``[B, H, n, T, D]``, a tile mask ``[G, n, n]``. One program computes one query tile of one (batch,
head): it walks the key tiles its row keeps (an index list, so skipped tiles cost nothing, not even
a mask test), with the online softmax of flash attention, in float32.

Triton is optional (the ``gpu`` extra) and imported on first use; the kernel runs on CUDA tensors,
and on CPU tensors under ``TRITON_INTERPRET=1`` (the tests; there the interpreter costs ~ms per
program, so only small shapes). Tile sizes and head dims are padded to powers of two >= 16 inside
the kernel (``tl.dot``'s minimum); padded lanes are masked.

Row sums/maxima use ``tl.reduce`` with triton's own combiners (see ``sol.kernels._triton``: the
interpreter refuses ``tl.sum`` when triton was imported before ``TRITON_INTERPRET`` was set).
"""

from __future__ import annotations

import torch

from sol.kernels._triton import Built, lazy_kernel, row_block

# Bound on first use (triton is optional): ``tl`` is triton.language.
tl = None


def block_sparse_attention_kernel(
    Q, K, V, Out, KB, IDX, CNT,
    n_tiles, max_keys, groups, scale,
    T: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Q, K, V, Out: [BH, n, T, D] contiguous. KB: [n, T] additive key bias (padding: -inf).
    IDX: [G, n, max_keys] int32 kept key tiles; CNT: [G, n] int32 how many. Row group g = bh % G.
    Grid: (n, BH)."""
    i = tl.program_id(0)
    bh = tl.program_id(1)
    g = bh % groups
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    t_ok = offs_t < T
    io_mask = t_ok[:, None] & (offs_d < D)[None, :]
    tile_off = offs_t[:, None] * D + offs_d[None, :]
    q = tl.load(Q + (bh * n_tiles + i) * T * D + tile_off, mask=io_mask, other=0.0).to(tl.float32)
    q = q * scale
    m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_T], 0.0, tl.float32)
    acc = tl.full([BLOCK_T, BLOCK_D], 0.0, tl.float32)
    row = g * n_tiles + i
    count = tl.load(CNT + row)
    for j in range(0, count):
        kt = tl.load(IDX + row * max_keys + j)
        base = (bh * n_tiles + kt) * T * D
        k = tl.load(K + base + tile_off, mask=io_mask, other=0.0).to(tl.float32)
        v = tl.load(V + base + tile_off, mask=io_mask, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k))
        if HAS_BIAS:
            kb = tl.load(KB + kt * T + offs_t, mask=t_ok, other=float("-inf"))
            s = s + kb[None, :]
        else:
            s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.reduce(s, 1, tl.standard._elementwise_max))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.reduce(p, 1, tl.standard._sum_combine)
        acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(Out + (bh * n_tiles + i) * T * D + tile_off, out.to(Out.dtype.element_ty), mask=io_mask)


@lazy_kernel
def _kernel() -> Built:
    import triton

    jitted = triton.jit(block_sparse_attention_kernel)
    return Built(jitted, jitted, {})


def attend_triton(qt, kt, vt, mask, tiling, *, scale: float | None = None) -> torch.Tensor:
    """The Triton kernel; same arguments and result as ``attend_gather``.

    >>> out = attend_triton(q, k, v, mask, tiling)  # CUDA, or CPU under TRITON_INTERPRET=1  # doctest: +SKIP
    """
    b, h, n, t, d = qt.shape
    g = mask.shape[0]
    if g not in (1, h, b * h):
        raise ValueError(f"a tile mask for {g} groups does not fit {b} batch rows x {h} heads")
    if g == h and b > 1:
        mask = mask.repeat(b, 1, 1)
        g = b * h
    counts = mask.sum(-1).to(torch.int32)
    max_keys = max(1, int(counts.max()))
    idx = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[..., :max_keys].to(torch.int32)
    q, k, v = (x.reshape(b * h, n, t, d).contiguous() for x in (qt, kt, vt))
    out = torch.empty_like(q)
    has_bias = tiling.key_bias is not None
    kb = tiling.key_bias.to(q.device, torch.float32).contiguous() if has_bias else q.new_zeros(1)
    built = _kernel()
    built.plain[(n, b * h)](
        q, k, v, out, kb, idx.contiguous().to(q.device), counts.contiguous().to(q.device),
        n, max_keys, g, float(scale if scale is not None else d**-0.5),
        T=t, D=d, BLOCK_T=row_block(t), BLOCK_D=row_block(d), HAS_BIAS=has_bias,
    )  # fmt: skip
    return out.view(b, h, n, t, d)
