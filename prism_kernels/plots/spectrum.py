"""The eigenvalue spectrum of a G-Vendi run."""

from __future__ import annotations

import os
from typing import Sequence


def plot_spectrum(eigenvalues: Sequence[float], gvendi: dict, path: str | os.PathLike, *, label: str | None = None,
                  ci95: Sequence[float] | None = None) -> str:
    """Writes a PNG of the eigenvalues of S / n (descending, log scale) with G-Vendi in the title.

    Args:
        eigenvalues: [k] eigenvalues, descending (zeros are not drawn on the log axis).
        gvendi: {"q1", "q2", "inf"} scores.
        path: the PNG to write (atomically).
        label: a name for the run (in the title).
        ci95: [lo, hi] of q = 1, or None.

    Returns: the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..score.rundir import atomic_write

    lam = [float(v) for v in eigenvalues]
    idx = [i + 1 for i, v in enumerate(lam) if v > 0]
    pos = [v for v in lam if v > 0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(idx, pos, lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue of $X^T X / n$")
    ci = f" [{ci95[0]:.1f}, {ci95[1]:.1f}]" if ci95 else ""
    head = f"{label}: " if label else ""
    ax.set_title(f"{head}G-Vendi q=1 {gvendi['q1']:.2f}{ci}, q=2 {gvendi['q2']:.2f}, q=inf {gvendi['inf']:.2f}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return os.fspath(path)
