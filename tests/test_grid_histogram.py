"""grid_histogram and grid_cells: every backend equals numpy.histogramdd exactly."""

import numpy as np
import pytest
import torch

import prism_kernels as pk

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def numpy_view(points: torch.Tensor) -> np.ndarray:
    """The same values as numpy sees them: bfloat16 (no numpy dtype) widens exactly to float32."""
    if points.dtype == torch.bfloat16:
        points = points.to(torch.float32)
    return points.cpu().numpy()


def numpy_counts(points: torch.Tensor, bins, bounds) -> np.ndarray:
    counts, _ = np.histogramdd(numpy_view(points), bins=bins, range=[tuple(map(float, b)) for b in bounds])
    return counts.astype(np.int64)


def size_for(backend_name: str, full: int) -> int:
    return min(full, 1500) if backend_name == "triton" else full  # the interpreter is slow


def tricky_points(n: int, dims: int, dtype: torch.dtype, lo: float = -1.0, hi: float = 2.0) -> torch.Tensor:
    """Uniform points plus points exactly on bin edges, on both bounds, just beside edges, outside."""
    gen = torch.Generator().manual_seed(n * 10 + dims)
    pts = (torch.rand(n, dims, generator=gen, dtype=torch.float64) * (hi - lo) * 1.2 + lo - 0.1 * (hi - lo))
    k = n // 5
    grid = torch.linspace(lo, hi, 9, dtype=torch.float64)
    pts[:k] = grid[torch.randint(0, 9, (k, dims), generator=gen)]
    pts = pts.to(dtype)
    nudged = pts[:k].clone()
    pts[k: 2 * k] = torch.nextafter(nudged, torch.full_like(nudged, float("inf")))
    pts[2 * k: 3 * k] = torch.nextafter(nudged, torch.full_like(nudged, float("-inf")))
    pts[3 * k] = hi
    pts[3 * k + 1] = lo
    return pts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims,bins", [(2, 7), (2, (1, 13)), (3, 5), (3, (4, 1, 9)), (2, 256)])
def test_equals_numpy_on_edges_and_bounds(backend, dtype, dims, bins):
    name, device = backend
    pts = tricky_points(size_for(name, 4001), dims, dtype)
    bounds = [(-1.0, 2.0)] * dims
    counts, dropped = pk.grid_histogram(pts.to(device), bins, bounds, return_dropped=True, backend=name)
    expected = numpy_counts(pts, bins, bounds)
    assert counts.dtype == torch.int64 and counts.device.type == device
    np.testing.assert_array_equal(counts.cpu().numpy(), expected)
    assert int(dropped) == pts.shape[0] - expected.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_points_are_dropped_and_counted(backend, dtype):
    name, device = backend
    pts = torch.rand(301, 2, dtype=dtype)
    pts[0, 0] = float("nan")
    pts[1, 1] = float("inf")
    pts[2, 0] = float("-inf")
    pts[3] = torch.tensor([5.0, 0.5])  # outside the bounds
    bounds = [(0.0, 1.0), (0.0, 1.0)]
    counts, dropped = pk.grid_histogram(pts.to(device), 10, bounds, return_dropped=True, backend=name)
    np.testing.assert_array_equal(counts.cpu().numpy(), numpy_counts(pts, 10, bounds))
    assert int(dropped) == 4


@pytest.mark.parametrize("bounds", [[(0.1, 0.7)] * 2, [(1000.1, 1000.2)] * 2, [(-1e6, 1e6)] * 2,
                                    [(0.0, 1e-30)] * 2])
def test_awkward_ranges(backend, bounds):
    """Ranges that are not dyadic, far from the origin, huge, or tiny: edges round differently."""
    name, device = backend
    lo, hi = bounds[0]
    width = hi - lo
    base = torch.rand(size_for(name, 5000), 2, dtype=torch.float64) * width * 1.1 + lo - 0.05 * width
    for dtype in (torch.float32, torch.float64):
        pts = base.to(dtype)
        counts = pk.grid_histogram(pts.to(device), 256, bounds, backend=name)
        np.testing.assert_array_equal(counts.cpu().numpy(), numpy_counts(pts, 256, bounds))


def test_default_bounds_are_min_max_of_finite_points(backend):
    name, device = backend
    pts = torch.randn(999, 3, dtype=torch.float64)
    pts[5, 1] = float("nan")
    counts, dropped = pk.grid_histogram(pts.to(device), 6, return_dropped=True, backend=name)
    finite = pts[torch.isfinite(pts).all(1)]
    bounds = [(float(pts[torch.isfinite(pts[:, d]), d].min()), float(pts[torch.isfinite(pts[:, d]), d].max()))
              for d in range(3)]
    np.testing.assert_array_equal(counts.cpu().numpy(), numpy_counts(finite, 6, bounds))
    assert int(dropped) == 1


