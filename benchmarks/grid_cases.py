"""Cases, data and implementations shared by ``bench_grid.py`` (pytest-benchmark) and ``report.py``.

Every implementation of a case gets the same float32 points, uniform in [0, 1), with the range
[0, 1] given explicitly on every axis:

* ours: ``pk.grid_histogram(points [N, D] tensor, bins, bounds, backend="cpu")``;
* ``numpy.histogramdd(points [N, D] array, bins, range)``;
* ``torch.histogramdd(points [N, D] tensor, bins, range)``;
* ``fast_histogram.histogram2d(x, y, ...)`` / ``histogramdd((x, y, z), ...)``: it is given the
  per-axis columns as contiguous arrays, made once outside the timing (the input form its docs
  prefer; passing the [N, D] array makes it a little slower).

Window step: ``pk.window_counts(counts, (w,) * D, stride=1)`` (valid windows, int64) against
``scipy.ndimage.uniform_filter(counts as float64, size=w, mode="constant")`` on the same grid.

Seed pairs: ``pk.seed_pairs(points, windows)`` on clustered points (Gaussian clusters on a thin uniform
background, the EmbedSDG layout) whose sparse windows (window = stride = 2 cells, threshold 2) each
hold a single member, the expensive case (the nearest point outside the window is searched among all
points), against the brute-force oracle of the tests (``tests/seed_pairs_oracle.py``: numpy, every
window against all N points).
"""

from __future__ import annotations

from dataclasses import dataclass

import sys
from pathlib import Path

import fast_histogram
import numpy as np
import scipy.ndimage
import torch

import prism_kernels as pk

SEED = 20_251_121
SIZES = {"1M": 1_000_000, "10M": 10_000_000}
GRIDS = ((2, 256), (3, 64), (3, 256))  # (D, bins per axis)
HIST_IMPLS = ("ours", "numpy", "torch", "fast-histogram")
PEERS = HIST_IMPLS[1:]

WINDOW_POINTS = 1_000_000  # the window grids are the histograms of this many points
WINDOWS = ((2, 256, 3), (2, 256, 15), (2, 256, 63), (3, 64, 3), (3, 64, 15))  # (D, bins, window)
WINDOW_IMPLS = ("ours", "scipy")

SEED_PAIRS_POINTS = 200_000
SEED_PAIRS = ((2, 128), (3, 40))  # (D, bins per axis); window = stride = 2 cells, threshold 2
SEED_PAIRS_IMPLS = ("ours", "brute force")


@dataclass(frozen=True)
class HistCase:
    size: str  # key of SIZES
    dims: int
    bins: int

    @property
    def n(self) -> int:
        return SIZES[self.size]

    @property
    def id(self) -> str:
        return f"{self.size}-{self.dims}d-{self.bins}^{self.dims}"

    @property
    def bounds(self) -> list[list[float]]:
        return [[0.0, 1.0]] * self.dims


@dataclass(frozen=True)
class WindowCase:
    dims: int
    bins: int
    window: int

    @property
    def id(self) -> str:
        return f"{self.dims}d-{self.bins}^{self.dims}-w{self.window}"


@dataclass(frozen=True)
class SeedPairsCase:
    dims: int
    bins: int

    @property
    def id(self) -> str:
        return f"{SEED_PAIRS_POINTS // 1000}k-{self.dims}d-{self.bins}^{self.dims}"


def seed_pairs_cases() -> list[SeedPairsCase]:
    return [SeedPairsCase(*c) for c in SEED_PAIRS]


def hist_cases(sizes=tuple(SIZES)) -> list[HistCase]:
    return [HistCase(size, dims, bins) for size in sizes for dims, bins in GRIDS]


def window_cases() -> list[WindowCase]:
    return [WindowCase(*c) for c in WINDOWS]


def is_slow(case: HistCase, impl: str) -> bool:
    """Peer runs that take about a second or more per call on a 2-core machine."""
    if case.size != "10M":
        return False
    return impl == "numpy" or (impl == "torch" and case.dims == 3)


