"""Property-based tests (hypothesis) over the public ops: random shapes including 0 and 1, every
dtype, non-contiguous views, NaN / Inf, extreme magnitudes; each valid case is compared with an
independent oracle (numpy, scipy, vendi-score), each invalid argument must raise a ValueError that
names it.

Budget: the "ci" profile (the default) keeps the whole file to well under a minute on two cores;
``HYPOTHESIS_PROFILE=long`` runs many more examples.
"""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import prism_kernels as pk
from prism_kernels import _backends

vendi_lib = pytest.importorskip("vendi_score.vendi")

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FAST = [b for b in ("cpu", "reference") if _backends._unavailable_reason(b, torch.device("cpu")) is None]
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def point_sets(draw, max_n=40):
    """(points [N, D] possibly a non-contiguous view, dtype, dims) with some NaN / Inf rows and an
    extreme scale where the dtype can hold it."""
    n = draw(st.integers(0, max_n))
    dims = draw(st.sampled_from([2, 3]))
    dtype = draw(st.sampled_from(FLOATS))
    seed = draw(st.integers(0, 2**31 - 1))
    wide = torch.rand(n, 2 * dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3] + ([1e-30, 1e30] if dtype in (torch.float32, torch.float64) else [])))
    wide = (wide - 0.5) * scale
    if n and draw(st.booleans()):
        rows = draw(st.lists(st.integers(0, n - 1), max_size=3))
        for r, v in zip(rows, [math.nan, math.inf, -math.inf]):
            wide[r, r % (2 * dims)] = v
    view = wide.to(dtype)[:, ::2] if draw(st.booleans()) else wide.to(dtype)[:, :dims]
    return view, dims


@given(data=point_sets(), bins=st.integers(1, 6), backend=st.sampled_from(FAST))
def test_grid_histogram_matches_numpy(data, bins, backend):
    pts, dims = data
    x = pts.double().numpy()
    finite = np.isfinite(x).all(axis=1)
    bounds = [[-1.0, 1.0]] * dims if not finite.any() else \
        [[float(x[finite, d].min()), float(x[finite, d].max())] for d in range(dims)]
    got, dropped = pk.grid_histogram(pts, bins, bounds, return_dropped=True, backend=backend)
    rng = [(lo - 0.5, hi + 0.5) if lo == hi else (lo, hi) for lo, hi in bounds]
    want = np.histogramdd(x[finite], bins=[bins] * dims, range=rng)[0]
    np.testing.assert_array_equal(got.numpy(), want)
    assert int(dropped) == x.shape[0] - int(want.sum())


@given(n=st.tuples(st.integers(1, 7), st.integers(1, 7)), w=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       stride=st.integers(1, 3), batch=st.integers(0, 2), backend=st.sampled_from(FAST))
def test_window_counts_matches_numpy(n, w, stride, batch, backend):
    assume(w[0] <= n[0] and w[1] <= n[1])
    counts = torch.randint(0, 9, (batch, *n))
    got = pk.window_counts(counts, w, stride, backend=backend)
    view = np.lib.stride_tricks.sliding_window_view(counts.numpy(), w, axis=(1, 2))
    want = view.sum(axis=(-2, -1))[:, ::stride, ::stride]
    np.testing.assert_array_equal(got.numpy(), want)


def vendi_oracle(x: np.ndarray, q) -> float:
    qq = "inf" if math.isinf(q) else q
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    if x.shape[0] <= x.shape[1]:
        return float(vendi_lib.score_K(y @ y.T, q=qq))
    # rows normalised here: sklearn's normalize (inside score_dual) leaves rows with norms below
    # 10 eps unnormalised, e.g. rows of 1e-20
    return float(vendi_lib.score_dual(y, q=qq, normalize=False))


@given(n=st.integers(1, 40), d=st.integers(1, 40), q=st.sampled_from([0.1, 0.5, 1, 2, math.inf]),
       dtype=st.sampled_from(FLOATS), precision=st.sampled_from(["fast", "exact"]),
       transposed=st.booleans(), magnitude=st.sampled_from([1.0, 1e-20, 1e20]), backend=st.sampled_from(FAST),
       seed=st.integers(0, 1000))
def test_vendi_score_matches_vendi_score_package(n, d, q, dtype, precision, transposed, magnitude, backend, seed):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(d, n, generator=gen, dtype=torch.float64).T if transposed else \
        torch.randn(n, d, generator=gen, dtype=torch.float64)
    if dtype in (torch.float16, torch.bfloat16):
        magnitude = 1.0
    x = (base * magnitude).to(dtype)
    assume(bool((x.double().abs().sum(1) > 0).all()))
    want = vendi_oracle(x.double().numpy(), q)
    got = pk.vendi_score(x, q, precision=precision, backend=backend)
    # fast: S within 1e-6 (Frobenius-relative); for q < 1 the smallest eigenvalues weigh more
    tol = (2e-4 if q >= 1 else 1e-2) if precision == "fast" else 1e-7
    assert got == pytest.approx(want, rel=tol, abs=1e-9)
    assert got <= min(n, d) * (1 + 1e-6)


