"""Triton ``grouped_gram``: the smaller of every group's two Grams, zero-padded to ``[G, size, size]``.

Maths (as :func:`prism_kernels.reference.vendi.grouped_gram`): group g owns the rows
``order[offsets[g]:offsets[g+1]]`` of ``X [N, d]``, n_g of them; with

    y_r = x_r / ||x_r||_2   (normalize; a zero row stays zero, a NaN / Inf row stays non-finite)
    y_r = x_r               (otherwise)

its Gram is ``Y_g Y_g^T`` (n_g x n_g, "row form") when n_g <= d, else ``Y_g^T Y_g`` (d x d, "column
form"): ``m_g = min(n_g, d)`` on a side; the rest of its ``size x size`` slot stays zero.

Two kernels:

1. ``_inverse_norm_kernel`` (normalize only): one program per ``BLOCK_R`` rows computes
   ``s_r = 1 / ||x_r||`` in float64 (inputs upcast in-kernel); 0 for a zero row, so it stays zero.
   A NaN row gets a NaN ``s_r`` and an infinite one 0 (``inf * 0`` is NaN): either turns NaN, as
   in the reference.
2. ``_grouped_gram_kernel``: one program per (group g, lower-triangle tile pair ``(I, J)``, I >= J) of
   ``BLOCK_T x BLOCK_T`` outputs, on a 1-D grid of ``G * P`` programs (P tile pairs; the other grid
   axes stop at 65535); programs whose tile starts at or beyond ``m_g`` exit at once. The
   tile is :func:`_gram_tile`, float64 products of operands upcast in-kernel (bf16 / fp16 / fp32
   need no host copy), reduced ``BLOCK_K`` at a time over the d columns (row form) or the n_g rows
   (column form). The program stores the tile and its transpose (the Gram is symmetric), so each
   output entry has one owner and no atomics are needed.

:mod:`.grouped_frobenius_sq` reduces the same tiles to ``||Gram_g||_F^2`` instead of storing them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._checks import FLOAT_DTYPES, describe

BLOCK_R = 16  # rows per program of the inverse-norm kernel
BLOCK_D = 64  # columns per step of the inverse-norm kernel
BLOCK_T = 32  # output tile side
BLOCK_K = 8  # reduction step: the float64 product is BLOCK_T x BLOCK_T x BLOCK_K


@triton.jit
def _inverse_norm_kernel(x_ptr, scale_ptr, n, d, stride_r, stride_c, BLOCK_R: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rm = rows < n
    sq = tl.zeros([BLOCK_R], dtype=tl.float64)
    for c0 in range(0, d, BLOCK_D):
        cols = c0 + tl.arange(0, BLOCK_D)
        v = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
                    mask=rm[:, None] & (cols < d)[None, :], other=0.0).to(tl.float64)
        sq += tl.sum(v * v, axis=1)
    zero = sq == 0
    tl.store(scale_ptr + rows, tl.where(zero, 0.0, 1.0 / tl.sqrt(tl.where(zero, 1.0, sq))), mask=rm)


@triton.jit
def _gram_tile(x_ptr, order_ptr, scale_ptr, start, n_g, d, ii, jj, stride_r, stride_c,
               NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    """Entries ``(ii, jj)`` [BLOCK_T, BLOCK_T] float64 of group ``[start, start + n_g)``'s Gram; zero
    outside ``m_g x m_g``."""
    acc = tl.zeros([BLOCK_T, BLOCK_T], dtype=tl.float64)
    if n_g <= d:
        # row form Y Y^T: tile rows are group rows ii, jj; the reduction runs over the d columns
        im = ii < n_g
        jm = jj < n_g
        row_i = tl.load(order_ptr + start + ii, mask=im, other=0)
        row_j = tl.load(order_ptr + start + jj, mask=jm, other=0)
        if NORMALIZE:
            s_i = tl.load(scale_ptr + row_i, mask=im, other=0.0)
            s_j = tl.load(scale_ptr + row_j, mask=jm, other=0.0)
        for c0 in range(0, d, BLOCK_K):
            cols = c0 + tl.arange(0, BLOCK_K).to(tl.int64)
            cm = cols < d
            a = tl.load(x_ptr + row_i[:, None] * stride_r + cols[None, :] * stride_c,
                        mask=im[:, None] & cm[None, :], other=0.0).to(tl.float64)  # [T, K]
            b = tl.load(x_ptr + row_j[:, None] * stride_r + cols[None, :] * stride_c,
                        mask=jm[:, None] & cm[None, :], other=0.0).to(tl.float64)  # [T, K]
            if NORMALIZE:
                a = a * s_i[:, None]
                b = b * s_j[:, None]
            acc += tl.sum(a[:, None, :] * b[None, :, :], axis=2)
    else:
        # column form Y^T Y: tile rows are columns ii, jj of X; the reduction runs over the n_g rows
        im = ii < d
        jm = jj < d
        for k0 in range(0, n_g, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
            km = k < n_g
            rows = tl.load(order_ptr + start + k, mask=km, other=0)
            a = tl.load(x_ptr + rows[:, None] * stride_r + ii[None, :] * stride_c,
                        mask=km[:, None] & im[None, :], other=0.0).to(tl.float64)  # [K, T]
            b = tl.load(x_ptr + rows[:, None] * stride_r + jj[None, :] * stride_c,
                        mask=km[:, None] & jm[None, :], other=0.0).to(tl.float64)  # [K, T]
            if NORMALIZE:
                s = tl.load(scale_ptr + rows, mask=km, other=0.0)
                a = a * s[:, None]
                b = b * s[:, None]
            acc += tl.sum(a[:, :, None] * b[:, None, :], axis=0)
    return acc


@triton.jit
def _program_tile(offsets_ptr, tile_i_ptr, tile_j_ptr, d, pairs, BLOCK_T: tl.constexpr):
    """This program's group g (rows from ``start``, ``n_g`` of them, Gram side ``m = min(n_g, d)``)
    and tile pair ``(ti, tj)`` with its output indices ``ii``, ``jj``; the tile is all padding
    when ``ti * BLOCK_T >= m`` (tile J <= I starts inside whenever I does)."""
    g = tl.program_id(0).to(tl.int64) // pairs
    pair = tl.program_id(0) % pairs
    start = tl.load(offsets_ptr + g)
    n_g = tl.load(offsets_ptr + g + 1) - start
    ti = tl.load(tile_i_ptr + pair).to(tl.int64)
    tj = tl.load(tile_j_ptr + pair).to(tl.int64)
    ii = ti * BLOCK_T + tl.arange(0, BLOCK_T)
    jj = tj * BLOCK_T + tl.arange(0, BLOCK_T)
    return g, pair, start, n_g, tl.minimum(n_g, d), ti, tj, ii, jj


@triton.jit
def _grouped_gram_kernel(x_ptr, order_ptr, offsets_ptr, scale_ptr, tile_i_ptr, tile_j_ptr, out_ptr,
                         d, size, pairs, stride_r, stride_c, NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    g, pair, start, n_g, m, ti, tj, ii, jj = _program_tile(offsets_ptr, tile_i_ptr, tile_j_ptr, d, pairs, BLOCK_T)
    if ti * BLOCK_T >= m:
        return
    acc = _gram_tile(x_ptr, order_ptr, scale_ptr, start, n_g, d, ii, jj, stride_r, stride_c,
                     NORMALIZE, BLOCK_T, BLOCK_K)
    inside = (ii[:, None] < m) & (jj[None, :] < m)
    slot = out_ptr + g * size * size
    tl.store(slot + ii[:, None] * size + jj[None, :], acc, mask=inside)
    tl.store(slot + jj[None, :] * size + ii[:, None], acc, mask=inside)  # the mirrored tile (J, I)


def check_grouped_args(op: str, x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                       normalize: bool) -> torch.Tensor:
    """Validates the grouped ops' common arguments; returns the group sizes ``n_g`` [G] int64."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: x must be a float16 / bfloat16 / float32 / float64 [N, d] tensor, "
                         f"got {describe(x)}")
    n = x.shape[0]
    if not isinstance(order, torch.Tensor) or order.dtype != torch.int64 or order.shape != (n,):
        raise ValueError(f"{op}: order must be an int64 [N] = [{n}] tensor, got {describe(order)}")
    if not isinstance(offsets, torch.Tensor) or offsets.dtype != torch.int64 or offsets.dim() != 1 \
            or offsets.shape[0] < 1:
        raise ValueError(f"{op}: offsets must be an int64 [G + 1] tensor, got {describe(offsets)}")
    if order.device != x.device or offsets.device != x.device:
        raise ValueError(f"{op}: order and offsets must be on x's device {x.device}, got "
                         f"{order.device} and {offsets.device}")
    if not isinstance(normalize, bool):
        raise ValueError(f"{op}: normalize must be a bool, got {normalize!r}")
    counts = offsets[1:] - offsets[:-1]  # [G]
    if int(offsets[0]) != 0 or int(offsets[-1]) != n or bool((counts < 0).any()):
        raise ValueError(f"{op}: offsets must be non-decreasing from 0 to N = {n}")
    # the kernels gather rows through order: an index outside [0, N) would read out of bounds
    if n and (int(order.min()) < 0 or int(order.max()) >= n):
        raise ValueError(f"{op}: order must hold row indices in [0, N) = [0, {n})")
    return counts


