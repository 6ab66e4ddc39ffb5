"""A brute-force oracle of :func:`prism_kernels.seed_pairs`: the documented rule written independently in
numpy, measuring every single-member window's free face against all N points (O(N x windows)).
Used by tests/test_kernel_seams.py and, as the peer of the seed_pairs timing, by benchmarks/report.py."""

import numpy as np
import torch


def seed_pairs_oracle(points: np.ndarray, sw, seed: int) -> np.ndarray:
    """The documented rule written independently in numpy, by brute force: every single-member
    window measures its free face against all N points (O(N x windows))."""
    n = points.shape[0]
    priority = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    bounds = sw.bounds.numpy()
    lo, hi = bounds[:, 0].copy(), bounds[:, 1].copy()
    same = lo == hi
    lo[same] -= 0.5
    hi[same] += 0.5
    cell = (hi - lo) / np.array(sw.bins)
    size = np.array(sw.window) * cell
    axis = int(np.argmax(size))
    finite = np.isfinite(points).all(axis=1)
    out = []
    for m in range(sw.corners.shape[0]):
        mem = sw.members(m).numpy()
        box_lo = lo + sw.corners[m].numpy() * cell
        box_hi = box_lo + size
        if mem.size >= 2:
            key = sorted(mem, key=lambda i: (points[i, axis], priority[i]))
            out.append((key[0], key[-1]))
            continue
        only = int(mem[0])
        near_lower = points[only, axis] - box_lo[axis] <= box_hi[axis] - points[only, axis]
        flo, fhi = box_lo.copy(), box_hi.copy()
        flo[axis] = fhi[axis] = box_hi[axis] if near_lower else box_lo[axis]
        with np.errstate(over="ignore", invalid="ignore"):
            gap = np.maximum(flo - points, 0) + np.maximum(points - fhi, 0)  # [N, D]
            dist = np.sqrt((gap * gap).sum(axis=1))
        inside = np.all((points >= box_lo) & (points < box_hi), axis=1)
        ok = finite & ~inside & np.isfinite(dist)
        ok[only] = False
        pick = only
        if ok.any():
            tied = np.nonzero(ok & (dist == dist[ok].min()))[0]
            pick = int(tied[np.argmin(priority[tied])])
        out.append((only, pick) if near_lower else (pick, only))
    return np.array(out, dtype=np.int64).reshape(-1, 2)
