"""Which implementations this machine has, and which one an op call gets (DESIGN §7).

Backends: ``"reference"`` (pure torch, always there), ``"cpu"`` (the compiled C++ kernels in
``prism_kernels._C``), ``"cuda"`` (the same library built with CUDA, on CUDA tensors) and ``"triton"``
(on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``). ``backend=None`` takes the fastest
one for the input's device and falls back to the reference with a one-time warning; an explicitly
requested backend that is missing is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from typing import Callable

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here (not built, no device, no triton)."""


def _load_compiled():
    """Imports ``prism_kernels._C``; returns (module or None, why it is unusable or None)."""
    try:
        from . import _build_meta
        built_against = _build_meta.TORCH_VERSION
    except ImportError:
        built_against = None
    try:
        from . import _C
    except ImportError as exc:
        if built_against is None:
            return None, ("prism_kernels._C is not built (Python-only install); build it with "
                          "`pip install --no-build-isolation -e .`")
        if built_against != torch.__version__:
            return None, (f"prism_kernels._C was built against torch {built_against} but torch "
                          f"{torch.__version__} is installed; rebuild it with "
                          f"`pip install --no-build-isolation -e .` ({exc})")
        return None, f"prism_kernels._C failed to import: {exc}"
    built = _C.build_info()["torch_version"]
    if built != torch.__version__:
        return None, (f"prism_kernels._C was built against torch {built} but torch {torch.__version__} "
                      f"is installed; rebuild it with `pip install --no-build-isolation -e .`")
    return _C, None


_C, _C_PROBLEM = _load_compiled()
if _C_PROBLEM is not None and "Python-only" not in _C_PROBLEM:
    warnings.warn(_C_PROBLEM, RuntimeWarning, stacklevel=2)


def compiled():
    """The compiled module ``prism_kernels._C``, or None when it is unusable."""
    return _C


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _unavailable_reason(name: str, device: torch.device | None) -> str | None:
    """None if backend ``name`` can run on ``device`` (any device if None), else why not."""
    if name == "reference":
        return None
    if name == "cpu":
        if _C is None:
            return _C_PROBLEM
        if device is not None and device.type != "cpu":
            return f"the 'cpu' backend takes CPU tensors, got a tensor on {device}"
        return None
    if name == "cuda":
        if _C is None:
            return _C_PROBLEM
        if not _C.build_info()["with_cuda"]:
            return "prism_kernels._C was built without CUDA (torch has no CUDA or no toolkit was found)"
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        if device is not None and device.type != "cuda":
            return f"the 'cuda' backend takes CUDA tensors, got a tensor on {device}"
        return None
    if name == "triton":
        if not _triton_installed():
            return "triton is not installed (pip install triton)"
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        if device is None:
            return None if (torch.cuda.is_available() or interpreted) else \
                "triton needs a CUDA device, or TRITON_INTERPRET=1 for CPU tensors"
        if device.type == "cuda" or (device.type == "cpu" and interpreted):
            return None
        return f"triton cannot run on {device} (set TRITON_INTERPRET=1 for CPU tensors)"
    raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")


def backends() -> tuple[str, ...]:
    """Names of the backends that can run on this machine, fastest first per device."""
    order = ("cuda", "triton", "cpu", "reference")
    return tuple(name for name in order if _unavailable_reason(name, None) is None)


def backend_status() -> dict[str, str]:
    """For every backend, ``"available"`` or the reason it is not."""
    return {name: _unavailable_reason(name, None) or "available" for name in BACKENDS}


#: Which backends implement which low-level op (DESIGN §7): the one table every wrapper routes by.
#: The Vendi grouped ops and the RBF mat-vec have no CUDA C++ kernel; Triton covers CUDA tensors.
OPS: dict[str, tuple[str, ...]] = {
    "grid_histogram": ("reference", "cpu", "triton", "cuda"),
    "grid_cells": ("reference", "cpu", "triton", "cuda"),
    "window_counts": ("reference", "cpu", "triton", "cuda"),
    "gram_accumulate": ("reference", "cpu", "triton", "cuda"),
    "grouped_gram": ("reference", "cpu", "triton"),
    "grouped_frobenius_sq": ("reference", "cpu", "triton"),
    "rbf_matvec": ("reference", "cpu", "triton"),
    "sketch": ("reference", "cpu", "triton", "cuda"),
}

# Fastest first, per device type, for backend=None.
_PREFERRED = {"cuda": ("cuda", "triton"), "cpu": ("cpu",)}

_warned_fallbacks: set[tuple[str, str]] = set()


def check_backend(backend) -> str | None:
    """``backend`` if it is None or a known name, else a ValueError listing the names."""
    if backend is not None and (not isinstance(backend, str) or backend not in BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


def resolve(backend: str | None, device: torch.device, op: str | None = None) -> str:
    """The backend low-level ``op`` runs with on ``device``: ``backend`` itself (checked against
    :data:`OPS` and this machine) or, for None, the fastest one the op has for the device (the
    reference, with a one-time warning, when none is built). ``op=None``: any backend."""
    have = OPS[op] if op is not None else BACKENDS
    op = op or "this op"
    check_backend(backend)
    if backend is not None:
        if backend not in have:
            others = [b for b in have if b != "reference"]
            raise BackendUnavailableError(f"backend {backend!r} is unavailable: {op} has no {backend!r} kernel "
                                          f"(it has {', '.join(repr(b) for b in have)}"
                                          + ("; use 'triton' for CUDA tensors)" if backend == "cuda"
                                             and "triton" in others else ")"))
        reason = _unavailable_reason(backend, device)
        if reason is not None:
            raise BackendUnavailableError(f"backend {backend!r} is unavailable: {reason}")
        return backend
    preferred = [name for name in _PREFERRED.get(device.type, ()) if name in have]
    for name in preferred:
        if _unavailable_reason(name, device) is None:
            return name
    if preferred and (device.type, op) not in _warned_fallbacks:
        _warned_fallbacks.add((device.type, op))
        why = "; ".join(f"{n}: {_unavailable_reason(n, device)}" for n in preferred)
        warnings.warn(f"prism_kernels: no compiled backend for {op} on {device.type} tensors ({why}); "
                      f"using the pure-torch reference, which is slower", RuntimeWarning, stacklevel=3)
    return "reference"


def kernel(op: str, backend: str) -> Callable:
    """The implementation of low-level op ``op`` for a resolved ``backend``."""
    if backend == "reference":
        return getattr(importlib.import_module("prism_kernels.reference"), op)
    if backend == "triton":
        return getattr(importlib.import_module(f"prism_kernels.triton.{op}"), op)
    return getattr(torch.ops.prism, op)
