// prism_kernels._C: the compiled ops (registered with the torch dispatcher in csrc/ops) plus this
// small pybind11 module that reports how the library was built and what this machine can run.
#include <torch/extension.h>

#include <string>

#include "../csrc/cpu/gram_tiles.h"
#include "../csrc/cpu/histogram_blocks.h"

#ifndef PRISM_TORCH_VERSION
#define PRISM_TORCH_VERSION "unknown"
#endif
#ifndef PRISM_VERSION
#define PRISM_VERSION "unknown"
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = PRISM_VERSION;
  info["torch_version"] = PRISM_TORCH_VERSION;
#ifdef PRISM_WITH_CUDA
  info["with_cuda"] = true;
#else
  info["with_cuda"] = false;
#endif
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = std::string("unknown");
#endif
  return info;
}

pybind11::dict capabilities() {
  pybind11::dict caps;
  caps["avx2"] = prism::cpu::cpu_has_avx2();
  caps["avx512f"] = prism::cpu::cpu_has_avx512f();
  caps["simd_enabled"] = prism::cpu::simd_enabled();
  caps["parallel"] = at::get_parallel_info();
  return caps;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "prism_kernels compiled kernels (ops live under torch.ops.prism)";
  m.def("build_info", &build_info, "How this library was built: versions, compiler, CUDA.");
  m.def("capabilities", &capabilities, "What this machine can run: AVX2, whether SIMD is on, threads.");
  m.def("set_simd_enabled", &prism::cpu::set_simd_enabled, pybind11::arg("enabled"),
        "Switch the AVX2 CPU loops on or off (off = scalar loops; for tests and comparisons).");
}
