"""Triton ``rbf_matvec``: ``K @ v`` for the RBF kernel, the n x n matrix ``K`` never stored.

Maths (as :func:`prism_kernels.reference.kernel_vendi.rbf_matvec`): for rows ``x [n, d]`` and
``v [n, m]``,

    out[i, :] = sum_j K[i, j] v[j, :],   K[i, j] = exp(-gamma * ||x_i - x_j||^2)

One kernel, tiled like flash attention: each program owns ``BLOCK_I`` output rows and ``BLOCK_V``
columns of ``v``, walks the column tiles ``j`` of ``K`` ``BLOCK_J`` at a time, builds the squared
distances of its tile in float64 from the differences ``x_i - x_j`` (``BLOCK_D`` coordinates per
step; inputs upcast in-kernel), takes the exponent and adds ``K_tile @ v_tile`` to a float64
accumulator. Summing squared differences (rather than the reference's
``||x_i||^2 + ||x_j||^2 - 2 x_i . x_j``) needs no clamp and has no cancellation: ``K[i, i] = 1``
exactly. ``gamma`` is annotated float64 (a Python float argument would otherwise be passed as
float32). Memory: the ``[n, m]`` output only.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._checks import FLOAT_DTYPES, describe

BLOCK_I = 16  # output rows per program
BLOCK_J = 16  # columns of K per step
BLOCK_D = 16  # coordinates per distance step
MAX_BLOCK_V = 32  # columns of v per program (fewer when v is narrower)


@triton.jit
def _rbf_matvec_kernel(x_ptr, v_ptr, out_ptr, n, d, m, gamma: tl.float64, stride_xr, stride_xc, stride_vr,
                       stride_vc, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_V: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_I + tl.arange(0, BLOCK_I)
    vcols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    rm = rows < n
    vm = vcols < m
    acc = tl.zeros([BLOCK_I, BLOCK_V], dtype=tl.float64)
    for j0 in range(0, n, BLOCK_J):
        cols = j0 + tl.arange(0, BLOCK_J).to(tl.int64)
        cm = cols < n
        dist_sq = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float64)
        for k0 in range(0, d, BLOCK_D):
            k = k0 + tl.arange(0, BLOCK_D)
            km = k < d
            xi = tl.load(x_ptr + rows[:, None] * stride_xr + k[None, :] * stride_xc,
                         mask=rm[:, None] & km[None, :], other=0.0).to(tl.float64)  # [I, D]
            xj = tl.load(x_ptr + cols[:, None] * stride_xr + k[None, :] * stride_xc,
                         mask=cm[:, None] & km[None, :], other=0.0).to(tl.float64)  # [J, D]
            diff = xi[:, None, :] - xj[None, :, :]
            dist_sq += tl.sum(diff * diff, axis=2)
        kern = tl.exp(-gamma * dist_sq)  # [I, J]
        # columns past n add nothing: their rows of v load as zeros
        vt = tl.load(v_ptr + cols[:, None] * stride_vr + vcols[None, :] * stride_vc,
                     mask=cm[:, None] & vm[None, :], other=0.0).to(tl.float64)  # [J, V]
        acc += tl.sum(kern[:, :, None] * vt[None, :, :], axis=1)
    tl.store(out_ptr + rows[:, None] * m + vcols[None, :], acc, mask=rm[:, None] & vm[None, :])


def rbf_matvec(x: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """Validate, launch :func:`_rbf_matvec_kernel`; returns ``[n, m]`` float64."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"rbf_matvec: x must be a float16 / bfloat16 / float32 / float64 [n, d] tensor, "
                         f"got {describe(x)}")
    n, d = x.shape
    if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.dtype not in FLOAT_DTYPES or v.shape[0] != n:
        raise ValueError(f"rbf_matvec: v must be a float [n, m] tensor with n = {n}, got {describe(v)}")
    if v.device != x.device:
        raise ValueError(f"rbf_matvec: v must be on x's device {x.device}, got {v.device}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (gamma >= 0) \
            or math.isinf(gamma):
        raise ValueError(f"rbf_matvec: gamma must be a finite number >= 0, got {gamma!r}")
    m = v.shape[1]
    out = torch.zeros(n, m, dtype=torch.float64, device=x.device)
    if n == 0 or m == 0:
        return out
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(m))
    grid = (triton.cdiv(n, BLOCK_I), triton.cdiv(m, block_v))
    _rbf_matvec_kernel[grid](x, v, out, n, d, m, float(gamma), x.stride(0), x.stride(1), v.stride(0),
                             v.stride(1), BLOCK_I=BLOCK_I, BLOCK_J=BLOCK_J, BLOCK_D=BLOCK_D, BLOCK_V=block_v)
    return out
