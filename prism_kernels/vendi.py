"""Vendi scores: streaming, mergeable Gram accumulation and the entropy of its eigenvalues.

The Vendi score of order q of rows ``x_1..x_n`` (L2-normalised by default, optionally weighted) is

    VS_q = exp(H_q(lambda)),   lambda = eigenvalues of S / n,   S = sum_i w_i y_i y_i^T,  n = sum_i w_i

with ``H_1 = -sum lambda log lambda`` (Shannon), ``H_q = log(sum lambda^q) / (1 - q)``, and
``H_inf = -log(max lambda)``; zero eigenvalues contribute nothing. ``S`` is d x d (the "dual" form
used by G-Vendi), accumulated block by block in float64:

- ``precision="fast"``: float32 products of 128-row sub-blocks (centred, see
  ``csrc/include/prism/vendi.h``), float64 accumulation across them; Frobenius-relative error of
  ``S`` at most 1e-6 against a float64 reference, whatever the block sizes.
- ``precision="exact"``: float64 throughout; error at most 1e-12.

Only the lower triangle of ``S`` is computed and stored (the upper one stays zero).

Eigenvalues that are noise at the precision are dropped before any entropy is taken (for every q,
in :class:`VendiState`, :func:`vendi_score`, :func:`grouped_vendi` and ``kernel_vendi``): only the
``min(n, d)`` largest can be non-zero, and an eigenvalue at or below
``PRECISION_BOUND[precision] * ||S/n||_F + 64 d eps lambda_max`` cannot be told from zero (see
:func:`noise_floor`). Without this, q < 1 raises rounding noise to a power below one: 4 random rows
of 1024 columns scored 92.7 at q = 0.1 (fast) where the true value is just under 4.

Rows are normalised with ``||x|| = big * ||x / big||`` (``big`` the largest magnitude) whenever the
plain sum of squares would overflow or underflow, so float64 rows of 1e200 or 1e-170 are exact; a
row whose norm is below 1 / DBL_MAX (subnormal) cannot be normalised and is reported like a zero
row. With ``normalize=False`` a block that makes ``S`` overflow raises and leaves the state as it was.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Sequence

import torch

from . import _backends
from ._checks import INT_DTYPES as _INT_DTYPES
from ._checks import as_tensor as _as_tensor
from ._checks import check_bool, check_choice, check_groups, check_int, check_q, check_rows
from .reference.vendi import STATUS_NONFINITE, STATUS_OK, STATUS_ZERO_NORM

PRECISIONS = ("fast", "exact")
#: Frobenius-relative error bound of the accumulated Gram, per precision.
PRECISION_BOUND = {"fast": 1e-6, "exact": 1e-12}
#: Largest [G, k, k] float64 padded Gram grouped_vendi builds at once (8 GiB).
MAX_GROUPED_ELEMENTS = 1 << 30

_FORMAT = "prism_kernels.VendiState/1"


def noise_floor(lam: torch.Tensor, rank: torch.Tensor | int, rel: float) -> torch.Tensor:
    """Eigenvalues ``lam`` [..., k] (ascending, as ``eigvalsh`` returns them) of a PSD matrix known
    only to within ``rel * ||A||_F`` (Frobenius-relative), with everything that is noise set to 0.

    An eigenvalue is kept iff it is among the ``rank`` largest (the rank is at most min(n, d) for a
    Gram of n rows of d columns) and above ``tol = rel * ||A||_F + 64 k eps max|lam|``: by Weyl's
    inequality an error ``E`` moves every eigenvalue by at most ``||E||_2 <= ||E||_F``, so anything
    below ``tol`` cannot be told from zero at that precision. This matters for every order q and
    decisively for q < 1, where ``lam^q`` turns rounding noise of 1e-17 into 0.02 per eigenvalue
    (and the score of 4 rows of 1024 columns into 92 instead of 4).
    """
    k = lam.shape[-1]
    fro = torch.sqrt((lam * lam).sum(-1, keepdim=True))
    top = lam.abs().amax(-1, keepdim=True) if k else fro
    tol = rel * fro + 64 * k * torch.finfo(torch.float64).eps * top
    rank_t = torch.as_tensor(rank, device=lam.device).reshape(*lam.shape[:-1], 1) if not isinstance(rank, int) \
        else torch.full((*lam.shape[:-1], 1), rank, device=lam.device)
    position = torch.arange(k, device=lam.device)  # ascending: the largest `rank` are the last ones
    keep = (lam > tol) & (position >= k - rank_t)
    return torch.where(keep, lam, torch.zeros_like(lam))


def _entropy_score(p: torch.Tensor, q: float) -> torch.Tensor:
    """exp(H_q(p)) over the last axis of non-negative eigenvalues ``p`` [..., k] (float64)."""
    pos = p > 0
    if q == 1.0:
        safe = torch.where(pos, p, torch.ones_like(p))
        return torch.exp(-(torch.where(pos, p * torch.log(safe), torch.zeros_like(p))).sum(-1))
    if math.isinf(q):
        return 1.0 / p.amax(-1)
    powered = torch.where(pos, p, torch.zeros_like(p)) ** q
    return torch.exp(torch.log(powered.sum(-1)) / (1.0 - q))


def _frobenius_sq_lower(gram: torch.Tensor) -> torch.Tensor:
    """||S||_F^2 of the symmetric matrix whose lower triangle is ``gram``'s."""
    lower = torch.tril(gram, -1)
    return 2.0 * (lower * lower).sum() + (gram.diagonal() ** 2).sum()


