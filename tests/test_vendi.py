"""Vendi: Gram accumulation (reference vs compiled CPU), VendiState, vendi_score, grouped_vendi."""

import math
import warnings

import numpy as np
import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends, _ops  # noqa: F401  (fake impls for opcheck)
from prism_kernels.reference import vendi as ref

HAS_CPU = _backends._unavailable_reason("cpu", None) is None
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="prism_kernels._C is not built")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_fro_lower(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(torch.tril(a) - torch.tril(b)) / torch.linalg.norm(torch.tril(b)))


def ref_gram(x, weights=None, normalize=True):
    g = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    st = ref.gram_accumulate(g, x, weights, normalize, True)
    assert st.tolist() == [-1, 0]
    return g


def cpu_op():
    return torch.ops.prism.gram_accumulate


# ---------------------------------------------------------------------------------------------
# the op: compiled CPU against the float64 reference


@pytest.fixture(params=["simd", "blas"])
def cpu_path(request):
    """The compiled CPU op's two tile-product paths: own AVX-512 kernels (where the CPU has
    AVX-512F) and BLAS (everywhere else, and with SIMD switched off)."""
    if not HAS_CPU:
        pytest.skip("prism_kernels._C is not built")
    lib = _backends.compiled()
    if request.param == "simd" and not lib.capabilities().get("avx512f", False):
        pytest.skip("this CPU has no AVX-512F: the BLAS path is the only one")
    lib.set_simd_enabled(request.param == "simd")
    try:
        yield request.param
    finally:
        lib.set_simd_enabled(True)


@needs_cpu
@pytest.mark.parametrize("n,d", [(1, 1), (7, 3), (300, 19), (1000, 257), (4500, 33), (129, 600)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("exact", [False, True])
def test_gram_accumulate_matches_reference(n, d, dtype, normalize, exact, cpu_path):
    x = (torch.randn(n, d, dtype=torch.float64) + 0.3).to(dtype)
    w = torch.rand(n, dtype=torch.float64) if n % 2 else None
    expected = ref_gram(x, w, normalize)
    gram = torch.zeros(d, d, dtype=torch.float64)
    gram.triu_(1).add_(torch.full((d, d), 7.0, dtype=torch.float64).triu(1))  # upper must stay untouched
    st = cpu_op()(gram, x, w, normalize, exact)
    assert st.tolist() == [-1, 0]
    assert torch.equal(gram.triu(1), torch.full((d, d), 7.0, dtype=torch.float64).triu(1))
    bound = 1e-12 if exact else 1e-6
    assert rel_fro_lower(gram, expected) <= bound


@needs_cpu
@pytest.mark.parametrize("exact", [False, True])
def test_gram_accumulate_tile_edges(exact, cpu_path):
    """Sizes around the tile (256 columns), vector (16 / 8 lanes), micro-tile (6 rows), sub-block
    (128 rows) and chunk (4096 rows) edges, one size at a time against the float64 reference."""
    for n, d in [(127, 16), (128, 17), (4095, 6), (4097, 64), (8193, 5), (257, 255), (40, 511), (33, 769)]:
        x = torch.randn(n, d) - 0.2
        gram = torch.zeros(d, d, dtype=torch.float64)
        assert cpu_op()(gram, x, None, True, exact).tolist() == [-1, 0]
        assert rel_fro_lower(gram, ref_gram(x)) <= (1e-12 if exact else 1e-6), (n, d)


@needs_cpu
@pytest.mark.parametrize("exact", [False, True])
def test_gram_accumulate_same_bits_on_any_thread_count(exact, cpu_path):
    """Each output tile is summed in one fixed order whichever thread owns it."""
    x = torch.randn(5000, 700)
    grams = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            g = torch.zeros(700, 700, dtype=torch.float64)
            cpu_op()(g, x, None, True, exact)
            grams.append(g)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grams[0], grams[1]) and torch.equal(grams[0], grams[2])


@needs_cpu
@pytest.mark.parametrize("exact", [False, True])
def test_gram_accumulate_non_contiguous(exact, cpu_path):
    base = torch.randn(600, 80, dtype=torch.float32)
    for x in (base[::3], base[:, ::2], base.T[:40].T, base[100:400, 5:70]):
        gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        assert cpu_op()(gram, x, None, True, exact).tolist() == [-1, 0]
        assert rel_fro_lower(gram, ref_gram(x)) <= (1e-12 if exact else 1e-6)


@needs_cpu
@pytest.mark.parametrize("kind", ["two_clusters", "identical", "positive", "low_rank"])
def test_fast_error_bound(kind, cpu_path):
    """float32 sub-block products: adversarial rows whose products all round the same way."""
    d = 64
    if kind == "two_clusters":  # alternating rows: the centred products are all equal
        x = torch.stack([torch.randn(d), torch.randn(d)]).repeat(3000, 1)
    elif kind == "identical":
        x = torch.randn(1, d).expand(6000, d)
    elif kind == "positive":
        x = torch.rand(6000, d)
    else:
        x = torch.rand(6000, 2) @ torch.rand(2, d)
    for normalize in (True, False):
        gram = torch.zeros(d, d, dtype=torch.float64)
        cpu_op()(gram, x, None, normalize, False)
        assert rel_fro_lower(gram, ref_gram(x, None, normalize)) <= 1e-6


@needs_cpu
def test_bad_rows_reported_and_gram_unchanged(cpu_path):
    x = torch.randn(9000, 8)
    x[7000, 3] = float("nan")
    x[8000, 1] = float("inf")
    for exact in (False, True):
        gram = torch.zeros(8, 8, dtype=torch.float64)
        assert cpu_op()(gram, x, None, True, exact).tolist() == [7000, 1]
        assert torch.count_nonzero(gram) == 0
        assert ref.gram_accumulate(gram, x, None, True, exact).tolist() == [7000, 1]
    z = torch.randn(50, 4)
    z[20] = 0
    gram = torch.zeros(4, 4, dtype=torch.float64)
    assert cpu_op()(gram, z, None, True, False).tolist() == [20, 2]
    assert cpu_op()(gram, z, None, False, False).tolist() == [-1, 0]


@needs_cpu
def test_float64_overflow_rows_still_normalise():
    x = torch.tensor([[1e200, 1e200], [3.0, -4.0]], dtype=torch.float64)
    gram = torch.zeros(2, 2, dtype=torch.float64)
    assert cpu_op()(gram, x, None, True, True).tolist() == [-1, 0]
    y = torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5], [0.6, -0.8]], dtype=torch.float64)
    torch.testing.assert_close(torch.tril(gram), torch.tril(y.T @ y), rtol=1e-14, atol=1e-14)


