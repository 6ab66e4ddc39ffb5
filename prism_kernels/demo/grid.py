"""Second part of the demo: the density of a 2-D point set and its sparse regions.

    python -m prism_kernels.demo.grid [--points 200000] [--bins 128] [--window 8] [--stride 4]
                                 [--out demo_out] [--backend cpu]

Builds a seeded synthetic embedding-like point set (a few dense anisotropic clusters on a thin
uniform background), then runs the EmbedSDG density pipeline on it: histogram -> sliding-window
counts -> sparse windows with their members -> seed pairs -> per-point density. Prints a summary
with the time of every step and writes ``<out>/density.png`` (counts on a log scale, the sparse
windows outlined, each window's seed pair joined by a line) and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import prism_kernels as pk
from prism_kernels import _backends


def demo_points(n: int, seed: int = 0) -> torch.Tensor:
    """[n, 2] float32: five Gaussian clusters of different spread and a 4% uniform background."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-2.0, -1.0], [1.5, 2.0], [2.5, -2.0], [-1.0, 2.5], [0.0, 0.0]])
    scales = torch.tensor([[0.6, 0.3], [0.4, 0.8], [0.3, 0.3], [0.9, 0.2], [0.5, 0.5]])
    background = n // 25
    which = torch.randint(0, len(centres), (n - background,), generator=gen)
    clustered = centres[which] + scales[which] * torch.randn(n - background, 2, generator=gen)
    uniform = torch.rand(background, 2, generator=gen) * 9.0 - 4.5
    return torch.cat([clustered, uniform]).to(torch.float32)


def _timed(label: str, timings: dict, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[label] = (time.perf_counter() - start) * 1e3
    return out


def run(points: int, bins: int, window: int, stride: int, out_dir: Path, backend: str | None) -> dict:
    """Runs the pipeline, writes the PNG and JSON summary, and returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pts = demo_points(points)
    timings: dict[str, float] = {}
    bounds = torch.stack([pts.amin(0), pts.amax(0)], dim=1).to(torch.float64)  # [2, 2]
    counts, dropped = _timed("grid_histogram", timings, pk.grid_histogram, pts, bins, bounds,
                             return_dropped=True, backend=backend)
    _timed("window_counts", timings, pk.window_counts, counts, (window, window), stride, backend=backend)
    sparse = _timed("sparse_windows", timings, pk.sparse_windows, counts, (window, window), stride,
                    points=pts, bounds=bounds, backend=backend)
    pairs = _timed("seed_pairs", timings, pk.seed_pairs, pts, sparse, seed=0)
    density = _timed("point_density", timings, pk.point_density, pts, counts, bounds, 5, backend=backend)

    occupied = counts[counts > 0]
    summary = {
        "backend": _backends.resolve(backend, pts.device),
        "points": points,
        "grid": [bins, bins],
        "bounds": bounds.tolist(),
        "dropped": int(dropped),
        "occupied_cells": int(occupied.numel()),
        "max_cell_count": int(counts.max()),
        "window": [window, window],
        "stride": stride,
        "threshold": sparse.threshold,
        "sparse_windows": int(sparse.corners.shape[0]),
        "points_in_sparse_windows": int(torch.unique(sparse.indices).numel()) if sparse.indices is not None else 0,
        "density_5x5": {
            "median": float(density.double().median()),
            "p10": float(density.double().quantile(0.10)),
            "p90": float(density.double().quantile(0.90)),
        },
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        "png": str(out_dir / "density.png"),
    }
    _plot(counts, bounds, sparse, pairs, pts, out_dir / "density.png")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plot(counts, bounds, sparse, pairs, pts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    (x0, x1), (y0, y1) = bounds.tolist()
    bins_x, bins_y = counts.shape
    cell_w, cell_h = (x1 - x0) / bins_x, (y1 - y0) / bins_y
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    grid = counts.double().clamp(min=0.5).T.numpy()  # rows = y for imshow
    image = ax.imshow(grid, origin="lower", extent=(x0, x1, y0, y1), norm=LogNorm(vmin=0.5, vmax=grid.max()),
                      cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="points per cell (log)")
    w, h = sparse.window
    for corner in sparse.corners.tolist():
        ax.add_patch(Rectangle((x0 + corner[0] * cell_w, y0 + corner[1] * cell_h), w * cell_w, h * cell_h,
                               fill=False, edgecolor="red", linewidth=0.6, alpha=0.8))
    seeds = pts[pairs].numpy()  # [M, 2, 2]
    for a, b in seeds:
        ax.plot([a[0], b[0]], [a[1], b[1]], color="white", linewidth=0.5, alpha=0.8)
    ax.set_title(f"{pts.shape[0]:,} points, {bins_x}x{bins_y} grid: {sparse.corners.shape[0]} sparse "
                 f"{w}x{h} windows (count < {sparse.threshold:.1f})")
    ax.set_xlabel("dim 0")
    ax.set_ylabel("dim 1")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000, help="number of demo points")
    parser.add_argument("--bins", type=int, default=128, help="grid cells per axis")
    parser.add_argument("--window", type=int, default=8, help="window size in cells")
    parser.add_argument("--stride", type=int, default=4, help="window stride in cells")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("PRISM_DEMO_OUT", "demo_out")))
    parser.add_argument("--backend", default=None, choices=[None, *pk.BACKENDS])
    args = parser.parse_args(argv)
    summary = run(args.points, args.bins, args.window, args.stride, args.out, args.backend)
    print(f"prism_kernels {pk.__version__}: ran on backend {summary['backend']!r} "
          f"(available: {', '.join(pk.backends())})")
    print(f"{summary['points']:,} demo points on a {args.bins}x{args.bins} grid "
          f"({summary['occupied_cells']:,} occupied cells, max {summary['max_cell_count']} per cell, "
          f"{summary['dropped']} dropped)")
    print(f"sparse {args.window}x{args.window} windows (stride {args.stride}, count < "
          f"{summary['threshold']:.2f}): {summary['sparse_windows']}, holding "
          f"{summary['points_in_sparse_windows']:,} points")
    d = summary["density_5x5"]
    print(f"5x5 density per point: p10 {d['p10']:.0f}, median {d['median']:.0f}, p90 {d['p90']:.0f}")
    print("time per step: " + ", ".join(f"{k} {v:.2f} ms" for k, v in summary["timings_ms"].items()))
    print(f"wrote {summary['png']} and {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
