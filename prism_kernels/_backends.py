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


_warned_fallbacks: set[str] = set()


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend an op on ``device`` runs with: ``backend`` itself (checked) or the default."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        reason = _unavailable_reason(backend, device)
        if reason is not None:
            raise BackendUnavailableError(f"backend {backend!r} is unavailable: {reason}")
        return backend
    preferred = ("cuda", "triton") if device.type == "cuda" else ("cpu",) if device.type == "cpu" else ()
    for name in preferred:
        if _unavailable_reason(name, device) is None:
            return name
    if device.type not in _warned_fallbacks:
        _warned_fallbacks.add(device.type)
        why = "; ".join(f"{n}: {_unavailable_reason(n, device)}" for n in preferred) or "no compiled backend"
        warnings.warn(f"prism_kernels: no compiled backend for {device.type} tensors ({why}); "
                      f"using the pure-torch reference, which is slower", RuntimeWarning, stacklevel=3)
    return "reference"


def resolve_without_cuda(caller: str, backend: str | None, device: torch.device) -> str:
    """:func:`resolve` for the ops with no CUDA C++ kernel (``grouped_gram``, ``grouped_frobenius_sq``,
    ``rbf_matvec``): an explicit ``"cuda"`` is an error naming ``caller``; where ``backend=None``
    resolves to ``"cuda"``, Triton runs the op (the reference if Triton cannot)."""
    if backend == "cuda":
        raise BackendUnavailableError(f"{caller} has no 'cuda' kernel; use backend='triton' (CUDA tensors), "
                                      f"'cpu' or 'reference'")
    name = resolve(backend, device)
    if name == "cuda":
        return "triton" if _unavailable_reason("triton", device) is None else "reference"
    return name


def kernel(op: str, backend: str) -> Callable:
    """The implementation of low-level op ``op`` for a resolved ``backend``."""
    if backend == "reference":
        return getattr(importlib.import_module("prism_kernels.reference"), op)
    if backend == "triton":
        return getattr(importlib.import_module(f"prism_kernels.triton.{op}"), op)
    return getattr(torch.ops.prism, op)
