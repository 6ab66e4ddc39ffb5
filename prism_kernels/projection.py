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


#: Coordinate at which the output-side factor of a Kronecker sketch starts, within the layer's block:
#: the input-side factor P_in uses coordinates [0, d_in) and P_out uses [KRON_OUT_OFFSET, + d_out),
#: so the two factors are independent Rademacher matrices of the same stream.
KRON_OUT_OFFSET = 1 << 62


def kronecker_factors(k: int) -> tuple[int, int]:
    """``(k_in, k_out)`` with ``k_in * k_out = k`` and ``k_in`` the largest divisor of k <= sqrt(k)."""
    k = _check_int(k, "k", 1, 1 << 31)
    k_in = max(d for d in range(1, math.isqrt(k) + 1) if k % d == 0)
    return k_in, k // k_in


def sketch_kronecker(activations, output_grads, k_in: int, k_out: int, seed: int = 0, block: int = 0, *,
                     backend: str | None = None) -> torch.Tensor:
    """Kronecker-factored (LoGra-style) sketch of a linear layer's per-sample weight gradients.

    For sample b the weight gradient is ``W_b = sum_t g_t a_t^T`` ``[d_out, d_in]``; this returns
    ``vec(P_out W_b P_in^T) = sum_t (P_out g_t) (P_in a_t)^T`` flattened row-major to ``k_in * k_out``
    without forming ``W_b``. ``P_in = sketch matrix (rademacher, k_in, seed, block, offset 0)`` and
    ``P_out = (rademacher, k_out, seed, block, offset KRON_OUT_OFFSET)``, entries ``+-1/sqrt(k_in)`` and
    ``+-1/sqrt(k_out)``, so ``P_out (x) P_in`` has entries ``+-1/sqrt(k)`` and preserves norms in
    expectation. Output index ``p * k_in + q`` pairs row p of P_out with row q of P_in, matching
    the row-major flattening of ``W`` (coordinate ``o * d_in + i``).

    Args:
        activations: [B, T, d_in] inputs of the layer (float32, bfloat16 or float16).
        output_grads: [B, T, d_out] gradients of the loss with respect to the layer's outputs.

    Returns:
        [B, k_in * k_out] float32.
    """
    a, g = activations, output_grads
    if not isinstance(a, torch.Tensor) or a.dim() != 3:
        raise ValueError(f"activations must be a [B, T, d_in] tensor, got {getattr(a, 'shape', type(a))}")
    if not isinstance(g, torch.Tensor) or g.dim() != 3:
        raise ValueError(f"output_grads must be a [B, T, d_out] tensor, got {getattr(g, 'shape', type(g))}")
    if a.shape[:2] != g.shape[:2]:
        raise ValueError(f"activations {tuple(a.shape)} and output_grads {tuple(g.shape)} must share [B, T]")
    k_in = _check_int(k_in, "k_in", 1, 1 << 31)
    k_out = _check_int(k_out, "k_out", 1, 1 << 31)
    batch, steps = a.shape[:2]
    pa = sketch(a.reshape(batch * steps, -1), k_in, "rademacher", seed, block, 0, backend=backend)
    pg = sketch(g.reshape(batch * steps, -1), k_out, "rademacher", seed, block, KRON_OUT_OFFSET, backend=backend)
    out = torch.bmm(pg.view(batch, steps, k_out).transpose(1, 2), pa.view(batch, steps, k_in))
    return out.reshape(batch, k_out * k_in)


def sketch_kronecker_embedding(token_ids, output_grads, k_in: int, k_out: int, seed: int = 0,
                               block: int = 0) -> torch.Tensor:
    """:func:`sketch_kronecker` of an embedding table ``[V, d]`` seen as a linear layer with one-hot
    inputs. The table's per-sample gradient is ``sum_t e_{token_t} g_t^T`` ``[V, d]``, laid out like a
    linear weight ``W [V, d]`` (vocabulary rows = output side, features = input side), so its sketch
    is ``sum_t (P_out e_{token_t}) (P_in g_t)^T`` where ``P_out e_v`` is column v of ``P_out``: only
    the columns of the tokens present are generated.

    Args:
        token_ids: [B, T] int64.
        output_grads: [B, T, d] gradients with respect to the embedding's outputs.

    Returns:
        [B, k_in * k_out] float32, the sketch of the table's per-sample gradient with the same
        matrices as a tied linear layer ``W [V, d]`` (vocabulary rows, d columns).
    """
    from .reference.sketch import matrix_columns

    batch, steps = token_ids.shape
    g = output_grads.to(torch.float32)
    # W_b = sum_t e_{tok} g_t^T: rows (d_out side) are the vocabulary, columns (d_in side) the features.
    pg = sketch(g.reshape(batch * steps, -1), k_in, "rademacher", seed, block, 0)  # P_in g_t  [BT, k_in]
    unique, inverse = torch.unique(token_ids.reshape(-1).cpu(), return_inverse=True)
    cols = matrix_columns(k_out, "rademacher", seed, block, unique + KRON_OUT_OFFSET)  # [U, k_out]
    pe = (cols * torch.tensor(sketch_scale(k_out, "rademacher")))[inverse].to(g.device)  # P_out e_tok
    out = torch.bmm(pe.view(batch, steps, k_out).transpose(1, 2), pg.view(batch, steps, k_in))
    return out.reshape(batch, k_out * k_in)
