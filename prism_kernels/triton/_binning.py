"""Shared Triton device code: exact per-point cell lookup (``numpy.histogramdd`` semantics).

For one axis with ``n`` bins and float64 edges ``e[0..n]`` (non-decreasing), a coordinate ``x``
promoted to float64 is kept iff it is finite and ``e[0] <= x <= e[n]``; its bin is the largest
``b`` in ``[0, n - 1]`` with ``e[b] <= x``. This equals the reference's
``searchsorted(e, x, right=True) - 1 - (x == e[n])``.

The bin is found by a branch-free descending binary search on the predicate ``e[j] <= x``, which is
monotone (true, then false) over ``j`` for sorted edges:

    b = 0
    for k = STEPS-1 .. 0:
        c = b + 2^k
        if c <= n - 1 and e[c] <= x: b = c

With ``e[0] <= x`` the invariant ``e[b] <= x`` holds, and because ``2^STEPS - 1 >= n - 1`` every
index in ``[0, n - 1]`` is reachable, so ``b`` ends at the largest true index. Only comparisons of
float64 values are used (no division), hence the result is bit-exact. ``STEPS`` is a compile-time
constant, ``max(1, max_d bit_length(n_d - 1))`` (never more than ``ceil(log2(n + 1))``).

The row-major cell over ``D`` axes is ``cell = (...(b_0 * n_1 + b_1) * n_2 + b_2)`` in int64.
"""

from __future__ import annotations

from typing import Sequence

import triton
import triton.language as tl


def search_steps(bins: Sequence[int]) -> int:
    """Binary-search steps covering every axis: ``max(1, max_d bit_length(n_d - 1))``."""
    return max([1] + [max(int(n) - 1, 0).bit_length() for n in bins])


def padded_bins(bins: Sequence[int]) -> tuple[int, int, int]:
    """Bins padded to three axes with 1 (unused axes are never read: ``D`` is a constexpr)."""
    b = [int(n) for n in bins] + [1] * (3 - len(bins))
    return b[0], b[1], b[2]


@triton.jit
def _bin_axis(x, row_ptr, n, valid, STEPS: tl.constexpr):
    """Bin of ``x`` (float64) on one axis with edges at ``row_ptr[0..n]``, and whether it is kept."""
    lo = tl.load(row_ptr, mask=valid, other=0.0)
    hi = tl.load(row_ptr + n, mask=valid, other=0.0)
    finite = tl.abs(x) < float("inf")  # False for NaN and +-Inf
    kept = valid & finite & (x >= lo) & (x <= hi)
    b = tl.zeros(x.shape, dtype=tl.int64)
    for i in tl.static_range(STEPS):
        cand = b + (1 << (STEPS - 1 - i))
        ok = kept & (cand <= n - 1)
        e = tl.load(row_ptr + cand, mask=ok, other=0.0)
        b = tl.where(ok & (e <= x), cand, b)
    return b, kept


@triton.jit
def _point_group(group_ids_ptr, offs, in_range, points_per_group, num_groups,
                 HAS_GROUP_IDS: tl.constexpr):
    """Group of each point (int64) and whether it is a valid, in-range group."""
    if HAS_GROUP_IDS:
        g = tl.load(group_ids_ptr + offs, mask=in_range, other=0).to(tl.int64)
    else:
        g = offs // points_per_group
    valid = in_range & (g >= 0) & (g < num_groups)
    return g, valid


@triton.jit
def _point_cell(points_ptr, edges_ptr, offs, g, valid, n0, n1, n2, edge_stride,
                D: tl.constexpr, STEPS: tl.constexpr):
    """Row-major cell (int64) of each point ``offs`` in group ``g``'s grid, and whether it is kept.

    ``offs`` and ``g`` are int64; ``edges`` is ``[G, D, edge_stride]`` contiguous float64.
    """
    cell = tl.zeros(offs.shape, dtype=tl.int64)
    kept = valid
    for d in tl.static_range(D):
        if d == 0:
            n = n0
        elif d == 1:
            n = n1
        else:
            n = n2
        x = tl.load(points_ptr + offs * D + d, mask=valid, other=0.0).to(tl.float64)
        row_ptr = edges_ptr + (g * D + d) * edge_stride
        b, kept_d = _bin_axis(x, row_ptr, n, valid, STEPS)
        kept = kept & kept_d
        cell = cell * n + b
    return cell, kept
