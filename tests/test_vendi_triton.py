"""Triton gram_accumulate vs the float64 reference (on CPU through the Triton interpreter)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

pytest.importorskip("triton")

import prism_kernels as pk  # noqa: E402
from prism_kernels.reference import vendi as ref  # noqa: E402
from prism_kernels.triton.gram_accumulate import gram_accumulate  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def rel(a, b):
    return float(torch.linalg.norm(torch.tril(a) - torch.tril(b)) / torch.linalg.norm(torch.tril(b)))


@pytest.mark.parametrize("n,d", [(1, 1), (45, 33), (70, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("exact", [False, True])
def test_triton_matches_reference(n, d, dtype, exact):
    torch.manual_seed(n + d)
    x = (torch.randn(n, d, dtype=torch.float64) + 0.25).to(dtype).to(DEVICE)
    w = torch.rand(n, dtype=torch.float64, device=DEVICE) if n % 2 else None
    for normalize in (True, False):
        expected = torch.zeros(d, d, dtype=torch.float64, device=DEVICE)
        ref.gram_accumulate(expected, x, w, normalize, True)
        gram = torch.full((d, d), 3.0, dtype=torch.float64, device=DEVICE).triu(1)
        assert gram_accumulate(gram, x, w, normalize, exact).tolist() == [-1, 0]
        assert torch.equal(gram.triu(1), torch.full((d, d), 3.0, dtype=torch.float64, device=DEVICE).triu(1))
        assert rel(gram, expected) <= (1e-12 if exact else 1e-6)


def test_triton_non_contiguous_and_bad_rows():
    base = torch.randn(90, 50, device=DEVICE)
    x = base[::2, ::3]  # [45, 17], both strides non-unit
    gram = torch.zeros(17, 17, dtype=torch.float64, device=DEVICE)
    gram_accumulate(gram, x, None, True, False)
    expected = torch.zeros_like(gram)
    ref.gram_accumulate(expected, x, None, True, True)
    assert rel(gram, expected) <= 1e-6
    bad = base.clone()
    bad[33, 4] = float("-inf")
    bad[40] = 0
    gram = torch.zeros(50, 50, dtype=torch.float64, device=DEVICE)
    assert gram_accumulate(gram, bad, None, True, False).tolist() == [33, 1]
    assert torch.count_nonzero(gram) == 0
    bad[33, 4] = 1.0
    assert gram_accumulate(gram, bad, None, True, False).tolist() == [40, 2]


def test_triton_backend_through_vendi_state():
    vendi = pytest.importorskip("vendi_score.vendi")
    x = torch.randn(60, 20, dtype=torch.float64)
    st = pk.VendiState(20, precision="exact", backend="triton").update(x[:25]).update(x[25:])
    assert st.score(1) == pytest.approx(float(vendi.score_dual(x.numpy(), q=1)), rel=1e-9)
