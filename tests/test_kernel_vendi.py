"""kernel_vendi: the RBF mat-vec op (compiled CPU vs reference) and the exact / SLQ / RFF estimates."""

import math

import numpy as np
import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends, _ops  # noqa: F401  (fake impls for opcheck)
from prism_kernels.reference import kernel_vendi as ref

HAS_CPU = _backends._unavailable_reason("cpu", None) is None
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="prism_kernels._C is not built")


def clustered(n, d=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, d, generator=g) * 2
    return (centres[torch.randint(0, 20, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)).to(dtype)


@needs_cpu
@pytest.mark.parametrize("n,d,m", [(1, 1, 1), (19, 3, 2), (300, 7, 5), (1000, 16, 33)])
def test_rbf_matvec_matches_reference(n, d, m):
    x = torch.randn(n, d, dtype=torch.float64)
    v = torch.randn(n, m, dtype=torch.float64)
    torch.testing.assert_close(torch.ops.prism.rbf_matvec(x, v, 0.37), ref.rbf_matvec(x, v, 0.37, tile=64),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref.rbf_matvec(x, v, 0.37), ref.rbf_gram(x, 0.37) @ v, rtol=1e-12, atol=1e-12)


@needs_cpu
def test_rbf_matvec_non_contiguous_and_opcheck():
    base = torch.randn(700, 12, dtype=torch.float64)
    x, v = base[::2, ::3], torch.randn(4, 350, dtype=torch.float64).T
    torch.testing.assert_close(torch.ops.prism.rbf_matvec(x, v, 1.5), ref.rbf_matvec(x, v, 1.5),
                               rtol=1e-12, atol=1e-12)
    torch.library.opcheck(torch.ops.prism.rbf_matvec, (x.contiguous()[:50], v.contiguous()[:50], 1.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_exact_small_every_dtype(dtype):
    x = clustered(150, dtype=dtype)
    r = pk.kernel_vendi(x, bandwidth=3.0, method="exact")
    # independent oracle: scipy's pairwise distances and eigvalsh (not the package's rbf_gram)
    distance = pytest.importorskip("scipy.spatial.distance")
    linalg = pytest.importorskip("scipy.linalg")
    xs = x.double().numpy()
    k = np.exp(-distance.cdist(xs, xs, "sqeuclidean") / 18)
    lam = torch.from_numpy(linalg.eigvalsh(k / 150))
    lam = lam[lam > 1e-12 * lam.norm()]
    assert r.method == "exact" and r.stderr == 0.0
    assert r.score == pytest.approx(math.exp(-(lam * lam.log()).sum()), rel=1e-10)
    q2 = pk.kernel_vendi(x, bandwidth=3.0, method="exact", q=2)
    assert q2.score == pytest.approx(float(1 / (lam * lam).sum()), rel=1e-10)


def test_cosine_is_the_dual_vendi_score():
    x = clustered(400, d=16)
    r = pk.kernel_vendi(x, kernel="cosine")
    y = x.double() / x.double().norm(dim=1, keepdim=True)
    lam = torch.linalg.eigvalsh(y @ y.T / 400).clamp_min(0)
    lam = lam[lam > 1e-15]
    assert r.method == "dual" and r.stderr == 0.0
    assert r.score == pytest.approx(math.exp(-(lam * lam.log()).sum()), rel=1e-9)


@pytest.fixture(scope="module")
def big():
    """n = 5,000 rows in d = 8 and their exact RBF Vendi score (one float64 eigvalsh, ~5-20 s)."""
    x = clustered(5000)
    return x, pk.kernel_vendi(x, bandwidth=3.0, method="exact").score


@pytest.mark.parametrize("method", ["slq", "rff"])
def test_estimate_within_error_bar_of_exact(big, method):
    x, exact = big
    r = pk.kernel_vendi(x, bandwidth=3.0, method=method, seed=1)
    assert r.method == method and r.stderr > 0
    assert abs(r.score - exact) <= 3 * r.stderr, (r, exact)
    assert r.stderr <= 0.25 * exact  # the error bar says something


def test_slq_q2_within_error_bar():
    x = clustered(1500, seed=3)
    exact = pk.kernel_vendi(x, bandwidth=3.0, method="exact", q=2).score
    r = pk.kernel_vendi(x, bandwidth=3.0, method="slq", q=2, steps=20)
    assert abs(r.score - exact) <= 3 * r.stderr, (r, exact)


@pytest.mark.parametrize("method", ["slq", "rff"])
def test_deterministic_given_seed(method):
    x = clustered(600, seed=2)
    state = torch.get_rng_state()
    a = pk.kernel_vendi(x, bandwidth=2.0, method=method, seed=5, steps=15, features=256)
    b = pk.kernel_vendi(x, bandwidth=2.0, method=method, seed=5, steps=15, features=256)
    c = pk.kernel_vendi(x, bandwidth=2.0, method=method, seed=6, steps=15, features=256)
    assert a == b and a.score != c.score
    assert torch.equal(state, torch.get_rng_state())  # the global generator is not touched


@needs_cpu
def test_slq_reference_backend_agrees():
    x = clustered(400, seed=4)
    a = pk.kernel_vendi(x, bandwidth=2.0, method="slq", steps=10, backend="cpu")
    b = pk.kernel_vendi(x, bandwidth=2.0, method="slq", steps=10, backend="reference")
    assert a.score == pytest.approx(b.score, rel=1e-9)


def test_bad_arguments():
    x = clustered(50)
    cases = [
        (dict(kernel="laplace", bandwidth=1.0), "kernel"),
        (dict(method="magic", bandwidth=1.0), "method"),
        (dict(bandwidth=0.0), "bandwidth"),
        (dict(bandwidth=-1.0), "bandwidth"),
        (dict(bandwidth=None), "bandwidth"),
        (dict(bandwidth=float("nan")), "bandwidth"),
        (dict(kernel="cosine", method="rff"), "rff"),
        (dict(kernel="cosine", bandwidth=1.0), "bandwidth"),
        (dict(bandwidth=1.0, q=0), "q"),
        (dict(bandwidth=1.0, method="slq", q="inf"), "q"),
        (dict(bandwidth=1.0, method="slq", probes=0), "probes"),
        (dict(bandwidth=1.0, method="rff", features=0), "features"),
        (dict(bandwidth=1.0, seed=1.5), "seed"),
        (dict(bandwidth=1.0, backend="fpga"), "backend"),
    ]
    for kwargs, word in cases:
        with pytest.raises(ValueError, match=word):
            pk.kernel_vendi(x, **kwargs)
    with pytest.raises(ValueError, match="X"):
        pk.kernel_vendi(torch.zeros(0, 3), bandwidth=1.0)
    bad = x.clone()
    bad[7, 2] = math.nan
    with pytest.raises(ValueError, match="row 7"):
        pk.kernel_vendi(bad, bandwidth=1.0)
    too_many = torch.zeros(pk.kernel_vendi.__globals__["MAX_EXACT_ROWS"] + 1, 2)
    with pytest.raises(ValueError, match="n <= 10000"):
        pk.kernel_vendi(too_many, bandwidth=1.0, method="exact")
