"""window_counts, point_density, sparse_windows and seed_pairs against direct computations."""

import itertools

import numpy as np
import pytest
import torch

import prism_kernels as pk


def direct_window_sums(counts: torch.Tensor, window, stride) -> torch.Tensor:
    """Sliding-window sums by unfolding: no summed-area table involved."""
    out = counts.to(torch.int64)
    dims = len(window)
    for axis, (w, s) in enumerate(zip(window, stride)):
        out = out.unfold(counts.dim() - dims + axis, w, s)
    return out.sum(dim=tuple(range(-dims, 0)))


@pytest.mark.parametrize("shape,window,stride", [
    ((7, 9), (3, 2), (1, 1)),
    ((7, 9), (7, 9), (1, 1)),
    ((16, 5), (4, 5), (3, 2)),
    ((1, 1), (1, 1), (1, 1)),
    ((5, 6, 7), (2, 3, 4), (1, 2, 3)),
    ((4, 4, 4), (4, 4, 4), (1, 1, 1)),
    ((3, 8, 8), (1, 3, 3), (2, 2, 1)),
])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
def test_window_counts_equal_direct_sums(backend, shape, window, stride, dtype):
    name, device = backend
    counts = torch.randint(0, 50, (2, 3, *shape)).to(dtype)  # batch dims [2, 3]
    out = pk.window_counts(counts.to(device), window, stride, backend=name)
    expected = direct_window_sums(counts, window, stride)
    assert out.dtype == torch.int64 and out.shape == expected.shape
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=0)


def test_window_counts_non_contiguous_and_large_values(backend):
    name, device = backend
    counts = (torch.randint(0, 1 << 30, (12, 10), dtype=torch.int64) << 8).t()  # transposed view
    out = pk.window_counts(counts.to(device), (4, 3), 2, backend=name)
    torch.testing.assert_close(out.cpu(), direct_window_sums(counts, (4, 3), (2, 2)), rtol=0, atol=0)


@pytest.mark.parametrize("window,stride,match", [
    ((3, 3, 3, 3), 1, "window must have 2 or 3"),
    ((3,), 1, "window must have 2 or 3"),
    ((11, 2), 1, "larger than the grid"),
    ((0, 2), 1, "window must be >= 1"),
    ((2, 2), 0, "stride must be >= 1"),
    ((2, 2), (1, 1, 1), "stride must be"),
])
def test_window_counts_bad_arguments(window, stride, match):
    with pytest.raises(ValueError, match=match):
        pk.window_counts(torch.zeros(10, 10, dtype=torch.int64), window, stride)


def test_window_counts_rejects_float_counts():
    with pytest.raises(ValueError, match="counts must be an integer tensor"):
        pk.window_counts(torch.zeros(4, 4), (2, 2))


