// CUDA Vendi kernels: per-row scales (csrc/include/prism/vendi.h row_scale) and the lower-triangle
// Gram tiles. Maths: prism_kernels/reference/vendi.py.
#include <cuda_runtime.h>

#include <cstdint>

#include "prism/vendi.h"
#include "vendi_kernels.h"

namespace prism {
namespace gpu {
namespace {

constexpr int kTile = 32;      // output tile edge
constexpr int kRowsStep = 32;  // rows per shared-memory step (= float32 partial-sum length)
constexpr int kThreadsY = 8;   // block = kTile x kThreadsY threads, 4 outputs each

template <typename T>
__global__ void row_scale_kernel(RowBlock<T> rows, const double* weights, bool normalize, double* scale,
                                 int32_t* status, unsigned long long* first_bad) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows.n) return;
  double s = 1.0;
  const int32_t st = vendi::row_scale<T>(rows.x + r * rows.row_stride, rows.d,
                                         weights != nullptr ? weights[r] : 1.0, normalize, &s);
  scale[r] = s;
  status[r] = st;
  if (st != vendi::kOk) atomicMin(first_bad, static_cast<unsigned long long>(r));
}

// Tile pair p -> (I, J) with I >= J, p = I (I + 1) / 2 + J.
__device__ inline void tile_pair(int64_t p, int64_t* ti, int64_t* tj) {
  int64_t i = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(p) + 1.0) - 1.0) / 2.0);
  while (i * (i + 1) / 2 > p) --i;
  while ((i + 1) * (i + 2) / 2 <= p) ++i;
  *ti = i;
  *tj = p - i * (i + 1) / 2;
}

template <typename T, typename P>
__global__ void gram_kernel(RowBlock<T> rows, const double* scale, int64_t rows_per_split, double* gram) {
  __shared__ P a_tile[kRowsStep][kTile];
  __shared__ P b_tile[kRowsStep][kTile];
  int64_t ti, tj;
  tile_pair(blockIdx.x, &ti, &tj);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = ti * kTile, j0 = tj * kTile;
  const int64_t r_begin = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t r_end = r_begin + rows_per_split < rows.n ? r_begin + rows_per_split : rows.n;
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t r0 = r_begin; r0 < r_end; r0 += kRowsStep) {
    for (int k = ty; k < kRowsStep; k += kThreadsY) {
      const int64_t r = r0 + k;
      const bool in = r < r_end;
      const double s = in ? scale[r] : 0.0;
      const T* row = rows.x + (in ? r : 0) * rows.row_stride;
      a_tile[k][tx] = (in && i0 + tx < rows.d) ? static_cast<P>(s * static_cast<double>(row[i0 + tx])) : P(0);
      b_tile[k][tx] = (in && j0 + tx < rows.d) ? static_cast<P>(s * static_cast<double>(row[j0 + tx])) : P(0);
    }
    __syncthreads();
    P part[4] = {P(0), P(0), P(0), P(0)};
    for (int k = 0; k < kRowsStep; ++k) {
      const P b = b_tile[k][tx];
      for (int q = 0; q < 4; ++q) part[q] += a_tile[k][ty + q * kThreadsY] * b;
    }
    for (int q = 0; q < 4; ++q) acc[q] += static_cast<double>(part[q]);
    __syncthreads();
  }
  for (int q = 0; q < 4; ++q) {
    const int64_t i = i0 + ty + q * kThreadsY, j = j0 + tx;
    if (i < rows.d && j < rows.d && j <= i) atomicAdd(gram + i * rows.d + j, acc[q]);
  }
}

template <typename T>
cudaError_t row_scale(const RowBlock<T>& rows, const double* weights, bool normalize, double* scale,
                      int32_t* status, unsigned long long* first_bad, cudaStream_t stream) {
  if (rows.n == 0) return cudaSuccess;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((rows.n + threads - 1) / threads);
  row_scale_kernel<T><<<blocks, threads, 0, stream>>>(rows, weights, normalize, scale, status, first_bad);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gram(const RowBlock<T>& rows, const double* scale, bool exact, double* out, cudaStream_t stream) {
  if (rows.n == 0 || rows.d == 0) return cudaSuccess;
  const int64_t tiles = (rows.d + kTile - 1) / kTile;
  const int64_t pairs = tiles * (tiles + 1) / 2;
  // Enough row splits to fill the GPU when there are few tiles, each at least 1024 rows.
  int64_t splits = (rows.n + 1023) / 1024;
  const int64_t want = (1024 + pairs - 1) / pairs;
  if (splits > want) splits = want;
  if (splits > 65535) splits = 65535;
  int64_t per = (rows.n + splits - 1) / splits;
  per = (per + kRowsStep - 1) / kRowsStep * kRowsStep;
  splits = (rows.n + per - 1) / per;
  const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(splits));
  const dim3 block(kTile, kThreadsY);
  if (exact)
    gram_kernel<T, double><<<grid, block, 0, stream>>>(rows, scale, per, out);
  else
    gram_kernel<T, float><<<grid, block, 0, stream>>>(rows, scale, per, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_vendi_row_scale(const RowBlock<float>& rows, const double* weights, bool normalize,
                                   double* scale, int32_t* status, unsigned long long* first_bad,
                                   cudaStream_t stream) {
  return row_scale(rows, weights, normalize, scale, status, first_bad, stream);
}
cudaError_t launch_vendi_row_scale(const RowBlock<double>& rows, const double* weights, bool normalize,
                                   double* scale, int32_t* status, unsigned long long* first_bad,
                                   cudaStream_t stream) {
  return row_scale(rows, weights, normalize, scale, status, first_bad, stream);
}
cudaError_t launch_vendi_gram(const RowBlock<float>& rows, const double* scale, bool exact, double* out,
                              cudaStream_t stream) {
  return gram(rows, scale, exact, out, stream);
}
cudaError_t launch_vendi_gram(const RowBlock<double>& rows, const double* scale, bool exact, double* out,
                              cudaStream_t stream) {
  return gram(rows, scale, exact, out, stream);
}

}  // namespace gpu
}  // namespace prism