@needs_cpu
def test_opcheck():
    x = torch.randn(40, 6)
    gram = torch.zeros(6, 6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.prism.gram_accumulate.default, (gram, x, None, True, False))
    torch.library.opcheck(torch.ops.prism.gram_accumulate.default,
                          (gram, x.double(), torch.rand(40, dtype=torch.float64), False, True))
    order = torch.randperm(40)
    offsets = torch.tensor([0, 5, 5, 40])
    torch.library.opcheck(torch.ops.prism.grouped_gram.default, (x, order, offsets, 6, True))


# ---------------------------------------------------------------------------------------------
# VendiState / vendi_score


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
@pytest.mark.parametrize("q", [1, 2, "inf", 0.5, 3.0])
def test_matches_vendi_score_package(backend, q):
    vendi = pytest.importorskip("vendi_score.vendi")
    x = torch.randn(400, 37, dtype=torch.float64) + 0.2
    got = pk.vendi_score(x, q, precision="exact", backend=backend)
    assert got == pytest.approx(float(vendi.score_dual(x.numpy(), q=q)), rel=1e-9)
    if q == 0.5:  # score_K keeps the n - d rounding-noise eigenvalues, which dominate sum p^q for q < 1
        return
    xn = torch.nn.functional.normalize(x, dim=1)
    assert got == pytest.approx(float(vendi.score_K((xn @ xn.T).numpy(), q=q)), rel=1e-9)


