"""Pure-torch references of the Vendi ops: the test oracle and the fallback backend.

Everything is computed in float64, whatever ``exact`` says: the reference is the yardstick the
"fast" (float32 products) and "exact" (float64 throughout) kernels are measured against.

Maths. For rows ``x_i`` of a block ``X [n, d]`` with weights ``w_i >= 0`` (1 when absent) let

    y_i = sqrt(w_i) * x_i / ||x_i||      (normalize=True)
    y_i = sqrt(w_i) * x_i                (normalize=False)

``gram_accumulate`` adds ``sum_i y_i y_i^T`` to the LOWER triangle (``i >= j``) of ``gram [d, d]``;
the strict upper triangle is never read or written. A row with a NaN or infinite value (or, with
normalize, a zero norm) is an error: the op then leaves ``gram`` unchanged and reports the first
such row. ``grouped_gram`` builds, for every group, the smaller of its two Grams (``Y_g^T Y_g``,
d x d, or ``Y_g Y_g^T``, n_g x n_g) which share their non-zero eigenvalues.
"""

from __future__ import annotations

import torch

from .._checks import check_gram_op, check_grouped_op

#: Status codes of ``gram_accumulate``'s second output entry.
STATUS_OK = 0
STATUS_NONFINITE = 1
STATUS_ZERO_NORM = 2


def _scaled_rows(x: torch.Tensor, weights: torch.Tensor | None, normalize: bool):
    """[n, d] float64 rows y_i, and (first bad row, status) or (-1, 0).

    Norms are taken of the rows divided by their largest magnitude, ``||x|| = big * ||x / big||``,
    so that squares neither overflow (float64 entries near 1e155 and above) nor underflow (below
    about 1e-150); a row whose norm is below 1 / DBL_MAX has no finite scale and counts as zero.
    """
    y = x.to(torch.float64)
    bad = ~torch.isfinite(y).all(dim=1)
    if bool(bad.any()):
        return None, (int(bad.nonzero()[0, 0]), STATUS_NONFINITE)
    scale = torch.ones(y.shape[0], dtype=torch.float64, device=y.device)
    if normalize:
        big = y.abs().amax(dim=1) if y.shape[1] else torch.zeros_like(scale)  # [n]
        unit = y / torch.where(big > 0, big, 1.0)[:, None]
        norm = big * torch.sqrt((unit * unit).sum(dim=1))
        zero = ~(1.0 / norm <= torch.finfo(torch.float64).max)  # 0 (or subnormal) norm
        if bool(zero.any()):
            return None, (int(zero.nonzero()[0, 0]), STATUS_ZERO_NORM)
        scale = 1.0 / norm
    if weights is not None:
        scale = scale * torch.sqrt(weights.to(torch.float64))
    return y * scale[:, None], (-1, STATUS_OK)


def gram_accumulate(gram: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None,
                    normalize: bool, exact: bool) -> torch.Tensor:
    """``gram[i, j] += sum_r y_ri y_rj`` for ``i >= j``; returns int64 ``[2]`` = (bad row or -1, status).

    Args:
        gram: ``[d, d]`` float64, updated in place (lower triangle only).
        x: ``[n, d]`` float16 / bfloat16 / float32 / float64.
        weights: ``[n]`` float64 >= 0, or None.
        normalize: L2-normalise every row first.
        exact: ignored here (the reference is float64 throughout).
    """
    del exact
    check_gram_op(gram, x, weights)
    y, (row, status) = _scaled_rows(x, weights, normalize)
    if y is not None and y.shape[0]:
        block = torch.tril(y.T @ y)
        lower = torch.ones_like(block, dtype=torch.bool).tril()
        gram.copy_(torch.where(lower, gram + block, gram))
    return torch.tensor([row, status], dtype=torch.int64, device=x.device)


def grouped_gram(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor, size: int,
                 normalize: bool) -> torch.Tensor:
    """Per-group Grams, zero-padded to ``[G, size, size]`` float64 (full symmetric matrices).

    Args:
        x: ``[N, d]`` rows (finite; checked by the caller).
        order: ``[N]`` int64 row indices sorted by group: group g owns ``order[offsets[g]:offsets[g+1]]``.
        offsets: ``[G + 1]`` int64, non-decreasing, ``offsets[0] = 0``, ``offsets[G] = N``.
        size: ``max_g min(n_g, d)`` (at least 1).
        normalize: L2-normalise every row first (rows of zero norm stay zero).

    Group g with ``n_g <= d`` gets ``Y_g Y_g^T`` (n_g x n_g, its rows in ``order``), otherwise
    ``Y_g^T Y_g`` (d x d); the rest of its ``size x size`` slot is zero.
    """
    check_grouped_op(x, order, offsets)
    d = x.shape[1]
    groups = offsets.shape[0] - 1
    if groups and size < max(1, int((offsets[1:] - offsets[:-1]).clamp(max=d).max())):
        raise ValueError(f"size = {size} must be >= max_g min(n_g, d) and >= 1")
    out = torch.zeros(groups, size, size, dtype=torch.float64, device=x.device)
    y = x.to(torch.float64)
    if normalize:
        norm = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        # zero rows stay zero; a NaN / Inf row stays non-finite (grouped_vendi reports it)
        y = torch.where(norm == 0, 0.0, y / torch.where(norm == 0, 1.0, norm))
    for g in range(groups):
        rows = y[order[int(offsets[g]):int(offsets[g + 1])]]
        k = rows.shape[0]
        if k == 0:
            continue
        if k <= d:
            out[g, :k, :k] = rows @ rows.T
        else:
            out[g, :d, :d] = rows.T @ rows
    return out


def grouped_frobenius_sq(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor,
                         normalize: bool) -> torch.Tensor:
    """``[G]`` float64: ``||Y_g^T Y_g||_F^2 = ||Y_g Y_g^T||_F^2`` of every group (0 when empty);
    arguments as in :func:`grouped_gram`."""
    check_grouped_op(x, order, offsets)
    d = x.shape[1]
    counts = offsets[1:] - offsets[:-1]
    size = max(1, int(counts.clamp(max=d).max())) if counts.numel() else 1
    grams = grouped_gram(x, order, offsets, size, normalize)
    return (grams * grams).sum(dim=(1, 2))
