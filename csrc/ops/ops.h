// Declarations of every op's device implementations; registration.cpp binds them to schemas.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace prism {

// Shapes and semantics: prism_kernels/reference/grid.py (the oracle every backend matches).
std::tuple<at::Tensor, at::Tensor> grid_histogram_cpu(const at::Tensor& points,
                                                      const std::optional<at::Tensor>& group_ids,
                                                      const at::Tensor& edges, at::IntArrayRef bins,
                                                      int64_t points_per_group);
at::Tensor grid_cells_cpu(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                          const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group);
at::Tensor window_counts_cpu(const at::Tensor& counts, at::IntArrayRef window, at::IntArrayRef stride);

#ifdef PRISM_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> grid_histogram_cuda(const at::Tensor& points,
                                                       const std::optional<at::Tensor>& group_ids,
                                                       const at::Tensor& edges, at::IntArrayRef bins,
                                                       int64_t points_per_group);
at::Tensor grid_cells_cuda(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                           const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group);
at::Tensor window_counts_cuda(const at::Tensor& counts, at::IntArrayRef window, at::IntArrayRef stride);
#endif

}  // namespace prism
