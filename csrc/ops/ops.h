// Declarations of every op's device implementations; registration.cpp binds them to schemas.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

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
// Shapes and semantics: prism_kernels/reference/sketch.py.
at::Tensor sketch_cpu(const at::Tensor& rows, int64_t k, c10::string_view kind, int64_t seed, int64_t block,
                      int64_t offset, int64_t s, double scale);

// Vendi: prism_kernels/reference/vendi.py. gram_accumulate adds to gram's lower triangle in place
// and returns int64 [2] = (first bad row or -1, status: 0 ok, 1 non-finite, 2 zero norm).
at::Tensor gram_accumulate_cpu(at::Tensor& gram, const at::Tensor& x, const std::optional<at::Tensor>& weights,
                               bool normalize, bool exact);
at::Tensor grouped_gram_cpu(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
                            int64_t size, bool normalize);
at::Tensor grouped_frobenius_sq_cpu(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
                                    bool normalize);
// kernel_vendi: prism_kernels/reference/kernel_vendi.py. K v for the RBF kernel of x, K never stored.
at::Tensor rbf_matvec_cpu(const at::Tensor& x, const at::Tensor& v, double gamma);

#ifdef PRISM_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> grid_histogram_cuda(const at::Tensor& points,
                                                       const std::optional<at::Tensor>& group_ids,
                                                       const at::Tensor& edges, at::IntArrayRef bins,
                                                       int64_t points_per_group);
at::Tensor grid_cells_cuda(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                           const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group);
at::Tensor window_counts_cuda(const at::Tensor& counts, at::IntArrayRef window, at::IntArrayRef stride);
at::Tensor gram_accumulate_cuda(at::Tensor& gram, const at::Tensor& x, const std::optional<at::Tensor>& weights,
                                bool normalize, bool exact);
at::Tensor sketch_cuda(const at::Tensor& rows, int64_t k, c10::string_view kind, int64_t seed, int64_t block,
                       int64_t offset, int64_t s, double scale);
#endif

}  // namespace prism
