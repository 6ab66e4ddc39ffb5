"""Vendi score under a non-linear kernel: the n x n path (DESIGN §2.2).

For rows ``x_1..x_n`` and a kernel ``k`` with ``k(x, x) = 1``, the Vendi score of order q is

    VS_q = exp(H_q(lambda)),   lambda = eigenvalues of K / n,   K[i, j] = k(x_i, x_j)

(``H_1 = -sum lambda log lambda``, ``H_q = log(sum lambda^q) / (1 - q)``). Kernels:

- ``"rbf"``: ``k(x, y) = exp(-||x - y||^2 / (2 bandwidth^2))``.
- ``"cosine"``: ``k(x, y) = x.y / (||x|| ||y||)``. Then ``K / n = Y Y^T / n`` for the normalised rows
  ``Y``, whose non-zero eigenvalues are those of the d x d ``Y^T Y / n``: the score is exact and goes
  through :func:`prism_kernels.vendi_score` (float64), whatever ``method`` says.

Methods for ``"rbf"`` (each returns an estimate and a standard error):

- ``"exact"``: ``eigvalsh`` of the n x n ``K / n`` (float64, ``8 n^2`` bytes); refused above
  ``MAX_EXACT_ROWS`` rows. Standard error 0.
- ``"slq"``: stochastic Lanczos quadrature of ``tr f(K / n)`` with ``f(l) = -l log l`` (q = 1) or
  ``l^q``: ``probes`` Rademacher vectors ``z`` from a private ``torch.Generator(seed)``, ``steps``
  Lanczos steps each (full re-orthogonalisation), ``z^T f(A) z ~ ||z||^2 sum_k tau_k^2 f(theta_k)``
  from the tridiagonal's eigenpairs. Every step needs ``K v`` for a ``[n, probes]`` block, computed on
  the fly in row tiles (op ``rbf_matvec``): the n x n matrix is never stored. Cost
  ``steps * n^2 * (d + probes)``; memory ``steps * n * probes`` float64 (the Lanczos basis). The
  standard error is the spread over probes / sqrt(probes) (delta method for the score); the Lanczos
  quadrature bias (small once ``steps`` resolves the spectrum) is not in it.
- ``"rff"``: random Fourier features ``z(x) = cos(W^T x + b)``, ``W ~ N(0, I / bandwidth^2)``,
  ``b ~ U[0, 2 pi)``, ``features`` of them, rows L2-normalised so that the approximate kernel keeps
  ``k(x, x) = 1``; the score of the ``features x features`` dual Gram (:class:`VendiState`, "fast").
  The truncation to rank ``features`` biases the score low, by roughly O(1 / features): each draw's
  score ``s_D`` and the score ``s_{D/2}`` of its first half of the features give the Richardson
  extrapolation ``2 s_D - s_{D/2}``; the estimate is its mean over ``draws`` independent feature
  draws, and the error bar combines their spread / sqrt(draws) with an allowance for the bias left,
  ``|mean(s_D - s_{D/2})|`` (in quadrature). Cost ``draws * n * features * (d + 1.25 features)``.
- ``"auto"``: ``"exact"`` up to ``AUTO_EXACT_ROWS`` rows, ``"slq"`` beyond.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _backends
from ._checks import check_choice, check_int, check_q, check_real, check_rows
from .vendi import PRECISION_BOUND, _entropy_score, noise_floor, vendi_score

KERNELS = ("rbf", "cosine")
METHODS = ("auto", "exact", "slq", "rff")
#: Largest n the "exact" method accepts (the n x n float64 matrix is 800 MB there).
MAX_EXACT_ROWS = 10_000
#: Largest n "auto" sends to "exact".
AUTO_EXACT_ROWS = 2_000


class KernelVendi(NamedTuple):
    """Result of :func:`kernel_vendi`."""

    score: float  #: the estimate of the Vendi score
    stderr: float  #: its standard error (0 for the exact methods)
    method: str  #: "exact", "slq", "rff" or "dual" (cosine kernel, exact)
    samples: int  #: probes (slq) or feature draws (rff); 0 for the exact methods


#: Smallest RBF bandwidth: below it ``gamma = 1 / (2 bandwidth^2)`` overflows float64.
MIN_BANDWIDTH = 1e-150


def _score_and_stderr(trace: torch.Tensor, q: float) -> tuple[float, float]:
    """Score and its standard error from per-sample estimates ``trace`` [m] of tr f(K / n)."""
    m = trace.shape[0]
    mean = float(trace.mean())
    se = float(trace.std(unbiased=True)) / math.sqrt(m) if m > 1 else math.inf
    if q == 1.0:
        score = math.exp(mean)
        return score, score * se
    if mean <= 0:
        return math.nan, math.inf
    score = mean ** (1.0 / (1.0 - q))
    return score, abs(score / (1.0 - q)) * se / mean


def _lanczos_quadrature(matvec, n: int, probes: int, steps: int, gen: torch.Generator, q: float,
                        device) -> torch.Tensor:
    """Per-probe estimates [probes] of ``tr f(A)`` for the symmetric PSD operator ``matvec``."""
    z = torch.randint(0, 2, (probes, n), generator=gen, dtype=torch.int64).to(device, torch.float64) * 2 - 1
    steps = min(steps, n)
    basis = torch.empty(probes, steps, n, dtype=torch.float64, device=device)  # [m, s, n]
    alpha = torch.zeros(steps, probes, dtype=torch.float64)
    beta = torch.zeros(steps, probes, dtype=torch.float64)
    length = torch.full((probes,), steps, dtype=torch.int64)
    live = torch.ones(probes, dtype=torch.bool)
    vec = z / math.sqrt(n)  # [m, n]: one probe's Lanczos vector per row
    prev = torch.zeros_like(vec)
    b_prev = torch.zeros(probes, 1, dtype=torch.float64, device=device)
    for k in range(steps):
        basis[:, k] = vec
        w = matvec(vec.T).T  # [m, n]
        a = (vec * w).sum(1, keepdim=True)  # [m, 1]
        w = w - a * vec - b_prev * prev
        done = basis[:, :k + 1]  # [m, k + 1, n]
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - torch.bmm(done.transpose(1, 2), torch.bmm(done, w[:, :, None]))[:, :, 0]
        b = torch.linalg.vector_norm(w, dim=1, keepdim=True)  # [m, 1]
        alpha[k] = a[:, 0].cpu()
        beta[k] = b[:, 0].cpu()
        ended = live & (beta[k] <= 1e-12 * alpha[:k + 1].abs().amax(0).clamp_min(1e-300))
        length[ended] = k + 1
        live &= ~ended
        if not bool(live.any()):
            break
        safe = torch.where(b > 0, b, torch.ones_like(b))
        prev, vec, b_prev = vec, torch.where(live.to(device)[:, None], w / safe, torch.zeros_like(w)), b
    out = torch.empty(probes, dtype=torch.float64)
    for p in range(probes):
        size = int(length[p])
        t = torch.diag(alpha[:size, p])
        if size > 1:
            off = beta[:size - 1, p]
            t += torch.diag(off, 1) + torch.diag(off, -1)
        theta, u = torch.linalg.eigh(t)
        # Ritz values that are rounding noise (PSD operator) would blow up under l^q for q < 1
        theta = noise_floor(theta, size, PRECISION_BOUND["exact"])
        if q == 1.0:
            f = torch.where(theta > 0, -theta * torch.log(torch.where(theta > 0, theta, 1.0)), 0.0)
        else:
            f = theta ** q
        out[p] = n * (u[0] ** 2 * f).sum()  # ||z||^2 = n
    return out


def kernel_vendi(X, kernel: str = "rbf", bandwidth: float | None = None, method: str = "auto", q=1, *,
                 seed: int = 0, probes: int = 32, steps: int = 40, features: int = 1024, draws: int = 4,
                 backend: str | None = None) -> KernelVendi:
    """Vendi score of the rows of ``X`` [n, d] under a non-linear kernel, with an error bar.

    Args:
        X: ``[n, d]`` float16 / bfloat16 / float32 / float64 rows (numpy arrays accepted; finite).
        kernel: ``"rbf"`` or ``"cosine"`` (exact dual form via :func:`vendi_score`).
        bandwidth: the RBF ``sigma`` (finite, >= ``MIN_BANDWIDTH`` = 1e-150; required for ``"rbf"``,
            not accepted for ``"cosine"``).
        method: ``"auto"``, ``"exact"``, ``"slq"`` or ``"rff"`` (see the module docstring).
        q: order: 1 (default) or any number > 0; ``"inf"`` for the exact methods only.
        seed: seeds the private generator of the probes / features (no global RNG is touched).
        probes, steps: SLQ probe vectors and Lanczos steps.
        features, draws: RFF features per draw and independent draws (>= 2 for an error bar).
        backend: ``None`` (the compiled CPU kernels for CPU tensors, Triton for CUDA tensors),
            ``"cpu"``, ``"triton"`` or ``"reference"``: runs the SLQ mat-vec (op ``rbf_matvec``) and
            the Gram accumulation of ``"rff"`` / ``"cosine"``. ``"cuda"`` runs that accumulation;
            with ``method="slq"`` it raises :class:`~prism_kernels.BackendUnavailableError`
            (``rbf_matvec`` has no CUDA C++ kernel: use ``"triton"``).

    Returns:
        :class:`KernelVendi` ``(score, stderr, method, samples)``.
    """
    x = check_rows(X, "X")
    n, d = x.shape
    if n == 0:
        raise ValueError("X: no rows: the Vendi score of an empty set is undefined")
    kernel = check_choice(kernel, "kernel", KERNELS)
    method = check_choice(method, "method", METHODS)
    qf = check_q(q)
    seed = check_int(seed, "seed", 0, 1 << 64)
    check_int(probes, "probes", 1)
    check_int(steps, "steps", 1)
    check_int(features, "features", 1)
    check_int(draws, "draws", 1)
    _backends.check_backend(backend)
    if kernel == "cosine":
        if bandwidth is not None:
            raise ValueError("bandwidth applies to kernel='rbf' only; pass bandwidth=None for 'cosine'")
        if method == "rff":
            raise ValueError("method='rff' needs kernel='rbf' (random Fourier features approximate the RBF "
                             "kernel); kernel='cosine' is exact through its dual form")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("X contains NaN or Inf")
        return KernelVendi(vendi_score(x, q, precision="exact", backend=backend), 0.0, "dual", 0)
    if bandwidth is None:
        raise ValueError("bandwidth must be given (a finite number > 0) for kernel='rbf'")
    bandwidth = check_real(bandwidth, "bandwidth", MIN_BANDWIDTH)
    if method == "auto":
        method = "exact" if n <= AUTO_EXACT_ROWS else "slq"
    if method == "exact" and n > MAX_EXACT_ROWS:
        raise ValueError(f"method='exact' builds the n x n kernel matrix ({8 * n * n / 2**30:.1f} GiB at "
                         f"n = {n}) and is limited to n <= {MAX_EXACT_ROWS}; use method='slq' or 'rff'")
    if math.isinf(qf) and method != "exact":
        raise ValueError(f"q = inf needs method='exact' (got method={method!r})")
    x64 = x.to(torch.float64)
    if not bool(torch.isfinite(x64).all()):
        bad = int((~torch.isfinite(x64).all(dim=1)).nonzero()[0, 0])
        raise ValueError(f"X: row {bad} contains NaN or Inf")
    x64 = x64 - x64.mean(dim=0)  # RBF is translation invariant; centring shrinks the cancellation
    gamma = 0.5 / bandwidth / bandwidth  # finite for bandwidth >= MIN_BANDWIDTH
    gen = torch.Generator().manual_seed(seed)

    if method == "exact":
        from .reference.kernel_vendi import rbf_gram

        # float64 kernel matrix: eigenvalues below 1e-12 of ||K / n||_F are rounding noise
        lam = noise_floor(torch.linalg.eigvalsh(rbf_gram(x64, gamma) / n), n, PRECISION_BOUND["exact"])
        if qf == 2.0:
            return KernelVendi(float(1.0 / (lam * lam).sum()), 0.0, "exact", 0)
        return KernelVendi(float(_entropy_score(lam, qf)), 0.0, "exact", 0)

    if method == "slq":
        name = _backends.resolve(backend, x64.device, "rbf_matvec")
        op = _backends.kernel("rbf_matvec", name)
        xc = x64.contiguous()
        trace = _lanczos_quadrature(lambda v: op(xc, v, gamma) / n, n, probes, steps, gen, qf, x64.device)
        score, se = _score_and_stderr(trace, qf)
        return KernelVendi(score, se, "slq", probes)

    # rff: independent draws of `features` random Fourier features, fed in row blocks; each draw's
    # score at D and at its first D/2 features gives a Richardson-extrapolated score 2 s_D - s_{D/2}
    from .vendi import VendiState

    full, half = [], []
    rows = max(1, (1 << 24) // features)  # ~64 MB of float32 features at a time
    h = max(1, features // 2)
    for _ in range(draws):
        w = torch.randn(d, features, generator=gen, dtype=torch.float64) / float(bandwidth)  # [d, D]
        b = torch.rand(features, generator=gen, dtype=torch.float64) * (2.0 * math.pi)  # [D]
        w, b = w.to(x64.device), b.to(x64.device)
        states = [VendiState(k, normalize=True, precision="fast", device=x64.device, backend=backend)
                  for k in (features, h)]
        for r0 in range(0, n, rows):
            z = torch.cos(torch.addmm(b, x64[r0:r0 + rows], w)).to(torch.float32)  # [rows, D]
            states[0].update(z)
            states[1].update(z[:, :h])
        full.append(states[0].score(q))
        half.append(states[1].score(q))
    f, hf = torch.tensor(full, dtype=torch.float64), torch.tensor(half, dtype=torch.float64)
    est = 2.0 * f - hf if features > 1 else f
    spread = float(est.std(unbiased=True)) / math.sqrt(draws) if draws > 1 else math.inf
    allowance = abs(float((f - hf).mean())) if features > 1 else 0.0  # what is left of the bias, at most
    return KernelVendi(float(est.mean()), math.hypot(spread, allowance), "rff", draws)


__all__ = ["AUTO_EXACT_ROWS", "KERNELS", "KernelVendi", "MAX_EXACT_ROWS", "METHODS", "MIN_BANDWIDTH", "kernel_vendi"]
