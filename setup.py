"""Build of prism_kernels._C with torch's C++ extension tooling.

The C++ CPU kernels are always built; the CUDA kernels only when the installed torch has CUDA and
a CUDA toolkit is found (or PRISM_KERNELS_CUDA=1 forces it; PRISM_KERNELS_CUDA=0 skips it).
PRISM_KERNELS_PYTHON_ONLY=1 installs the Python package without any compiled part (the reference
and Triton backends still work). Install torch first, then build without isolation:

    pip install torch==2.13.0 && pip install --no-build-isolation -e .
"""

from __future__ import annotations

import glob
import os

from setuptools import find_packages, setup

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _extensions():
    if _flag("PRISM_KERNELS_PYTHON_ONLY") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda_flag = _flag("PRISM_KERNELS_CUDA")
    torch_has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if cuda_flag == "1" and not torch_has_cuda:
        raise RuntimeError("PRISM_KERNELS_CUDA=1 but torch has no CUDA or no CUDA toolkit was found")
    with_cuda = torch_has_cuda and cuda_flag != "0"

    _write_build_meta(torch.__version__, with_cuda)
    sources = ["python/module.cpp", *sorted(glob.glob("csrc/ops/*.cpp")), *sorted(glob.glob("csrc/cpu/*.cpp"))]
    # -ffp-contract=off: no silent FMA contraction, so host arithmetic matches numpy's rounding.
    # -fopenmp at compile time only: at::parallel_for is inline OpenMP code in torch's headers, and
    # leaving the GOMP symbols undefined at link time binds them to the libgomp torch itself loaded,
    # so torch.set_num_threads governs our loops and no second OpenMP runtime is brought in.
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off", "-fvisibility=hidden", "-fopenmp",
           f'-DPRISM_TORCH_VERSION="{torch.__version__}"', f'-DPRISM_VERSION="{VERSION}"']
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    if not with_cuda:
        return [CppExtension("prism_kernels._C", sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": cxx})], {"build_ext": BuildExtension}
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    nvcc = ["-O3", "-std=c++17", "--fmad=false", "-DPRISM_WITH_CUDA"]
    return [CUDAExtension("prism_kernels._C", sources, include_dirs=include_dirs,
                          extra_compile_args={"cxx": cxx + ["-DPRISM_WITH_CUDA"], "nvcc": nvcc})], \
        {"build_ext": BuildExtension}


def _write_build_meta(torch_version: str, with_cuda: bool) -> None:
    # Read at import time to explain an _C that was built against another torch.
    path = os.path.join(ROOT, "prism_kernels", "_build_meta.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"TORCH_VERSION = {torch_version!r}\nWITH_CUDA = {with_cuda!r}\n")


ext_modules, cmdclass = _extensions()

setup(
    version=VERSION,
    packages=find_packages(include=["prism_kernels", "prism_kernels.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
