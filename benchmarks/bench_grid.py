"""pytest-benchmark harness for the grid-density kernels against their usual peers.

    pytest benchmarks/bench_grid.py --benchmark-only                  # default: slow peers skipped
    pytest benchmarks/bench_grid.py --benchmark-only --bench-slow     # everything
    pytest benchmarks/bench_grid.py --benchmark-only -k "1M or win"   # the quick subset
    pytest benchmarks/bench_grid.py --benchmark-only -k seed          # seed_pairs (brute force: --bench-slow)

One benchmark per (case, implementation); the benchmarks of a case share a group, so
pytest-benchmark's table compares them side by side. Cases, data and implementations are in
grid_cases.py (shared with report.py, which interleaves the runs and prints the ratios).
"""

from __future__ import annotations

import numpy as np
import pytest

import grid_cases as gc


def _hist_params():
    params = []
    for case in gc.hist_cases():
        for impl in gc.HIST_IMPLS:
            marks = [pytest.mark.slow] if gc.is_slow(case, impl) else []
            params.append(pytest.param(case, impl, marks=marks, id=f"{case.id}-{impl}"))
    return params


def _seed_pairs_params():
    return [pytest.param(case, impl, marks=[pytest.mark.slow] if impl != "ours" else [], id=f"seed-{case.id}-{impl}")
            for case in gc.seed_pairs_cases() for impl in gc.SEED_PAIRS_IMPLS]


def _window_params():
    return [pytest.param(case, impl, id=f"win-{case.id}-{impl}")
            for case in gc.window_cases() for impl in gc.WINDOW_IMPLS]


@pytest.fixture(scope="module")
def data():
    """Seeded points, generated once per module (lazily per size and dimension) and shared."""
    return gc.Data()


@pytest.mark.parametrize(("case", "impl"), _hist_params())
def test_histogram(benchmark, data, case, impl):
    benchmark.group = f"histogram {case.id}"
    benchmark.extra_info.update(points=case.n, dims=case.dims, bins=case.bins, impl=impl)
    counts = benchmark(gc.hist_fn(case, impl, data))
    assert gc.total(counts) == case.n  # every point lies inside the range
    if impl == "ours" and case.size == "1M":  # exact binning: same counts as numpy
        expected = gc.hist_fn(case, "numpy", data)()
        np.testing.assert_array_equal(counts.numpy(), expected.astype(np.int64))


@pytest.mark.parametrize(("case", "impl"), _window_params())
def test_window(benchmark, data, case, impl):
    benchmark.group = f"window {case.id}"
    benchmark.extra_info.update(dims=case.dims, bins=case.bins, window=case.window, impl=impl)
    out = benchmark(gc.window_fn(case, impl, data))
    if impl == "ours":
        gc.check_window(case, out, gc.window_fn(case, "scipy", data)())


@pytest.mark.parametrize(("case", "impl"), _seed_pairs_params())
def test_seed_pairs(benchmark, data, case, impl):
    benchmark.group = f"seed_pairs {case.id}"
    benchmark.extra_info.update(dims=case.dims, bins=case.bins, impl=impl)
    pairs = benchmark(gc.seed_pairs_fn(case, impl, data))
    if impl == "ours":  # exact: the same pairs as the tests' brute-force oracle
        np.testing.assert_array_equal(pairs.numpy(), gc.seed_pairs_fn(case, "brute force", data)())
