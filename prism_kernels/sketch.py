"""Random projections ("sketches") of long vectors with matrices generated on the fly.

:func:`sketch` multiplies rows ``X [B, P]`` by a ``k x P`` random matrix that is never stored: every
entry is computed from the Philox4x32-10 stream keyed by ``(seed, block)`` and counted by the
coordinate's global index ``offset + j`` (see :mod:`prism_kernels.reference.sketch`). The same
arguments give the same matrix on every backend (CPU, CUDA, Triton, reference), whatever the
tiling, thread count or GPU: bit for bit for ``rademacher`` and ``sparse``, and (by construction,
no libm) for ``gaussian`` too. Because the matrix is indexed by the global coordinate, a long vector
split into pieces sketches to the sum of its pieces' sketches (pass each piece's ``offset``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import _backends

#: Version of the random stream and of the matrix definitions. Bumped on any change to either.
STREAM_VERSION = 1
KINDS = ("rademacher", "gaussian", "sparse")
_ROW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_COORD = 1 << 63


def _check_int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if not lo <= value < hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}), got {value}")
    return value


def sketch_scale(k: int, kind: str, s: int = 4) -> float:
    """The float32 scale of the unscaled matrix: ``1/sqrt(s)`` for sparse, else ``1/sqrt(k)``."""
    n = s if kind == "sparse" else k
    return float(torch.tensor(1.0 / math.sqrt(n), dtype=torch.float32))


def sketch(rows, k: int, kind: str = "rademacher", seed: int = 0, block: int = 0, offset: int = 0, *,
           s: int = 4, backend: str | None = None) -> torch.Tensor:
    """Project every row with the same on-the-fly random matrix.

    ``out[b] = R x_b`` with ``R = scale * M[:, offset : offset + P]`` (``k x P``):

    * ``"rademacher"``: entries ``+-1/sqrt(k)``;
    * ``"gaussian"``: entries ``N(0, 1/k)`` (Box-Muller in float32 from the stream);
    * ``"sparse"``: sparse JL, ``s`` nonzeros ``+-1/sqrt(s)`` per input coordinate at rows drawn
      from the stream independently, so two may collide (they add); norms are preserved in
      expectation either way.

    Args:
        rows: [B, P] float32, bfloat16 or float16 (numpy arrays are converted). P may exceed 2^31.
        k: output dimension, >= 1.
        kind: "rademacher", "gaussian" or "sparse".
        seed: key of the stream, in [0, 2^64).
        block: parameter-block id, in [0, 2^32): different blocks get independent matrices.
        offset: global index of the rows' first coordinate (>= 0, offset + P < 2^63).
        s: nonzeros per coordinate for "sparse", in [1, 1024].
        backend: None (fastest for the input's device), "cpu", "cuda", "triton" or "reference".

    Returns:
        [B, k] float32 on the rows' device. A non-finite entry of row b makes only out[b] non-finite.
    """
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(np.ascontiguousarray(rows))
    if not isinstance(rows, torch.Tensor):
        raise ValueError(f"rows must be a torch tensor or numpy array, got {type(rows).__name__}")
    if rows.dim() != 2:
        raise ValueError(f"rows must be [B, P], got shape {tuple(rows.shape)}")
    if rows.dtype not in _ROW_DTYPES:
        raise ValueError(f"rows must be float32, bfloat16 or float16, got {rows.dtype}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    k = _check_int(k, "k", 1, 1 << 31)
    seed = _check_int(seed, "seed", 0, 1 << 64)
    block = _check_int(block, "block", 0, 1 << 32)
    offset = _check_int(offset, "offset", 0, _MAX_COORD - rows.shape[1])
    s = _check_int(s, "s", 1, 1025)
    name = _backends.resolve(backend, rows.device)
    op_seed = seed - (1 << 64) if seed >= 1 << 63 else seed  # int64 two's complement for the op
    rows = rows.detach().contiguous()
    return _backends.kernel("sketch", name)(rows, k, kind, op_seed, block, offset, s, sketch_scale(k, kind, s))