class Data:
    """Seeded float32 points per (N, D), generated on first use and cached."""

    def __init__(self, seed: int = SEED):
        self.seed = seed
        self._points: dict[tuple[int, int], np.ndarray] = {}
        self._columns: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._grids: dict[tuple[int, int], torch.Tensor] = {}

    def points(self, n: int, dims: int) -> np.ndarray:
        key = (n, dims)
        if key not in self._points:
            rng = np.random.default_rng([self.seed, n, dims])
            self._points[key] = rng.random((n, dims), dtype=np.float32)
        return self._points[key]

    def tensor(self, n: int, dims: int) -> torch.Tensor:
        return torch.from_numpy(self.points(n, dims))  # shares memory with points()

    def columns(self, n: int, dims: int) -> tuple[np.ndarray, ...]:
        key = (n, dims)
        if key not in self._columns:
            pts = self.points(n, dims)
            self._columns[key] = tuple(np.ascontiguousarray(pts[:, d]) for d in range(dims))
        return self._columns[key]

    def grid(self, dims: int, bins: int) -> torch.Tensor:
        """int64 counts of WINDOW_POINTS points on a bins^dims grid (the window-step input)."""
        key = (dims, bins)
        if key not in self._grids:
            self._grids[key] = pk.grid_histogram(self.tensor(WINDOW_POINTS, dims), bins,
                                                 bounds=[[0.0, 1.0]] * dims, backend="cpu")
        return self._grids[key]

    def clustered(self, n: int, dims: int) -> torch.Tensor:
        """[n, dims] float32: five Gaussian clusters of different spreads on a 4% uniform background."""
        gen = torch.Generator().manual_seed(self.seed + dims)
        centres = torch.rand(5, dims, generator=gen) * 6.0 - 3.0
        scales = 0.2 + 0.6 * torch.rand(5, dims, generator=gen)
        background = n // 25
        which = torch.randint(0, 5, (n - background,), generator=gen)
        clustered = centres[which] + scales[which] * torch.randn(n - background, dims, generator=gen)
        uniform = torch.rand(background, dims, generator=gen) * 9.0 - 4.5
        return torch.cat([clustered, uniform]).to(torch.float32)

    def seed_pairs_input(self, case: SeedPairsCase):
        """(points, sparse windows with their members) of a seed-pairs case, made once."""
        key = ("seed_pairs", case)
        if key not in self._grids:
            pts = self.clustered(SEED_PAIRS_POINTS, case.dims)
            bounds = torch.stack([pts.amin(0), pts.amax(0)], dim=1).to(torch.float64)
            counts = pk.grid_histogram(pts, case.bins, bounds, backend="cpu")
            self._grids[key] = pts, pk.sparse_windows(counts, (2,) * case.dims, 2, threshold=2, points=pts,
                                                      bounds=bounds, backend="cpu")
        return self._grids[key]

    def drop(self, n: int, dims: int) -> None:
        """Frees the cached [n, dims] points and their columns."""
        self._points.pop((n, dims), None)
        self._columns.pop((n, dims), None)


def hist_fn(case: HistCase, impl: str, data: Data):
    """A zero-argument callable running ``impl`` on ``case`` (the data is prepared here, untimed)."""
    d, b, bounds = case.dims, case.bins, case.bounds
    if impl == "ours":
        t = data.tensor(case.n, d)
        return lambda: pk.grid_histogram(t, b, bounds=bounds, backend="cpu")
    if impl == "numpy":
        x = data.points(case.n, d)
        return lambda: np.histogramdd(x, bins=[b] * d, range=bounds)[0]
    if impl == "torch":
        t = data.tensor(case.n, d)
        flat_range = [0.0, 1.0] * d
        return lambda: torch.histogramdd(t, bins=[b] * d, range=flat_range).hist
    if impl == "fast-histogram":
        cols = data.columns(case.n, d)
        if d == 2:
            return lambda: fast_histogram.histogram2d(cols[0], cols[1], bins=b, range=bounds)
        return lambda: fast_histogram.histogramdd(cols, bins=b, range=bounds)
    raise ValueError(f"unknown implementation {impl!r}")


def window_fn(case: WindowCase, impl: str, data: Data):
    counts = data.grid(case.dims, case.bins)
    win = (case.window,) * case.dims
    if impl == "ours":
        return lambda: pk.window_counts(counts, win, stride=1, backend="cpu")
    if impl == "scipy":
        grid = counts.numpy().astype(np.float64)
        return lambda: scipy.ndimage.uniform_filter(grid, size=case.window, mode="constant")
    raise ValueError(f"unknown implementation {impl!r}")


def seed_pairs_fn(case: SeedPairsCase, impl: str, data: Data):
    pts, windows = data.seed_pairs_input(case)
    if impl == "ours":
        return lambda: pk.seed_pairs(pts, windows, seed=0)
    if impl == "brute force":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from seed_pairs_oracle import seed_pairs_oracle

        x = pts.numpy().astype(np.float64)
        return lambda: seed_pairs_oracle(x, windows, 0)
    raise ValueError(f"unknown implementation {impl!r}")


def single_thread(fn):
    """``fn`` run with torch's intra-op threads (which our kernels use) set to 1 for the call."""
    def call():
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(previous)
    return call


def total(counts) -> float:
    """Sum of a histogram from any implementation (float64, exact for these sizes)."""
    if isinstance(counts, torch.Tensor):
        return float(counts.to(torch.float64).sum())
    return float(np.asarray(counts, dtype=np.float64).sum())


def check_window(case: WindowCase, ours: torch.Tensor, scipy_out: np.ndarray) -> None:
    """Valid-window sums equal the centred uniform_filter mean x window volume in the interior."""
    half = case.window // 2
    inner = tuple(slice(half, half + o) for o in ours.shape)
    expected = np.rint(scipy_out[inner] * case.window ** case.dims).astype(np.int64)
    if not np.array_equal(ours.numpy(), expected):
        raise AssertionError(f"window_counts disagrees with scipy.ndimage.uniform_filter on {case.id}")
