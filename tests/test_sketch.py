"""pk.sketch on every backend against the pure-torch reference: the same matrix bit for bit,
sketches within fp32 tolerance, offsets, dtypes, non-finite rows, bad arguments, torch op checks."""

import math

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends
from prism_kernels.reference.sketch import sketch_matrix

KINDS = ("rademacher", "gaussian", "sparse")
needs_cpu = pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")


def _small(name):
    """Shapes the Triton interpreter runs quickly."""
    return name == "triton"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k, seed, block, offset", [
    (1, 0, 0, 0),
    (37, 5, 7, (1 << 32) - 9),            # k not a multiple of 4 or 128; j crosses 2^32
    (130, (1 << 64) - 1, (1 << 32) - 1, (1 << 40) - 20),  # largest seed and block, j near 2^40
])
def test_matrix_is_identical_on_every_backend(backend, kind, k, seed, block, offset):
    name, device = backend
    width = 19
    got = pk.sketch(torch.eye(width, device=device), k, kind, seed=seed, block=block, offset=offset,
                    backend=name).cpu()
    unscaled = sketch_matrix(k, kind, seed, block, offset, width)
    assert torch.equal(got, unscaled * torch.tensor(pk.sketch_scale(k, kind), dtype=torch.float32))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sketch_matches_reference(backend, kind, dtype):
    name, device = backend
    batch, width, k = (3, 70, 40) if _small(name) else (17, 3000, 300)
    rows = torch.randn(batch, width).to(dtype)
    expected = pk.sketch(rows, k, kind, seed=11, block=4, offset=123, backend="reference")
    got = pk.sketch(rows.to(device), k, kind, seed=11, block=4, offset=123, backend=name).cpu()
    assert got.dtype == torch.float32 and got.shape == (batch, k)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * math.sqrt(width))


@pytest.mark.parametrize("kind", KINDS)
def test_pieces_with_offsets_sum_to_the_whole(backend, kind):
    name, device = backend
    width, cut, k = (50, 21, 33) if _small(name) else (5000, 1234, 257)
    rows = torch.randn(4, width, device=device)
    whole = pk.sketch(rows, k, kind, seed=3, offset=1000, backend=name)
    parts = (pk.sketch(rows[:, :cut], k, kind, seed=3, offset=1000, backend=name)
             + pk.sketch(rows[:, cut:], k, kind, seed=3, offset=1000 + cut, backend=name))
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5 * math.sqrt(width))


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_row_poisons_only_itself(backend, kind):
    name, device = backend
    width, k = (40, 20) if _small(name) else (2000, 64)
    rows = torch.randn(3, width, device=device)
    bad = rows.clone()
    bad[1, 7] = float("nan")
    bad[2, 3] = float("inf")
    clean = pk.sketch(rows[:1], k, kind, seed=1, backend=name)
    out = pk.sketch(bad, k, kind, seed=1, backend=name)
    assert torch.isfinite(out[0]).all() and not torch.isfinite(out[1]).all() and not torch.isfinite(out[2]).all()
    torch.testing.assert_close(out[:1], clean)


@pytest.mark.parametrize("kind", KINDS)
def test_norms_are_preserved_in_expectation(kind):
    # E ||R x||^2 = ||x||^2: average over 400 independent matrices (blocks) of the ratio.
    x = torch.randn(1, 300, dtype=torch.float64).to(torch.float32)
    ratios = torch.stack([pk.sketch(x, 64, kind, seed=9, block=b, backend="reference").pow(2).sum()
                          for b in range(400)]) / x.pow(2).sum()
    # Var of the ratio <= 2/k (plus the sparse collision term); 400 draws: sd of the mean <= 0.013.
    assert abs(ratios.mean().item() - 1.0) < 0.05


def test_gaussian_entries_are_standard_normal():
    z = sketch_matrix(4096, "gaussian", 1, 2, 3, 64).flatten().double()  # 262144 draws
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    assert abs((z.abs() < 1).double().mean() - 0.682689) < 0.005
    r = sketch_matrix(4096, "rademacher", 1, 2, 3, 64)
    assert abs(r.mean()) < 0.01 and set(r.unique().tolist()) == {-1.0, 1.0}


@needs_cpu
@pytest.mark.parametrize("kind", KINDS)
def test_cpu_result_across_thread_counts(kind):
    rows = torch.randn(5, 1 << 20)  # large enough to be split between two threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pk.sketch(rows, 200, kind, seed=2, backend="cpu")
        torch.set_num_threads(max(2, threads))
        many = pk.sketch(rows, 200, kind, seed=2, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    # Only the order of the fp32 sums changes; stated tolerance: rtol 1e-5, atol 1e-5 * sqrt(P) * rms(x).
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5 * math.sqrt(1 << 20))