def row_scales(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``[N]`` float64 ``1 / ||x_r||`` (0 for a zero row) under normalize, else x itself (a placeholder
    pointer the kernels never read)."""
    if not normalize:
        return x
    n, d = x.shape
    scale = torch.empty(n, dtype=torch.float64, device=x.device)
    _inverse_norm_kernel[(triton.cdiv(n, BLOCK_R),)](x, scale, n, d, x.stride(0), x.stride(1),
                                                     BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return scale


def lower_tile_pairs(side: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile indices ``(I [P], J [P])`` int32 of the lower-triangle tile pairs of a ``side x side`` Gram."""
    tiles = triton.cdiv(side, BLOCK_T)
    pairs = [(i, j) for i in range(tiles) for j in range(i + 1)]
    return (torch.tensor([p[0] for p in pairs], dtype=torch.int32, device=device),
            torch.tensor([p[1] for p in pairs], dtype=torch.int32, device=device))


def grouped_gram(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor, size: int,
                         normalize: bool) -> torch.Tensor:
    """Validate, launch both kernels; returns ``[G, size, size]`` float64."""
    counts = check_grouped_args("grouped_gram", x, order, offsets, normalize)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"grouped_gram: size must be an int >= 1, got {size!r}")
    d = x.shape[1]
    groups = counts.shape[0]
    largest = int(counts.clamp(max=d).max()) if groups else 0
    if size < largest:
        raise ValueError(f"grouped_gram: size must be >= max_g min(n_g, d) = {largest}, got {size}")
    out = torch.zeros(groups, size, size, dtype=torch.float64, device=x.device)
    if largest == 0:
        return out
    scale = row_scales(x, normalize)
    tile_i, tile_j = lower_tile_pairs(largest, x.device)
    pairs = tile_i.shape[0]
    _grouped_gram_kernel[(groups * pairs,)](
        x, order, offsets, scale, tile_i, tile_j, out, d, size, pairs, x.stride(0), x.stride(1),
        NORMALIZE=normalize, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K)
    return out
