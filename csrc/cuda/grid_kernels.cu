// CUDA grid-density kernels: numpy.histogramdd-exact histograms and cells, and window sums through a
// summed-area table. The per-point and per-window maths is prism/grid.h, shared with the CPU
// backend; this file only decides which thread does what. Torch-free: see grid_kernels.h.
//
// Exactness relies on IEEE comparisons of coordinates against thresholds, so this file must not be
// built with --use_fast_math (flush-to-zero would change how subnormal coordinates are binned).
#include <cuda_runtime.h>

#include <cstdint>

#include "grid_kernels.h"
#include "prism/grid.h"

#define PRISM_RETURN_IF_ERROR(expr)                     \
  do {                                                  \
    const cudaError_t prism_error_ = (expr);            \
    if (prism_error_ != cudaSuccess) return prism_error_; \
  } while (0)

namespace prism {
namespace gpu {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarpSize = 32;
constexpr unsigned kFullWarpMask = 0xffffffffu;

// Privatised histograms live in dynamic shared memory as uint32: 12K entries = 48 KiB, the most a
// block gets without opting in, which still leaves room for several blocks per SM.
constexpr int64_t kSharedTableMaxEntries = 12 * 1024;
// A tile of the shared-memory histogram should bin at least this many points per thread, so that
// zeroing and flushing its table stays a small part of its work.
constexpr int64_t kMinTilePointsPerThread = 16;
// Upper bound on the points of one tile, so that no uint32 shared counter can overflow.
constexpr int64_t kMaxTilePoints = int64_t{1} << 30;
// Loads each thread keeps in flight while scanning a strided summed-area-table line.
constexpr int kScanBatch = 8;

__host__ __device__ __forceinline__ int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t larger(int64_t a, int64_t b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// 64-bit grid-stride loop bounds (N can exceed 2^31).
__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t global_thread_count() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Blocks of `kernel` that fit on the whole device at once: the grid size of a grid-stride launch.
template <typename Kernel>
cudaError_t resident_blocks(Kernel kernel, size_t shared_bytes, int64_t* blocks) {
  int device = 0;
  int multiprocessors = 0;
  int blocks_per_multiprocessor = 0;
  PRISM_RETURN_IF_ERROR(cudaGetDevice(&device));
  PRISM_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  PRISM_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks_per_multiprocessor, kernel, kBlockThreads, shared_bytes));
  *blocks = larger(1, static_cast<int64_t>(multiprocessors) * blocks_per_multiprocessor);
  return cudaSuccess;
}

// Grid size for `work_items` grid-stride iterations of one thread each.
template <typename Kernel>
cudaError_t grid_stride_blocks(Kernel kernel, int64_t work_items, size_t shared_bytes,
                               unsigned* blocks) {
  int64_t resident = 0;
  PRISM_RETURN_IF_ERROR(resident_blocks(kernel, shared_bytes, &resident));
  *blocks = static_cast<unsigned>(smaller(ceil_div(work_items, kBlockThreads), resident));
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Binning

__device__ __forceinline__ int64_t group_of(int64_t point, const PointGroups& groups) {
  return groups.group_ids != nullptr ? groups.group_ids[point] : point / groups.points_per_group;
}

// Row-major cell of `point` in the grid of `group` (a valid group), or -1 if it is dropped.
// kDims is a template argument so that the axis array stays in registers.
template <typename T, int kDims>
__device__ __forceinline__ int64_t cell_in_group(const T* points, int64_t point, int64_t group,
                                                 const GridTables<T>& grids) {
  const T* group_rows = grids.axis_rows + group * kDims * grids.row_length;  // [D, M + 3]
  prism::grid::Axis<T> axes[kDims];
#pragma unroll
  for (int d = 0; d < kDims; ++d) {
    const T* row = group_rows + d * grids.row_length;
    axes[d] = prism::grid::Axis<T>{row, grids.bins[d], row[grids.row_length - 2],
                                   row[grids.row_length - 1]};
  }
  return prism::grid::cell_of<T>(points + point * kDims, kDims, axes);
}

template <typename T, int kDims>
__global__ void __launch_bounds__(kBlockThreads)
    grid_cells_kernel(const T* __restrict__ points, int64_t num_points, PointGroups groups,
                      GridTables<T> grids, int64_t* __restrict__ cells) {
  for (int64_t i = global_thread_index(); i < num_points; i += global_thread_count()) {
    const int64_t group = group_of(i, groups);
    const bool valid_group = group >= 0 && group < grids.num_groups;
    cells[i] = valid_group ? cell_in_group<T, kDims>(points, i, group, grids) : -1;
  }
}

// Histogram straight into global memory: for grids too large to privatise, or groups too small
// to pay for it.
template <typename T, int kDims>
__global__ void __launch_bounds__(kBlockThreads)
    histogram_global_kernel(const T* __restrict__ points, int64_t num_points, PointGroups groups,
                            GridTables<T> grids, unsigned long long* __restrict__ counts,
                            unsigned long long* __restrict__ dropped) {
  for (int64_t i = global_thread_index(); i < num_points; i += global_thread_count()) {
    const int64_t group = group_of(i, groups);
    if (group < 0 || group >= grids.num_groups) continue;  // bad id: count nowhere
    const int64_t cell = cell_in_group<T, kDims>(points, i, group, grids);
    if (cell >= 0) {
      atomicAdd(counts + group * grids.num_cells + cell, 1ull);  // counts [G, C]
    } else {
      atomicAdd(dropped + group, 1ull);
    }
  }
}

// Work split of the shared-memory histogram. The points are cut into `ranges` contiguous runs of
// `range_points` (the last one may be shorter) whose points all fall in the same `range_groups`
// consecutive groups: range r holds groups [r * range_groups, (r + 1) * range_groups). Without
// group ids a range is one group (range_groups = 1); with them, one range holds every point and
// every group. Each range is cut into chunks of `chunk_points`; a tile is one chunk of one range.
struct SharedTiling {
  int64_t range_points;
  int64_t range_groups;
  int64_t chunks_per_range;
  int64_t chunk_points;
  int64_t num_tiles;  // ranges * chunks_per_range
};

// Histogram privatised per block in shared memory (uint32), flushed to global memory once per
// tile, so global atomics scale with the occupied cells of a tile rather than with its points.
template <typename T, int kDims>
__global__ void __launch_bounds__(kBlockThreads)
    histogram_shared_kernel(const T* __restrict__ points, int64_t num_points, PointGroups groups,
                            GridTables<T> grids, SharedTiling tiling,
                            unsigned long long* __restrict__ counts,
                            unsigned long long* __restrict__ dropped) {
  // [range_groups, C] counts, then [range_groups] dropped; at most kSharedTableMaxEntries in all.
  extern __shared__ uint32_t shared_table[];
  const int64_t num_cells = grids.num_cells;
  const int count_entries = static_cast<int>(tiling.range_groups * num_cells);
  const int table_entries = count_entries + static_cast<int>(tiling.range_groups);
  uint32_t* shared_dropped = shared_table + count_entries;

  for (int64_t tile = blockIdx.x; tile < tiling.num_tiles; tile += gridDim.x) {
    const int64_t range = tile / tiling.chunks_per_range;
    const int64_t chunk = tile % tiling.chunks_per_range;
    const int64_t range_begin = range * tiling.range_points;
    const int64_t range_end = smaller(range_begin + tiling.range_points, num_points);
    const int64_t begin = range_begin + chunk * tiling.chunk_points;
    const int64_t end = smaller(begin + tiling.chunk_points, range_end);
    const int64_t first_group = range * tiling.range_groups;

    for (int j = threadIdx.x; j < table_entries; j += blockDim.x) shared_table[j] = 0;
    __syncthreads();

    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const int64_t group = group_of(i, groups);
      const int64_t local_group = group - first_group;
      // Only a bad group id can miss this range's groups: count it nowhere.
      if (group >= grids.num_groups || local_group < 0 || local_group >= tiling.range_groups) {
        continue;
      }
      const int64_t cell = cell_in_group<T, kDims>(points, i, group, grids);
      if (cell >= 0) {
        atomicAdd(shared_table + local_group * num_cells + cell, 1u);
      } else {
        atomicAdd(shared_dropped + local_group, 1u);
      }
    }
    __syncthreads();

    // The range's groups are consecutive, so its count entries are one contiguous run of counts.
    unsigned long long* range_counts = counts + first_group * num_cells;  // [range_groups, C]
    unsigned long long* range_dropped = dropped + first_group;            // [range_groups]
    for (int j = threadIdx.x; j < table_entries; j += blockDim.x) {
      const uint32_t count = shared_table[j];
      if (count == 0) continue;  // most cells of a tile are usually empty
      unsigned long long* target =
          j < count_entries ? range_counts + j : range_dropped + (j - count_entries);
      atomicAdd(target, static_cast<unsigned long long>(count));
    }
    __syncthreads();  // the next tile zeroes the table
  }
}

template <typename T, int kDims>
cudaError_t launch_histogram_for_dims(const T* points, int64_t num_points,
                                      const PointGroups& groups, const GridTables<T>& grids,
                                      int64_t* counts, int64_t* dropped, cudaStream_t stream) {
  // Same width and two's complement: adding to the int64 outputs as unsigned is exact.
  auto* counts_u64 = reinterpret_cast<unsigned long long*>(counts);
  auto* dropped_u64 = reinterpret_cast<unsigned long long*>(dropped);
  const int64_t num_cells = grids.num_cells;

  const bool has_group_ids = groups.group_ids != nullptr;
  const int64_t range_groups = has_group_ids ? grids.num_groups : 1;
  const int64_t range_points =
      has_group_ids ? num_points : smaller(groups.points_per_group, num_points);
  const bool table_fits = num_cells + 1 <= kSharedTableMaxEntries &&
                          range_groups <= kSharedTableMaxEntries / (num_cells + 1);
  const int64_t table_entries = table_fits ? range_groups * (num_cells + 1) : 0;

  // Zeroing and flushing a table costs about `table_entries` per tile, so privatising only pays
  // when a range has at least that many points.
  if (table_fits && range_points >= table_entries) {
    const auto kernel = histogram_shared_kernel<T, kDims>;
    const size_t shared_bytes = static_cast<size_t>(table_entries) * sizeof(uint32_t);
    int64_t resident = 0;
    PRISM_RETURN_IF_ERROR(resident_blocks(kernel, shared_bytes, &resident));

    // Enough chunks per range to fill the device, but never tiles so small that the table
    // overhead dominates.
    const int64_t ranges = ceil_div(num_points, range_points);
    const int64_t wanted_chunks = ceil_div(resident, ranges);
    const int64_t min_tile_points =
        larger(kBlockThreads * kMinTilePointsPerThread, 4 * table_entries);
    SharedTiling tiling{};
    tiling.range_points = range_points;
    tiling.range_groups = range_groups;
    tiling.chunk_points = smaller(larger(ceil_div(range_points, wanted_chunks), min_tile_points),
                                  kMaxTilePoints);
    tiling.chunks_per_range = ceil_div(range_points, tiling.chunk_points);
    tiling.num_tiles = ranges * tiling.chunks_per_range;
    const auto blocks = static_cast<unsigned>(smaller(tiling.num_tiles, resident));
    kernel<<<blocks, kBlockThreads, shared_bytes, stream>>>(points, num_points, groups, grids,
                                                           tiling, counts_u64, dropped_u64);
    return cudaGetLastError();
  }

  const auto kernel = histogram_global_kernel<T, kDims>;
  unsigned blocks = 0;
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(kernel, num_points, 0, &blocks));
  kernel<<<blocks, kBlockThreads, 0, stream>>>(points, num_points, groups, grids, counts_u64,
                                               dropped_u64);
  return cudaGetLastError();
}

