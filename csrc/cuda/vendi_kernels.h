// Launchers of the CUDA Vendi kernels (vendi_kernels.cu) on raw device pointers.
//
// Torch-free plain C++ (the torch glue is vendi_binding.cpp). Semantics:
// prism_kernels/reference/vendi.py. Launchers enqueue on `stream`, never synchronise, and return the
// first CUDA error they meet.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace prism {
namespace gpu {

// Rows of x [n, d] (row stride `row_stride`, unit column stride).
template <typename T>
struct RowBlock {
  const T* x;
  int64_t n;
  int64_t d;
  int64_t row_stride;
};

// Per-row scale (vendi.h row_scale) into `scale` [n] float64 and status into `status` [n] int32;
// `first_bad` (one uint64, set to UINT64_MAX by the caller) receives the smallest bad row index.
cudaError_t launch_vendi_row_scale(const RowBlock<float>& rows, const double* weights, bool normalize,
                                   double* scale, int32_t* status, unsigned long long* first_bad,
                                   cudaStream_t stream);
cudaError_t launch_vendi_row_scale(const RowBlock<double>& rows, const double* weights, bool normalize,
                                   double* scale, int32_t* status, unsigned long long* first_bad,
                                   cudaStream_t stream);

// gram[i, j] += sum_r (scale_r x_ri) (scale_r x_rj) for i >= j (gram [d, d] float64, contiguous).
// Lower-triangle 32 x 32 tiles only; fast: float32 products summed over 32 rows, then float64;
// exact: float64 throughout. Row ranges are split over blocks and combined with float64 atomics.
cudaError_t launch_vendi_gram(const RowBlock<float>& rows, const double* scale, bool exact, double* gram,
                              cudaStream_t stream);
cudaError_t launch_vendi_gram(const RowBlock<double>& rows, const double* scale, bool exact, double* gram,
                              cudaStream_t stream);

}  // namespace gpu
}  // namespace prism
