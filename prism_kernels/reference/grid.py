"""Pure-torch grid-density kernels: the test oracle and the fallback backend.

Every backend (``cpu``, ``cuda``, ``triton``, ``reference``) implements the same three low-level
kernels with exactly these signatures; the public wrappers in :mod:`prism_kernels.grid` validate
arguments, compute bounds and bin edges, and then route to one of them.

Binning follows ``numpy.histogramdd`` bit for bit. For an axis with ``n`` bins over ``[lo, hi]``
the edges are ``e[i] = fl(fl(i * step) + lo)`` for ``i < n`` with ``step = (hi - lo) / n`` and
``e[n] = hi`` (what ``numpy.linspace`` computes), all in float64. A coordinate ``x`` (promoted to
float64, exact for every accepted dtype) is kept iff ``e[0] <= x <= e[n]``; its bin is the largest
``b <= n - 1`` with ``e[b] <= x``. NaN and ±Inf are never kept.

Out-of-range group ids (the same contract on every backend): a point whose group id is outside
``[0, G)`` is ignored: it is counted in no cell and in no group's dropped count, and its cell is -1.
The public wrappers reject such ids before any backend runs; the low-level ops only must not read
or write out of bounds. Edges must be finite and non-decreasing (checked by every backend).

Shared shapes:
    points    [N, D]         float32 or float64, contiguous, D in {1, 2, 3}
    group_ids [N] int64      group of each point, or ``None``: point i is in group i // points_per_group
    edges     [G, D, M + 1]  float64; axis d of group g uses edges[g, d, : bins[d] + 1]
    bins      D ints         bins per axis; cells C = prod(bins), cell = row-major index over bins
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_grid_op, check_window_op


def _group_of_points(n_points: int, group_ids: torch.Tensor | None, points_per_group: int,
                     device: torch.device) -> torch.Tensor:
    if group_ids is not None:
        return group_ids.to(torch.int64)
    return torch.arange(n_points, device=device, dtype=torch.int64) // max(points_per_group, 1)


def grid_cells(points: torch.Tensor, group_ids: torch.Tensor | None, edges: torch.Tensor,
               bins: Sequence[int], points_per_group: int) -> torch.Tensor:
    """Cell of every point in its group's grid.

    Returns:
        cells [N] int64: row-major cell index within the point's group grid, or -1 for a point that
        is non-finite or outside its group's bounds on any axis.
    """
    check_grid_op(points, group_ids, edges, bins, points_per_group)
    n_points, dims = points.shape
    if edges.shape[0] == 0:  # no group: every id is out of range
        return torch.full((n_points,), -1, dtype=torch.int64, device=points.device)
    group = _group_of_points(n_points, group_ids, points_per_group, points.device)
    valid_group = (group >= 0) & (group < edges.shape[0])
    group = torch.where(valid_group, group, torch.zeros_like(group))  # looked up, then discarded
    coords = points.to(torch.float64)
    cells = torch.zeros(n_points, dtype=torch.int64, device=points.device)
    kept = torch.ones(n_points, dtype=torch.bool, device=points.device)
    for d in range(dims):
        n = int(bins[d])
        axis_edges = edges[:, d, : n + 1].contiguous()  # [G, n + 1]
        x = coords[:, d]
        finite = torch.isfinite(x)
        x = torch.where(finite, x, torch.zeros_like(x))
        index = torch.empty(n_points, dtype=torch.int64, device=points.device)
        for g in torch.unique(group).tolist():
            members = group == g
            index[members] = torch.searchsorted(axis_edges[g], x[members], right=True)
        on_upper_edge = x == axis_edges[group, n] if n_points and edges.shape[0] else x.bool()
        index = index - on_upper_edge.to(torch.int64)
        kept &= finite & (index >= 1) & (index <= n)
        cells = cells * n + (index - 1)
    return torch.where(kept & valid_group, cells, torch.full_like(cells, -1))


def grid_histogram(points: torch.Tensor, group_ids: torch.Tensor | None, edges: torch.Tensor,
                   bins: Sequence[int], points_per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Point counts per cell for every group.

    Returns:
        counts  [G, C] int64: points per cell.
        dropped [G] int64: points of each group that are non-finite or outside its bounds.
    """
    num_groups = edges.shape[0]
    num_cells = 1
    for n in bins:
        num_cells *= int(n)
    group = _group_of_points(points.shape[0], group_ids, points_per_group, points.device)
    cells = grid_cells(points, group_ids, edges, bins, points_per_group)
    valid_group = (group >= 0) & (group < num_groups)
    kept = cells >= 0
    flat = group[kept] * num_cells + cells[kept]
    counts = torch.bincount(flat, minlength=num_groups * num_cells).view(num_groups, num_cells)
    dropped = torch.bincount(group[~kept & valid_group], minlength=num_groups)
    return counts, dropped


def window_counts(counts: torch.Tensor, window: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Sums over every "valid" window of a batch of 3-D grids, through a summed-area table.

    With ``S`` the summed-area table (zero first plane on each axis), the window anchored at ``a``
    with size ``w`` sums to the 8-term inclusion-exclusion of ``S`` at the corners ``a`` and
    ``a + w``, so the cost does not depend on the window size. 2-D grids are passed as
    ``[B, 1, n0, n1]`` with a window of 1 on the leading axis.

    Args:
        counts: [B, n0, n1, n2] int64.
        window: 3 ints, 1 <= w_i <= n_i.
        stride: 3 ints >= 1.

    Returns:
        [B, o0, o1, o2] int64 with o_i = (n_i - w_i) // s_i + 1.
    """
    check_window_op(counts, window, stride)
    batch, n0, n1, n2 = counts.shape
    sat = torch.zeros(batch, n0 + 1, n1 + 1, n2 + 1, dtype=torch.int64, device=counts.device)
    sat[:, 1:, 1:, 1:] = counts.to(torch.int64).cumsum(1).cumsum(2).cumsum(3)
    starts = []
    for n, w, s in zip((n0, n1, n2), window, stride):
        out = (n - w) // s + 1
        starts.append(torch.arange(out, device=counts.device) * s)
    lo = [a.view(*([1] * i), -1, *([1] * (2 - i))) for i, a in enumerate(starts)]
    hi = [a + w for a, w in zip(lo, window)]

    def corner(a0, a1, a2):
        return sat[:, a0, a1, a2]

    return (corner(hi[0], hi[1], hi[2]) - corner(lo[0], hi[1], hi[2]) - corner(hi[0], lo[1], hi[2])
            - corner(hi[0], hi[1], lo[2]) + corner(lo[0], lo[1], hi[2]) + corner(lo[0], hi[1], lo[2])
            + corner(hi[0], lo[1], lo[2]) - corner(lo[0], lo[1], lo[2]))