class VendiState:
    """Streaming, mergeable accumulator of ``S = sum_i w_i y_i y_i^T`` for the Vendi score.

    Args:
        dim: d, the number of columns of every block.
        normalize: L2-normalise every row before it is added (G-Vendi does).
        precision: ``"fast"`` (float32 products, float64 accumulation) or ``"exact"`` (float64).
        device: where the Gram lives; blocks are moved there.
        backend: ``None`` (fastest available), ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    ``update`` adds a block ``[n, d]``; ``merge`` adds another state's sums (shards merged equal one
    pass within the precision's bound); ``save`` / ``load`` use safetensors; ``score(q)`` gives the
    Vendi score of everything added so far.
    """

    def __init__(self, dim: int, normalize: bool = True, precision: str = "fast", *,
                 device: str | torch.device = "cpu", backend: str | None = None):
        self.dim = check_int(dim, "dim", 1)
        self.normalize = check_bool(normalize, "normalize")
        self.precision = check_choice(precision, "precision", PRECISIONS)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device or its name, got {device!r}") from None
        self.backend = backend
        _backends.resolve(backend, self.device, "gram_accumulate")  # fail early on an unavailable backend
        self._gram = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)  # [d, d] lower
        self._count = 0.0  # sum of weights
        self._rows = 0  # rows seen (for error messages)

    # -- accumulation ------------------------------------------------------------------------

    def update(self, block, weights=None) -> "VendiState":
        """Adds the rows of ``block`` [n, d] (float16/bfloat16/float32/float64), weighted by
        ``weights`` [n] (finite, >= 0; default 1 each). A NaN or infinite value (or, with
        ``normalize``, an all-zero row) raises ValueError naming its global row index, and leaves
        the state unchanged."""
        x = check_rows(block, "block", self.dim).to(self.device)
        n = x.shape[0]
        w = None
        total = float(n)
        if weights is not None:
            w = _as_tensor(weights, "weights")
            if w.dim() != 1 or w.shape[0] != n:
                raise ValueError(f"weights must be [n] = [{n}], got shape {tuple(w.shape)}")
            if not (w.dtype.is_floating_point or w.dtype in _INT_DTYPES):
                raise ValueError(f"weights must be a real tensor, got {w.dtype}")
            w = w.to(device=self.device, dtype=torch.float64).contiguous()
            if n and not bool(torch.isfinite(w).all()):
                raise ValueError("weights must be finite")
            if n and bool((w < 0).any()):
                raise ValueError("weights must be >= 0")
            total = float(w.sum())
        if n == 0:
            return self
        name = _backends.resolve(self.backend, x.device, "gram_accumulate")
        # Without normalisation a float64 row (or a weight) can make S overflow; then the block is
        # refused and the state restored. |S_ij| <= sqrt(S_ii S_jj), so a finite diagonal is enough.
        backup = self._gram.clone() if not self.normalize and (x.dtype == torch.float64 or w is not None) else None
        status = _backends.kernel("gram_accumulate", name)(
            self._gram, x, w, self.normalize, self.precision == "exact")
        row, code = (int(v) for v in status.tolist())
        if code != STATUS_OK:
            where = self._rows + row
            if code == STATUS_NONFINITE:
                raise ValueError(f"block: row {where} (row {row} of this block) contains NaN or Inf")
            if code == STATUS_ZERO_NORM:
                raise ValueError(f"block: row {where} (row {row} of this block) has norm 0 (or below 1e-308) "
                                 f"and cannot be L2-normalised")
            raise RuntimeError(f"gram_accumulate returned an unknown status {code}")
        if backup is not None and not bool(torch.isfinite(self._gram.diagonal()).all()):
            self._gram = backup
            raise ValueError("block: with normalize=False the Gram sum_i w_i x_i x_i^T overflows float64 "
                             "(entries or weights too large); scale the rows down or use normalize=True")
        self._count += total
        self._rows += n
        return self

    def merge(self, other: "VendiState") -> "VendiState":
        """Adds another state's sums to this one (in place); ``other`` must have the same dim,
        normalize and precision."""
        if not isinstance(other, VendiState):
            raise ValueError(f"other must be a VendiState, got {type(other).__name__}")
        for attr in ("dim", "normalize", "precision"):
            if getattr(self, attr) != getattr(other, attr):
                raise ValueError(f"other: cannot merge a state with {attr}={getattr(other, attr)!r} into "
                                 f"one with {attr}={getattr(self, attr)!r}")
        self._gram += other._gram.to(self.device)
        self._count += other._count
        self._rows += other._rows
        return self

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the state to a safetensors file."""
        from safetensors.torch import save_file

        save_file({"gram": self._gram.detach().cpu().contiguous(),
                   "count": torch.tensor([self._count], dtype=torch.float64),
                   "rows": torch.tensor([self._rows], dtype=torch.int64)},
                  os.fspath(path),
                  metadata={"format": _FORMAT, "dim": str(self.dim), "normalize": str(self.normalize),
                            "precision": self.precision})

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
             backend: str | None = None) -> "VendiState":
        """Reads a state written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"path: {os.fspath(path)!r} is not a saved VendiState "
                                 f"(format {meta.get('format')!r})")
            state = cls(int(meta["dim"]), meta["normalize"] == "True", meta["precision"], device=device,
                        backend=backend)
            gram = f.get_tensor("gram")
            if gram.shape != (state.dim, state.dim) or gram.dtype != torch.float64:
                raise ValueError(f"path: gram has shape {tuple(gram.shape)} / {gram.dtype}, "
                                 f"expected [{state.dim}, {state.dim}] float64")
            state._gram = gram.to(state.device)
            state._count = float(f.get_tensor("count")[0])
            state._rows = int(f.get_tensor("rows")[0])
        return state

    # -- results ------------------------------------------------------------------------------

    @property
    def count(self) -> float:
        """n = the sum of the weights of every row added (the number of rows when unweighted)."""
        return self._count

    @property
    def rows(self) -> int:
        """Number of rows added."""
        return self._rows

    @property
    def gram(self) -> torch.Tensor:
        """S as a full symmetric ``[d, d]`` float64 matrix (a copy)."""
        lower = torch.tril(self._gram)
        return lower + torch.tril(self._gram, -1).T

    def _scaled(self) -> torch.Tensor:
        if self._rows == 0 or self._count <= 0:
            raise ValueError("no rows: the Vendi score of an empty set (or of zero total weight) is undefined")
        return self._gram / self._count

    def spectrum(self) -> torch.Tensor:
        """Eigenvalues of S / n, descending, ``[d]`` float64; warns when one is negative beyond
        rounding. Eigenvalues that are noise at the state's precision are 0: only the
        ``min(rows, d)`` largest are kept, and only above ``PRECISION_BOUND[precision] * ||S/n||_F``
        (see :func:`noise_floor`)."""
        scaled = self._scaled()
        lam = torch.linalg.eigvalsh(scaled)  # reads the lower triangle only, ascending
        bound = PRECISION_BOUND[self.precision]
        tol = bound * float(torch.sqrt(_frobenius_sq_lower(scaled))) + \
            64 * self.dim * torch.finfo(torch.float64).eps * float(lam.abs().max())
        low = float(lam.min())
        if low < -tol:
            warnings.warn(f"VendiState.spectrum: eigenvalue {low:.3e} is negative beyond rounding "
                          f"(tolerance {tol:.3e}); clamped to 0", RuntimeWarning, stacklevel=2)
        lam = noise_floor(lam, min(self._rows, self.dim), bound)
        return torch.flip(lam, dims=(0,))

    def score(self, q=1) -> float:
        """Vendi score of order ``q``: 1 (Shannon, default), 2 (closed form ``1 / ||S/n||_F^2``, no
        eigendecomposition), ``"inf"`` (``1 / lambda_max``) or any number > 0."""
        qf = check_q(q)
        if qf == 2.0:
            return float(1.0 / _frobenius_sq_lower(self._scaled()))
        return float(_entropy_score(self.spectrum(), qf))

    def __repr__(self) -> str:
        return (f"VendiState(dim={self.dim}, normalize={self.normalize}, precision={self.precision!r}, "
                f"rows={self._rows}, count={self._count:g})")


