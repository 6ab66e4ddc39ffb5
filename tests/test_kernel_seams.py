"""The seams between the kernels (issue 8): out-of-range group ids and NaN edges on every backend,
Vendi for q < 1 on rank-deficient inputs, extreme magnitudes, sparse-window members that do not
match their counts, and the vectorised seed pairs."""

import math

import numpy as np
import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends
from prism_kernels.reference import grid as ref_grid
from prism_kernels.reference import vendi as ref_vendi
from seed_pairs_oracle import seed_pairs_oracle

vendi_lib = pytest.importorskip("vendi_score.vendi")

LOW_LEVEL = ("reference", "cpu", "triton")


def low_level(op: str, name: str):
    reason = _backends._unavailable_reason(name, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return _backends.kernel(op, name)


def unit_edges(groups: int, dims: int, bins: int) -> torch.Tensor:
    return torch.linspace(0, 1, bins + 1, dtype=torch.float64).expand(groups, dims, bins + 1).contiguous()


# ---------------------------------------------------------------------------------------------
# item 1: one contract for out-of-range group ids, NaN edges rejected, on every backend


@pytest.mark.parametrize("name", LOW_LEVEL)
def test_out_of_range_group_ids_are_counted_nowhere(name):
    pts = torch.rand(50, 2, dtype=torch.float32)
    ids = torch.randint(0, 3, (50,))
    bad = torch.tensor([3, -1, 1 << 40, -(1 << 40), 7])
    ids[:5] = bad
    edges = unit_edges(3, 2, 4)
    counts, dropped = low_level("grid_histogram", name)(pts, ids, edges, [4, 4], 1)
    cells = low_level("grid_cells", name)(pts, ids, edges, [4, 4], 1)
    # oracle: numpy per valid group, the bad ids ignored
    for g in range(3):
        mine = pts[ids == g].double().numpy()
        want = np.histogramdd(mine, bins=(4, 4), range=[(0, 1), (0, 1)])[0].reshape(-1)
        np.testing.assert_array_equal(counts[g].numpy(), want)
    assert dropped.tolist() == [0, 0, 0]
    assert cells[:5].tolist() == [-1] * 5
    assert bool((cells[5:] >= 0).all())


@pytest.mark.parametrize("name", LOW_LEVEL)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_edges_are_rejected(name, bad):
    edges = unit_edges(1, 2, 4)
    edges[0, 1, 2] = bad
    with pytest.raises((ValueError, RuntimeError), match="edges"):
        low_level("grid_histogram", name)(torch.rand(8, 2), None, edges, [4, 4], 8)
    with pytest.raises((ValueError, RuntimeError), match="edges"):
        low_level("grid_cells", name)(torch.rand(8, 2), None, edges, [4, 4], 8)


def test_public_wrapper_still_names_bad_group_ids():
    with pytest.raises(ValueError, match="num_groups = 2 but groups holds group 4"):
        pk.grid_histogram(torch.rand(5, 2), 4, [[0, 1], [0, 1]], groups=torch.tensor([0, 1, 4, 0, 0]), num_groups=2)
    with pytest.raises(ValueError, match="groups must be >= 0"):
        pk.grid_cells(torch.rand(3, 2), 4, [[0, 1], [0, 1]], groups=torch.tensor([0, -1, 0]))


# ---------------------------------------------------------------------------------------------
# item 2: Vendi for q < 1 (and every q) against vendi-score and exact values


QS = [0.1, 0.5, 1, 2, math.inf]


def vendi_oracle(x: np.ndarray, q) -> float:
    """vendi-score on whichever of its forms is full rank: score_K for n < d, score_dual for n > d."""
    qq = "inf" if math.isinf(q) else q
    n, d = x.shape
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    if n <= d:
        return float(vendi_lib.score_K(y @ y.T, q=qq))
    # rows normalised here: sklearn's normalize (inside score_dual) leaves rows with norms below
    # 10 eps unnormalised, e.g. rows of 1e-20
    return float(vendi_lib.score_dual(y, q=qq, normalize=False))


@pytest.mark.parametrize("precision", ["fast", "exact"])
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("shape", [(4, 200), (150, 12)])
def test_vendi_matches_vendi_score_for_every_q(precision, q, shape):
    x = torch.randn(*shape, dtype=torch.float64)
    want = vendi_oracle(x.numpy(), q)
    got = pk.vendi_score(x.to(torch.float32) if precision == "fast" else x, q, precision=precision)
    tol = 1e-4 if precision == "fast" else 1e-8
    assert got == pytest.approx(want, rel=tol)
    assert got <= shape[0] * (1 + tol)


@pytest.mark.parametrize("precision", ["fast", "exact"])
@pytest.mark.parametrize("q", QS)
def test_vendi_of_known_rank_is_exact(precision, q):
    # m orthonormal directions, each repeated r times: S / n has m eigenvalues 1 / m, so VS_q = m.
    m, r, d = 5, 7, 64
    basis = torch.linalg.qr(torch.randn(d, m, dtype=torch.float64))[0].T  # [m, d] orthonormal rows
    x = basis.repeat(r, 1) * 3.0
    assert pk.vendi_score(x, q, precision=precision) == pytest.approx(m, rel=1e-5)
    state = pk.VendiState(d, precision=precision)
    state.update(x[:10]).update(x[10:])
    assert state.score(q) == pytest.approx(m, rel=1e-5)
    assert int((state.spectrum() > 0).sum()) == m


@pytest.mark.parametrize("q", QS)
def test_grouped_and_kernel_vendi_drop_noise_eigenvalues(q):
    x = torch.randn(12, 128, dtype=torch.float64)
    groups = torch.tensor([0] * 4 + [1] * 8)
    got = pk.grouped_vendi(x, groups, q)
    for g, rows in ((0, x[:4]), (1, x[4:])):
        assert float(got[g]) == pytest.approx(vendi_oracle(rows.numpy(), q), rel=1e-8)
    # cosine kernel_vendi goes through the dual form; the exact RBF of far-apart points is ~identity
    assert pk.kernel_vendi(x[:4], "cosine", q=q).score == pytest.approx(vendi_oracle(x[:4].numpy(), q), rel=1e-8)


def test_kernel_vendi_exact_small_q_matches_scipy():
    scipy_spatial = pytest.importorskip("scipy.spatial.distance")
    scipy_linalg = pytest.importorskip("scipy.linalg")
    x = torch.randn(40, 3, dtype=torch.float64)
    x[20:] = x[:20]  # duplicated rows: K has rank 20, the other eigenvalues are exactly 0
    bw = 0.7
    k = np.exp(-scipy_spatial.cdist(x.numpy(), x.numpy(), "sqeuclidean") / (2 * bw * bw))
    lam = scipy_linalg.eigvalsh(k / 40)
    lam = lam[lam > 1e-12 * np.linalg.norm(lam) + 64 * 40 * np.finfo(float).eps * lam.max()]  # documented floor
    for q in (0.1, 0.5):
        want = float(np.sum(lam ** q) ** (1 / (1 - q)))
        assert pk.kernel_vendi(x, "rbf", bw, "exact", q).score == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# item 3: extreme magnitudes


@pytest.mark.parametrize("name", LOW_LEVEL)
@pytest.mark.parametrize("magnitude", [1e200, 1e-162, 1e-170, 1e-300])
def test_gram_of_extreme_float64_rows_is_normalised(name, magnitude):
    x = torch.randn(5, 7, dtype=torch.float64)
    want = torch.zeros(7, 7, dtype=torch.float64)
    ref_vendi.gram_accumulate(want, x, None, True, True)  # ordinary magnitudes
    for exact in (True, False):
        got = torch.zeros(7, 7, dtype=torch.float64)
        status = low_level("gram_accumulate", name)(got, x * magnitude, None, True, exact)
        assert status.tolist() == [-1, 0]
        tol = 1e-12 if exact else 1e-6
        assert float((torch.tril(got) - torch.tril(want)).norm() / torch.tril(want).norm()) < tol


def test_zero_and_subnormal_rows_are_reported():
    x = torch.randn(3, 4, dtype=torch.float64)
    x[1] = 0.0
    with pytest.raises(ValueError, match="row 1"):
        pk.vendi_score(x)
    x[1] = 1e-320  # subnormal: no finite scale
    with pytest.raises(ValueError, match="row 1"):
        pk.vendi_score(x, precision="exact")


def test_unnormalised_overflow_raises_and_keeps_the_state():
    state = pk.VendiState(4, normalize=False, precision="exact")
    state.update(torch.ones(2, 4, dtype=torch.float64))
    before = state.gram.clone()
    with pytest.raises(ValueError, match="overflows"):
        state.update(torch.full((3, 4), 1e200, dtype=torch.float64))
    assert torch.equal(state.gram, before)
    assert state.rows == 2
    with pytest.raises(ValueError, match="overflows"):
        pk.vendi_score(torch.full((3, 4), 1e200, dtype=torch.float64), normalize=False)


# ---------------------------------------------------------------------------------------------
# item 4: members that do not match the counts; vectorised seed pairs


def test_sparse_windows_with_other_points_is_an_error():
    pts = torch.rand(60, 2, dtype=torch.float64)
    bounds = [[0.0, 1.0], [0.0, 1.0]]
    counts = pk.grid_histogram(pts, (8, 8), bounds)
    other = torch.rand(60, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="points: sparse window .* counts say"):
        pk.sparse_windows(counts, (2, 2), threshold=3, points=other, bounds=bounds)
    with pytest.raises(ValueError, match="points: sparse window"):
        pk.sparse_windows(counts, (2, 2), threshold=3, points=pts, bounds=[[0.0, 2.0], [0.0, 1.0]])
    sw = pk.sparse_windows(counts, (2, 2), threshold=3, points=pts, bounds=bounds)
    assert int(sw.offsets[-1]) == sw.indices.numel() == int(sw.counts.sum())
    with pytest.raises(ValueError, match="points: windows refer to point"):
        pk.seed_pairs(pts[:10], sw)


@pytest.mark.parametrize("seed", [0, 3])
def test_seed_pairs_match_the_per_window_rule(seed):
    gen = torch.Generator().manual_seed(seed)
    blob = torch.rand(300, 2, generator=gen, dtype=torch.float64) * 0.5
    iso = 0.55 + torch.rand(12, 2, generator=gen, dtype=torch.float64) * 0.45
    pts = torch.cat([blob, iso, torch.tensor([[0.3, 0.3]], dtype=torch.float64).repeat(2, 1)])  # ties
    pts = torch.cat([pts, torch.tensor([[math.nan, 0.2]], dtype=torch.float64)])
    bounds = [[0.0, 1.0], [0.0, 1.0]]
    counts = pk.grid_histogram(pts, (16, 16), bounds)
    sw = pk.sparse_windows(counts, (2, 1), threshold=4, points=pts, bounds=bounds)
    assert int(((sw.offsets[1:] - sw.offsets[:-1]) == 1).sum()) >= 5
    got = pk.seed_pairs(pts, sw, seed=seed)
    np.testing.assert_array_equal(got.numpy(), seed_pairs_oracle(pts.numpy(), sw, seed))


def _seed_pairs_layout(kind: str, dims: int, seed: int):
    """Points, bounds, bins, window, stride and threshold of a layout with many single-member windows."""
    rng = np.random.default_rng([seed, dims, len(kind)])
    if kind == "blobs":  # a dense blob, scattered outliers, odd sizes
        blob = 0.5 + 0.08 * rng.standard_normal((1999, dims))
        outliers = rng.random((57, dims))
        pts = np.concatenate([blob, outliers, outliers[:3]])  # three exact duplicates: ties
        bins, window, stride, threshold = (31, 23, 9)[:dims], (3, 2, 1)[:dims], 1, 3
    elif kind == "lattice":  # integer coordinates on cell faces: many exact distance ties
        pts = rng.integers(0, 13, (41 if dims == 2 else 301, dims)).astype(np.float64)
        bins, window, stride, threshold = (12, 12, 6)[:dims], (2, 1, 2)[:dims], (2, 1, 1)[:dims], 2
    elif kind == "slab":  # most points in a thin slab across the faces, far from them on other axes
        pts = rng.random((801, dims))
        pts[:700, 0] = 0.5 + 1e-3 * rng.standard_normal(700)
        pts[:700, 1] = np.where(rng.random(700) < 0.5, 0.02, 0.98) + 0.01 * rng.random(700)
        bins, window, stride, threshold = (10, 21, 9)[:dims], (1, 3, 1)[:dims], 1, 2
    elif kind == "ties":  # faces whose nearest outside point has 40 copies: the tied copies span blocks
        rows = np.full((5, dims), 0.55)
        rows[:, 1] = (np.arange(5) * 2 + 1.5) / 10  # one row per other y cell pair
        singles = rows + np.array([0.07, 0.004 * seed, 0.0][:dims])  # x = 0.62
        copies = rows.repeat(40, axis=0)
        copies[:, 0] = 0.5  # 0.05 below the free (lower) face of the singles' windows
        pts = np.concatenate([rng.random((30, dims)) * 0.4, singles, copies])
        bins, window, stride, threshold = (20, 10, 4)[:dims], (2, 1, 1)[:dims], 1, 2
    elif kind == "far":  # few points on a fine grid narrower than the data: answers many cells away, off the grid
        pts = rng.random((61, dims)) * 1.2 - 0.1
        bins, window, stride, threshold = (47, 53, 29)[:dims], (1, 2, 1)[:dims], 1, 2
    elif kind == "hostile":  # non-finite rows, points whose squared distances overflow, far points
        pts = rng.random((203, dims))
        pts[::17, rng.integers(0, dims)] = np.nan
        pts[5::23, 0] = np.inf
        pts[7::29] = 1e200 * np.sign(rng.standard_normal((len(pts[7::29]), dims)))
        pts[11::31, 0] = -3.0
        bins, window, stride, threshold = ((19, 23) if dims == 2 else (8, 11, 5)), (2, 2, 1)[:dims], 1, 3
    else:
        raise ValueError(kind)
    hi = 12.0 if kind == "lattice" else 1.0
    return pts, [[0.0, hi]] * dims, bins, window, stride, threshold


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["blobs", "lattice", "slab", "ties", "far", "hostile"])
@pytest.mark.parametrize("seed", [0, 1])
def test_seed_pairs_equal_the_brute_force_on_random_layouts(kind, dims, seed):
    pts, bounds, bins, window, stride, threshold = _seed_pairs_layout(kind, dims, seed)
    x = torch.from_numpy(pts)
    counts = pk.grid_histogram(x, bins, bounds)
    sw = pk.sparse_windows(counts, window, stride, threshold=threshold, points=x, bounds=bounds)
    single = int(((sw.offsets[1:] - sw.offsets[:-1]) == 1).sum())
    assert single >= 3, (kind, dims, single)
    for tie_seed in (seed, seed + 11):
        got = pk.seed_pairs(x, sw, seed=tie_seed)
        np.testing.assert_array_equal(got.numpy(), seed_pairs_oracle(pts, sw, tie_seed))
        if kind != "hostile":  # float32 points give the same pairs as their float64 copy
            np.testing.assert_array_equal(pk.seed_pairs(x.float(), sw, seed=tie_seed).numpy(),
                                          seed_pairs_oracle(pts.astype(np.float32).astype(np.float64), sw,
                                                            tie_seed))


def test_seed_pairs_single_member_alone_keeps_itself():
    # No other finite point outside the window (the rest are NaN, inf or overflow every distance).
    pts = torch.tensor([[0.5, 0.5], [math.nan, 0.1], [math.inf, 0.3], [1e300, -1e300], [-1e300, 1e300]],
                       dtype=torch.float64)
    bounds = [[0.0, 1.0], [0.0, 1.0]]
    sw = pk.sparse_windows(pk.grid_histogram(pts, 4, bounds), (1, 1), threshold=2, points=pts, bounds=bounds)
    assert sw.members(0).tolist() == [0]
    assert pk.seed_pairs(pts, sw).tolist() == [[0, 0]]
    np.testing.assert_array_equal(pk.seed_pairs(pts, sw).numpy(), seed_pairs_oracle(pts.numpy(), sw, 0))
