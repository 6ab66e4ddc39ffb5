"""prism_kernels: compiled kernels for gradient- and embedding-space data-diversity measurement.

Grid density (EmbedSDG): :func:`grid_histogram`, :func:`grid_cells`, :func:`window_counts`,
:func:`point_density`, :func:`sparse_windows`, :func:`seed_pairs`.

Vendi (G-Vendi): :class:`VendiState` (streaming, mergeable Gram), :func:`vendi_score`,
:func:`grouped_vendi`; :func:`kernel_vendi` (RBF / cosine kernels: exact, SLQ or random Fourier features).

Gradient sketching (G-Vendi): :func:`sketch` (random projections generated on the fly from a
Philox stream that is identical on every backend), :func:`sketch_kronecker`, and
:class:`GradientSketcher` (per-sample gradient sketches of a causal LM, one forward/backward per batch).

Every op takes ``backend=None`` (fastest available for the input's device), or one of
``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"``; :func:`backends` lists what this machine has.
"""

from __future__ import annotations

from . import _ops  # noqa: F401  (fake impls of the compiled ops, for torch.compile)
from ._backends import BACKENDS, BackendUnavailableError, backend_status, backends
from .grid import (
    MAX_GRID_CELLS,
    SparseWindows,
    grid_cells,
    grid_histogram,
    point_density,
    seed_pairs,
    sparse_windows,
    window_counts,
)
from .nonlinear_vendi import KernelVendi, kernel_vendi
from .vendi import PRECISION_BOUND, VendiState, grouped_vendi, vendi_score
from .projection import KINDS as SKETCH_KINDS
from .projection import (KRON_OUT_OFFSET, STREAM_VERSION, kronecker_factors, sketch, sketch_kronecker,
                     sketch_kronecker_embedding, sketch_scale)
from .gradient_sketch import GradientSketcher, SketchBatch, SketchMeta, concat_sketches, param_block

__version__ = "0.1.0"


def build_info() -> dict:
    """How the compiled library was built (versions, compiler, CUDA), what the CPU supports, and
    the status of every backend."""
    from ._backends import _C_PROBLEM, compiled

    lib = compiled()
    info: dict = {"version": __version__, "backends": backend_status()}
    if lib is not None:
        info.update(lib.build_info())
        info["capabilities"] = lib.capabilities()
    else:
        info["compiled"] = _C_PROBLEM
    return info


__all__ = [
    "BACKENDS", "BackendUnavailableError", "GradientSketcher", "KRON_OUT_OFFSET", "KernelVendi", "MAX_GRID_CELLS",
    "PRECISION_BOUND", "SKETCH_KINDS", "STREAM_VERSION", "SketchBatch", "SketchMeta", "SparseWindows", "VendiState",
    "__version__", "backend_status", "backends", "build_info", "concat_sketches", "grid_cells", "grid_histogram",
    "grouped_vendi", "kernel_vendi", "kronecker_factors", "param_block", "point_density", "seed_pairs", "sketch",
    "sketch_kronecker", "sketch_kronecker_embedding", "sketch_scale", "sparse_windows", "vendi_score",
    "window_counts",
]
