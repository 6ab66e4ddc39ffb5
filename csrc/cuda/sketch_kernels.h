// Launchers of the CUDA sketch kernels (sketch_kernels.cu) on raw device pointers.
//
// Torch-free plain C++ (the torch glue is sketch_binding.cpp). Shapes and semantics:
// prism_kernels/reference/sketch.py; the matrix entries come from prism/sketch.h, shared with the
// CPU backend, so both generate the same matrix bit for bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace prism {
namespace gpu {

enum class RowType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct SketchArgs {
  const void* rows;   // [B, P] contiguous, of type `row_type`
  RowType row_type;
  int64_t batch;      // B
  int64_t width;      // P
  int64_t k;          // output columns, 1 <= k < 2^31
  int32_t kind;       // prism::sketch::Kind
  int32_t s;          // nonzeros per coordinate (sparse)
  uint64_t seed;
  uint32_t block;
  uint64_t offset;    // global index of the rows' first coordinate
  float scale;        // applied once at the end
};

// out [B, k] float32 = scale * rows M^T. `out` must be zeroed by the caller: the kernels add
// partial sums into it with atomics (so the summation order, not the matrix, varies run to run).
cudaError_t launch_sketch(const SketchArgs& args, float* out, cudaStream_t stream);

}  // namespace gpu
}  // namespace prism