template <typename T, int kDims>
cudaError_t launch_cells_for_dims(const T* points, int64_t num_points, const PointGroups& groups,
                                  const GridTables<T>& grids, int64_t* cells,
                                  cudaStream_t stream) {
  const auto kernel = grid_cells_kernel<T, kDims>;
  unsigned blocks = 0;
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(kernel, num_points, 0, &blocks));
  kernel<<<blocks, kBlockThreads, 0, stream>>>(points, num_points, groups, grids, cells);
  return cudaGetLastError();
}

// Host-side checks of what the kernels index with; everything else is the caller's contract.
template <typename T>
bool valid_binning_arguments(const T* points, int64_t num_points, const PointGroups& groups,
                             const GridTables<T>& grids) {
  if (num_points < 0 || grids.num_groups < 0 || grids.num_cells < 1) return false;
  if (grids.dims < 1 || grids.dims > 3 || grids.row_length < 3) return false;
  if (groups.group_ids == nullptr && groups.points_per_group < 1) return false;
  // With no groups every point is dropped without reading a table, so there may be none.
  return num_points == 0 ||
         (points != nullptr && (grids.axis_rows != nullptr || grids.num_groups == 0));
}

template <typename T>
cudaError_t launch_histogram(const T* points, int64_t num_points, const PointGroups& groups,
                             const GridTables<T>& grids, int64_t* counts, int64_t* dropped,
                             cudaStream_t stream) {
  if (!valid_binning_arguments(points, num_points, groups, grids)) return cudaErrorInvalidValue;
  if (num_points == 0 || grids.num_groups == 0) return cudaSuccess;  // a zero grid is invalid
  switch (grids.dims) {
    case 1:
      return launch_histogram_for_dims<T, 1>(points, num_points, groups, grids, counts, dropped,
                                             stream);
    case 2:
      return launch_histogram_for_dims<T, 2>(points, num_points, groups, grids, counts, dropped,
                                             stream);
    default:
      return launch_histogram_for_dims<T, 3>(points, num_points, groups, grids, counts, dropped,
                                             stream);
  }
}