@needs_cpu
@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_streaming_and_merge_equal_one_pass(precision):
    x = torch.randn(2500, 48) * torch.linspace(0.1, 3, 48) + 0.5
    w = torch.rand(2500, dtype=torch.float64)
    bound = pk.PRECISION_BOUND[precision]
    one = pk.VendiState(48, precision=precision).update(x, w)
    expected = ref_gram(x, w)
    assert rel_fro_lower(one._gram, expected) <= bound
    for sizes in ([1, 2, 3, 994, 1500], [257] * 9 + [187], [2500]):
        streamed = pk.VendiState(48, precision=precision)
        shards = [pk.VendiState(48, precision=precision) for _ in range(3)]
        start = 0
        for i, size in enumerate(sizes):
            streamed.update(x[start:start + size], w[start:start + size])
            shards[i % 3].update(x[start:start + size], w[start:start + size])
            start += size
        merged = shards[0].merge(shards[1]).merge(shards[2])
        for st in (streamed, merged):
            assert st.rows == 2500 and st.count == pytest.approx(float(w.sum()), rel=1e-12)
            assert rel_fro_lower(st._gram, expected) <= bound
            assert st.score(1) == pytest.approx(one.score(1), rel=10 * bound)


def test_special_sets():
    d = 16
    same = torch.randn(1, d).expand(50, d)
    assert pk.vendi_score(same, precision="exact", backend="reference") == pytest.approx(1.0, abs=1e-9)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    for k in (1, 5, 16):
        for order in (1, 2, "inf", 0.7):
            assert pk.vendi_score(q[:k], order, precision="exact", backend="reference") == \
                pytest.approx(k, rel=1e-9)
    assert pk.vendi_score(torch.randn(1, d), backend="reference") == pytest.approx(1.0, rel=1e-9)
    if HAS_CPU:
        assert pk.vendi_score(same, precision="fast") == pytest.approx(1.0, abs=1e-5)
        assert pk.vendi_score(q[:5].float()) == pytest.approx(5.0, rel=1e-5)


def test_q2_closed_form_equals_eigenvalues():
    state = pk.VendiState(12, backend="reference").update(torch.randn(100, 12))
    lam = state.spectrum()
    assert state.score(2) == pytest.approx(float(1 / (lam ** 2).sum()), rel=1e-10)
    assert state.score(2.0000001) == pytest.approx(state.score(2), rel=1e-6)
    assert state.score(1) == pytest.approx(float(torch.exp(-(lam[lam > 0] * lam[lam > 0].log()).sum())))
    assert lam[0] >= lam[-1] >= 0


def test_errors_name_the_argument():
    st = pk.VendiState(4, backend="reference")
    with pytest.raises(ValueError, match="no rows"):
        st.score()
    with pytest.raises(ValueError, match="X: no rows"):
        pk.vendi_score(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="block"):
        st.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="block"):
        st.update(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="block"):
        st.update(torch.randn(3))
    with pytest.raises(ValueError, match="weights"):
        st.update(torch.randn(3, 4), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        st.update(torch.randn(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="q"):
        pk.vendi_score(torch.randn(3, 4), q=0)
    with pytest.raises(ValueError, match="q"):
        pk.vendi_score(torch.randn(3, 4), q="two")
    with pytest.raises(ValueError, match="dim"):
        pk.VendiState(0)
    with pytest.raises(ValueError, match="precision"):
        pk.VendiState(4, precision="medium")
    with pytest.raises(ValueError, match="backend"):
        pk.VendiState(4, backend="fpga")
    with pytest.raises(ValueError, match="other"):
        st.merge(pk.VendiState(4, precision="exact", backend="reference"))
    with pytest.raises(ValueError, match="other"):
        st.merge(pk.VendiState(5, backend="reference"))
    with pytest.raises(ValueError, match="groups"):
        pk.grouped_vendi(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="groups"):
        pk.grouped_vendi(torch.randn(3, 4), torch.tensor([0, -1, 0]))


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
def test_nan_row_error_names_global_index(backend):
    st = pk.VendiState(3, backend=backend)
    st.update(torch.randn(10, 3))
    bad = torch.randn(5, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"row 12 \(row 2 of this block\)"):
        st.update(bad)
    assert st.rows == 10
    zero = torch.randn(4, 3)
    zero[3] = 0
    with pytest.raises(ValueError, match="row 13 .* norm 0"):
        st.update(zero)
    with pytest.raises(ValueError, match="row 1 "):
        pk.vendi_score(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]), backend=backend)


