"""Pure-torch sketch kernel: the test oracle and the fallback backend.

The projection of rows ``X [B, P]`` is ``out[b, i] = scale * sum_j X[b, j] * M[i, offset + j]``
with the unscaled matrix ``M`` defined entry by entry from the Philox4x32-10 stream (see
``csrc/include/prism/sketch.h``, which this module transcribes; every backend matches it):

* key ``(seed & 0xffffffff, seed >> 32)``; counter ``(j & 0xffffffff, j >> 32, group, block)``;
* ``rademacher``: ``group = i // 128``; bit ``i % 32`` of word ``(i // 32) % 4``; bit 1 gives -1;
* ``gaussian``: ``group = i // 4``; words ``(2p, 2p + 1)``, ``p = (i // 2) % 2``, give a Box-Muller
  pair (radius from the first word, angle from the second, float32 polynomials, no libm); column
  ``i`` takes the cosine (even ``i``) or sine (odd ``i``) part;
* ``sparse``: ``s`` nonzeros per coordinate; nonzero ``t`` is word ``t % 4`` of group ``t // 4``:
  sign from bit 0, row ``((w >> 1) * k) >> 31``. Rows are drawn independently and MAY collide (the
  entries then add); ``E ||scale M x||^2 = ||x||^2`` holds regardless.

Shapes:
    rows  [B, P]  float32, bfloat16 or float16
    out   [B, k]  float32
"""

from __future__ import annotations

import torch

from .. import _gaussian_table as T

_MASK = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_CHUNK = 2048  # input coordinates per generated piece of the matrix


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of m * c for uint32 values held in int64 (no int64 overflow)."""
    c_lo, c_hi = c & 0xFFFF, c >> 16
    p1, p2 = m * c_lo, m * c_hi  # each < 2^48
    low_sum = p1 + ((p2 & 0xFFFF) << 16)
    return (p2 >> 16) + (low_sum >> 32), low_sum & _MASK


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on uint32 values held in int64 tensors (broadcast); returns the 4 output words."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(10):
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK
        k1 = (k1 + _KEY_B) & _MASK
    return c0, c1, c2, c3


def _words(seed: int, block: int, j: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """[..., 4] words of counters (j, group, block) with j int64 >= 0 (broadcast with group)."""
    w = philox4x32_10(j & _MASK, j >> 32, group, block, seed & _MASK, (seed >> 32) & _MASK)
    return torch.stack(w, dim=-1)


def _f(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _horner(coefficients: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    """``p = c[0]; p = p * x + c[i]`` in float32, the order of prism/sketch.h ``horner``."""
    p = _f(coefficients[0]).expand_as(x)
    for c in coefficients[1:]:
        p = p * x + _f(c)
    return p


def _log_unit(u: torch.Tensor) -> torch.Tensor:
    bits = u.view(torch.int32).to(torch.int64)
    e = (bits >> 23) - 127
    m = ((bits & 0x007FFFFF) | 0x3F800000).to(torch.int32).view(torch.float32)
    big = m > _f(T.SQRT2)
    m = torch.where(big, m * _f(0.5), m)
    e = torch.where(big, e + 1, e)
    s = (m - _f(1.0)) / (m + _f(1.0))
    return e.to(torch.float32) * _f(T.LN2) + (_f(2.0) * s) * _horner(T.LOG_SERIES, s * s)


def _sin_quarter(x: torch.Tensor) -> torch.Tensor:
    return x * _horner(T.SIN_SERIES, x * x)


def _cos_quarter(x: torch.Tensor) -> torch.Tensor:
    return _horner(T.COS_SERIES, x * x)


def _box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = ((a >> 8) + 1).to(torch.float32) * _f(T.TWO_POW_M24)
    # torch.sqrt on float32 CPU tensors is not always correctly rounded; the float64 root rounded to
    # float32 is (53 >= 2 * 24 + 2 bits), and equals IEEE sqrtf, CUDA sqrtf and tl.math.sqrt_rn.
    radius = torch.sqrt((_f(-2.0) * _log_unit(u)).to(torch.float64)).to(torch.float32)
    quadrant = b >> 30
    x = ((b >> 8) & 0x3FFFFF).to(torch.float32) * _f(T.TWO_POW_M22) * _f(T.HALF_PI)
    c, s = _cos_quarter(x), _sin_quarter(x)
    odd = (quadrant & 1) == 1
    cos_part = torch.where(odd, s, c)
    sin_part = torch.where(odd, c, s)
    cos_part = torch.where((quadrant == 1) | (quadrant == 2), -cos_part, cos_part)
    sin_part = torch.where(quadrant >= 2, -sin_part, sin_part)
    return radius * cos_part, radius * sin_part


def sketch_matrix(k: int, kind: str, seed: int, block: int, offset: int, width: int, s: int = 4) -> torch.Tensor:
    """The unscaled matrix transposed, ``M[:, offset : offset + width]^T`` as ``[width, k]`` float32."""
    return matrix_columns(k, kind, seed, block, torch.arange(offset, offset + width, dtype=torch.int64), s)


def matrix_columns(k: int, kind: str, seed: int, block: int, coords: torch.Tensor, s: int = 4) -> torch.Tensor:
    """Columns ``M[:, coords]^T`` of the unscaled matrix as ``[len(coords), k]`` float32 (any int64 coords)."""
    seed &= (1 << 64) - 1
    width = coords.numel()
    j = coords.to(device="cpu", dtype=torch.int64).reshape(-1, 1)  # [P, 1]
    if kind == "rademacher":
        groups = (k + 127) // 128
        w = _words(seed, block, j, torch.arange(groups, dtype=torch.int64))  # [P, G, 4]
        bits = (w.unsqueeze(-1) >> torch.arange(32, dtype=torch.int64)) & 1  # [P, G, 4, 32]
        return (1 - 2 * bits).reshape(width, groups * 128)[:, :k].to(torch.float32)
    if kind == "gaussian":
        groups = (k + 3) // 4
        w = _words(seed, block, j, torch.arange(groups, dtype=torch.int64))  # [P, G, 4]
        z0, z1 = _box_muller(w[..., 0], w[..., 1])
        z2, z3 = _box_muller(w[..., 2], w[..., 3])
        return torch.stack([z0, z1, z2, z3], dim=-1).reshape(width, groups * 4)[:, :k].contiguous()
    if kind == "sparse":
        w = _words(seed, block, j, torch.arange((s + 3) // 4, dtype=torch.int64)).reshape(width, -1)[:, :s]
        rows = ((w >> 1) * k) >> 31  # [P, s]
        signs = (1 - 2 * (w & 1)).to(torch.float32)
        out = torch.zeros(width, k, dtype=torch.float32)
        out.scatter_add_(1, rows, signs)
        return out
    raise ValueError(f"kind must be 'rademacher', 'gaussian' or 'sparse', got {kind!r}")


def sketch(rows: torch.Tensor, k: int, kind: str, seed: int, block: int, offset: int, s: int,
           scale: float) -> torch.Tensor:
    """``[B, k]`` float32 sketch of ``rows [B, P]``; the matrix is generated in chunks of columns."""
    batch, width = rows.shape
    acc = torch.zeros(batch, k, dtype=torch.float32)
    seed &= (1 << 64) - 1
    for p0 in range(0, width, _CHUNK):
        n = min(_CHUNK, width - p0)
        m = sketch_matrix(k, kind, seed, block, offset + p0, n, s)
        acc += rows[:, p0:p0 + n].to(device="cpu", dtype=torch.float32) @ m
    return (acc * _f(scale)).to(rows.device)