template <typename T>
cudaError_t launch_cells(const T* points, int64_t num_points, const PointGroups& groups,
                         const GridTables<T>& grids, int64_t* cells, cudaStream_t stream) {
  if (!valid_binning_arguments(points, num_points, groups, grids)) return cudaErrorInvalidValue;
  if (num_points == 0) return cudaSuccess;
  switch (grids.dims) {
    case 1: return launch_cells_for_dims<T, 1>(points, num_points, groups, grids, cells, stream);
    case 2: return launch_cells_for_dims<T, 2>(points, num_points, groups, grids, cells, stream);
    default: return launch_cells_for_dims<T, 3>(points, num_points, groups, grids, cells, stream);
  }
}

// ------------------------------------------------------------------------------------------------
// Window sums

// First pass of the summed-area table: every row along its last axis, one warp per row
// (b, i0, i1) of sat [B, n0 + 1, n1 + 1, n2 + 1]. A row is the running sum of counts row
// (b, i0 - 1, i1 - 1) after a leading zero, or all zeros on the first plane of axis 0 or 1. The
// warp walks the row 32 entries at a time with a shuffle scan, so reads and writes are coalesced.
__global__ void __launch_bounds__(kBlockThreads)
    sat_rows_kernel(const int64_t* __restrict__ counts, WindowSpec spec, int64_t* __restrict__ sat) {
  const int64_t n0 = spec.sizes[0];
  const int64_t n1 = spec.sizes[1];
  const int64_t n2 = spec.sizes[2];
  const int64_t num_rows = spec.batch * (n0 + 1) * (n1 + 1);
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t warp_count = global_thread_count() / kWarpSize;

  // `row` is the same on every lane, so whole warps take each branch and the shuffles are safe.
  for (int64_t row = global_thread_index() / kWarpSize; row < num_rows; row += warp_count) {
    const int64_t i1 = row % (n1 + 1);
    const int64_t i0 = (row / (n1 + 1)) % (n0 + 1);
    const int64_t b = row / ((n1 + 1) * (n0 + 1));
    int64_t* sat_row = sat + row * (n2 + 1);  // [n2 + 1]
    if (i0 == 0 || i1 == 0) {
      for (int64_t k = lane; k <= n2; k += kWarpSize) sat_row[k] = 0;
      continue;
    }
    const int64_t* counts_row = counts + ((b * n0 + (i0 - 1)) * n1 + (i1 - 1)) * n2;  // [n2]
    if (lane == 0) sat_row[0] = 0;
    long long carry = 0;  // sum of the row's earlier chunks
    for (int64_t chunk = 0; chunk < n2; chunk += kWarpSize) {
      const int64_t k = chunk + lane;
      long long running = k < n2 ? static_cast<long long>(counts_row[k]) : 0;
#pragma unroll
      for (int offset = 1; offset < kWarpSize; offset *= 2) {
        const long long below = __shfl_up_sync(kFullWarpMask, running, offset);
        if (lane >= offset) running += below;
      }
      if (k < n2) sat_row[k + 1] = carry + running;
      carry += __shfl_sync(kFullWarpMask, running, kWarpSize - 1);
    }
  }
}

