"""Triton ``grouped_frobenius_sq``: ``||Gram_g||_F^2`` of every group's Gram, nothing padded.

Maths (as :func:`prism_kernels.reference.vendi.grouped_frobenius_sq`): with the groups, the row
normalisation and the Gram of each group exactly as in :mod:`.grouped_gram`,

    fro[g] = ||Y_g^T Y_g||_F^2 = ||Y_g Y_g^T||_F^2 = sum_{I >= J} w_IJ ||Gram_g[I, J]||_F^2

over the lower-triangle tile pairs ``(I, J)``, with ``w_IJ = 2`` off the diagonal (the mirrored
tile ``(J, I)`` has the same norm) and 1 on it. ``_grouped_frobenius_kernel`` builds each tile with
:func:`.grouped_gram._gram_tile` (one program per (group, tile pair) on a 1-D grid, early exit
beyond ``m_g``) and stores its weighted sum of squares in a ``[G, P]`` float64 buffer (P tile
pairs); the launcher sums it over P. Memory: ``G * P`` float64, about ``BLOCK_T^2 / 2`` times less
than the padded ``[G, k, k]``. No atomics, so the result is deterministic. An empty group gets 0;
a NaN / Inf row makes its group's norm non-finite.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grouped_gram import (BLOCK_K, BLOCK_T, _gram_tile, _program_tile, check_grouped_args, lower_tile_pairs,
                           row_scales)


@triton.jit
def _grouped_frobenius_kernel(x_ptr, order_ptr, offsets_ptr, scale_ptr, tile_i_ptr, tile_j_ptr, partial_ptr,
                              d, pairs, stride_r, stride_c, NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr,
                              BLOCK_K: tl.constexpr):
    g, pair, start, n_g, m, ti, tj, ii, jj = _program_tile(offsets_ptr, tile_i_ptr, tile_j_ptr, d, pairs, BLOCK_T)
    if ti * BLOCK_T >= m:  # the tile is all padding: its partial stays 0
        return
    acc = _gram_tile(x_ptr, order_ptr, scale_ptr, start, n_g, d, ii, jj, stride_r, stride_c,
                     NORMALIZE, BLOCK_T, BLOCK_K)
    weight = tl.where(ti == tj, 1.0, 2.0)
    tl.store(partial_ptr + g * pairs + pair, weight * tl.sum(tl.sum(acc * acc, axis=1), axis=0))


def grouped_frobenius_sq(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                                 normalize: bool) -> torch.Tensor:
    """Validate, launch both kernels; returns ``[G]`` float64."""
    counts = check_grouped_args("grouped_frobenius_sq", x, order, offsets, normalize)
    d = x.shape[1]
    groups = counts.shape[0]
    largest = int(counts.clamp(max=d).max()) if groups else 0
    if largest == 0:
        return torch.zeros(groups, dtype=torch.float64, device=x.device)
    scale = row_scales(x, normalize)
    tile_i, tile_j = lower_tile_pairs(largest, x.device)
    pairs = tile_i.shape[0]
    partial = torch.zeros(groups, pairs, dtype=torch.float64, device=x.device)  # [G, P]
    _grouped_frobenius_kernel[(groups * pairs,)](
        x, order, offsets, scale, tile_i, tile_j, partial, d, pairs, x.stride(0), x.stride(1),
        NORMALIZE=normalize, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K)
    return partial.sum(dim=1)