def vendi_score(X, q=1, *, weights=None, normalize: bool = True, precision: str = "fast",
                block_rows: int | None = None, backend: str | None = None) -> float:
    """Vendi score of order ``q`` of the rows of ``X`` [n, d] (one-shot :class:`VendiState`).

    Args:
        X: ``[n, d]`` float16 / bfloat16 / float32 / float64 rows (numpy arrays accepted).
        q: 1 (default), 2, ``"inf"`` or any number > 0.
        weights: ``[n]`` row weights >= 0 (then n = sum of weights).
        normalize: L2-normalise rows first.
        precision: ``"fast"`` or ``"exact"``.
        block_rows: feed X in blocks of this many rows (default: all at once).
        backend: as in :class:`VendiState`.
    """
    x = check_rows(X, "X")
    if x.shape[0] == 0:
        raise ValueError("X: no rows: the Vendi score of an empty set is undefined")
    if block_rows is not None:
        block_rows = check_int(block_rows, "block_rows", 1)
    check_q(q)
    state = VendiState(x.shape[1], normalize, precision, device=x.device, backend=backend)
    step = block_rows or x.shape[0]
    w = None if weights is None else _as_tensor(weights, "weights")
    if w is not None and (w.dim() != 1 or w.shape[0] != x.shape[0]):
        raise ValueError(f"weights must be [n] = [{x.shape[0]}], got shape {tuple(w.shape)}")
    for start in range(0, x.shape[0], step):
        state.update(x[start:start + step], None if w is None else w[start:start + step])
    return state.score(q)