// Later passes of the summed-area table: running sums along a leading axis of sat viewed as
// [outer, length, inner], one thread per line (o, q). Adjacent threads own adjacent q, so every
// step is a coalesced access; each thread issues kScanBatch loads before it needs the first one,
// which hides most of the latency of walking a line serially.
__global__ void __launch_bounds__(kBlockThreads)
    sat_lines_kernel(int64_t* __restrict__ sat, int64_t outer, int64_t length, int64_t inner) {
  const int64_t num_lines = outer * inner;
  for (int64_t line = global_thread_index(); line < num_lines; line += global_thread_count()) {
    int64_t* first = sat + (line / inner) * length * inner + line % inner;  // stride inner
    long long running = 0;
    for (int64_t base = 0; base < length; base += kScanBatch) {
      long long values[kScanBatch];
#pragma unroll
      for (int u = 0; u < kScanBatch; ++u) {
        values[u] = base + u < length ? static_cast<long long>(first[(base + u) * inner]) : 0;
      }
#pragma unroll
      for (int u = 0; u < kScanBatch; ++u) {
        running += values[u];
        if (base + u < length) first[(base + u) * inner] = running;
      }
    }
  }
}

struct OutputSizes {
  int64_t sizes[3];  // o0, o1, o2
};

// One thread per window: out [B, o0, o1, o2] from sat [B, n0 + 1, n1 + 1, n2 + 1].
__global__ void __launch_bounds__(kBlockThreads)
    window_sums_kernel(const int64_t* __restrict__ sat, WindowSpec spec, OutputSizes outputs,
                       int64_t* __restrict__ out) {
  const int64_t o0 = outputs.sizes[0];
  const int64_t o1 = outputs.sizes[1];
  const int64_t o2 = outputs.sizes[2];
  const int64_t plane = (spec.sizes[2] + 1);             // sat stride of axis 1
  const int64_t slab = (spec.sizes[1] + 1) * plane;      // sat stride of axis 0
  const int64_t grid_size = (spec.sizes[0] + 1) * slab;  // sat stride of the batch
  const int64_t num_windows = spec.batch * o0 * o1 * o2;
  for (int64_t index = global_thread_index(); index < num_windows; index += global_thread_count()) {
    const int64_t j2 = index % o2;
    const int64_t j1 = (index / o2) % o1;
    const int64_t j0 = (index / (o2 * o1)) % o0;
    const int64_t b = index / (o2 * o1 * o0);
    const int64_t a0 = j0 * spec.stride[0];
    const int64_t a1 = j1 * spec.stride[1];
    const int64_t a2 = j2 * spec.stride[2];
    out[index] = prism::grid::box_sum(sat + b * grid_size, slab, plane, a0, a1, a2,
                                      a0 + spec.window[0], a1 + spec.window[1], a2 + spec.window[2]);
  }
}

}  // namespace

