"""Pure-torch reference of the on-the-fly kernel mat-vec behind ``kernel_vendi``: the test oracle
and the fallback backend.

``rbf_matvec(x, v, gamma)`` returns ``K @ v`` with ``K[i, j] = exp(-gamma * ||x_i - x_j||^2)`` for
rows ``x [n, d]`` and ``v [n, m]`` (float64), computed ``tile`` rows of ``K`` at a time, so the n x n
matrix is never stored: memory ``O(tile * n)``. Squared distances come from
``||x_i||^2 + ||x_j||^2 - 2 x_i . x_j`` clamped at 0 (callers centre ``x`` first, which keeps the
cancellation small).
"""

from __future__ import annotations

import torch


def rbf_matvec(x: torch.Tensor, v: torch.Tensor, gamma: float, tile: int = 1024) -> torch.Tensor:
    """``K @ v`` [n, m] float64 for the RBF kernel ``exp(-gamma ||x_i - x_j||^2)`` of ``x`` [n, d]."""
    x = x.to(torch.float64)
    v = v.to(torch.float64)
    sq = (x * x).sum(dim=1)  # [n]
    out = torch.empty(x.shape[0], v.shape[1], dtype=torch.float64, device=x.device)
    for i0 in range(0, x.shape[0], tile):
        xi = x[i0:i0 + tile]  # [t, d]
        d2 = (sq[i0:i0 + tile, None] + sq[None, :] - 2.0 * (xi @ x.T)).clamp_min(0.0)  # [t, n]
        out[i0:i0 + tile] = torch.exp(-gamma * d2) @ v
    return out


def rbf_gram(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The full RBF kernel matrix ``[n, n]`` float64 (for the exact method only: O(n^2) memory)."""
    x = x.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    return torch.exp(-gamma * d2)
