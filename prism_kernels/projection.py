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

import torch

from . import _backends
from ._checks import as_tensor, check_choice, check_int, describe

#: Version of the random stream and of the matrix definitions (this constant, cited by
#: csrc/include/prism/philox.h). Bumped on any change to either.
STREAM_VERSION = 1
#: Projection kinds of :func:`sketch` (:class:`GradientSketcher` adds "kronecker").
KINDS = ("rademacher", "gaussian", "sparse")
_ROW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_COORD = 1 << 63
#: The limits of every sketch argument, in one place: [low, high) per name.
LIMITS = {"k": (1, 1 << 31), "seed": (0, 1 << 64), "block": (0, 1 << 32), "s": (1, 1025)}


def check_sketch_arg(value, name: str) -> int:
    """``value`` as an int within :data:`LIMITS` [name] (k, seed, block or s)."""
    low, high = LIMITS[name]
    return check_int(value, name, low, high)


def _check_rows(rows, name: str) -> torch.Tensor:
    """[B, P] float32 / bfloat16 / float16 rows (numpy arrays converted)."""
    t = as_tensor(rows, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be [B, P], got shape {tuple(t.shape)}")
    if t.dtype not in _ROW_DTYPES:
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
    return t


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
    rows = _check_rows(rows, "rows")
    kind = check_choice(kind, "kind", KINDS)
    k = check_sketch_arg(k, "k")
    seed = check_sketch_arg(seed, "seed")
    block = check_sketch_arg(block, "block")
    offset = check_int(offset, "offset", 0, _MAX_COORD - rows.shape[1])
    s = check_sketch_arg(s, "s")
    name = _backends.resolve(backend, rows.device, "sketch")
    op_seed = seed - (1 << 64) if seed >= 1 << 63 else seed  # int64 two's complement for the op
    rows = rows.detach().contiguous()
    return _backends.kernel("sketch", name)(rows, k, kind, op_seed, block, offset, s, sketch_scale(k, kind, s))


#: Coordinate at which the output-side factor of a Kronecker sketch starts, within the layer's block:
#: the input-side factor P_in uses coordinates [0, d_in) and P_out uses [KRON_OUT_OFFSET, + d_out),
#: so the two factors are independent Rademacher matrices of the same stream.
KRON_OUT_OFFSET = 1 << 62


def kronecker_factors(k: int) -> tuple[int, int]:
    """``(k_in, k_out)`` with ``k_in * k_out = k`` and ``k_in`` the largest divisor of k <= sqrt(k)."""
    k = check_sketch_arg(k, "k")
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
    a = _check_tokens(activations, "activations", "[B, T, d_in]")
    g = _check_tokens(output_grads, "output_grads", "[B, T, d_out]")
    if a.shape[:2] != g.shape[:2]:
        raise ValueError(f"output_grads {tuple(g.shape)} must share [B, T] with activations {tuple(a.shape)}")
    k_in = check_int(k_in, "k_in", *LIMITS["k"])
    k_out = check_int(k_out, "k_out", *LIMITS["k"])
    seed = check_sketch_arg(seed, "seed")
    block = check_sketch_arg(block, "block")
    batch, steps = a.shape[:2]
    if batch * steps == 0:  # no token: the gradient (and its sketch) is zero
        _backends.resolve(backend, a.device, "sketch")
        return torch.zeros(batch, k_out * k_in, dtype=torch.float32, device=a.device)
    pa = sketch(a.reshape(batch * steps, -1), k_in, "rademacher", seed, block, 0, backend=backend)
    pg = sketch(g.reshape(batch * steps, -1), k_out, "rademacher", seed, block, KRON_OUT_OFFSET, backend=backend)
    out = torch.bmm(pg.view(batch, steps, k_out).transpose(1, 2), pa.view(batch, steps, k_in))
    return out.reshape(batch, k_out * k_in)


def _check_tokens(value, name: str, shape: str) -> torch.Tensor:
    """A [B, T, d] float32 / bfloat16 / float16 tensor named ``name`` in errors."""
    t = as_tensor(value, name)
    if t.dim() != 3:
        raise ValueError(f"{name} must be a {shape} tensor, got {describe(t)}")
    if t.dtype not in _ROW_DTYPES:
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got {t.dtype}")
    return t


def sketch_kronecker_embedding(token_ids, output_grads, k_in: int, k_out: int, seed: int = 0,
                               block: int = 0, *, backend: str | None = None) -> torch.Tensor:
    """:func:`sketch_kronecker` of an embedding table ``[V, d]`` seen as a linear layer with one-hot
    inputs. The table's per-sample gradient is ``sum_t e_{token_t} g_t^T`` ``[V, d]``, laid out like a
    linear weight ``W [V, d]`` (vocabulary rows = output side, features = input side), so its sketch
    is ``sum_t (P_out e_{token_t}) (P_in g_t)^T`` where ``P_out e_v`` is column v of ``P_out``: only
    the columns of the tokens present are generated.

    Args:
        token_ids: [B, T] int64.
        output_grads: [B, T, d] gradients with respect to the embedding's outputs.
        k_in, k_out, seed, block: as in :func:`sketch_kronecker`.
        backend: runs the feature-side sketch ``P_in g_t`` (as in :func:`sketch`); the few
            vocabulary columns of ``P_out`` come from the stream directly.

    Returns:
        [B, k_in * k_out] float32, the sketch of the table's per-sample gradient with the same
        matrices as a tied linear layer ``W [V, d]`` (vocabulary rows, d columns).
    """
    from .reference.sketch import matrix_columns

    ids = as_tensor(token_ids, "token_ids")
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"token_ids must be an int64 [B, T] tensor, got {describe(ids)}")
    g = _check_tokens(output_grads, "output_grads", "[B, T, d]")
    if g.shape[:2] != ids.shape:
        raise ValueError(f"output_grads {tuple(g.shape)} must share [B, T] with token_ids {tuple(ids.shape)}")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"token_ids must be >= 0, got {int(ids.min())}")
    k_in = check_int(k_in, "k_in", *LIMITS["k"])
    k_out = check_int(k_out, "k_out", *LIMITS["k"])
    seed = check_sketch_arg(seed, "seed")
    block = check_sketch_arg(block, "block")
    batch, steps = ids.shape
    if batch * steps == 0:
        _backends.resolve(backend, g.device, "sketch")
        return torch.zeros(batch, k_out * k_in, dtype=torch.float32, device=g.device)
    g = g.to(torch.float32)
    # W_b = sum_t e_{tok} g_t^T: rows (d_out side) are the vocabulary, columns (d_in side) the features.
    pg = sketch(g.reshape(batch * steps, -1), k_in, "rademacher", seed, block, 0, backend=backend)  # [BT, k_in]
    unique, inverse = torch.unique(ids.reshape(-1).to(torch.int64).cpu(), return_inverse=True)
    cols = matrix_columns(k_out, "rademacher", seed, block, unique + KRON_OUT_OFFSET)  # [U, k_out]
    pe = (cols * torch.tensor(sketch_scale(k_out, "rademacher")))[inverse].to(g.device)  # P_out e_tok
    out = torch.bmm(pe.view(batch, steps, k_out).transpose(1, 2), pg.view(batch, steps, k_in))
    return out.reshape(batch, k_out * k_in)