def grouped_vendi(X, groups, q=1, *, normalize: bool = True, num_groups: int | None = None,
                  backend: str | None = None) -> torch.Tensor:
    """Vendi score of every group of rows, in one kernel call.

    Args:
        X: ``[N, d]`` float rows (finite).
        groups: ``[N]`` integer group id of every row, in ``[0, G)``.
        q: as in :func:`vendi_score`.
        normalize: L2-normalise rows first (an all-zero row then stays zero).
        num_groups: G (default ``groups.max() + 1``).
        backend: ``None`` (the compiled CPU kernel for CPU tensors, Triton for CUDA tensors),
            ``"cpu"``, ``"triton"`` or ``"reference"``; ``"cuda"`` raises
            :class:`~prism_kernels.BackendUnavailableError` (no CUDA C++ kernel: Triton covers CUDA).

    Returns:
        ``[G]`` float64 scores; NaN for a group without rows.

    Each group goes through the smaller of its two Grams, ``Y_g Y_g^T`` (n_g x n_g) or
    ``Y_g^T Y_g`` (d x d), which have the same non-zero eigenvalues; at q = 2 the score is
    ``1 / ||Gram / n_g||_F^2``, reduced per group inside the kernel (no eigendecomposition, no padded
    output). Memory otherwise: ``G * k^2`` float64 with ``k = max_g min(n_g, d)``.
    """
    x = check_rows(X, "X")
    qf = check_q(q)
    normalize = check_bool(normalize, "normalize")
    n, d = x.shape
    g, num_groups = check_groups(groups, n, x.device, num_groups)

    def check_finite():
        if n and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x).all(dim=1)).nonzero()[0, 0])
            raise ValueError(f"X: row {bad} contains NaN or Inf")

    counts = torch.bincount(g, minlength=num_groups)  # [G]
    offsets = torch.zeros(num_groups + 1, dtype=torch.int64, device=x.device)
    offsets[1:] = torch.cumsum(counts, 0)
    if n < 2 or bool((g[1:] >= g[:-1]).all()):  # already grouped: no sort
        order = torch.arange(n, device=x.device)
    else:
        order = torch.argsort(g, stable=True)
    size = max(1, int(torch.clamp(counts, max=d).max())) if num_groups else 1
    if qf != 2.0 and num_groups * size * size > MAX_GROUPED_ELEMENTS:
        raise ValueError(f"groups: {num_groups} groups of up to {size} x {size} Grams need "
                         f"{num_groups * size * size * 8 / 2**30:.1f} GiB (limit {MAX_GROUPED_ELEMENTS * 8 / 2**30:.0f} "
                         f"GiB); score fewer groups per call")
    op = "grouped_frobenius_sq" if qf == 2.0 else "grouped_gram"
    name = _backends.resolve(backend, x.device, op)
    nz = counts.clamp_min(1).to(torch.float64)
    if qf == 2.0:  # 1 / ||S_g / n_g||_F^2: Frobenius norms of the per-group Grams, nothing padded
        fro = _backends.kernel("grouped_frobenius_sq", name)(x, order, offsets, normalize)  # [G]
        # a NaN / Inf row makes its group's norm NaN or Inf: scan X only then
        if not bool(torch.isfinite(fro).all()):
            check_finite()
        scores = nz * nz / fro
    else:
        # one sum first (NaN / Inf propagate); the element-wise scan only when it is not finite
        if n and not math.isfinite(float(x.sum(dtype=torch.float64))):
            check_finite()
        grams = _backends.kernel("grouped_gram", name)(x, order, offsets, size, normalize)  # [G, k, k]
        lam = torch.linalg.eigvalsh(grams / nz[:, None, None])  # [G, k] ascending
        # float64 Grams: noise at 1e-12 of ||Gram||_F at most; rank <= min(n_g, d)
        lam = noise_floor(lam, counts.clamp(max=d), PRECISION_BOUND["exact"])
        scores = _entropy_score(lam, qf)
    return torch.where(counts > 0, scores, torch.full_like(scores, math.nan))


__all__ = ["MAX_GROUPED_ELEMENTS", "PRECISIONS", "PRECISION_BOUND", "VendiState", "grouped_vendi", "noise_floor",
           "vendi_score"]
