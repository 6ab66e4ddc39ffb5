"""Triton ``grid_histogram``: point counts per cell for every group, plus dropped points per group.

Maths (bit-identical to :func:`prism_kernels.reference.grid.grid_histogram`): each point ``i`` of
group ``g`` gets its row-major cell ``c_i`` exactly as in :mod:`.grid_cells` (numpy.histogramdd
binning by a fixed-length binary search over the float64 edges, see :mod:`._binning`), then

    counts[g, c]  = #{i in g : c_i = c}             (int64 atomic adds at g * C + c_i)
    dropped[g]    = #{i in g : point i not kept}    (non-finite or outside the bounds on any axis)

Drops are counted with one scalar atomic per program when all valid points of the program belong
to the same group (the common ``points_per_group`` case), else with one atomic per point.
One program handles ``BLOCK`` points; all offsets are int64.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .._checks import check_grid_op
from ._binning import _point_cell, _point_group, padded_bins, search_steps

BLOCK = 256


@triton.jit
def _grid_histogram_kernel(points_ptr, group_ids_ptr, edges_ptr, counts_ptr, dropped_ptr,
                           n_points, num_groups, num_cells, points_per_group, n0, n1, n2,
                           edge_stride, D: tl.constexpr, STEPS: tl.constexpr,
                           HAS_GROUP_IDS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < n_points
    g, valid = _point_group(group_ids_ptr, offs, in_range, points_per_group, num_groups,
                            HAS_GROUP_IDS)
    cell, kept = _point_cell(points_ptr, edges_ptr, offs, g, valid, n0, n1, n2, edge_stride,
                             D, STEPS)
    ones = tl.full([BLOCK], 1, dtype=tl.int64)
    tl.atomic_add(counts_ptr + g * num_cells + cell, ones, mask=kept)

    drop = valid & (kept == 0)
    n_drop = tl.sum(drop.to(tl.int64), axis=0)
    if n_drop > 0:
        g_min = tl.min(tl.where(drop, g, num_groups), axis=0)
        g_max = tl.max(tl.where(drop, g, -1), axis=0)
        if g_min == g_max:
            # single scalar atomic for the whole program (lane 0 only)
            lane0 = tl.arange(0, BLOCK) == 0
            tl.atomic_add(dropped_ptr + g_min + tl.zeros([BLOCK], dtype=tl.int64),
                          tl.where(lane0, n_drop, 0), mask=lane0)
        else:
            tl.atomic_add(dropped_ptr + g, ones, mask=drop)


def grid_histogram(points: torch.Tensor, group_ids: torch.Tensor | None,
                           edges: torch.Tensor, bins: Sequence[int],
                           points_per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch :func:`_grid_histogram_kernel`; returns ``(counts [G, C], dropped [G])`` int64."""
    check_grid_op(points, group_ids, edges, bins, points_per_group)
    n_points, dims = points.shape
    num_groups = edges.shape[0]
    num_cells = 1
    for n in bins:
        num_cells *= int(n)
    counts = torch.zeros(num_groups, num_cells, dtype=torch.int64, device=points.device)
    dropped = torch.zeros(num_groups, dtype=torch.int64, device=points.device)
    if n_points == 0 or num_groups == 0:
        return counts, dropped
    points = points.contiguous()
    edges = edges.to(torch.float64).contiguous()
    has_ids = group_ids is not None
    ids = group_ids.to(torch.int64).contiguous() if has_ids else points
    n0, n1, n2 = padded_bins(bins)
    grid = (triton.cdiv(n_points, BLOCK),)
    _grid_histogram_kernel[grid](points, ids, edges, counts, dropped, n_points, num_groups,
                                 num_cells, max(int(points_per_group), 1), n0, n1, n2,
                                 edges.shape[2], D=dims, STEPS=search_steps(bins[:dims]),
                                 HAS_GROUP_IDS=has_ids, BLOCK=BLOCK)
    return counts, dropped