def test_empty_inputs():
    assert pk.sketch(torch.zeros(0, 10), 5, backend="reference").shape == (0, 5)
    if _backends.compiled() is not None:
        assert torch.equal(pk.sketch(torch.zeros(3, 0), 5, backend="cpu"), torch.zeros(3, 5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be in"),
    (dict(k=-3), "k must be in"),
    (dict(k=2.5), "k must be an int"),
    (dict(kind="orthogonal"), "kind must be one of"),
    (dict(seed=-1), "seed must be in"),
    (dict(block=1 << 32), "block must be in"),
    (dict(offset=-1), "offset must be in"),
    (dict(kind="sparse", s=0), "s must be in"),
])
def test_bad_arguments_are_value_errors(kwargs, match):
    args = dict(k=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pk.sketch(torch.randn(2, 5), **args)


@pytest.mark.parametrize("rows, match", [
    (torch.randn(5), r"rows must be \[B, P\]"),
    (torch.randn(2, 3, 4), r"rows must be \[B, P\]"),
    (torch.ones(2, 3, dtype=torch.int64), "rows must be float32, bfloat16 or float16"),
    ("abc", "rows must be a torch tensor"),
])
def test_bad_rows_are_value_errors(rows, match):
    with pytest.raises(ValueError, match=match):
        pk.sketch(rows, 4)


def test_numpy_rows_are_accepted():
    x = torch.randn(2, 30)
    torch.testing.assert_close(pk.sketch(x.numpy(), 8, backend="reference"), pk.sketch(x, 8, backend="reference"))


@needs_cpu
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_sketch(kind):
    rows = torch.randn(3, 300)
    scale = pk.sketch_scale(50, kind)
    torch.library.opcheck(torch.ops.prism.sketch.default, (rows, 50, kind, 4, 2, 10, 4, scale))


@needs_cpu
def test_sketch_op_is_declared_not_differentiable():
    rows = torch.randn(2, 30, requires_grad=True)
    out = torch.ops.prism.sketch(rows, 8, "rademacher", 0, 0, 0, 4, 0.25)
    with pytest.raises(RuntimeError, match="not differentiable"):
        out.sum().backward()
    assert not pk.sketch(rows, 8).requires_grad  # the public function detaches


@needs_cpu
def test_sketch_traces_under_torch_compile():
    def f(rows):
        return torch.ops.prism.sketch(rows, 16, "sparse", 1, 2, 3, 4, 0.5) * 2

    rows = torch.randn(4, 100)
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(rows), f(rows))


def _kron_factors_explicit(d_in, d_out, k_in, k_out, seed, block):
    p_in = pk.sketch(torch.eye(d_in), k_in, "rademacher", seed, block, 0, backend="reference").T
    p_out = pk.sketch(torch.eye(d_out), k_out, "rademacher", seed, block, pk.KRON_OUT_OFFSET, backend="reference").T
    return p_in, p_out  # [k_in, d_in], [k_out, d_out]


def test_kronecker_equals_projected_per_sample_gradient(backend):
    name, device = backend
    batch, steps, d_in, d_out, k_in, k_out = 3, 5, 12, 9, 4, 8
    a, g = torch.randn(batch, steps, d_in), torch.randn(batch, steps, d_out)
    got = pk.sketch_kronecker(a.to(device), g.to(device), k_in, k_out, seed=6, block=77, backend=name).cpu()
    p_in, p_out = _kron_factors_explicit(d_in, d_out, k_in, k_out, 6, 77)
    per_sample = torch.einsum("bto,bti->boi", g, a)  # the gradient it never forms
    expected = (p_out @ per_sample @ p_in.T).reshape(batch, -1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Norms preserved in expectation: entries of P_out (x) P_in are +-1/sqrt(k).
    assert set((torch.kron(p_out, p_in).abs() * (k_in * k_out) ** 0.5).round(decimals=5).unique().tolist()) == {1.0}


def test_kronecker_embedding_is_the_one_hot_linear_form():
    vocab, dim, k_in, k_out = 23, 6, 4, 4
    ids = torch.randint(0, vocab, (2, 7))
    g = torch.randn(2, 7, dim)
    got = pk.sketch_kronecker_embedding(ids, g, k_in, k_out, seed=1, block=2)
    # The table's gradient sum_t e_tok g_t^T [V, d] sketched as a linear weight W [V, d].
    grad = torch.zeros(2, vocab, dim).scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, dim), g)
    p_in, p_out = _kron_factors_explicit(dim, vocab, k_in, k_out, 1, 2)
    torch.testing.assert_close(got, (p_out @ grad @ p_in.T).reshape(2, -1), rtol=1e-5, atol=1e-5)


def test_kronecker_bad_shapes():
    with pytest.raises(ValueError, match="must share"):
        pk.sketch_kronecker(torch.randn(2, 3, 4), torch.randn(2, 4, 5), 2, 2)
    with pytest.raises(ValueError, match="activations must be"):
        pk.sketch_kronecker(torch.randn(2, 4), torch.randn(2, 4, 5), 2, 2)
    with pytest.raises(ValueError, match="k_in must be"):
        pk.sketch_kronecker(torch.randn(2, 3, 4), torch.randn(2, 3, 5), 0, 2)
    assert pk.kronecker_factors(1024) == (32, 32) and pk.kronecker_factors(12) == (3, 4)