def test_empty_single_and_identical_points(backend):
    name, device = backend
    empty = torch.empty(0, 2)
    counts, dropped = pk.grid_histogram(empty.to(device), (3, 4), return_dropped=True, backend=name)
    assert counts.shape == (3, 4) and int(counts.sum()) == 0 and int(dropped) == 0

    one = torch.tensor([[0.25, -3.0]])
    counts = pk.grid_histogram(one.to(device), 5, backend=name)
    expected, _ = np.histogramdd(one.numpy(), bins=5)  # zero-width ranges widen by 0.5
    np.testing.assert_array_equal(counts.cpu().numpy(), expected)

    same = torch.full((50, 3), 7.5)
    counts = pk.grid_histogram(same.to(device), 4, backend=name)
    expected, _ = np.histogramdd(same.numpy().astype(np.float64), bins=4)
    np.testing.assert_array_equal(counts.cpu().numpy(), expected)


def test_single_bin(backend):
    name, device = backend
    pts = torch.rand(100, 2)
    pts[0, 0] = 3.0
    counts = pk.grid_histogram(pts.to(device), 1, [(0.0, 1.0), (0.0, 1.0)], backend=name)
    assert counts.shape == (1, 1) and int(counts) == 99


@pytest.mark.parametrize("groups", [1, 64])
def test_batched_groups_with_per_group_bounds(backend, groups):
    name, device = backend
    n = 40 if name == "triton" else 500
    pts = torch.randn(groups, n, 2) * torch.arange(1, groups + 1).view(groups, 1, 1)
    lo = pts.amin(1).double() + 0.1
    hi = pts.amax(1).double() - 0.1
    bounds = torch.stack([lo, hi], dim=-1)  # [G, 2, 2]
    counts, dropped = pk.grid_histogram(pts.to(device), (5, 3), bounds, return_dropped=True, backend=name)
    assert counts.shape == (groups, 5, 3) and dropped.shape == (groups,)
    for g in range(groups):
        expected = numpy_counts(pts[g], (5, 3), bounds[g].tolist())
        np.testing.assert_array_equal(counts[g].cpu().numpy(), expected)
        assert int(dropped[g]) == n - expected.sum()


def test_ragged_groups(backend):
    name, device = backend
    n = 600 if name == "triton" else 5000
    pts = torch.randn(n, 3, dtype=torch.float64)
    groups = torch.randint(0, 7, (n,))
    groups[groups == 4] = 5  # group 4 is empty
    counts, dropped = pk.grid_histogram(pts.to(device), 4, groups=groups.to(device), return_dropped=True,
                                        backend=name)
    assert counts.shape == (7, 4, 4, 4)
    for g in range(7):
        members = pts[groups == g]
        if members.shape[0] == 0:
            assert int(counts[g].sum()) == 0 and int(dropped[g]) == 0
            continue
        bounds = [(float(members[:, d].min()), float(members[:, d].max())) for d in range(3)]
        np.testing.assert_array_equal(counts[g].cpu().numpy(), numpy_counts(members, 4, bounds))


def test_non_contiguous_points(backend):
    name, device = backend
    base = torch.rand(3, 2000, dtype=torch.float64)
    pts = base[::2].t()[::3]  # [667, 2], strided in both axes
    assert not pts.is_contiguous()
    bounds = [(0.0, 1.0)] * 2
    counts = pk.grid_histogram(pts.to(device), 9, bounds, backend=name)
    np.testing.assert_array_equal(counts.cpu().numpy(), numpy_counts(pts.contiguous(), 9, bounds))


def test_numpy_input_accepted():
    pts = np.random.default_rng(0).random((100, 2)).astype(np.float32)
    counts = pk.grid_histogram(pts, 4, [(0.0, 1.0), (0.0, 1.0)])
    assert isinstance(counts, torch.Tensor)
    np.testing.assert_array_equal(counts.numpy(), numpy_counts(torch.from_numpy(pts), 4, [(0.0, 1.0)] * 2))


