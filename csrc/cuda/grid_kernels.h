// Launchers of the CUDA grid-density kernels (grid_kernels.cu) on raw device pointers.
//
// Torch-free plain C++, so that the torch glue (grid_binding.cpp) is built by the host compiler and
// only grid_kernels.cu needs nvcc. Shapes and semantics: prism_kernels/reference/grid.py.
// Every launcher enqueues on `stream`, never synchronises, and returns the first CUDA error it meets.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace prism {
// Not prism::cuda: inside namespace prism that name would hide CCCL's ::cuda.
namespace gpu {

// Binning tables of every group's grid, built on the host with prism/thresholds.h.
//
// One row per (group, axis), each `row_length` = M + 3 values of the points' precision T:
//   row[0 .. bins[d]]       thresholds of the axis (prism::grid::Axis); later ones unused
//   row[row_length - 2]     lower of the first bin guess
//   row[row_length - 1]     scale of the first bin guess
template <typename T>
struct GridTables {
  const T* axis_rows;  // [G, D, M + 3]
  int64_t row_length;  // M + 3
  int64_t num_groups;  // G
  int64_t num_cells;   // C = bins[0] * ... * bins[D - 1]
  int32_t dims;        // D in {1, 2, 3}
  int32_t bins[3];     // bins per axis, entries past D ignored
};

// Which group every point belongs to.
struct PointGroups {
  const int64_t* group_ids;  // [N], or nullptr: point i is in group i / points_per_group
  int64_t points_per_group;  // >= 1; used only without group_ids
};

// Counts of kept points per cell and of dropped points per group, ADDED to `counts` [G, C] and
// `dropped` [G] (int64, zeroed by the caller). Points whose group id is outside [0, G) are ignored,
// so a bad id cannot write out of bounds (the Python wrapper rejects them beforehand).
cudaError_t launch_grid_histogram(const float* points, int64_t num_points, const PointGroups& groups,
                                  const GridTables<float>& grids, int64_t* counts, int64_t* dropped,
                                  cudaStream_t stream);
cudaError_t launch_grid_histogram(const double* points, int64_t num_points, const PointGroups& groups,
                                  const GridTables<double>& grids, int64_t* counts, int64_t* dropped,
                                  cudaStream_t stream);

// Cell of every point in its group's grid, written to `cells` [N]: row-major cell index, or -1 for
// a point that is dropped (non-finite, out of bounds, or with a group id outside [0, G)).
cudaError_t launch_grid_cells(const float* points, int64_t num_points, const PointGroups& groups,
                              const GridTables<float>& grids, int64_t* cells, cudaStream_t stream);
cudaError_t launch_grid_cells(const double* points, int64_t num_points, const PointGroups& groups,
                              const GridTables<double>& grids, int64_t* cells, cudaStream_t stream);

// A batch of 3-D grids and the valid windows summed over them.
struct WindowSpec {
  int64_t batch;      // B
  int64_t sizes[3];   // n_i >= 1
  int64_t window[3];  // 1 <= w_i <= n_i
  int64_t stride[3];  // s_i >= 1
};

// Windows anchored on axis i at 0, s_i, 2 s_i, ... that fit in n_i cells.
inline int64_t window_output_size(int64_t n, int64_t w, int64_t s) { return (n - w) / s + 1; }

// Sums over every valid window: `counts` [B, n0, n1, n2] int64 contiguous -> `out` [B, o0, o1, o2]
// with o_i = window_output_size(n_i, w_i, s_i). `sat` is caller-provided scratch for the
// summed-area table, [B, n0 + 1, n1 + 1, n2 + 1] int64, fully overwritten.
cudaError_t launch_window_counts(const int64_t* counts, const WindowSpec& spec, int64_t* sat,
                                 int64_t* out, cudaStream_t stream);

}  // namespace gpu
}  // namespace prism