@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4), d=st.integers(1, 9),
       q=st.sampled_from([0.5, 1, 2, math.inf]), backend=st.sampled_from(FAST), seed=st.integers(0, 1000))
def test_grouped_vendi_matches_per_group_oracle(sizes, d, q, backend, seed):
    gen = torch.Generator().manual_seed(seed)
    groups = torch.cat([torch.full((s,), g) for g, s in enumerate(sizes)])
    perm = torch.randperm(groups.numel(), generator=gen)
    groups = groups[perm]
    x = torch.randn(groups.numel(), d, generator=gen, dtype=torch.float64)
    got = pk.grouped_vendi(x, groups, q, num_groups=len(sizes), backend=backend)
    for g, s in enumerate(sizes):
        if s == 0:
            assert math.isnan(float(got[g]))
        else:
            assert float(got[g]) == pytest.approx(vendi_oracle(x[groups == g].numpy(), q), rel=1e-6)


@given(n=st.integers(2, 30), d=st.integers(1, 4), bandwidth=st.floats(0.2, 5.0), q=st.sampled_from([1, 2]),
       seed=st.integers(0, 1000))
def test_kernel_vendi_exact_matches_scipy(n, d, bandwidth, q, seed):
    distance = pytest.importorskip("scipy.spatial.distance")
    linalg = pytest.importorskip("scipy.linalg")
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = np.exp(-distance.cdist(x.numpy(), x.numpy(), "sqeuclidean") / (2 * bandwidth ** 2))
    lam = linalg.eigvalsh(k / n)
    lam = lam[lam > 1e-12 * np.linalg.norm(lam) + 64 * n * np.finfo(float).eps * lam.max()]  # documented floor
    want = math.exp(-(lam * np.log(lam)).sum()) if q == 1 else float((lam ** q).sum() ** (1 / (1 - q)))
    assert pk.kernel_vendi(x, "rbf", bandwidth, "exact", q).score == pytest.approx(want, rel=1e-7)


@given(b=st.integers(0, 3), p=st.integers(1, 70), k=st.integers(1, 40), kind=st.sampled_from(pk.SKETCH_KINDS),
       split=st.integers(0, 70), seed=st.integers(0, 2**64 - 1), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_sketch_is_linear_in_pieces(b, p, k, kind, split, seed, dtype):
    # independent of any backend's internals: a long vector sketches to the sum of its pieces'
    # sketches (the matrix is indexed by the global coordinate), and scaling commutes.
    split = min(split, p)
    rows = torch.randn(b, p).to(dtype)
    whole = pk.sketch(rows, k, kind, seed)
    parts = pk.sketch(rows[:, :split].contiguous(), k, kind, seed) if split else torch.zeros(b, k)
    if split < p:
        parts = parts + pk.sketch(rows[:, split:].contiguous(), k, kind, seed, offset=split)
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pk.sketch(rows.float() * 2, k, kind, seed), 2 * pk.sketch(rows.float(), k, kind, seed))


# ---------------------------------------------------------------------------------------------
# invalid arguments: every one raises ValueError naming the argument