def test_negative_eigenvalue_warns():
    st = pk.VendiState(3, backend="reference").update(torch.randn(10, 3))
    st._gram[2, 2] -= 50.0
    with pytest.warns(RuntimeWarning, match="negative beyond rounding"):
        lam = st.spectrum()
    assert float(lam.min()) == 0.0
    st2 = pk.VendiState(3, backend="reference").update(torch.randn(10, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st2.spectrum()


def test_save_load_roundtrip(tmp_path):
    st = pk.VendiState(6, precision="exact", backend="reference").update(torch.randn(30, 6), torch.rand(30))
    st.save(tmp_path / "s.safetensors")
    back = pk.VendiState.load(tmp_path / "s.safetensors", backend="reference")
    assert (back.dim, back.normalize, back.precision, back.rows, back.count) == \
        (st.dim, st.normalize, st.precision, st.rows, st.count)
    assert torch.equal(back._gram, st._gram)
    assert back.score(1) == st.score(1)
    back.merge(st)
    assert back.rows == 60
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="path"):
        pk.VendiState.load(tmp_path / "other.safetensors")


# ---------------------------------------------------------------------------------------------
# grouped_vendi


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
@pytest.mark.parametrize("q", [1, 2, "inf"])
def test_grouped_matches_loop(backend, q):
    vendi = pytest.importorskip("vendi_score.vendi")
    d = 9
    sizes = [1, 3, 9, 10, 25, 0, 4]
    groups = torch.cat([torch.full((s,), g) for g, s in enumerate(sizes)])
    perm = torch.randperm(groups.shape[0])
    groups = groups[perm]
    x = torch.randn(groups.shape[0], d, dtype=torch.float64) + 0.1
    got = pk.grouped_vendi(x, groups, q, backend=backend)
    assert got.shape == (len(sizes),)
    for g, s in enumerate(sizes):
        if s == 0:
            assert math.isnan(float(got[g]))
            continue
        want = float(vendi.score_dual(x[groups == g].numpy(), q=q))
        assert float(got[g]) == pytest.approx(want, rel=1e-9), (g, s)


@needs_cpu
@pytest.mark.parametrize("d,rows,num_groups", [(7, 200, 13), (40, 900, 11)])
def test_grouped_cpu_equals_reference_grams(d, rows, num_groups, cpu_path):
    """Groups below and above d rows: the small loop, the tile product on both sides, BLAS."""
    x = torch.randn(rows, d).to(torch.float32)
    groups = torch.randint(0, num_groups, (rows,))
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups, minlength=num_groups)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    size = int(counts.clamp(max=d).max())
    a = torch.ops.prism.grouped_gram(x, order, offsets, size, True)
    b = ref.grouped_gram(x, order, offsets, size, True)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_grouped_non_finite_row_error_names_it(backend, q, bad):
    x = torch.randn(400, 16, dtype=torch.float64)
    x[123, 5] = bad
    groups = torch.arange(400) % 7
    with pytest.raises(ValueError, match="row 123 contains NaN or Inf"):
        pk.grouped_vendi(x, groups, q, backend=backend)
    with pytest.raises(ValueError, match="row 123 contains NaN or Inf"):
        pk.grouped_vendi(x, groups, q, normalize=False, backend=backend)


@needs_cpu
@pytest.mark.parametrize("d", [1, 7, 64, 200])
@pytest.mark.parametrize("normalize", [True, False])
def test_grouped_frobenius_cpu_equals_reference(d, normalize, cpu_path):
    """The q = 2 op on odd group sizes, around and beyond d (both Gram sides, small and BLAS)."""
    sizes = [0, 1, 3, 7, 8, 63, 64, 65, 300]
    groups = torch.cat([torch.full((s,), g) for g, s in enumerate(sizes)])
    groups = groups[torch.randperm(groups.shape[0])]
    x = torch.randn(groups.shape[0], 2 * d, dtype=torch.float64)[:, ::2]  # non-contiguous
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups, minlength=len(sizes))
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    a = torch.ops.prism.grouped_frobenius_sq(x, order, offsets, normalize)
    b = ref.grouped_frobenius_sq(x, order, offsets, normalize)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.library.opcheck(torch.ops.prism.grouped_frobenius_sq.default, (x.contiguous(), order, offsets, normalize))
