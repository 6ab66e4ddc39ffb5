"""Triton ``gram_accumulate``: ``gram[i, j] += sum_r y_ri y_rj`` on the lower triangle (i >= j).

Maths (as :func:`prism_kernels.reference.vendi.gram_accumulate`): for rows ``x_r`` of ``X [n, d]``
and weights ``w_r``,

    s_r  = sqrt(w_r) / ||x_r||_2   (normalize)   or   sqrt(w_r)
    y_r  = s_r * x_r

Two kernels:

1. ``_row_scale_kernel``: one program per ``BLOCK_R`` rows computes ``||x_r||^2`` in float64 (inputs
   upcast in-kernel, so bf16 / fp16 need no host copy) and a per-row status: 1 for a NaN / Inf
   value, 2 for a zero norm under ``normalize``. The launcher stops there if any row is bad, so
   ``gram`` is left unchanged.
2. ``_gram_kernel``: one program per lower-triangle tile pair ``(I, J)``, ``I >= J``, of
   ``BLOCK_T x BLOCK_T`` outputs; it walks the rows ``BLOCK_K`` at a time and adds
   ``A^T B`` (``A = Y[rows, I-tile]``, ``B = Y[rows, J-tile]``) to a float64 accumulator:
   ``EXACT``: float64 products (broadcast-multiply and sum); otherwise a float32 ``tl.dot`` with
   ``input_precision="ieee"`` (never TF32) per ``BLOCK_K = 32`` rows, so float32 rounding spans
   32 products at most. Each tile pair is owned by one program, so no atomics; only ``i >= j``
   entries are stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._checks import check_gram_op

BLOCK_R = 16
BLOCK_D = 64
BLOCK_T = 32
BLOCK_K = 32


@triton.jit
def _row_scale_kernel(x_ptr, w_ptr, scale_ptr, status_ptr, n, d, stride_r, stride_c,
                      HAS_W: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_R: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n
    # two passes: the largest magnitude of every row, then the squares of the row divided by it,
    # so that no square overflows or underflows (||x|| = big * ||x / big||, as the other backends)
    big = tl.zeros([BLOCK_R], dtype=tl.float64)
    nonfinite = tl.zeros([BLOCK_R], dtype=tl.int32)
    for k0 in range(0, d, BLOCK_D):
        cols = k0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (cols < d)[None, :]
        v = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=m, other=0.0)
        v = v.to(tl.float64)
        bad = (v != v) | (v == float("inf")) | (v == -float("inf"))
        nonfinite = tl.maximum(nonfinite, tl.max(bad.to(tl.int32), axis=1))
        big = tl.maximum(big, tl.max(tl.where(bad, 0.0, tl.abs(v)), axis=1))
    inv = 1.0 / tl.where(big > 0, big, 1.0)
    sq = tl.zeros([BLOCK_R], dtype=tl.float64)
    for k0 in range(0, d, BLOCK_D):
        cols = k0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (cols < d)[None, :]
        v = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=m, other=0.0)
        u = v.to(tl.float64) * inv[:, None]
        sq += tl.sum(u * u, axis=1)
    norm = big * tl.sqrt(sq)
    w = tl.full([BLOCK_R], 1.0, dtype=tl.float64)
    if HAS_W:
        w = tl.load(w_ptr + rows, mask=rmask, other=1.0).to(tl.float64)
    if NORMALIZE:
        # a zero (or subnormal, below 1 / DBL_MAX) norm has no finite scale: status 2
        tiny = norm < 5.562684646268003e-309
        scale = tl.sqrt(w) / tl.where(tiny, 1.0, norm)
        status = tl.where(nonfinite > 0, 1, tl.where(tiny, 2, 0))
    else:
        scale = tl.sqrt(w)
        status = tl.where(nonfinite > 0, 1, 0)
    tl.store(scale_ptr + rows, scale, mask=rmask)
    tl.store(status_ptr + rows, status.to(tl.int32), mask=rmask)


@triton.jit
def _gram_kernel(x_ptr, scale_ptr, gram_ptr, tile_i_ptr, tile_j_ptr, n, d, stride_r, stride_c,
                 EXACT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    ti = tl.load(tile_i_ptr + pid).to(tl.int64)
    tj = tl.load(tile_j_ptr + pid).to(tl.int64)
    ii = ti * BLOCK_T + tl.arange(0, BLOCK_T)
    jj = tj * BLOCK_T + tl.arange(0, BLOCK_T)
    acc = tl.zeros([BLOCK_T, BLOCK_T], dtype=tl.float64)
    for k0 in range(0, n, BLOCK_K):
        rows = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        rm = rows < n
        s = tl.load(scale_ptr + rows, mask=rm, other=0.0)
        a = tl.load(x_ptr + rows[:, None] * stride_r + ii[None, :] * stride_c,
                    mask=rm[:, None] & (ii < d)[None, :], other=0.0).to(tl.float64) * s[:, None]
        b = tl.load(x_ptr + rows[:, None] * stride_r + jj[None, :] * stride_c,
                    mask=rm[:, None] & (jj < d)[None, :], other=0.0).to(tl.float64) * s[:, None]
        if EXACT:
            acc += tl.sum(a[:, :, None] * b[:, None, :], axis=0)
        else:
            part = tl.dot(tl.trans(a.to(tl.float32)), b.to(tl.float32), input_precision="ieee")
            acc += part.to(tl.float64)
    out = (ii[:, None] < d) & (jj[None, :] < d) & (ii[:, None] >= jj[None, :])
    ptrs = gram_ptr + ii[:, None] * d + jj[None, :]
    g = tl.load(ptrs, mask=out, other=0.0)
    tl.store(ptrs, g + acc, mask=out)


def gram_accumulate(gram: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None,
                            normalize: bool, exact: bool) -> torch.Tensor:
    """Launch both kernels; returns int64 ``[2]`` = (first bad row or -1, status)."""
    check_gram_op(gram, x, weights)
    n, d = x.shape
    status = torch.tensor([-1, 0], dtype=torch.int64, device=x.device)
    if n == 0 or d == 0:
        return status
    has_w = weights is not None
    w = weights.to(device=x.device, dtype=torch.float64).contiguous() if has_w else x
    scale = torch.empty(n, dtype=torch.float64, device=x.device)
    row_status = torch.empty(n, dtype=torch.int32, device=x.device)
    _row_scale_kernel[(triton.cdiv(n, BLOCK_R),)](x, w, scale, row_status, n, d, x.stride(0), x.stride(1),
                                                  HAS_W=has_w, NORMALIZE=normalize, BLOCK_R=BLOCK_R,
                                                  BLOCK_D=BLOCK_D)
    bad = torch.nonzero(row_status)
    if bad.shape[0]:
        row = int(bad[0, 0])
        return torch.tensor([row, int(row_status[row])], dtype=torch.int64, device=x.device)
    tiles = triton.cdiv(d, BLOCK_T)
    pairs = [(i, j) for i in range(tiles) for j in range(i + 1)]
    tile_i = torch.tensor([p[0] for p in pairs], dtype=torch.int32, device=x.device)
    tile_j = torch.tensor([p[1] for p in pairs], dtype=torch.int32, device=x.device)
    _gram_kernel[(len(pairs),)](x, scale, gram, tile_i, tile_j, n, d, x.stride(0), x.stride(1),
                                EXACT=exact, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K)
    return status