P2 = torch.rand(10, 2)
C2 = torch.randint(0, 3, (6, 6))
X = torch.randn(8, 4)
INVALID = [
    (lambda v: pk.grid_histogram(P2, v), "bins", [0, -1, 2.5, "4", None, (3, 3, 3), (True, 2)]),
    (lambda v: pk.grid_histogram(P2, 4, v), "bounds", [[[0, 1]], [[0, 1], [0]], [[0, math.nan], [0, 1]],
                                                        [[1, 0], [0, 1]], "x", [[0j, 1], [0, 1]]]),
    (lambda v: pk.grid_histogram(P2, 4, groups=torch.zeros(10, dtype=torch.long), num_groups=v), "num_groups",
     [2.5, -1, "2", 1 << 40]),
    (lambda v: pk.grid_histogram(P2, 4, groups=v), "groups", [torch.zeros(3, dtype=torch.long), torch.zeros(10),
                                                             torch.full((10,), -2), "a"]),
    (lambda v: pk.grid_cells(P2, 4, v), "bounds", [None]),
    (lambda v: pk.grid_histogram(v, 4), "points", [torch.rand(10), torch.rand(10, 4), torch.ones(10, 2, dtype=torch.long),
                                                   None, "p"]),
    (lambda v: pk.window_counts(C2, v), "window", [None, 3, (0, 2), (7, 1), (2, 2.0), "ab"]),
    (lambda v: pk.window_counts(C2, (2, 2), v), "stride", [0, (1, 0), 1.5]),
    (lambda v: pk.sparse_windows(C2, (2, 2), threshold=v), "threshold", [math.nan, "1", 1j]),
    (lambda v: pk.sparse_windows(C2, (2, 2), quantile=v), "quantile", [-0.1, 1.5, math.nan]),
    (lambda v: pk.sparse_windows(C2, (2, 2), points=P2, bounds=v), "bounds", [[[0, 1]], "b"]),
    (lambda v: pk.seed_pairs(P2, pk.sparse_windows(pk.grid_histogram(P2, 6, [[0, 1], [0, 1]]), (2, 2), threshold=99,
                                                  points=P2, bounds=[[0, 1], [0, 1]]), seed=v), "seed", [1.5, -1, "0"]),
    (lambda v: pk.vendi_score(X, v), "q", [0, -1, math.nan, "two", None]),
    (lambda v: pk.vendi_score(v), "X", [torch.randn(4), torch.zeros(0, 3), torch.ones(3, 2, dtype=torch.long), None]),
    (lambda v: pk.vendi_score(X, precision=v), "precision", ["slow", None]),
    (lambda v: pk.vendi_score(X, block_rows=v), "block_rows", [0, 2.5]),
    (lambda v: pk.vendi_score(X, backend=v), "backend", ["gpu", 3]),
    (lambda v: pk.VendiState(v), "dim", [0, 2.5, "4", True]),
    (lambda v: pk.VendiState(4, normalize=v), "normalize", [1, "yes", None]),
    (lambda v: pk.grouped_vendi(X, torch.zeros(8, dtype=torch.long), num_groups=v), "num_groups", [2.5, -3]),
    (lambda v: pk.grouped_vendi(X, v), "groups", [torch.full((8,), 1 << 40), torch.zeros(8)]),
    (lambda v: pk.kernel_vendi(X, bandwidth=v), "bandwidth", [0.0, -1.0, 1e-200, math.inf, math.nan, "1", None]),
    (lambda v: pk.kernel_vendi(X, bandwidth=1.0, seed=v), "seed", [1.5, -1]),
    (lambda v: pk.sketch(X, v), "k", [0, 2.5, 1 << 31, None]),
    (lambda v: pk.sketch(X, 4, v), "kind", ["dense", None]),
    (lambda v: pk.sketch(X, 4, seed=v), "seed", [-1, 1.5, 1 << 64]),
    (lambda v: pk.sketch(X, 4, block=v), "block", [-1, 1 << 32]),
    (lambda v: pk.sketch(X, 4, "sparse", s=v), "s", [0, 2000]),
    (lambda v: pk.sketch(v, 4), "rows", [X.double(), torch.randn(3), None]),
    (lambda v: pk.sketch_kronecker(v, torch.randn(2, 3, 4), 2, 2), "activations",
     [torch.randn(2, 3), torch.randn(2, 3, 4).double(), None]),
    (lambda v: pk.sketch_kronecker(torch.randn(2, 3, 4), v, 2, 2), "output_grads",
     [torch.randn(2, 3), torch.randn(2, 4, 4), torch.randn(2, 3, 4).double()]),
    (lambda v: pk.concat_sketches(v), "batches", [None, 3, []]),
]
CASES = [(fn, name, value) for fn, name, values in INVALID for value in values]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_invalid_argument_is_named(case):
    fn, name, value = CASES[case]
    with pytest.raises(ValueError, match=name):
        fn(value)


def test_empty_kronecker_batches_are_valid():
    for b, t in ((0, 3), (2, 0), (0, 0)):
        out = pk.sketch_kronecker(torch.randn(b, t, 5), torch.randn(b, t, 6), 2, 3)
        assert out.shape == (b, 6) and not bool(out.any())
        emb = pk.sketch_kronecker_embedding(torch.zeros(b, t, dtype=torch.long), torch.randn(b, t, 6), 2, 3)
        assert emb.shape == (b, 6) and not bool(emb.any())


def test_concat_sketches_with_mismatched_widths_is_named():
    meta = pk.SketchMeta(0, "rademacher", 4, 0, "all", "x", "0", 1)
    a = pk.SketchBatch(torch.zeros(2, 4), torch.ones(2, dtype=torch.bool), meta)
    b = pk.SketchBatch(torch.zeros(2, 5), torch.ones(2, dtype=torch.bool), meta)
    with pytest.raises(ValueError, match=r"batches\[1\]"):
        pk.concat_sketches([a, b])
