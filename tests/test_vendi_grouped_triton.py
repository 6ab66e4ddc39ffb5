"""Triton grouped_gram / grouped_frobenius_sq / rbf_matvec vs their float64 references (on CPU through
the Triton interpreter), and grouped_vendi / kernel_vendi routed to them."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

pytest.importorskip("triton")

import prism_kernels as pk  # noqa: E402
from prism_kernels import _backends  # noqa: E402
from prism_kernels.reference import kernel_vendi as kernel_ref  # noqa: E402
from prism_kernels.reference import vendi as ref  # noqa: E402
from prism_kernels.triton.grouped_frobenius_sq import grouped_frobenius_sq  # noqa: E402
from prism_kernels.triton.grouped_gram import grouped_gram  # noqa: E402
from prism_kernels.triton.rbf_matvec import rbf_matvec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Both sides compute in float64 from the same (upcast) values: only the summation order differs.
RTOL = 1e-12


def grouped_rows(d, sizes, dtype=torch.float64, seed=0):
    """Rows ``x [N, d]`` (non-contiguous, groups shuffled), ``order [N]``, ``offsets [G + 1]``, ``size``."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.tensor(sizes, dtype=torch.int64)
    groups = torch.repeat_interleave(torch.arange(len(sizes)), counts)
    groups = groups[torch.randperm(groups.shape[0], generator=gen)]
    order = torch.argsort(groups, stable=True)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    x = (torch.randn(groups.shape[0], 2 * d, generator=gen, dtype=torch.float64) + 0.25).to(dtype)[:, ::2]
    size = max(1, int(counts.clamp(max=d).max())) if sizes else 1
    return x.to(DEVICE), order.to(DEVICE), offsets.to(DEVICE), size


def assert_grams_match(got, want, offsets, d):
    """Same finite entries (to RTOL of the largest), non-finite where the reference is, zero padding."""
    assert got.shape == want.shape and got.dtype == torch.float64
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    finite = torch.isfinite(want)
    scale = float(want[finite].abs().max()) if bool(finite.any()) else 0.0
    assert float((got[finite] - want[finite]).abs().max()) <= RTOL * scale
    side = torch.arange(got.shape[1], device=got.device)
    m = (offsets[1:] - offsets[:-1]).clamp(max=d)  # [G]
    inside = (side[None, :, None] < m[:, None, None]) & (side[None, None, :] < m[:, None, None])
    assert torch.count_nonzero(got[~inside]) == 0
    assert torch.equal(got.nan_to_num(), got.transpose(1, 2).nan_to_num())


# ---------------------------------------------------------------------------------------------
# grouped_gram and grouped_frobenius_sq


@pytest.mark.parametrize("d", [1, 7, 33])
@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_ops_match_reference(d, dtype):
    """Group sizes around d (both Gram forms, one and two tiles a side), an empty group, both
    normalisations, a non-contiguous x in every input dtype."""
    x, order, offsets, size = grouped_rows(d, [0, 1, 3, d - 1, d, d + 1, 2 * d + 5], dtype, seed=d)
    for normalize in (True, False):
        want = ref.grouped_gram(x, order, offsets, size, normalize)
        assert_grams_match(grouped_gram(x, order, offsets, size, normalize), want, offsets, d)
        torch.testing.assert_close(grouped_frobenius_sq(x, order, offsets, normalize),
                                   ref.grouped_frobenius_sq(x, order, offsets, normalize), rtol=RTOL, atol=0.0)


