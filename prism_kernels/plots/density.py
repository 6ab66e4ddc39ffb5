"""EmbedSDG's density map: the grid counts of the reduced embeddings, the sparse windows, the seed pairs,
the interpolated points and the generated examples, on one figure."""

from __future__ import annotations

import os
from typing import Sequence


def plot_density(path: str | os.PathLike, coords, bounds, counts, *, windows: Sequence = (),
                 seeds: Sequence = (), interpolated: Sequence = (), generated: Sequence = (),
                 title: str | None = None) -> str:
    """Writes a PNG of the density map (atomically).

    Args:
        path: the PNG to write.
        coords: ``[N, K]`` map coordinates of the data (K = 2 or 3; a 3-D map is drawn on its first
            two axes, the counts summed over the third).
        bounds: ``[K, 2]`` the grid's (min, max) per axis.
        counts: ``[*bins]`` cell counts of the grid (drawn on a log scale).
        windows: sparse windows as ``(lo [K], hi [K])`` boxes in map coordinates (outlined).
        seeds: per generated item, its seeds' coordinates ``[[K], ...]`` (1 for the baseline, 2 joined by a line).
        interpolated: ``[M, K]`` coordinates of the interpolated embeddings.
        generated: ``[G, K]`` coordinates of the generated examples (embedded and transformed with the
            same reducer as the data).
        title: figure title.

    Returns: the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    from ..score.rundir import atomic_write

    pts = np.asarray(coords, dtype=np.float64)
    b = np.asarray(bounds, dtype=np.float64)
    grid = np.asarray(counts, dtype=np.float64)
    if grid.ndim == 3:
        grid = grid.sum(axis=2)
    fig, ax = plt.subplots(figsize=(7.5, 6.2), dpi=120)
    image = ax.imshow(np.log1p(grid.T), origin="lower", extent=(b[0, 0], b[0, 1], b[1, 0], b[1, 1]),
                      aspect="auto", cmap="Greys", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="log(1 + examples per cell)")
    ax.scatter(pts[:, 0], pts[:, 1], s=5, c="tab:green", alpha=0.5, linewidths=0, label=f"data ({len(pts)})")
    for i, (lo, hi) in enumerate(windows):
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], fill=False, lw=0.8,
                               ec="tab:orange", label=f"sparse windows ({len(windows)})" if i == 0 else None))
    for i, pair in enumerate(seeds):
        pair = np.asarray(pair, dtype=np.float64).reshape(-1, pts.shape[1])
        ax.plot(pair[:, 0], pair[:, 1], "-o", color="tab:blue", ms=3, lw=0.7, alpha=0.8,
                label="seeds" if i == 0 else None)
    if len(interpolated):
        mid = np.asarray(interpolated, dtype=np.float64)
        ax.scatter(mid[:, 0], mid[:, 1], marker="x", s=22, c="tab:purple", label=f"interpolated ({len(mid)})")
    if len(generated):
        gen = np.asarray(generated, dtype=np.float64)
        ax.scatter(gen[:, 0], gen[:, 1], marker="*", s=46, c="tab:red", edgecolors="k", linewidths=0.3,
                   label=f"generated ({len(gen)})")
    ax.set_xlabel("axis 1")
    ax.set_ylabel("axis 2")
    if pts.shape[1] == 3:
        ax.set_xlabel("axis 1 (3-D map seen along axis 3)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=5, fontsize=7, frameon=False)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return os.fspath(path)
