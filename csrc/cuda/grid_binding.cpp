// Torch glue of the CUDA grid-density kernels: argument checks, the binning tables, the outputs
// and the stream. The kernels themselves are torch-free (grid_kernels.h / grid_kernels.cu); shapes
// and semantics are prism_kernels/reference/grid.py. The Python wrappers validate arguments
// beforehand, so the checks here guard memory safety and the kernels' preconditions.
#ifdef PRISM_WITH_CUDA

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "../ops/ops.h"
#include "grid_kernels.h"
#include "prism/grid.h"
#include "prism/thresholds.h"

namespace prism {
namespace {

// What grid_histogram and grid_cells learn from checking their arguments.
struct BinningLayout {
  int64_t num_points;        // N
  int64_t num_groups;        // G
  int64_t num_cells;         // C
  int32_t dims;              // D
  int32_t bins[3];           // entries past D are 1
  const int64_t* group_ids;  // [N] on the points' device, or nullptr
  int64_t points_per_group;  // >= 1
};

BinningLayout check_binning_arguments(const char* op, const at::Tensor& points,
                                      const std::optional<at::Tensor>& group_ids,
                                      const at::Tensor& edges, at::IntArrayRef bins,
                                      int64_t points_per_group) {
  TORCH_CHECK(points.is_cuda(), op, ": points must be a CUDA tensor, got ", points.device());
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 1 && points.size(1) <= 3, op,
              ": points must be [N, D] with D in {1, 2, 3}, got ", points.sizes());
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble, op,
              ": points must be float32 or float64, got ", points.scalar_type());
  TORCH_CHECK(points.is_contiguous(), op, ": points must be contiguous");

  BinningLayout layout{};
  layout.num_points = points.size(0);
  layout.dims = static_cast<int32_t>(points.size(1));

  TORCH_CHECK(edges.scalar_type() == at::kDouble, op, ": edges must be float64, got ",
              edges.scalar_type());
  TORCH_CHECK(edges.device() == points.device() || edges.is_cpu(), op,
              ": edges must be on the points' device or on the CPU, got ", edges.device());
  TORCH_CHECK(edges.dim() == 3 && edges.size(1) == layout.dims, op,
              ": edges must be [G, D, M + 1] with D = ", layout.dims, ", got ", edges.sizes());
  layout.num_groups = edges.size(0);

  TORCH_CHECK(static_cast<int64_t>(bins.size()) == layout.dims, op, ": expected ", layout.dims,
              " bins, got ", bins.size());
  const int64_t max_bins = edges.size(2) - 1;  // M
  layout.num_cells = 1;
  for (int d = 0; d < 3; ++d) layout.bins[d] = 1;
  for (int32_t d = 0; d < layout.dims; ++d) {
    const int64_t n = bins[d];
    TORCH_CHECK(n >= 1 && n <= max_bins && n <= std::numeric_limits<int32_t>::max(), op,
                ": bins[", d, "] = ", n, " must be in [1, ", max_bins, "] (edges hold M + 1 = ",
                edges.size(2), " per axis)");
    TORCH_CHECK(layout.num_cells <= std::numeric_limits<int64_t>::max() / n, op,
                ": the number of cells overflows int64");
    layout.num_cells *= n;
    layout.bins[d] = static_cast<int32_t>(n);
  }
  TORCH_CHECK(layout.num_groups == 0 ||
                  layout.num_cells <= std::numeric_limits<int64_t>::max() / layout.num_groups,
              op, ": groups * cells overflows int64");

