"""Shared test setup: the Triton interpreter on CPU, backend parametrisation, seeded data."""

import os

# Must be set before any triton kernel is defined (our triton modules are imported lazily).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import prism_kernels as pk  # noqa: E402
from prism_kernels import _backends  # noqa: E402

# "cpu-scalar" is the compiled CPU backend with its AVX2 loops switched off.
ALL_BACKENDS = ("reference", "cpu", "cpu-scalar", "triton", "cuda")


def backend_device(name: str) -> str:
    return "cuda" if name == "cuda" or (name == "triton" and torch.cuda.is_available()
                                        and os.environ.get("TRITON_INTERPRET") != "1") else "cpu"


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Yields (backend name for the API, device) for every backend this machine can run."""
    name = request.param
    api_name = "cpu" if name == "cpu-scalar" else name
    device = backend_device(name)
    reason = _backends._unavailable_reason(api_name, torch.device(device))
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    lib = _backends.compiled()
    if name == "cpu-scalar":
        lib.set_simd_enabled(False)
    try:
        yield api_name, device
    finally:
        if name == "cpu-scalar":
            lib.set_simd_enabled(True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
