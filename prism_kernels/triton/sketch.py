"""Triton ``sketch``: rows ``X [B, P]`` times a random matrix generated on the fly, ``[B, k]`` fp32.

Maths (the stream and the matrix are defined in :mod:`prism_kernels.reference.sketch` and
``csrc/include/prism/sketch.h``; this kernel reproduces them bit for bit):

    out[b, i] = scale * sum_j X[b, j] * M[i, offset + j]

Every program owns a ``[BLOCK_B, BLOCK_K]`` tile of the output and walks the input in steps of
``BLOCK_P`` coordinates: it generates the ``[BLOCK_P, BLOCK_K]`` tile of ``M^T`` from
``tl.philox(seed, j_lo, j_hi, group, block)`` with uint32 counter words (an int64 counter would
select Triton's Philox4x64 variant) and accumulates ``tl.dot(x, tile)`` in fp32 with
``input_precision="ieee"`` (no TF32). Rademacher entries are +-1, Gaussian entries come from the
float32 Box-Muller of the reference (IEEE ``div_rn``/``sqrt_rn``, launched with
``enable_fp_fusion=False`` so nothing is contracted into an FMA), sparse entries are the sum over
the ``S`` nonzeros of a column of ``sign_t * [row_t == i]``. Inputs are upcast to fp32 in-kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _gaussian_table as T

BLOCK_B = 16
BLOCK_K = 32  # must divide 128 (one Rademacher Philox group per program)
BLOCK_P = 32
_KINDS = {"rademacher": 0, "gaussian": 1, "sparse": 2}
# The Gaussian constants (csrc/include/prism/gaussian_table.h), as constexpr globals a kernel may read.
_LOG, _LOG_N = tl.constexpr(T.LOG_SERIES), tl.constexpr(len(T.LOG_SERIES))
_SIN, _SIN_N = tl.constexpr(T.SIN_SERIES), tl.constexpr(len(T.SIN_SERIES))
_COS, _COS_N = tl.constexpr(T.COS_SERIES), tl.constexpr(len(T.COS_SERIES))
_SQRT2 = tl.constexpr(T.SQRT2)
_LN2 = tl.constexpr(T.LN2)
_TWO_POW_M24 = tl.constexpr(T.TWO_POW_M24)
_TWO_POW_M22 = tl.constexpr(T.TWO_POW_M22)
_HALF_PI = tl.constexpr(T.HALF_PI)


@triton.jit
def _words(seed, j, group, block):
    """Philox4x32-10 words of counter (j low, j high, group, block); j int64, group/block uint32."""
    c0 = (j & 0xFFFFFFFF).to(tl.uint32)
    c1 = (j >> 32).to(tl.uint32)
    return tl.philox(seed, c0, c1, group, block)


@triton.jit
def _log_unit(u):
    bits = u.to(tl.uint32, bitcast=True)
    e = (bits >> 23).to(tl.int32) - 127
    m = ((bits & 0x007FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    big = m > _SQRT2
    m = tl.where(big, m * 0.5, m)
    e = tl.where(big, e + 1, e)
    s = tl.math.div_rn(m - 1.0, m + 1.0)
    s2 = s * s
    p = s2 * 0.0 + _LOG[0]  # Horner, highest power first (prism/sketch.h horner)
    for i in tl.static_range(1, _LOG_N):
        p = p * s2 + _LOG[i]
    return e.to(tl.float32) * _LN2 + (2.0 * s) * p


@triton.jit
def _box_muller(a, b, odd):
    u = ((a >> 8) + 1).to(tl.float32) * _TWO_POW_M24
    radius = tl.math.sqrt_rn(-2.0 * _log_unit(u))
    quadrant = b >> 30
    x = ((b >> 8) & 0x3FFFFF).to(tl.float32) * _TWO_POW_M22 * _HALF_PI
    x2 = x * x
    sp = x2 * 0.0 + _SIN[0]
    for i in tl.static_range(1, _SIN_N):
        sp = sp * x2 + _SIN[i]
    sn = x * sp
    cs = x2 * 0.0 + _COS[0]
    for i in tl.static_range(1, _COS_N):
        cs = cs * x2 + _COS[i]
    q_odd = (quadrant & 1) == 1
    cos_part = tl.where(q_odd, sn, cs)
    sin_part = tl.where(q_odd, cs, sn)
    cos_part = tl.where((quadrant == 1) | (quadrant == 2), -cos_part, cos_part)
    sin_part = tl.where(quadrant >= 2, -sin_part, sin_part)
    return radius * tl.where(odd, sin_part, cos_part)


@triton.jit
def _dense_tile(seed, block, j, i, col0, KIND: tl.constexpr):
    """Unscaled M[i, j] for j [BP, 1] int64 and i [1, BK] int64 -> [BP, BK] float32.

    Rademacher: the BK columns (col0 .. col0 + BK - 1, BK dividing 128) share one Philox group, so
    one call per coordinate ([BP, 1]) gives all their signs."""
    if KIND == 0:
        w0, w1, w2, w3 = _words(seed, j, (j * 0 + (col0 >> 7)).to(tl.uint32), block)
        q = (i >> 5) & 3
        word = tl.where(q == 0, w0, tl.where(q == 1, w1, tl.where(q == 2, w2, w3)))
        bit = (word >> (i & 31).to(tl.uint32)) & 1
        return 1.0 - 2.0 * bit.to(tl.float32)
    else:
        w0, w1, w2, w3 = _words(seed, j, (i >> 2).to(tl.uint32), block)
        first = ((i >> 1) & 1) == 0
        a = tl.where(first, w0, w2)
        b = tl.where(first, w1, w3)
        return _box_muller(a, b, (i & 1) == 1)


@triton.jit
def _sparse_tile(seed, block, j, i, k, S: tl.constexpr):
    """Unscaled sparse-JL M[i, j]: sum over the S nonzeros of column j of sign_t * [row_t == i]."""
    tile = (j + i).to(tl.float32) * 0.0
    for g in tl.static_range((S + 3) // 4):
        w0, w1, w2, w3 = _words(seed, j, (j * 0 + g).to(tl.uint32), block)
        for q in tl.static_range(4):
            if g * 4 + q < S:
                if q == 0:
                    w = w0
                elif q == 1:
                    w = w1
                elif q == 2:
                    w = w2
                else:
                    w = w3
                row = (((w >> 1).to(tl.uint64) * k) >> 31).to(tl.int64)
                sign = 1.0 - 2.0 * (w & 1).to(tl.float32)
                tile += tl.where(row == i, sign, 0.0)
    return tile


@triton.jit
def _sketch_kernel(rows_ptr, out_ptr, batch, width, k, seed, block, offset, scale,
                   KIND: tl.constexpr, S: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                   BLOCK_P: tl.constexpr):
    col0 = tl.program_id(0).to(tl.int64) * BLOCK_K
    offs_k = col0 + tl.arange(0, BLOCK_K)
    offs_b = tl.program_id(1).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_p = tl.arange(0, BLOCK_P).to(tl.int64)
    block32 = (offs_p[:, None] * 0 + block).to(tl.uint32)
    i = offs_k[None, :]
    acc = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
    for p0 in range(0, width, BLOCK_P):
        p = p0 + offs_p
        x = tl.load(rows_ptr + offs_b[:, None] * width + p[None, :],
                    mask=(offs_b[:, None] < batch) & (p[None, :] < width), other=0.0).to(tl.float32)
        j = offset + p[:, None]
        if KIND == 2:
            tile = _sparse_tile(seed, block32, j, i, k, S)
        else:
            tile = _dense_tile(seed, block32, j, i, col0, KIND)
        acc += tl.dot(x, tile, input_precision="ieee")
    tl.store(out_ptr + offs_b[:, None] * k + offs_k[None, :], acc * scale,
             mask=(offs_b[:, None] < batch) & (offs_k[None, :] < k))


def sketch(rows: torch.Tensor, k: int, kind: str, seed: int, block: int, offset: int, s: int,
                   scale: float) -> torch.Tensor:
    """Launch :func:`_sketch_kernel`; returns ``[B, k]`` float32 on ``rows.device``."""
    batch, width = rows.shape
    out = torch.empty(batch, k, dtype=torch.float32, device=rows.device)
    if batch == 0:
        return out
    rows = rows.contiguous()
    seed = int(seed) & ((1 << 64) - 1)
    if seed >= 1 << 63:  # the kernel argument is int64; tl.philox reinterprets it as uint64
        seed -= 1 << 64
    grid = (triton.cdiv(k, BLOCK_K), triton.cdiv(batch, BLOCK_B))
    _sketch_kernel[grid](rows, out, batch, width, k, seed, int(block), int(offset),
                         float(torch.tensor(scale, dtype=torch.float32)),
                         KIND=_KINDS[kind], S=int(s) if kind == "sparse" else 1, BLOCK_B=BLOCK_B,
                         BLOCK_K=BLOCK_K, BLOCK_P=BLOCK_P, enable_fp_fusion=False)
    return out
