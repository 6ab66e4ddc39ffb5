"""Backend selection, build information and the registered torch ops (opcheck, torch.compile)."""

import warnings

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends
from prism_kernels.grid import _edges

needs_cpu = pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")


def test_backends_lists_what_runs_here():
    names = pk.backends()
    assert "reference" in names
    status = pk.backend_status()
    assert set(status) == set(pk.BACKENDS)
    for name in pk.BACKENDS:
        assert (status[name] == "available") == (name in names)


@needs_cpu
def test_build_info_reports_versions_and_capabilities():
    info = pk.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["version"] == pk.__version__
    assert isinstance(info["capabilities"]["avx2"], bool)


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        pk.grid_histogram(torch.rand(5, 2), 3, backend="gpu")


def test_explicit_unavailable_backend_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(pk.BackendUnavailableError, match="'cuda' is unavailable"):
        pk.grid_histogram(torch.rand(5, 2), 3, backend="cuda")


def test_missing_compiled_backend_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_backends, "_C", None)
    monkeypatch.setattr(_backends, "_C_PROBLEM", "not built (test)")
    monkeypatch.setattr(_backends, "_warned_fallbacks", set())
    with pytest.warns(RuntimeWarning, match="using the pure-torch reference"):
        first = pk.grid_histogram(torch.rand(50, 2), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = pk.grid_histogram(torch.rand(50, 2), 4)
    assert first.shape == second.shape == (4, 4)
    with pytest.raises(pk.BackendUnavailableError, match="not built"):
        pk.grid_histogram(torch.rand(5, 2), 3, backend="cpu")


def _histogram_args():
    pts = torch.rand(257, 3)
    edges = _edges(torch.tensor([[[0.0, 1.0]] * 3], dtype=torch.float64), (4, 5, 6))
    return pts, edges


@needs_cpu
def test_opcheck_grid_histogram():
    pts, edges = _histogram_args()
    torch.library.opcheck(torch.ops.prism.grid_histogram.default, (pts, None, edges, [4, 5, 6], 257))
    groups = torch.randint(0, 2, (257,))
    edges2 = edges.expand(2, -1, -1).contiguous()
    torch.library.opcheck(torch.ops.prism.grid_histogram.default, (pts, groups, edges2, [4, 5, 6], 1))


@needs_cpu
def test_opcheck_grid_cells_and_window_counts():
    pts, edges = _histogram_args()
    torch.library.opcheck(torch.ops.prism.grid_cells.default, (pts, None, edges, [4, 5, 6], 257))
    counts = torch.randint(0, 9, (2, 5, 6, 7))
    torch.library.opcheck(torch.ops.prism.window_counts.default, (counts, [2, 3, 1], [1, 2, 3]))


@needs_cpu
def test_ops_trace_under_torch_compile():
    def density(points, edges):
        counts, _ = torch.ops.prism.grid_histogram(points, None, edges, [4, 5, 6], points.shape[0])
        return counts.view(4, 5, 6).unsqueeze(0)

    pts, edges = _histogram_args()
    compiled = torch.compile(density, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(pts, edges), density(pts, edges))


@needs_cpu
def test_library_built_against_another_torch_is_explained(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    lib, problem = _backends._load_compiled()
    assert lib is None
    assert "built against torch" in problem and "9.9.9" in problem and "--no-build-isolation" in problem
