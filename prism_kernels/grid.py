"""Grid density: batched histograms, sliding-window counts, per-point density, sparse windows and
seed pairs (the EmbedSDG measurements), on any backend.

Binning matches ``numpy.histogramdd`` exactly for the same array and range (upper edge inclusive);
see :mod:`prism_kernels.reference.grid` for the rule. Window sums go through summed-area tables, so
their cost does not depend on the window size.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _backends
from ._checks import FLOAT_DTYPES as _FLOAT_DTYPES
from ._checks import INT_DTYPES as _INT_DTYPES
from ._checks import as_tensor as _as_tensor
from ._checks import check_groups, check_int, check_real
from ._checks import check_int_tuple as _int_tuple

#: Most cells (groups x prod(bins)) one call may produce: 2**28 int64 counts = 2 GiB.
MAX_GRID_CELLS = 1 << 28


BinsArg = int | Sequence[int]
WindowArg = int | Sequence[int]


# ----------------------------------------------------------------------------------------------
# argument checking


def _check_points(points, name: str = "points") -> torch.Tensor:
    """[N, D] or [G, N, D] floating tensor with D in (2, 3)."""
    pts = _as_tensor(points, name)
    if pts.dim() not in (2, 3):
        raise ValueError(f"{name} must be [N, D] or [G, N, D], got shape {tuple(pts.shape)}")
    if pts.shape[-1] not in (2, 3):
        raise ValueError(f"{name} must have D = 2 or 3 coordinates per point, got D = {pts.shape[-1]}")
    if pts.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {pts.dtype}")
    return pts


def _kernel_points(points: torch.Tensor) -> torch.Tensor:
    """[N, D] contiguous float32/float64: half precisions widen to float32 exactly."""
    if points.dtype in (torch.float16, torch.bfloat16):
        points = points.to(torch.float32)
    return points.contiguous()


class _Layout(NamedTuple):
    flat: torch.Tensor  # [N_total, D] kernel-ready points
    group_ids: torch.Tensor | None  # [N_total] int64 or None
    points_per_group: int
    num_groups: int
    grouped: bool  # output has a leading group axis


def _layout(points: torch.Tensor, groups, num_groups: int | None) -> _Layout:
    dims = points.shape[-1]
    if groups is None and num_groups is not None:
        raise ValueError("num_groups applies only with groups (ragged groups of [N, D] points)")
    if points.dim() == 3:
        if groups is not None:
            raise ValueError("groups must be None when points is batched [G, N, D]")
        g, n = points.shape[0], points.shape[1]
        return _Layout(_kernel_points(points.reshape(g * n, dims)), None, max(n, 1), g, True)
    n = points.shape[0]
    if groups is None:
        return _Layout(_kernel_points(points), None, max(n, 1), 1, False)
    gids, num_groups = check_groups(groups, n, points.device, num_groups)
    return _Layout(_kernel_points(points), gids, 1, int(num_groups), True)


def _check_cells(num_groups: int, bins: Sequence[int]) -> None:
    cells = max(num_groups, 1) * math.prod(bins)
    if cells > MAX_GRID_CELLS:
        raise ValueError(f"bins: {num_groups} group(s) x {tuple(bins)} bins = {cells} cells exceeds the "
                         f"limit prism_kernels.MAX_GRID_CELLS = {MAX_GRID_CELLS} (int64 counts)")


def _default_bounds(layout: _Layout, dims: int) -> torch.Tensor:
    """[G, D, 2] float64: per group, min and max of its finite points (numpy's choice of range)."""
    x = layout.flat.to(torch.float64)
    finite = torch.isfinite(x)
    group = (layout.group_ids if layout.group_ids is not None else
             torch.arange(x.shape[0], device=x.device) // layout.points_per_group)
    index = group.unsqueeze(1).expand(-1, dims)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    lo = torch.full((layout.num_groups, dims), float("inf"), dtype=torch.float64, device=x.device)
    hi = torch.full((layout.num_groups, dims), float("-inf"), dtype=torch.float64, device=x.device)
    lo = lo.scatter_reduce(0, index, torch.where(finite, x, inf), "amin")
    hi = hi.scatter_reduce(0, index, torch.where(finite, x, -inf), "amax")
    empty = ~torch.isfinite(lo)  # no finite point on that axis: numpy uses [0, 1]
    lo = torch.where(empty, torch.zeros_like(lo), lo)
    hi = torch.where(empty, torch.ones_like(hi), hi)
    return torch.stack([lo, hi], dim=-1)


def _check_bounds(bounds, num_groups: int, dims: int, device: torch.device) -> torch.Tensor:
    if bounds is None:
        raise ValueError(f"bounds must be given: [D, 2] = [{dims}, 2] or [G, D, 2] (lower, upper) per axis")
    if not isinstance(bounds, (torch.Tensor, np.ndarray)):
        # Python floats are float64: do not let torch round them through its float32 default.
        try:
            bounds = torch.as_tensor(bounds, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"bounds must be [D, 2] = [{dims}, 2] or [G, D, 2] numbers (lower, upper) per "
                             f"axis, not a ragged or non-numeric sequence: {bounds!r}") from None
    b = _as_tensor(bounds, "bounds")
    if not (b.dtype.is_floating_point or b.dtype in _INT_DTYPES):
        raise ValueError(f"bounds must be real numbers, got {b.dtype}")
    b = b.to(device=device, dtype=torch.float64)
    if b.shape == (dims, 2):
        b = b.unsqueeze(0).expand(num_groups, dims, 2)
    elif b.shape != (num_groups, dims, 2):
        raise ValueError(f"bounds must be [D, 2] = [{dims}, 2] or [G, D, 2] = [{num_groups}, {dims}, 2], "
                         f"got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("bounds must be finite")
    if bool((b[..., 0] > b[..., 1]).any()):
        raise ValueError("bounds: lower bound above upper bound")
    return b.contiguous()


def _edges(bounds: torch.Tensor, bins: Sequence[int]) -> torch.Tensor:
    """[G, D, max(bins) + 1] float64 bin edges, computed exactly as numpy.linspace does.

    A zero-width range [a, a] becomes [a - 0.5, a + 0.5], as in numpy.histogramdd.
    """
    lo, hi = bounds[..., 0], bounds[..., 1]
    same = lo == hi
    lo = torch.where(same, lo - 0.5, lo)
    hi = torch.where(same, hi + 0.5, hi)
    width = max(bins) + 1
    edges = torch.full((*bounds.shape[:2], width), float("inf"), dtype=torch.float64, device=bounds.device)
    for d, n in enumerate(bins):
        delta = (hi[:, d] - lo[:, d]).unsqueeze(1)  # [G, 1]
        step = delta / n
        i = torch.arange(n + 1, dtype=torch.float64, device=bounds.device)
        # numpy.linspace: i * step + start, or (i / n) * delta when step underflows to 0.
        values = torch.where(step == 0, (i / n) * delta, i * step) + lo[:, d].unsqueeze(1)
        values[:, n] = hi[:, d]
        edges[:, d, : n + 1] = values
    return edges.contiguous()


def _ungroup(tensor: torch.Tensor, layout: _Layout) -> torch.Tensor:
    return tensor if layout.grouped else tensor[0]


# ----------------------------------------------------------------------------------------------
# public ops


def grid_histogram(points, bins: BinsArg, bounds=None, groups=None, return_dropped: bool = False, *,
                   num_groups: int | None = None, backend: str | None = None):
    """Counts points per cell of a regular 2-D or 3-D grid, for one point set or many at once.

    Args:
        points: ``[N, D]`` (one grid), ``[G, N, D]`` (G grids of N points each), or ``[N, D]`` with
            ``groups`` (ragged groups); D = 2 or 3; float16, bfloat16, float32 or float64.
        bins: bins per axis, an int or a D-tuple, each >= 1.
        bounds: ``[D, 2]`` (shared) or ``[G, D, 2]`` (per group) ``(lower, upper)`` per axis. Default:
            the min and max of each group's finite points; a zero-width range is widened by 0.5 on
            each side; a group without finite points gets ``[0, 1]`` (all as numpy does).
        groups: ``[N]`` integer group of each point, for ragged groups.
        return_dropped: also return the number of points per group that were non-finite or outside
            the bounds (dropped from the counts).
        num_groups: with ``groups``, the number of groups G (default ``groups.max() + 1``).
        backend: ``None`` (fastest available), ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        counts ``[*bins]`` int64 for ``[N, D]`` points without groups, else ``[G, *bins]``; with
        ``return_dropped``, ``(counts, dropped)`` where dropped is ``[]`` or ``[G]`` int64.

    Counts equal ``numpy.histogramdd(points, bins, range=bounds)[0]`` exactly for the same array:
    a point on an inner edge goes to the upper bin, a point on the upper bound to the last bin.
    """
    pts = _check_points(points)
    dims = pts.shape[-1]
    bins_t = _int_tuple(bins, dims, "bins")
    layout = _layout(pts, groups, num_groups)
    _check_cells(layout.num_groups, bins_t)
    if bounds is None:
        bounds_t = _default_bounds(layout, dims)
    else:
        bounds_t = _check_bounds(bounds, layout.num_groups, dims, pts.device)
    edges = _edges(bounds_t, bins_t)
    name = _backends.resolve(backend, pts.device, "grid_histogram")
    counts, dropped = _backends.kernel("grid_histogram", name)(
        layout.flat, layout.group_ids, edges, list(bins_t), layout.points_per_group)
    counts = _ungroup(counts.view(layout.num_groups, *bins_t), layout)
    return (counts, _ungroup(dropped, layout)) if return_dropped else counts


def grid_cells(points, bins: BinsArg, bounds, groups=None, *, num_groups: int | None = None,
               backend: str | None = None) -> torch.Tensor:
    """Row-major cell index of every point in its grid, with the binning of :func:`grid_histogram`.

    Args:
        points: ``[N, D]``, ``[G, N, D]`` or ``[N, D]`` with ``groups``, as in :func:`grid_histogram`.
        bins: bins per axis, an int or a D-tuple.
        bounds: ``[D, 2]`` or ``[G, D, 2]`` (required: cells only mean something for known bounds).
        groups, num_groups, backend: as in :func:`grid_histogram`.

    Returns:
        ``[N]`` (or ``[G, N]`` for batched points) int64 cell index, -1 for dropped points.
    """
    pts = _check_points(points)
    dims = pts.shape[-1]
    bins_t = _int_tuple(bins, dims, "bins")
    layout = _layout(pts, groups, num_groups)
    _check_cells(layout.num_groups, bins_t)
    edges = _edges(_check_bounds(bounds, layout.num_groups, dims, pts.device), bins_t)
    name = _backends.resolve(backend, pts.device, "grid_cells")
    cells = _backends.kernel("grid_cells", name)(layout.flat, layout.group_ids, edges, list(bins_t),
                                                 layout.points_per_group)
    return cells.view(pts.shape[0], pts.shape[1]) if pts.dim() == 3 else cells


def _check_counts(counts, dims: int, name: str = "counts") -> torch.Tensor:
    c = _as_tensor(counts, name)
    if c.dtype not in _INT_DTYPES:
        raise ValueError(f"{name} must be an integer tensor (cell counts), got {c.dtype}")
    if c.dim() < dims:
        raise ValueError(f"{name} must have at least {dims} dimensions for a {dims}-D window, "
                         f"got shape {tuple(c.shape)}")
    return c


def _window_tuple(window, dims: int | None) -> tuple[int, ...]:
    if window is None or isinstance(window, (str, bytes, float)):
        raise ValueError(f"window must be a tuple of 2 or 3 ints (cells per axis), got {window!r}")
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        if dims is None:
            raise ValueError("window must be a tuple of 2 or 3 ints here (its length gives D)")
        return _int_tuple(window, dims, "window")
    try:
        items = tuple(window)
    except TypeError:
        raise ValueError(f"window must be a tuple of 2 or 3 ints (cells per axis), got {window!r}") from None
    if len(items) not in (2, 3) or (dims is not None and len(items) != dims):
        want = f"{dims}" if dims is not None else "2 or 3"
        raise ValueError(f"window must have {want} entries (one per grid axis), got {window!r}")
    return _int_tuple(items, len(items), "window")


def window_counts(counts, window: Sequence[int], stride: WindowArg = 1, *,
                  backend: str | None = None) -> torch.Tensor:
    """Sums of every "valid" sliding window over a grid (or a batch of grids) of counts.

    Args:
        counts: ``[..., n_0, ..., n_{D-1}]`` integer counts; the last D axes are the grid.
        window: D ints (D = 2 or 3), ``1 <= w_i <= n_i``.
        stride: an int or D ints >= 1.
        backend: as in :func:`grid_histogram`.

    Returns:
        ``[..., o_0, ..., o_{D-1}]`` int64 with ``o_i = (n_i - w_i) // s_i + 1``; entry ``k`` sums
        the window whose lower corner is cell ``k * s`` (windows anchored at their lower corner).

    Computed from a summed-area table, so the cost does not depend on the window size.
    """
    win = _window_tuple(window, None)
    dims = len(win)
    c = _check_counts(counts, dims)
    steps = _int_tuple(stride, dims, "stride")
    grid = tuple(c.shape[-dims:])
    batch = tuple(c.shape[:-dims])
    for axis, (n, w) in enumerate(zip(grid, win)):
        if w > n:
            raise ValueError(f"window {win} is larger than the grid {grid} on axis {axis}")
    flat = c.reshape(-1, *grid).to(torch.int64).contiguous()
    if dims == 2:
        flat, win3, steps3 = flat.unsqueeze(1), (1, *win), (1, *steps)
    else:
        win3, steps3 = win, steps
    name = _backends.resolve(backend, c.device, "window_counts")
    out = _backends.kernel("window_counts", name)(flat, list(win3), list(steps3))
    return out.reshape(*batch, *out.shape[-dims:])


def point_density(points, counts, bounds, window: WindowArg = 1, *, backend: str | None = None) -> torch.Tensor:
    """Density around every point: the count of the odd-sized window centred on the point's cell.

    Args:
        points: ``[N, D]`` with counts ``[*bins]`` and bounds ``[D, 2]``, or ``[G, N, D]`` with counts
            ``[G, *bins]`` and bounds ``[D, 2]`` or ``[G, D, 2]``; the grid the counts were made on.
        counts: integer cell counts, e.g. from :func:`grid_histogram` with the same bounds.
        bounds: the bounds the counts were made with.
        window: odd ints, an int or a D-tuple; 1 = the count of the point's own cell.
        backend: as in :func:`grid_histogram`.

    Returns:
        ``[N]`` (or ``[G, N]``) int64; the grid is zero-padded at its border; points outside the
        bounds or non-finite get 0.
    """
    pts = _check_points(points)
    dims = pts.shape[-1]
    c = _check_counts(counts, dims)
    batched = pts.dim() == 3
    if c.dim() != dims + int(batched) or (batched and c.shape[0] != pts.shape[0]):
        want = f"[G, *bins] with G = {pts.shape[0]}" if batched else "[*bins]"
        raise ValueError(f"counts must be {want} for points of shape {tuple(pts.shape)}, "
                         f"got shape {tuple(c.shape)}")
    win = _int_tuple(window, dims, "window")
    if any(w % 2 == 0 for w in win):
        raise ValueError(f"window must be odd on every axis (it is centred on a cell), got {window!r}")
    bins = tuple(c.shape[-dims:])
    cells = grid_cells(pts, bins, bounds, backend=backend)  # [N] or [G, N]
    radius = [w // 2 for w in win]
    pad = [r for r in reversed(radius) for _ in range(2)]
    grids = c.reshape(-1, *bins).to(torch.int64)
    padded = F.pad(grids, pad)
    density = window_counts(padded, win, 1, backend=backend).reshape(grids.shape[0], -1)  # [G, C]
    flat_cells = cells.reshape(grids.shape[0], -1)
    found = density.gather(1, flat_cells.clamp(min=0))
    found = torch.where(flat_cells >= 0, found, torch.zeros_like(found))
    return found.reshape(cells.shape)


class SparseWindows(NamedTuple):
    """Result of :func:`sparse_windows`. Corners are cell indices; members refer to the points."""

    corners: torch.Tensor  #: [M, D] int64 lower corner cell of each sparse window
    counts: torch.Tensor  #: [M] int64 points in each window
    threshold: float  #: the T used: windows with 0 < count < T
    window: tuple[int, ...]
    stride: tuple[int, ...]
    bins: tuple[int, ...]
    offsets: torch.Tensor | None = None  #: [M + 1] int64 CSR offsets into indices (given points)
    indices: torch.Tensor | None = None  #: [offsets[-1]] int64 member point indices, ascending per window
    bounds: torch.Tensor | None = None  #: [D, 2] float64 bounds of the grid (given points)

    def members(self, m: int) -> torch.Tensor:
        """Indices of the points in sparse window ``m``."""
        if self.offsets is None or self.indices is None:
            raise ValueError("members are only known when sparse_windows was given points and bounds")
        return self.indices[self.offsets[m]:self.offsets[m + 1]]


def sparse_windows(counts, window: Sequence[int], stride: WindowArg = 1, threshold: float | None = None,
                   quantile: float = 0.25, *, points=None, bounds=None,
                   backend: str | None = None) -> SparseWindows:
    """Sparse regions of a grid: windows with ``0 < count < T`` whose centre cell is not empty.

    Args:
        counts: ``[*bins]`` integer counts of one grid (D = len(window) = 2 or 3).
        window: D ints, the window size in cells.
        stride: an int or D ints, the step between window anchors.
        threshold: T. Default: the ``quantile`` of the non-empty windows' counts.
        quantile: in [0, 1], used when ``threshold`` is None (linear interpolation, as torch.quantile).
        points: optional ``[N, D]`` points the counts were made from; with ``bounds``, each window's
            member points are returned as CSR (``offsets``, ``indices``).
        bounds: ``[D, 2]``, the bounds the counts were made with (required with points).
        backend: as in :func:`grid_histogram`.

    Returns:
        :class:`SparseWindows`: corners ``[M, D]`` (lower corner cells, in row-major order), counts
        ``[M]``, the threshold, and the members when points were given. The centre cell of a window
        is ``corner + window // 2``.
    """
    win = _window_tuple(window, None)
    dims = len(win)
    c = _check_counts(counts, dims)
    if c.dim() != dims:
        raise ValueError(f"counts must be one grid [*bins] of {dims} axes, got shape {tuple(c.shape)}")
    steps = _int_tuple(stride, dims, "stride")
    if threshold is None:
        quantile = check_real(quantile, "quantile", 0.0, 1.0)
    else:
        threshold = check_real(threshold, "threshold", finite=False)
    if (points is None) != (bounds is None):
        raise ValueError("points and bounds must be given together (members need the grid's bounds)")
    bins = tuple(c.shape)
    sums = window_counts(c, win, steps, backend=backend)  # [*out]
    out_shape = tuple(sums.shape)
    anchors = [torch.arange(o, device=c.device) * s for o, s in zip(out_shape, steps)]
    centre_index = [a + w // 2 for a, w in zip(anchors, win)]
    centre = c.to(torch.int64)[torch.meshgrid(*centre_index, indexing="ij")]
    nonempty = sums > 0
    if threshold is None:
        occupied = sums[nonempty].to(torch.float64)
        t = float(torch.quantile(occupied, float(quantile))) if occupied.numel() else 0.0
    else:
        t = float(threshold)
    sparse = nonempty & (sums < t) & (centre > 0)
    index = sparse.nonzero()  # [M, D] window index, row-major order
    corners = index * torch.tensor(steps, device=c.device)
    window_sums = sums[sparse]
    if points is None:
        return SparseWindows(corners, window_sums, t, win, steps, bins)
    pts = _check_points(points)
    if pts.dim() != 2 or pts.shape[1] != dims:
        raise ValueError(f"points must be [N, {dims}], got shape {tuple(pts.shape)}")
    bounds_t = _check_bounds(bounds, 1, dims, pts.device)[0]
    offsets, indices = _window_members(pts, bounds_t, bins, corners, window_sums, win, backend)
    return SparseWindows(corners, window_sums, t, win, steps, bins, offsets, indices, bounds_t)


def _window_members(points: torch.Tensor, bounds: torch.Tensor, bins: tuple[int, ...], corners: torch.Tensor,
                    window_sums: torch.Tensor, win: tuple[int, ...], backend: str | None):
    """CSR of the points in each window: the points of the windows' cells are bucketed by cell once,
    then each window gathers its cells' buckets."""
    device = points.device
    num_cells = math.prod(bins)
    cells = grid_cells(points, bins, bounds, backend=backend)  # [N]
    # Every cell of every window: [M * W] row-major cell index.
    offsets_in_window = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in win],
                                                   indexing="ij"), dim=-1).reshape(-1, len(win))
    window_cells = corners.unsqueeze(1) + offsets_in_window.unsqueeze(0)  # [M, W, D]
    strides = torch.tensor([math.prod(bins[d + 1:]) for d in range(len(bins))], device=device)
    flat = (window_cells * strides).sum(-1).reshape(-1)  # [M * W]
    # Only points in some sparse window's cells need sorting (few, by construction).
    wanted = torch.zeros(num_cells + 1, dtype=torch.bool, device=device)
    wanted[flat] = True
    candidates = (wanted[torch.where(cells >= 0, cells, num_cells)]).nonzero().squeeze(1)
    order = candidates[torch.argsort(cells[candidates], stable=True)]  # point indices by cell
    per_cell = torch.bincount(cells[candidates], minlength=num_cells)
    cell_start = torch.cumsum(per_cell, 0) - per_cell
    sizes = per_cell[flat]
    starts = torch.repeat_interleave(cell_start[flat], sizes)
    segment_begin = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    member_points = order[starts + torch.arange(starts.numel(), device=device) - segment_begin]
    window_of = torch.repeat_interleave(torch.arange(corners.shape[0], device=device).repeat_interleave(
        offsets_in_window.shape[0]), sizes)
    # Ascending point indices within each window.
    key = window_of * max(points.shape[0], 1) + member_points
    member_points = member_points[torch.argsort(key)]
    # Offsets from the members actually gathered; they equal the window sums only when the points
    # are the ones the counts were made from (with the same bounds).
    found = torch.bincount(window_of, minlength=corners.shape[0])
    offsets = torch.zeros(corners.shape[0] + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(found, 0)
    differ = (found != window_sums.to(torch.int64)).nonzero().flatten()
    if differ.numel():
        m = int(differ[0])
        raise ValueError(f"points: sparse window {m} (corner {corners[m].tolist()}) holds {int(found[m])} of the "
                         f"given points but counts say {int(window_sums[m])}; pass the points and bounds the "
                         f"counts were made from")
    return offsets, member_points


def seed_pairs(points, windows: SparseWindows, seed: int = 0) -> torch.Tensor:
    """Two seed points per sparse window, on opposing faces along its longer data extent.

    For each window, the axis a with the larger extent in data units (cells x cell width; the first
    such axis on ties) is chosen. The first seed is the member nearest the window's lower face on a
    (smallest coordinate a), the second the member nearest its upper face (largest coordinate a);
    exact ties are broken by a random priority of the points drawn from ``seed``. A window with a
    single member keeps it for the face it is nearer to and takes, for the other face, the nearest
    point outside the window (Euclidean distance to that face, a D-1 dimensional box).

    Args:
        points: ``[N, D]`` the points given to :func:`sparse_windows`.
        windows: the result of :func:`sparse_windows` called with ``points`` and ``bounds``.
        seed: seeds the tie-breaking priorities (a private generator; global RNG state untouched).

    Returns:
        ``[M, 2]`` int64 global point indices (lower-face seed, upper-face seed).
    """
    if not isinstance(windows, SparseWindows):
        raise ValueError(f"windows must be the result of sparse_windows, got {type(windows).__name__}")
    if windows.offsets is None or windows.indices is None or windows.bounds is None:
        raise ValueError("windows must come from sparse_windows(..., points=..., bounds=...) so that "
                         "members are known")
    seed = check_int(seed, "seed", 0, 1 << 64)
    pts = _check_points(points)
    dims = len(windows.window)
    if pts.dim() != 2 or pts.shape[1] != dims:
        raise ValueError(f"points must be [N, {dims}], got shape {tuple(pts.shape)}")
    x = pts.to(torch.float64)
    device = x.device
    n = x.shape[0]
    num_windows = windows.corners.shape[0]
    members = windows.indices.to(device)
    if windows.offsets.shape != (num_windows + 1,) or int(windows.offsets[-1]) != members.numel():
        raise ValueError(f"windows: offsets (ending at {int(windows.offsets[-1])}) disagree with its "
                         f"{members.numel()} member indices; build it with sparse_windows")
    if members.numel() and int(members.max()) >= n:
        raise ValueError(f"points: windows refer to point {int(members.max())} but only {n} points were given; "
                         f"pass the points given to sparse_windows")
    result = torch.empty(num_windows, 2, dtype=torch.int64, device=device)
    if num_windows == 0:
        return result
    bounds = windows.bounds.to(device)
    lo, hi = bounds[:, 0], bounds[:, 1]
    same = lo == hi
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)
    cell_width = (hi - lo) / torch.tensor(windows.bins, dtype=torch.float64, device=device)
    window_size = torch.tensor(windows.window, dtype=torch.float64, device=device)
    axis = int(torch.argmax(window_size * cell_width))
    box_lo = lo + windows.corners.to(torch.float64) * cell_width  # [M, D]
    box_hi = box_lo + window_size * cell_width

    generator = torch.Generator().manual_seed(seed)
    priority = torch.randperm(n, generator=generator).to(device)  # tie-breaker per point
    sizes = windows.offsets[1:] - windows.offsets[:-1]
    window_of = torch.repeat_interleave(torch.arange(num_windows, device=device), sizes.to(device))
    # Sort members by (window, coordinate on axis, priority): lexicographic through stable sorts.
    order = torch.argsort(priority[members], stable=True)
    order = order[torch.argsort(x[members[order], axis], stable=True)]
    order = order[torch.argsort(window_of[order], stable=True)]
    sorted_members = members[order]
    first = windows.offsets[:-1].to(device)
    last = windows.offsets[1:].to(device) - 1
    result[:, 0] = sorted_members[first.clamp(max=max(members.numel() - 1, 0))]
    result[:, 1] = sorted_members[last.clamp(min=0)]
    single = (sizes < 2).nonzero().flatten().to(device)  # [S] windows with one member
    if single.numel():
        result[single] = _single_member_pairs(x, priority, sorted_members[first[single]],
                                              windows.corners[single.cpu()].to(device), box_lo[single],
                                              box_hi[single], lo, cell_width, windows.bins, windows.window, axis)
    return result


def _single_member_pairs(x: torch.Tensor, priority: torch.Tensor, only: torch.Tensor, corners: torch.Tensor,
                         box_lo: torch.Tensor, box_hi: torch.Tensor, lo: torch.Tensor, cell_width: torch.Tensor,
                         bins: tuple[int, ...], win: tuple[int, ...], axis: int) -> torch.Tensor:
    """Seed pairs ``[S, 2]`` of windows with one member ``only`` [S], lower corner cells ``corners``
    [S, D] and boxes ``[S, D]``: the member keeps the face it is nearer to; the other face gets the
    nearest point outside the box (Euclidean distance to the face, a D-1 dimensional box; ties by
    lowest priority), or the member itself when no other point exists.

    Exact without measuring every point against every face. The finite points are bucketed by the
    windows' grid cell once (points off the grid are candidates of every window). Each window then
    examines the points of the cells within k cells of its face (k = 2, 4, 8, ...; all open windows
    at once, in chunks). A point in a cell farther out lies at least k cells from the face along
    some axis, so farther than ``(k - 1) * (smallest cell width)`` (one cell of slack absorbs the
    rounding of binning and faces); once that exceeds the best distance found, the best and every
    point tied with it have been seen and the window is settled. Cost: O(N log N) for the buckets,
    then per window the points within about twice its answer's distance of its face (all points
    only when the answer is as far as the grid is wide)."""
    n, dims = x.shape
    device = x.device
    near_lower = x[only, axis] - box_lo[:, axis] <= box_hi[:, axis] - x[only, axis]  # [S]
    face_value = torch.where(near_lower, box_hi[:, axis], box_lo[:, axis])  # the face still without a seed
    face_lo, face_hi = box_lo.clone(), box_hi.clone()
    face_lo[:, axis] = face_value
    face_hi[:, axis] = face_value
    # The face's cells before widening: [base_lo, base_hi) per axis, empty on the window's axis.
    win_t = torch.tensor(win, device=device)
    bins_t = torch.tensor(bins, device=device)
    base_lo, base_hi = corners.clone(), corners + win_t
    edge = corners[:, axis] + torch.where(near_lower, win[axis], 0)
    base_lo[:, axis] = edge
    base_hi[:, axis] = edge

    # Finite points sorted by cell; finite points off the grid are examined by every window.
    finite = torch.isfinite(x).all(dim=1)
    q = torch.floor((x - lo) / cell_width)  # [N, D]
    on_grid = finite & ((q >= 0) & (q < bins_t)).all(dim=1)
    strides = torch.tensor([math.prod(bins[d + 1:]) for d in range(dims)], device=device)
    cell = (torch.where(on_grid[:, None], q, 0).to(torch.int64) * strides).sum(dim=1)  # [N]
    grid_points = on_grid.nonzero().flatten()
    sorted_cells, order = torch.sort(cell[grid_points])  # no dense per-cell arrays: the grid may be huge
    grid_points = grid_points[order]
    off_grid = (finite & ~on_grid).nonzero().flatten()
    all_finite = finite.nonzero().flatten()
    # Rounding of the bucket and face coordinates, far below a cell unless the grid is degenerate.
    scale = float(torch.maximum(lo.abs(), (lo + cell_width * bins_t).abs()).max())
    rounding = 16 * torch.finfo(torch.float64).eps * scale
    min_width = float(cell_width.min())
    inverse = torch.empty_like(priority)
    inverse[priority] = torch.arange(n, device=device)

    def nearest(windows: torch.Tensor, owner: torch.Tensor, candidate: torch.Tensor):
        """(best distance, picked point) of each of ``windows`` [c] over (owner, candidate) pairs."""
        xp = x[candidate]  # [T, D]
        gap = (face_lo[windows][owner] - xp).clamp_min(0) + (xp - face_hi[windows][owner]).clamp_min(0)
        distance = gap.norm(dim=1)  # [T]
        inside = ((xp >= box_lo[windows][owner]) & (xp < box_hi[windows][owner])).all(dim=1)
        excluded = inside | (candidate == only[windows][owner]) | ~torch.isfinite(distance)
        distance = torch.where(excluded, torch.full_like(distance, math.inf), distance)
        best = torch.full((windows.numel(),), math.inf, dtype=distance.dtype, device=device)
        best = best.scatter_reduce(0, owner, distance, "amin")
        tied = (distance == best[owner]) & torch.isfinite(distance)
        rank = torch.full((windows.numel(),), n, dtype=torch.int64, device=device)
        rank = rank.scatter_reduce(0, owner[tied], priority[candidate[tied]], "amin")
        return best, torch.where(torch.isfinite(best), inverse[rank.clamp(max=n - 1)], only[windows])

    other = only.clone()
    pending = torch.arange(only.shape[0], device=device)
    budget = 1 << 22  # candidate pairs (or cells) per chunk
    k = 2
    while pending.numel():
        ext = [min(w + 2 * k, b) if d != axis else min(2 * k, b) for d, (w, b) in enumerate(zip(win, bins))]
        num = math.prod(ext)
        if num >= all_finite.numel():  # as many cells as points: measure these windows against every point
            chunk = max(1, budget // max(all_finite.numel(), 1))
            for c0 in range(0, pending.numel(), chunk):
                s = pending[c0:c0 + chunk]
                owner = torch.arange(s.numel(), device=device).repeat_interleave(all_finite.numel())
                other[s] = nearest(s, owner, all_finite.repeat(s.numel()))[1]
            break
        offsets = torch.stack(torch.meshgrid(*[torch.arange(e, device=device) for e in ext], indexing="ij"),
                              dim=-1).reshape(-1, dims)  # [C, D]
        ext_t = torch.tensor(ext, device=device)
        # A range of ext cells per axis inside the grid that covers [base_lo - k, base_hi + k) there.
        start = torch.minimum((base_lo[pending] - k).clamp(min=0), bins_t - ext_t)  # [P, D]
        covers = ((base_lo[pending] - k <= 0) & (base_hi[pending] + k >= bins_t)).all(dim=1)  # every cell seen
        floor = ((k - 1) * min_width - rounding) * (1.0 - 2.0 ** -40)
        still_open = []
        chunk = max(1, budget // num)
        for c0 in range(0, pending.numel(), chunk):
            s = pending[c0:c0 + chunk]
            flat = ((start[c0:c0 + chunk, None, :] + offsets) * strides).sum(dim=-1)  # [c, C] cell ids
            cell_begin = torch.searchsorted(sorted_cells, flat)  # [c, C] into grid_points
            sizes = torch.searchsorted(sorted_cells, flat, right=True) - cell_begin
            per_window = sizes.sum(dim=1)  # [c]
            best = torch.empty(s.numel(), dtype=x.dtype, device=device)
            pick = torch.empty_like(s)
            # Groups of windows whose candidates fit the budget (at least one window each).
            group_end = torch.cumsum(per_window + off_grid.numel(), 0)
            lo_w = 0
            while lo_w < s.numel():
                taken = int(torch.searchsorted(group_end, group_end[lo_w] - per_window[lo_w] - off_grid.numel()
                                               + budget, right=True))
                hi_w = max(lo_w + 1, min(taken, s.numel()))
                sz = sizes[lo_w:hi_w].reshape(-1)
                total = int(sz.sum())
                begin = torch.repeat_interleave(cell_begin[lo_w:hi_w].reshape(-1), sz)
                segment = torch.repeat_interleave(torch.cumsum(sz, 0) - sz, sz)
                candidate = grid_points[begin + torch.arange(total, device=device) - segment]
                owner = torch.arange(hi_w - lo_w, device=device).repeat_interleave(per_window[lo_w:hi_w])
                if off_grid.numel():
                    candidate = torch.cat([candidate, off_grid.repeat(hi_w - lo_w)])
                    owner = torch.cat([owner, torch.arange(hi_w - lo_w, device=device).repeat_interleave(
                        off_grid.numel())])
                best[lo_w:hi_w], pick[lo_w:hi_w] = nearest(s[lo_w:hi_w], owner, candidate)
                lo_w = hi_w
            settled = covers[c0:c0 + chunk] | (floor > best)
            other[s[settled]] = pick[settled]
            still_open.append(s[~settled])
        pending = torch.cat(still_open)
        k *= 2
    return torch.stack([torch.where(near_lower, only, other), torch.where(near_lower, other, only)], dim=1)
