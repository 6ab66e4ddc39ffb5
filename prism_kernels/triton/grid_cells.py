"""Triton ``grid_cells``: the row-major cell of every point in its group's grid (-1 = dropped).

Maths (bit-identical to :func:`prism_kernels.reference.grid.grid_cells`, i.e. numpy.histogramdd):
for point ``i`` in group ``g`` (``group_ids[i]``, or ``i // points_per_group``) and each axis ``d``
with ``n_d`` bins and float64 edges ``e = edges[g, d, : n_d + 1]``, the coordinate ``x`` is
promoted to float64 (exact for float32/float64); it is kept iff finite and ``e[0] <= x <= e[n_d]``,
and its bin ``b_d`` is the largest ``b`` in ``[0, n_d - 1]`` with ``e[b] <= x``, found by a
fixed-length branch-free binary search over the edges (see :mod:`._binning`). Then

    cells[i] = ((b_0 * n_1 + b_1) * n_2 + b_2)   if kept on every axis, else -1.

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
def _grid_cells_kernel(points_ptr, group_ids_ptr, edges_ptr, cells_ptr, n_points, num_groups,
                       points_per_group, n0, n1, n2, edge_stride,
                       D: tl.constexpr, STEPS: tl.constexpr, HAS_GROUP_IDS: tl.constexpr,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < n_points
    g, valid = _point_group(group_ids_ptr, offs, in_range, points_per_group, num_groups,
                            HAS_GROUP_IDS)
    cell, kept = _point_cell(points_ptr, edges_ptr, offs, g, valid, n0, n1, n2, edge_stride,
                             D, STEPS)
    tl.store(cells_ptr + offs, tl.where(kept, cell, -1), mask=in_range)


def grid_cells(points: torch.Tensor, group_ids: torch.Tensor | None, edges: torch.Tensor,
                       bins: Sequence[int], points_per_group: int) -> torch.Tensor:
    """Launch :func:`_grid_cells_kernel`; returns ``cells [N] int64`` on ``points.device``."""
    check_grid_op(points, group_ids, edges, bins, points_per_group)
    n_points, dims = points.shape
    cells = torch.empty(n_points, dtype=torch.int64, device=points.device)
    if n_points == 0:
        return cells
    points = points.contiguous()
    edges = edges.to(torch.float64).contiguous()
    has_ids = group_ids is not None
    ids = group_ids.to(torch.int64).contiguous() if has_ids else points
    n0, n1, n2 = padded_bins(bins)
    grid = (triton.cdiv(n_points, BLOCK),)
    _grid_cells_kernel[grid](points, ids, edges, cells, n_points, edges.shape[0],
                             max(int(points_per_group), 1), n0, n1, n2, edges.shape[2],
                             D=dims, STEPS=search_steps(bins[:dims]), HAS_GROUP_IDS=has_ids,
                             BLOCK=BLOCK)
    return cells
