// CUDA sketch kernels: X [B, P] times the on-the-fly matrix of prism/sketch.h.
//
// Dense kinds: a block owns 128 output columns x 16 rows of the batch and a contiguous range of the
// input (grid.z splits long inputs); per step of 32 coordinates it stages the rows' slice and a
// [32, 128] tile of M^T in shared memory (each Philox call of a Rademacher row gives 128 signs, of a
// Gaussian row 4 normals) and every thread accumulates 8 outputs in registers; partial sums are
// added to `out` with atomics. Sparse JL: one thread per input coordinate scatters +-x[:, j] to its
// s rows with atomics. A final pass multiplies by the scale.
//
// Must be built without --use_fast_math and with --fmad=false (setup.py), so that the Gaussian
// entries are computed with exactly the CPU's float32 operations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "prism/sketch.h"
#include "sketch_kernels.h"

namespace prism {
namespace gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kTileCols = 128;  // output columns per block (one Rademacher group)
constexpr int kTileRows = 32;   // input coordinates per step
constexpr int kTileBatch = 16;  // batch rows per block
constexpr int kRowsPerThread = kTileBatch / (kThreads / kTileCols);  // 8

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void __launch_bounds__(kThreads) dense_sketch_kernel(const T* __restrict__ rows, int64_t batch,
                                                                int64_t width, int64_t k, int32_t kind,
                                                                sketch::Key key, uint64_t offset,
                                                                int64_t span, float* __restrict__ out) {
  __shared__ float tile[kTileRows][kTileCols];
  __shared__ float xs[kTileBatch][kTileRows];
  const int tid = threadIdx.x;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kTileBatch;
  const int64_t begin = static_cast<int64_t>(blockIdx.z) * span;
  const int64_t end = begin + span < width ? begin + span : width;
  const int column = tid % kTileCols;
  const int half = tid / kTileCols;
  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = 0.0f;

  for (int64_t p0 = begin; p0 < end; p0 += kTileRows) {
    // Rows' slice, zero-padded past the batch and the range.
    for (int e = tid; e < kTileBatch * kTileRows; e += kThreads) {
      const int rb = e / kTileRows, rp = e % kTileRows;
      const int64_t b = b0 + rb, p = p0 + rp;
      xs[rb][rp] = (b < batch && p < end) ? to_float(rows[b * width + p]) : 0.0f;
    }
    // Tile of M^T: rows j = offset + p0 + jj, columns col0 .. col0 + 127.
    if (kind == static_cast<int32_t>(sketch::Kind::kRademacher)) {
      if (tid < kTileRows * 4) {  // 4 threads per coordinate, one output word each
        const int jj = tid >> 2, q = tid & 3;
        const philox::Words w =
            sketch::words(key, offset + static_cast<uint64_t>(p0 + jj), static_cast<uint32_t>(col0 >> 7));
#pragma unroll
        for (int b = 0; b < 32; ++b) tile[jj][32 * q + b] = sketch::sign_of_bit(w.w[q] >> b);
      }
    } else {
      for (int c = tid; c < kTileRows * (kTileCols / 4); c += kThreads) {
        const int jj = c / (kTileCols / 4), g = c % (kTileCols / 4);
        const philox::Words w = sketch::words(key, offset + static_cast<uint64_t>(p0 + jj),
                                              static_cast<uint32_t>((col0 >> 2) + g));
        sketch::gaussian_group(w, &tile[jj][4 * g]);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int jj = 0; jj < kTileRows; ++jj) {
      const float m = tile[jj][column];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) acc[r] += xs[half + 2 * r][jj] * m;
    }
    __syncthreads();
  }
  const int64_t i = col0 + column;
  if (i < k) {
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t b = b0 + half + 2 * r;
      if (b < batch) atomicAdd(out + b * k + i, acc[r]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sparse_sketch_kernel(const T* __restrict__ rows, int64_t batch,
                                                                 int64_t width, int64_t k, int32_t s,
                                                                 sketch::Key key, uint64_t offset,
                                                                 float* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < width; p += stride) {
    const uint64_t j = offset + static_cast<uint64_t>(p);
    philox::Words w{};
    for (int32_t t = 0; t < s; ++t) {
      if ((t & 3) == 0) w = sketch::words(key, j, static_cast<uint32_t>(t >> 2));
      const sketch::Nonzero nz = sketch::sparse_from_word(w.w[t & 3], static_cast<uint32_t>(k));
      for (int64_t b = 0; b < batch; ++b)
        atomicAdd(out + b * k + nz.row, nz.sign * to_float(rows[b * width + p]));
    }
  }
}

__global__ void scale_kernel(float* out, int64_t n, float scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    out[e] *= scale;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
cudaError_t launch_typed(const SketchArgs& a, float* out, cudaStream_t stream) {
  const T* rows = static_cast<const T*>(a.rows);
  const sketch::Key key = sketch::make_key(a.seed, a.block);
  int device = 0, multiprocessors = 1;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  if (a.kind == static_cast<int32_t>(sketch::Kind::kSparse)) {
    const int64_t blocks = ceil_div(a.width, kThreads) < 8 * multiprocessors ? ceil_div(a.width, kThreads)
                                                                              : 8 * multiprocessors;
    sparse_sketch_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        rows, a.batch, a.width, a.k, a.s, key, a.offset, out);
  } else {
    const int64_t col_tiles = ceil_div(a.k, kTileCols), batch_tiles = ceil_div(a.batch, kTileBatch);
    // Split the input so that about 4 blocks per multiprocessor run, each over >= 512 coordinates.
    int64_t splits = ceil_div(4 * multiprocessors, col_tiles * batch_tiles);
    const int64_t most = ceil_div(a.width, 512);
    if (splits > most) splits = most;
    if (splits > 65535) splits = 65535;
    if (splits < 1) splits = 1;
    const int64_t span = ceil_div(ceil_div(a.width, splits), kTileRows) * kTileRows;
    splits = ceil_div(a.width, span);
    if (batch_tiles > 65535) return cudaErrorInvalidConfiguration;
    const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(batch_tiles),
                    static_cast<unsigned>(splits));
    dense_sketch_kernel<T><<<grid, kThreads, 0, stream>>>(rows, a.batch, a.width, a.k, a.kind, key, a.offset,
                                                          span, out);
  }
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t n = a.batch * a.k;
  const int64_t blocks = ceil_div(n, kThreads) < 4 * multiprocessors ? ceil_div(n, kThreads) : 4 * multiprocessors;
  scale_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, n, a.scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sketch(const SketchArgs& args, float* out, cudaStream_t stream) {
  if (args.batch == 0 || args.width == 0) return cudaSuccess;
  switch (args.row_type) {
    case RowType::kFloat32:
      return launch_typed<float>(args, out, stream);
    case RowType::kFloat16:
      return launch_typed<__half>(args, out, stream);
    default:
      return launch_typed<__nv_bfloat16>(args, out, stream);
  }
}

}  // namespace gpu
}  // namespace prism