@pytest.mark.parametrize("chunk", [None, "7777"])
def test_large_grids_take_the_bucketed_path_and_agree(monkeypatch, chunk):
    """Grids beyond the caches are counted through radix buckets: batched, ragged and dropped too,
    in one chunk of points or in many (PRISM_KERNELS_BUCKET_CHUNK)."""
    if chunk is not None:
        monkeypatch.setenv("PRISM_KERNELS_BUCKET_CHUNK", chunk)
    pts = tricky_points(300_000, 3, torch.float32)
    bounds = [(-1.0, 2.0)] * 3
    counts, dropped = pk.grid_histogram(pts, 160, bounds, return_dropped=True, backend="cpu")  # 4M cells
    expected = numpy_counts(pts, 160, bounds)
    np.testing.assert_array_equal(counts.numpy(), expected)
    assert int(dropped) == pts.shape[0] - expected.sum()
    batched = pts[:299_997].reshape(3, 99_999, 3)
    counts = pk.grid_histogram(batched, (100, 100, 50), bounds, backend="cpu")  # 3 x 500k cells
    for g in range(3):
        np.testing.assert_array_equal(counts[g].numpy(), numpy_counts(batched[g], (100, 100, 50), bounds))
    groups = torch.randint(0, 2, (pts.shape[0],))
    counts, dropped = pk.grid_histogram(pts, 128, bounds, groups=groups, return_dropped=True, backend="cpu")
    for g in range(2):
        expected = numpy_counts(pts[groups == g], 128, bounds)
        np.testing.assert_array_equal(counts[g].numpy(), expected)
        assert int(dropped[g]) == int((groups == g).sum()) - expected.sum()


def test_thread_count_does_not_change_counts():
    pts = tricky_points(100_000, 2, torch.float32)
    bounds = [(-1.0, 2.0)] * 2
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pk.grid_histogram(pts, 64, bounds, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one.numpy(), pk.grid_histogram(pts, 64, bounds, backend="cpu").numpy())


def test_grid_cells_match_numpy_bins(backend):
    name, device = backend
    pts = tricky_points(size_for(name, 3000), 2, torch.float32)
    bounds = [(-1.0, 2.0)] * 2
    cells = pk.grid_cells(pts.to(device), (6, 11), bounds, backend=name).cpu()
    edges = [np.linspace(-1.0, 2.0, n + 1) for n in (6, 11)]
    x = pts.numpy().astype(np.float64)
    idx = [np.searchsorted(edges[d], x[:, d], side="right") - (x[:, d] == 2.0) for d in range(2)]
    kept = np.all([(i >= 1) & (i <= n) for i, n in zip(idx, (6, 11))], axis=0)
    expected = np.where(kept, (idx[0] - 1) * 11 + (idx[1] - 1), -1)
    np.testing.assert_array_equal(cells.numpy(), expected)


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("points,match", [
    (torch.rand(10, 4), "D = 2 or 3"),
    (torch.rand(10, 1), "D = 2 or 3"),
    (torch.rand(10), r"\[N, D\]"),
    (torch.randint(0, 5, (10, 2)), "float16, bfloat16, float32 or float64"),
])
def test_bad_points(points, match):
    with pytest.raises(ValueError, match=f"points.*{match}|{match}"):
        pk.grid_histogram(points, 4)


@pytest.mark.parametrize("bins", [0, -3, (4, 0), (4, 4, 4), 2.5, (True, 3)])
def test_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        pk.grid_histogram(torch.rand(10, 2), bins)


def test_too_many_cells_is_refused_before_allocating():
    with pytest.raises(ValueError, match="bins.*MAX_GRID_CELLS"):
        pk.grid_histogram(torch.rand(10, 3), 1 << 10)
    with pytest.raises(ValueError, match="bins.*MAX_GRID_CELLS"):
        pk.grid_histogram(torch.rand(300, 10, 2), 1000)


@pytest.mark.parametrize("bounds,match", [
    ([(0.0, 1.0)], r"bounds must be \[D, 2\]"),
    ([(1.0, 0.0), (0.0, 1.0)], "lower bound above upper"),
    ([(0.0, float("inf")), (0.0, 1.0)], "finite"),
])
def test_bad_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        pk.grid_histogram(torch.rand(10, 2), 4, bounds)


def test_bad_groups():
    with pytest.raises(ValueError, match="groups must be >= 0"):
        pk.grid_histogram(torch.rand(4, 2), 4, groups=torch.tensor([0, 1, -1, 0]))
    with pytest.raises(ValueError, match="groups must be"):
        pk.grid_histogram(torch.rand(4, 2), 4, groups=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="groups must be None"):
        pk.grid_histogram(torch.rand(2, 4, 2), 4, groups=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="num_groups"):
        pk.grid_histogram(torch.rand(4, 2), 4, groups=torch.tensor([0, 1, 2, 0]), num_groups=2)