  layout.points_per_group = points_per_group > 1 ? points_per_group : 1;  // as the reference
  layout.group_ids = nullptr;
  if (group_ids.has_value() && group_ids->defined()) {
    const at::Tensor& ids = *group_ids;
    TORCH_CHECK(ids.device() == points.device(), op,
                ": group_ids must be on the points' device ", points.device(), ", got ",
                ids.device());
    TORCH_CHECK(ids.scalar_type() == at::kLong, op, ": group_ids must be int64, got ",
                ids.scalar_type());
    TORCH_CHECK(ids.dim() == 1 && ids.size(0) == layout.num_points, op,
                ": group_ids must be [N] with N = ", layout.num_points, ", got ", ids.sizes());
    TORCH_CHECK(ids.is_contiguous(), op, ": group_ids must be contiguous");
    // Ids outside [0, G) are not checked here (that would synchronise): as on every backend, such a
    // point is counted nowhere (no cell, no dropped count) and its cell is -1.
    layout.group_ids = ids.const_data_ptr<int64_t>();
  } else {
    TORCH_CHECK(layout.num_points == 0 ||
                    (layout.num_points - 1) / layout.points_per_group < layout.num_groups,
                op, ": ", layout.num_points, " points in groups of ", layout.points_per_group,
                " need more than the ", layout.num_groups, " groups of edges");
  }
  return layout;
}

// Binning tables on the points' device, [G, D, M + 3] of the points' dtype (row layout in
// gpu::GridTables). Built on the host so that the exact threshold construction of thresholds.h
// (nextafter, float32 rounding) exists in one place only; edges are small, so the copies are too.
template <typename scalar_t>
at::Tensor build_axis_rows(const at::Tensor& edges, const BinningLayout& layout,
                           const at::Tensor& points) {
  const at::Tensor host_edges = edges.to(at::kCPU).contiguous();  // [G, D, M + 1]
  const int64_t num_groups = host_edges.size(0);
  const int64_t dims = host_edges.size(1);
  const int64_t edges_per_axis = host_edges.size(2);  // M + 1
  const int64_t row_length = edges_per_axis + 2;      // M + 3
  at::Tensor host_rows = at::zeros({num_groups, dims, row_length},
                                   points.options().device(at::kCPU));  // [G, D, M + 3]
  const double* edge_data = host_edges.const_data_ptr<double>();
  scalar_t* row_data = host_rows.mutable_data_ptr<scalar_t>();
  const int64_t grain = 1 + 16384 / (dims * edges_per_axis);  // groups per task
  for (int64_t axis_row = 0; axis_row < num_groups * dims; ++axis_row)
    TORCH_CHECK(grid::edges_valid(edge_data + axis_row * edges_per_axis, layout.bins[axis_row % dims]),
                "edges[", axis_row / dims, ", ", axis_row % dims, "] must be finite and non-decreasing");

  at::parallel_for(0, num_groups, grain, [&](int64_t group_begin, int64_t group_end) {
    for (int64_t axis_row = group_begin * dims; axis_row < group_end * dims; ++axis_row) {
      const double* axis_edges = edge_data + axis_row * edges_per_axis;
      scalar_t* row = row_data + axis_row * row_length;
      const int32_t n = layout.bins[axis_row % dims];
      if constexpr (std::is_same_v<scalar_t, float>) {
        grid::float32_thresholds(axis_edges, n, row);
      } else {
        grid::float64_thresholds(axis_edges, n, row);
      }
      grid::axis_guess<scalar_t>(axis_edges, n, row, row + row_length - 2, row + row_length - 1);
    }
  });
  return host_rows.to(points.device());
}

template <typename scalar_t>
gpu::GridTables<scalar_t> grid_tables(const at::Tensor& axis_rows, const BinningLayout& layout) {
  gpu::GridTables<scalar_t> grids{};
  grids.axis_rows = axis_rows.const_data_ptr<scalar_t>();
  grids.row_length = axis_rows.size(2);
  grids.num_groups = layout.num_groups;
  grids.num_cells = layout.num_cells;
  grids.dims = layout.dims;
  for (int d = 0; d < 3; ++d) grids.bins[d] = layout.bins[d];
  return grids;
}

