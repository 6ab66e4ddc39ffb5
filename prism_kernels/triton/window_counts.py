"""Triton ``window_counts``: sums over every "valid" strided window of a batch of 3-D grids.

Maths (identical to :func:`prism_kernels.reference.grid.window_counts`): the summed-area table

    S[b, i, j, k] = sum_{i' < i, j' < j, k' < k} counts[b, i', j', k']     (shape [B, n0+1, n1+1, n2+1])

has a zero first plane on each axis and is built by three inclusive prefix sums, one per axis, of
the zero-padded grid (:func:`_window_counts_sat_kernel`: each program scans ``BLOCK_C`` lines in
chunks of ``BLOCK_L`` with ``tl.cumsum`` plus a running carry, in place). With window ``w``,
stride ``s`` and anchor ``a = (o0 * s0, o1 * s1, o2 * s2)``, ``h = a + w``, the window sum is the
8-term inclusion-exclusion

    S[h0,h1,h2] - S[a0,h1,h2] - S[h0,a1,h2] - S[h0,h1,a2]
      + S[a0,a1,h2] + S[a0,h1,a2] + S[h0,a1,a2] - S[a0,a1,a2]

(:func:`_window_counts_kernel`, one output element per lane), so the cost does not depend on the
window size. Output shape ``[B, o0, o1, o2]`` with ``o_i = (n_i - w_i) // s_i + 1``. Everything is
int64 (values and offsets).
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .._checks import check_window_op

BLOCK = 256
SCAN_BLOCK_L = 32
SCAN_BLOCK_C = 128


@triton.jit
def _window_counts_sat_kernel(sat_ptr, n_cols, length, inner,
                              BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """In-place inclusive prefix sum along the middle axis of a contiguous ``[outer, length, inner]``.

    Column ``c`` in ``[0, outer * inner)`` is the line ``(c // inner, :, c % inner)``.
    """
    cols = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < n_cols
    outer = cols // inner
    base = outer * length * inner + (cols - outer * inner)
    carry = tl.zeros([BLOCK_C], dtype=tl.int64)
    for l0 in range(0, length, BLOCK_L):
        ls = l0 + tl.arange(0, BLOCK_L).to(tl.int64)
        mask = (ls < length)[:, None] & col_ok[None, :]
        ptrs = sat_ptr + base[None, :] + ls[:, None] * inner
        v = tl.load(ptrs, mask=mask, other=0)
        tl.store(ptrs, tl.cumsum(v, axis=0) + carry[None, :], mask=mask)
        carry = carry + tl.sum(v, axis=0)


@triton.jit
def _window_counts_kernel(sat_ptr, out_ptr, total, o0, o1, o2, w0, w1, w2, s0, s1, s2,
                          p0, p1, pb, BLOCK: tl.constexpr):
    """One output element per lane: 8-term inclusion-exclusion of the summed-area table.

    ``p0``, ``p1`` are the table's strides on axes 1 and 2 (axis 3 has stride 1), ``pb`` per batch.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    a2 = offs % o2
    t = offs // o2
    a1 = t % o1
    t = t // o1
    a0 = t % o0
    b = t // o0
    lo0 = a0 * s0 * p0  # a* are int64, so every product below is int64
    lo1 = a1 * s1 * p1
    lo2 = a2 * s2
    hi0 = (a0 * s0 + w0) * p0
    hi1 = (a1 * s1 + w1) * p1
    hi2 = lo2 + w2
    base = sat_ptr + b * pb
    acc = tl.load(base + hi0 + hi1 + hi2, mask=m, other=0)
    acc -= tl.load(base + lo0 + hi1 + hi2, mask=m, other=0)
    acc -= tl.load(base + hi0 + lo1 + hi2, mask=m, other=0)
    acc -= tl.load(base + hi0 + hi1 + lo2, mask=m, other=0)
    acc += tl.load(base + lo0 + lo1 + hi2, mask=m, other=0)
    acc += tl.load(base + lo0 + hi1 + lo2, mask=m, other=0)
    acc += tl.load(base + hi0 + lo1 + lo2, mask=m, other=0)
    acc -= tl.load(base + lo0 + lo1 + lo2, mask=m, other=0)
    tl.store(out_ptr + offs, acc, mask=m)


def _scan_(sat: torch.Tensor, outer: int, length: int, inner: int) -> None:
    n_cols = outer * inner
    if n_cols == 0 or length <= 1:  # length 1 is only the zero plane
        return
    block_l = min(SCAN_BLOCK_L, triton.next_power_of_2(length))
    block_c = min(SCAN_BLOCK_C, triton.next_power_of_2(n_cols))
    _window_counts_sat_kernel[(triton.cdiv(n_cols, block_c),)](
        sat, n_cols, length, inner, BLOCK_L=block_l, BLOCK_C=block_c)


def window_counts(counts: torch.Tensor, window: Sequence[int],
                          stride: Sequence[int]) -> torch.Tensor:
    """Build the summed-area table (3 scan launches) and launch :func:`_window_counts_kernel`."""
    check_window_op(counts, window, stride)
    batch, n0, n1, n2 = counts.shape
    w0, w1, w2 = (int(w) for w in window)
    s0, s1, s2 = (int(s) for s in stride)
    o0, o1, o2 = (n0 - w0) // s0 + 1, (n1 - w1) // s1 + 1, (n2 - w2) // s2 + 1
    out = torch.empty(batch, o0, o1, o2, dtype=torch.int64, device=counts.device)
    total = out.numel()
    if total == 0:
        return out
    m0, m1, m2 = n0 + 1, n1 + 1, n2 + 1
    sat = torch.zeros(batch, m0, m1, m2, dtype=torch.int64, device=counts.device)
    sat[:, 1:, 1:, 1:] = counts
    _scan_(sat, batch * m0 * m1, m2, 1)      # along axis 3
    _scan_(sat, batch * m0, m1, m2)          # along axis 2
    _scan_(sat, batch, m0, m1 * m2)          # along axis 1
    _window_counts_kernel[(triton.cdiv(total, BLOCK),)](
        sat, out, total, o0, o1, o2, w0, w1, w2, s0, s1, s2, m1 * m2, m2, m0 * m1 * m2,
        BLOCK=BLOCK)
    return out