def naive_density(points: torch.Tensor, counts: torch.Tensor, bounds, window) -> torch.Tensor:
    bins = counts.shape
    cells = pk.grid_cells(points, bins, bounds, backend="reference")
    out = torch.zeros(points.shape[0], dtype=torch.int64)
    for i, c in enumerate(cells.tolist()):
        if c < 0:
            continue
        idx = np.unravel_index(c, bins)
        box = tuple(slice(max(0, j - w // 2), j + w // 2 + 1) for j, w in zip(idx, window))
        out[i] = counts[box].sum()
    return out


@pytest.mark.parametrize("dims,window", [(2, (1, 1)), (2, (3, 5)), (3, (3, 3, 1))])
def test_point_density_matches_naive(backend, dims, window):
    name, device = backend
    pts = torch.rand(300, dims, dtype=torch.float64)
    pts[0, 0] = float("nan")
    pts[1, 0] = 1.5  # outside
    bounds = [(0.0, 1.0)] * dims
    bins = (6, 7, 5)[:dims]
    counts = pk.grid_histogram(pts, bins, bounds)
    dens = pk.point_density(pts.to(device), counts.to(device), bounds, window, backend=name)
    torch.testing.assert_close(dens.cpu(), naive_density(pts, counts, bounds, window), rtol=0, atol=0)
    assert int(dens[0]) == 0 and int(dens[1]) == 0


def test_point_density_batched():
    pts = torch.rand(3, 50, 2)
    bounds = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    counts = pk.grid_histogram(pts, 5, bounds)
    dens = pk.point_density(pts, counts, bounds, 3)
    for g in range(3):
        torch.testing.assert_close(dens[g], naive_density(pts[g], counts[g], bounds.tolist(), (3, 3)))


def test_point_density_bad_arguments():
    pts = torch.rand(10, 2)
    counts = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="window must be odd"):
        pk.point_density(pts, counts, [(0.0, 1.0)] * 2, 2)
    with pytest.raises(ValueError, match="counts must be"):
        pk.point_density(pts, torch.zeros(4, 4, 4, dtype=torch.int64), [(0.0, 1.0)] * 2, 1)


def naive_sparse(counts: torch.Tensor, window, stride, threshold):
    out = []
    ranges = [range(0, n - w + 1, s) for n, w, s in zip(counts.shape, window, stride)]
    for corner in itertools.product(*ranges):
        box = tuple(slice(c, c + w) for c, w in zip(corner, window))
        total = int(counts[box].sum())
        centre = tuple(c + w // 2 for c, w in zip(corner, window))
        if 0 < total < threshold and counts[centre] > 0:
            out.append((corner, total))
    return out


@pytest.mark.parametrize("dims,window,stride", [(2, (3, 3), (1, 1)), (2, (4, 2), (2, 1)), (3, (2, 2, 3), (1, 2, 1))])
def test_sparse_windows_and_members(backend, dims, window, stride):
    name, device = backend
    gen = torch.Generator().manual_seed(dims)
    pts = torch.cat([torch.randn(400, dims, generator=gen, dtype=torch.float64) * 0.15 + 0.5,
                     torch.rand(60, dims, generator=gen, dtype=torch.float64)])
    bounds = [(0.0, 1.0)] * dims
    bins = (12, 10, 8)[:dims]
    counts = pk.grid_histogram(pts, bins, bounds)
    result = pk.sparse_windows(counts.to(device), window, stride, points=pts.to(device), bounds=bounds,
                               backend=name)
    sums = pk.window_counts(counts, window, stride)
    occupied = sums[sums > 0].double()
    assert result.threshold == pytest.approx(float(torch.quantile(occupied, 0.25)))
    expected = naive_sparse(counts, window, stride, result.threshold)
    assert [tuple(c) for c in result.corners.cpu().tolist()] == [c for c, _ in expected]
    assert result.counts.cpu().tolist() == [t for _, t in expected]
    cells = pk.grid_cells(pts, bins, bounds)
    cell_index = np.stack(np.unravel_index(cells.clamp(min=0).numpy(), bins), axis=1)
    for m, (corner, total) in enumerate(expected):
        inside = (cells.numpy() >= 0) & np.all((cell_index >= corner) & (cell_index < np.add(corner, window)), 1)
        assert result.members(m).cpu().tolist() == np.nonzero(inside)[0].tolist()
        assert len(result.members(m)) == total


def test_sparse_windows_threshold_and_errors():
    counts = torch.tensor([[0, 1, 0, 5], [0, 0, 2, 9], [1, 0, 0, 0]])
    result = pk.sparse_windows(counts, (1, 1), threshold=3)
    assert result.corners.tolist() == [[0, 1], [1, 2], [2, 0]]
    assert result.counts.tolist() == [1, 2, 1] and result.offsets is None
    with pytest.raises(ValueError, match="members are only known"):
        result.members(0)
    with pytest.raises(ValueError, match="quantile"):
        pk.sparse_windows(counts, (1, 1), quantile=1.5)
    with pytest.raises(ValueError, match="points and bounds"):
        pk.sparse_windows(counts, (1, 1), points=torch.rand(3, 2))
    with pytest.raises(ValueError, match="larger than the grid"):
        pk.sparse_windows(counts, (5, 1))
    empty = pk.sparse_windows(torch.zeros(4, 4, dtype=torch.int64), (2, 2))
    assert empty.corners.shape == (0, 2)


def test_seed_pairs_pick_opposing_faces():
    gen = torch.Generator().manual_seed(3)
    pts = torch.rand(500, 2, generator=gen, dtype=torch.float64)
    pts[:, 0] *= 2.0  # x extent is twice y: seeds oppose along x for square-in-cells windows
    bounds = [(0.0, 2.0), (0.0, 1.0)]
    counts = pk.grid_histogram(pts, (10, 10), bounds)
    windows = pk.sparse_windows(counts, (3, 3), points=pts, bounds=bounds, threshold=40)
    assert windows.corners.shape[0] > 0
    pairs = pk.seed_pairs(pts, windows, seed=0)
    assert pairs.shape == (windows.corners.shape[0], 2)
    for m in range(windows.corners.shape[0]):
        members = windows.members(m)
        if members.numel() >= 2:
            xs = pts[members, 0]
            assert pairs[m, 0] in members and pairs[m, 1] in members and pairs[m, 0] != pairs[m, 1]
            assert pts[pairs[m, 0], 0] == xs.min() and pts[pairs[m, 1], 0] == xs.max()


def test_seed_pairs_single_member_takes_nearest_outside_point():
    pts = torch.tensor([[0.55, 0.55], [0.05, 0.05], [0.95, 0.52], [0.30, 0.50], [0.9, 0.9]], dtype=torch.float64)
    bounds = [(0.0, 1.0), (0.0, 1.0)]
    counts = pk.grid_histogram(pts, 10, bounds)
    windows = pk.sparse_windows(counts, (3, 3), threshold=2, points=pts, bounds=bounds)
    m = [tuple(c) for c in windows.corners.tolist()].index((4, 4))  # window [0.4, 0.7)^2 holds point 0 only
    assert windows.members(m).tolist() == [0]
    pair = pk.seed_pairs(pts, windows)[m].tolist()
    # Point 0 (x = 0.55) is nearer the lower face x = 0.4; the upper face x = 0.7 takes point 2,
    # at distance 0.25 from it, over point 3 (0.40 from the lower face's side).
    assert pair == [0, 2]


def test_seed_pairs_ties_follow_the_seed():
    pts = torch.tensor([[0.6, 0.6], [0.6, 0.7], [0.6, 0.8], [0.9, 0.7]], dtype=torch.float64)
    bounds = [(0.0, 1.0), (0.0, 1.0)]
    counts = pk.grid_histogram(pts, 2, bounds)  # all four in cell (1, 1)
    windows = pk.sparse_windows(counts, (1, 1), threshold=10, points=pts, bounds=bounds)
    pairs = [pk.seed_pairs(pts, windows, seed=s)[0].tolist() for s in range(30)]
    assert {p[0] for p in pairs} == {0, 1, 2}  # three points tie at x = 0.6; each wins for some seed
    assert {p[1] for p in pairs} == {3}
    again = pk.seed_pairs(pts, windows, seed=7)
    torch.testing.assert_close(again, pk.seed_pairs(pts, windows, seed=7))


def test_seed_pairs_needs_members():
    counts = torch.ones(4, 4, dtype=torch.int64)
    windows = pk.sparse_windows(counts, (1, 1), threshold=2)
    with pytest.raises(ValueError, match="members"):
        pk.seed_pairs(torch.rand(4, 2), windows)