gpu::PointGroups point_groups(const BinningLayout& layout) {
  return gpu::PointGroups{layout.group_ids, layout.points_per_group};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> grid_histogram_cuda(const at::Tensor& points,
                                                       const std::optional<at::Tensor>& group_ids,
                                                       const at::Tensor& edges, at::IntArrayRef bins,
                                                       int64_t points_per_group) {
  const BinningLayout layout =
      check_binning_arguments("grid_histogram", points, group_ids, edges, bins, points_per_group);
  const c10::cuda::CUDAGuard device_guard(points.device());
  const at::TensorOptions int64_options = points.options().dtype(at::kLong);
  // The kernels add into these, so they start at zero.
  at::Tensor counts = at::zeros({layout.num_groups, layout.num_cells}, int64_options);  // [G, C]
  at::Tensor dropped = at::zeros({layout.num_groups}, int64_options);                   // [G]
  if (layout.num_points == 0 || layout.num_groups == 0) return {counts, dropped};

  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "prism::grid_histogram_cuda", [&] {
    const at::Tensor axis_rows = build_axis_rows<scalar_t>(edges, layout, points);
    C10_CUDA_CHECK(gpu::launch_grid_histogram(
        points.const_data_ptr<scalar_t>(), layout.num_points, point_groups(layout),
        grid_tables<scalar_t>(axis_rows, layout), counts.mutable_data_ptr<int64_t>(),
        dropped.mutable_data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream()));
  });
  return {counts, dropped};
}

at::Tensor grid_cells_cuda(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                           const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group) {
  const BinningLayout layout =
      check_binning_arguments("grid_cells", points, group_ids, edges, bins, points_per_group);
  const c10::cuda::CUDAGuard device_guard(points.device());
  // Every entry is written (-1 when dropped), so no zero fill.
  at::Tensor cells = at::empty({layout.num_points}, points.options().dtype(at::kLong));  // [N]
  if (layout.num_points == 0) return cells;

  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "prism::grid_cells_cuda", [&] {
    const at::Tensor axis_rows = build_axis_rows<scalar_t>(edges, layout, points);
    C10_CUDA_CHECK(gpu::launch_grid_cells(
        points.const_data_ptr<scalar_t>(), layout.num_points, point_groups(layout),
        grid_tables<scalar_t>(axis_rows, layout), cells.mutable_data_ptr<int64_t>(),
        at::cuda::getCurrentCUDAStream()));
  });
  return cells;
}

at::Tensor window_counts_cuda(const at::Tensor& counts, at::IntArrayRef window,
                              at::IntArrayRef stride) {
  TORCH_CHECK(counts.is_cuda(), "window_counts: counts must be a CUDA tensor, got ",
              counts.device());
  TORCH_CHECK(counts.scalar_type() == at::kLong, "window_counts: counts must be int64, got ",
              counts.scalar_type());
  TORCH_CHECK(counts.dim() == 4, "window_counts: counts must be [B, n0, n1, n2], got ",
              counts.sizes());
  TORCH_CHECK(counts.is_contiguous(), "window_counts: counts must be contiguous");
  TORCH_CHECK(window.size() == 3 && stride.size() == 3,
              "window_counts: window and stride must have 3 entries, got ", window, " and ", stride);

  gpu::WindowSpec spec{};
  spec.batch = counts.size(0);
  int64_t output_sizes[3];
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t n = counts.size(axis + 1);
    TORCH_CHECK(window[axis] >= 1 && window[axis] <= n, "window_counts: window[", axis, "] = ",
                window[axis], " must be in [1, ", n, "]");
    TORCH_CHECK(stride[axis] >= 1, "window_counts: stride[", axis, "] = ", stride[axis],
                " must be >= 1");
    spec.sizes[axis] = n;
    spec.window[axis] = window[axis];
    spec.stride[axis] = stride[axis];
    output_sizes[axis] = gpu::window_output_size(n, window[axis], stride[axis]);
  }

  const c10::cuda::CUDAGuard device_guard(counts.device());
  // Every entry of both is written, so no zero fill.
  at::Tensor out = at::empty({spec.batch, output_sizes[0], output_sizes[1], output_sizes[2]},
                             counts.options());  // [B, o0, o1, o2]
  if (spec.batch == 0) return out;
  at::Tensor sat = at::empty({spec.batch, spec.sizes[0] + 1, spec.sizes[1] + 1, spec.sizes[2] + 1},
                             counts.options());  // [B, n0 + 1, n1 + 1, n2 + 1]
  C10_CUDA_CHECK(gpu::launch_window_counts(counts.const_data_ptr<int64_t>(), spec,
                                           sat.mutable_data_ptr<int64_t>(),
                                           out.mutable_data_ptr<int64_t>(),
                                           at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace prism

#endif  // PRISM_WITH_CUDA