cudaError_t launch_grid_histogram(const float* points, int64_t num_points, const PointGroups& groups,
                                  const GridTables<float>& grids, int64_t* counts, int64_t* dropped,
                                  cudaStream_t stream) {
  return launch_histogram(points, num_points, groups, grids, counts, dropped, stream);
}

cudaError_t launch_grid_histogram(const double* points, int64_t num_points, const PointGroups& groups,
                                  const GridTables<double>& grids, int64_t* counts, int64_t* dropped,
                                  cudaStream_t stream) {
  return launch_histogram(points, num_points, groups, grids, counts, dropped, stream);
}

cudaError_t launch_grid_cells(const float* points, int64_t num_points, const PointGroups& groups,
                              const GridTables<float>& grids, int64_t* cells, cudaStream_t stream) {
  return launch_cells(points, num_points, groups, grids, cells, stream);
}

cudaError_t launch_grid_cells(const double* points, int64_t num_points, const PointGroups& groups,
                              const GridTables<double>& grids, int64_t* cells, cudaStream_t stream) {
  return launch_cells(points, num_points, groups, grids, cells, stream);
}

cudaError_t launch_window_counts(const int64_t* counts, const WindowSpec& spec, int64_t* sat,
                                 int64_t* out, cudaStream_t stream) {
  if (spec.batch < 0) return cudaErrorInvalidValue;
  OutputSizes outputs{};
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t n = spec.sizes[axis];
    const int64_t w = spec.window[axis];
    const int64_t s = spec.stride[axis];
    if (n < 1 || w < 1 || w > n || s < 1) return cudaErrorInvalidValue;
    outputs.sizes[axis] = window_output_size(n, w, s);
  }
  if (spec.batch == 0) return cudaSuccess;  // a zero grid is invalid
  const int64_t n0 = spec.sizes[0];
  const int64_t n1 = spec.sizes[1];
  const int64_t n2 = spec.sizes[2];

  unsigned blocks = 0;
  const int64_t num_rows = spec.batch * (n0 + 1) * (n1 + 1);
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(sat_rows_kernel, num_rows * kWarpSize, 0, &blocks));
  sat_rows_kernel<<<blocks, kBlockThreads, 0, stream>>>(counts, spec, sat);
  PRISM_RETURN_IF_ERROR(cudaGetLastError());

  // Axis 1: sat as [B * (n0 + 1), n1 + 1, n2 + 1]; axis 0: [B, n0 + 1, (n1 + 1) * (n2 + 1)].
  const int64_t axis1_outer = spec.batch * (n0 + 1);
  const int64_t axis1_inner = n2 + 1;
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(sat_lines_kernel, axis1_outer * axis1_inner, 0, &blocks));
  sat_lines_kernel<<<blocks, kBlockThreads, 0, stream>>>(sat, axis1_outer, n1 + 1, axis1_inner);
  PRISM_RETURN_IF_ERROR(cudaGetLastError());

  const int64_t axis0_inner = (n1 + 1) * (n2 + 1);
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(sat_lines_kernel, spec.batch * axis0_inner, 0, &blocks));
  sat_lines_kernel<<<blocks, kBlockThreads, 0, stream>>>(sat, spec.batch, n0 + 1, axis0_inner);
  PRISM_RETURN_IF_ERROR(cudaGetLastError());

  const int64_t num_windows = spec.batch * outputs.sizes[0] * outputs.sizes[1] * outputs.sizes[2];
  PRISM_RETURN_IF_ERROR(grid_stride_blocks(window_sums_kernel, num_windows, 0, &blocks));
  window_sums_kernel<<<blocks, kBlockThreads, 0, stream>>>(sat, spec, outputs, out);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace prism