def test_grouped_gram_pads_to_a_larger_size():
    x, order, offsets, size = grouped_rows(5, [2, 9, 4])
    got = grouped_gram(x, order, offsets, size + 3, True)
    assert_grams_match(got, ref.grouped_gram(x, order, offsets, size + 3, True), offsets, 5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, on purpose
def test_grouped_non_finite_row_stays_non_finite_and_zero_row_stays_zero(bad):
    d = 6
    x, order, offsets, size = grouped_rows(d, [4, 9, 3, 12])
    x = x.contiguous()
    x[int(order[5])] = 0.0  # group 1 (n_g > d: the column form)
    x[int(order[13]), 2] = bad  # group 2 (n_g <= d: the row form)
    x[int(order[20]), 4] = bad  # group 3 (the column form)
    for normalize in (True, False):
        got = grouped_gram(x, order, offsets, size, normalize)
        assert_grams_match(got, ref.grouped_gram(x, order, offsets, size, normalize), offsets, d)
        assert bool(torch.isfinite(got[:2]).all())
        assert not bool(torch.isfinite(got[2]).all()) and not bool(torch.isfinite(got[3]).all())
        fro = grouped_frobenius_sq(x, order, offsets, normalize)
        assert torch.isfinite(fro).tolist() == [True, True, False, False]
        torch.testing.assert_close(fro[:2], ref.grouped_frobenius_sq(x, order, offsets, normalize)[:2],
                                   rtol=RTOL, atol=0.0)


def test_grouped_no_groups_and_only_empty_groups():
    x = torch.randn(0, 4, device=DEVICE)
    order = torch.zeros(0, dtype=torch.int64, device=DEVICE)
    none = torch.zeros(1, dtype=torch.int64, device=DEVICE)  # G = 0
    assert grouped_gram(x, order, none, 1, True).shape == (0, 1, 1)
    assert grouped_frobenius_sq(x, order, none, True).shape == (0,)
    empty = torch.zeros(3, dtype=torch.int64, device=DEVICE)  # G = 2, no rows
    assert torch.equal(grouped_gram(x, order, empty, 2, False), torch.zeros(2, 2, 2, dtype=torch.float64,
                                                                            device=DEVICE))
    assert torch.equal(grouped_frobenius_sq(x, order, empty, False), torch.zeros(2, dtype=torch.float64,
                                                                                 device=DEVICE))


def test_grouped_bad_arguments_name_the_argument():
    x, order, offsets, size = grouped_rows(4, [3, 5])
    cases = [
        ((x[:, 0], order, offsets, size, True), "x"),
        ((x.to(torch.int32), order, offsets, size, True), "x"),
        ((x, order.to(torch.int32), offsets, size, True), "order"),
        ((x, order[:-1], offsets, size, True), "order"),
        ((x, order + 1, offsets, size, True), "order"),
        ((x, order, offsets[None], size, True), "offsets"),
        ((x, order, offsets[:0], size, True), "offsets"),
        ((x, order, offsets + 1, size, True), "offsets"),
        ((x, order, offsets[[0, 2, 1, 2]], size, True), "offsets"),
        ((x, order, offsets, 0, True), "size"),
        ((x, order, offsets, size - 1, True), "size"),
        ((x, order, offsets, float(size), True), "size"),
        ((x, order, offsets, size, 1), "normalize"),
    ]
    for args, name in cases:
        with pytest.raises(ValueError, match=f"grouped_gram: {name} must"):
            grouped_gram(*args)
        if name != "size":
            with pytest.raises(ValueError, match=f"grouped_frobenius_sq: {name} must"):
                grouped_frobenius_sq(*args[:3], args[4])


# ---------------------------------------------------------------------------------------------
# rbf_matvec


@pytest.mark.parametrize("n,d,m", [(1, 1, 1), (19, 3, 2), (45, 33, 5), (40, 7, 33)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rbf_matvec_matches_reference(n, d, m, dtype):
    """Sizes that are not multiples of the tiles, v wider than one program's columns (m = 33), a
    non-contiguous x and v."""
    gen = torch.Generator().manual_seed(n + d + m)
    x = (0.5 * torch.randn(n, 2 * d, generator=gen, dtype=torch.float64)).to(dtype)[:, ::2].to(DEVICE)
    v = torch.randn(m, n, generator=gen, dtype=torch.float64).to(DEVICE).T
    got = rbf_matvec(x, v, 0.37)
    assert got.shape == (n, m) and got.dtype == torch.float64
    torch.testing.assert_close(got, kernel_ref.rbf_matvec(x, v, 0.37), rtol=RTOL, atol=RTOL)


def test_rbf_matvec_gamma_zero_and_empty():
    x = torch.randn(21, 4, device=DEVICE)
    v = torch.randn(21, 3, dtype=torch.float64, device=DEVICE)
    # K is all ones: every row of K v is the column sums of v
    torch.testing.assert_close(rbf_matvec(x, v, 0.0), v.sum(0).expand(21, 3), rtol=RTOL, atol=RTOL)
    assert rbf_matvec(x[:0], v[:0], 1.0).shape == (0, 3)
    assert rbf_matvec(x, v[:, :0], 1.0).shape == (21, 0)


def test_rbf_matvec_bad_arguments_name_the_argument():
    x = torch.randn(10, 3, device=DEVICE)
    v = torch.randn(10, 2, dtype=torch.float64, device=DEVICE)
    cases = [
        ((x[:, 0], v, 1.0), "x"),
        ((x.to(torch.int64), v, 1.0), "x"),
        ((x, v[:9], 1.0), "v"),
        ((x, v[:, 0], 1.0), "v"),
        ((x, v.to(torch.int64), 1.0), "v"),
        ((x, v, -1.0), "gamma"),
        ((x, v, float("nan")), "gamma"),
        ((x, v, float("inf")), "gamma"),
        ((x, v, None), "gamma"),
    ]
    for args, name in cases:
        with pytest.raises(ValueError, match=f"rbf_matvec: {name} must"):
            rbf_matvec(*args)


# ---------------------------------------------------------------------------------------------
# the public API on the Triton backend


@pytest.mark.parametrize("q", [1, 2, "inf"])
@pytest.mark.parametrize("normalize", [True, False])
def test_grouped_vendi_triton_equals_reference(q, normalize):
    d = 9
    sizes = [1, 3, 9, 10, 25, 0, 4]
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    groups = groups[torch.randperm(groups.shape[0])]
    x = (torch.randn(groups.shape[0], d) + 0.1).to(DEVICE)
    got = pk.grouped_vendi(x, groups, q, normalize=normalize, backend="triton")
    want = pk.grouped_vendi(x, groups, q, normalize=normalize, backend="reference")
    assert bool(torch.isnan(got[5]))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("q", [1, 2])
def test_grouped_vendi_triton_names_a_non_finite_row(q):
    x = torch.randn(60, 16, dtype=torch.float64, device=DEVICE)
    x[23, 5] = float("nan")
    with pytest.raises(ValueError, match="row 23 contains NaN or Inf"):
        pk.grouped_vendi(x, torch.arange(60) % 7, q, backend="triton")


def test_kernel_vendi_slq_triton_equals_reference():
    gen = torch.Generator().manual_seed(3)
    centres = torch.randn(6, 5, generator=gen) * 2
    x = centres[torch.randint(0, 6, (70,), generator=gen)] + 0.5 * torch.randn(70, 5, generator=gen)
    kwargs = dict(bandwidth=1.5, method="slq", probes=6, steps=8, seed=0)
    got = pk.kernel_vendi(x.to(DEVICE), backend="triton", **kwargs)
    want = pk.kernel_vendi(x, backend="reference", **kwargs)
    assert got.method == "slq" and got.samples == want.samples
    assert got.score == pytest.approx(want.score, rel=1e-9)
    assert got.stderr == pytest.approx(want.stderr, rel=1e-6)


def test_cuda_backend_is_refused_and_default_on_cuda_takes_triton(monkeypatch):
    x = torch.randn(30, 4)
    groups = torch.arange(30) % 3
    with pytest.raises(pk.BackendUnavailableError, match="grouped_gram has no 'cuda' kernel"):
        pk.grouped_vendi(x, groups, backend="cuda")
    with pytest.raises(pk.BackendUnavailableError, match="grouped_frobenius_sq has no 'cuda' kernel"):
        pk.grouped_vendi(x, groups, 2, backend="cuda")
    with pytest.raises(pk.BackendUnavailableError, match="rbf_matvec has no 'cuda' kernel"):
        pk.kernel_vendi(x, bandwidth=1.0, method="slq", backend="cuda")
    # backend=None on a CUDA device where every backend is available: the op x backend table sends
    # the ops without a CUDA C++ kernel to Triton, the others to CUDA
    monkeypatch.setattr(_backends, "_unavailable_reason", lambda name, device: None)
    cuda = torch.device("cuda")
    for op, have in _backends.OPS.items():
        assert _backends.resolve(None, cuda, op) == ("cuda" if "cuda" in have else "triton")
        assert _backends.resolve(None, torch.device("cpu"), op) == "cpu"
    assert {op for op, have in _backends.OPS.items() if "cuda" not in have} == \
        {"grouped_gram", "grouped_frobenius_sq", "rbf_matvec"}
