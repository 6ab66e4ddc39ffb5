"""Triton backend vs the pure-torch reference (runs on CPU through the Triton interpreter)."""

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

pytest.importorskip("triton")

from prism_kernels.reference import grid as ref  # noqa: E402
from prism_kernels.triton.grid_cells import grid_cells  # noqa: E402
from prism_kernels.triton.grid_histogram import grid_histogram  # noqa: E402
from prism_kernels.triton.window_counts import window_counts  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def linspace_edges(lo: float, hi: float, n: int) -> torch.Tensor:
    """numpy.linspace's arithmetic: e[i] = fl(fl(i * step) + lo), e[n] = hi."""
    e = torch.arange(n + 1, dtype=torch.float64) * ((hi - lo) / n) + lo
    e[n] = hi
    return e


def make_edges(lo: torch.Tensor, hi: torch.Tensor, bins, pad: float = math.inf) -> torch.Tensor:
    """lo, hi: [G, D] float64 bounds -> edges [G, D, max(bins) + 1], padded with ``pad``."""
    groups, dims = lo.shape
    width = max(bins) + 1
    edges = torch.full((groups, dims, width), pad, dtype=torch.float64)
    for g in range(groups):
        for d in range(dims):
            a, b = float(lo[g, d]), float(hi[g, d])
            if a == b:  # zero-width range
                a, b = a - 0.5, b + 0.5
            edges[g, d, : bins[d] + 1] = linspace_edges(a, b, bins[d])
    return edges


def make_case(n, dims, bins, groups, ragged, dtype, seed, tiny_range=False):
    gen = torch.Generator().manual_seed(seed)
    pts = (torch.randn(n, dims, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if ragged:
        group_ids = torch.randint(0, groups, (n,), generator=gen, dtype=torch.int64)
        ppg = 0
    else:
        group_ids = None
        ppg = max(-(-n // groups), 1)
    gid = group_ids if ragged else torch.arange(n) // ppg

    # Bounds from a subset of the points (so the lower and upper bounds are hit exactly, and other
    # points fall outside); zero width on one axis for group 0 when possible.
    lo = torch.zeros(groups, dims, dtype=torch.float64)
    hi = torch.ones(groups, dims, dtype=torch.float64)
    for g in range(groups):
        members = pts[gid == g].to(torch.float64)
        if members.shape[0]:
            core = members[: max(1, (3 * members.shape[0]) // 4)]
            lo[g], hi[g] = core.min(0).values, core.max(0).values
        if tiny_range:
            hi[g] = torch.nextafter(torch.nextafter(lo[g], lo[g] + 1), lo[g] + 1)
    if groups > 1 and n > 0:
        hi[0, 0] = lo[0, 0]
    edges = make_edges(lo, hi, bins)

    if n:
        # Points exactly on edges (including the upper edge) of their own group's grid.
        k = max(1, n // 4)
        rows = torch.randint(0, n, (k,), generator=gen)
        for d in range(dims):
            j = torch.randint(0, bins[d] + 1, (k,), generator=gen)
            j[0] = bins[d]
            pts[rows, d] = edges[gid[rows], d, j].to(dtype)
        # Non-finite values.
        specials = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
        for i in range(min(n, 3)):
            pts[(7 * i + 1) % n, i % dims] = specials[i]
    return pts.contiguous(), group_ids, edges, bins, ppg


def run_both(pts, group_ids, edges, bins, ppg):
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    args = (dev(pts), dev(group_ids), dev(edges), bins, ppg)
    ref_cells = ref.grid_cells(pts, group_ids, edges, bins, ppg)
    ref_counts, ref_dropped = ref.grid_histogram(pts, group_ids, edges, bins, ppg)
    cells = grid_cells(*args)
    counts, dropped = grid_histogram(*args)
    for got in (cells, counts, dropped):
        assert got.dtype == torch.int64 and got.device == args[0].device
    torch.testing.assert_close(cells.cpu(), ref_cells, rtol=0, atol=0)
    torch.testing.assert_close(counts.cpu(), ref_counts, rtol=0, atol=0)
    torch.testing.assert_close(dropped.cpu(), ref_dropped, rtol=0, atol=0)


BINS = {1: [(1,), (5,), (17,)], 2: [(17, 5), (1, 17)], 3: [(1, 5, 17), (5, 5, 5)]}
GROUPING = [(1, False), (5, False), (5, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups,ragged", GROUPING)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 333])
def test_binning_matches_reference(n, dims, groups, ragged, dtype):
    for i, bins in enumerate(BINS[dims]):
        run_both(*make_case(n, dims, bins, groups, ragged, dtype, seed=1000 * n + 10 * dims + i))


@pytest.mark.parametrize("dims", [1, 3])
def test_binning_tiny_range_duplicate_edges(dims):
    # Range of two ulps split in 17 bins: many equal edges; searchsorted semantics must still hold.
    bins = (17,) * dims
    run_both(*make_case(200, dims, bins, 3, True, torch.float64, seed=7, tiny_range=True))


def test_binning_all_points_on_edges_and_bounds():
    # Integer edges, every point on an edge or on a bound, ragged groups with an empty group.
    bins = (5, 4)
    lo = torch.tensor([[0.0, 0.0], [-2.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    hi = torch.tensor([[5.0, 4.0], [3.0, 5.0], [5.0, 4.0]], dtype=torch.float64)
    edges = make_edges(lo, hi, bins, pad=-7.0)
    xs = torch.arange(-3, 7, dtype=torch.float32)
    pts = torch.cartesian_prod(xs, xs).contiguous()
    group_ids = (torch.arange(pts.shape[0]) % 2).to(torch.int64)
    run_both(pts, group_ids, edges, bins, 0)
    run_both(pts.to(torch.float64), None, edges, bins, 50)


def direct_window_sum(counts, window, stride):
    u = counts
    for axis, (w, s) in enumerate(zip(window, stride)):
        u = u.unfold(axis + 1, w, s)
    return u.sum((-3, -2, -1))


@pytest.mark.parametrize("shape,window,stride", [
    ((1, 1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ((2, 4, 5, 6), (1, 1, 1), (1, 1, 1)),
    ((2, 4, 5, 6), (2, 3, 4), (1, 1, 1)),
    ((3, 5, 7, 9), (2, 3, 4), (2, 3, 1)),
    ((3, 5, 7, 9), (5, 7, 9), (1, 1, 1)),       # whole grid
    ((3, 5, 7, 9), (5, 7, 9), (4, 2, 3)),       # whole grid, large stride
    ((1, 6, 1, 9), (3, 1, 2), (5, 1, 3)),
    ((2, 1, 40, 70), (1, 17, 33), (1, 4, 5)),   # 2-D grid, long lines (scan carry loop)
    ((1, 37, 3, 2), (36, 2, 1), (1, 1, 1)),
])
def test_window_counts(shape, window, stride):
    gen = torch.Generator().manual_seed(sum(shape) + sum(window))
    counts = torch.randint(0, 1 << 40, shape, generator=gen, dtype=torch.int64)
    expected = direct_window_sum(counts, window, stride)
    got = window_counts(counts.to(DEVICE), window, stride)
    assert got.dtype == torch.int64 and got.shape == expected.shape
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)
    torch.testing.assert_close(got.cpu(), ref.window_counts(counts, window, stride), rtol=0, atol=0)
