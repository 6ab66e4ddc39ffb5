// The one place where prism ops get their schemas and per-device implementations.
// Python wrappers (prism_kernels/grid.py) validate arguments before calling these; the C++ side
// re-checks only what would otherwise corrupt memory.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(prism, m) {
  m.def("grid_histogram(Tensor points, Tensor? group_ids, Tensor edges, int[] bins, "
        "int points_per_group) -> (Tensor, Tensor)");
  m.def("grid_cells(Tensor points, Tensor? group_ids, Tensor edges, int[] bins, "
        "int points_per_group) -> Tensor");
  m.def("window_counts(Tensor counts, int[] window, int[] stride) -> Tensor");
  m.def("gram_accumulate(Tensor(a!) gram, Tensor x, Tensor? weights, bool normalize, bool exact) -> Tensor");
  m.def("grouped_gram(Tensor x, Tensor order, Tensor offsets, int size, bool normalize) -> Tensor");
  m.def("grouped_frobenius_sq(Tensor x, Tensor order, Tensor offsets, bool normalize) -> Tensor");
  m.def("rbf_matvec(Tensor x, Tensor v, float gamma) -> Tensor");
  m.def("sketch(Tensor rows, int k, str kind, int seed, int block, int offset, int s, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(prism, CPU, m) {
  m.impl("grid_histogram", &prism::grid_histogram_cpu);
  m.impl("grid_cells", &prism::grid_cells_cpu);
  m.impl("window_counts", &prism::window_counts_cpu);
  m.impl("gram_accumulate", &prism::gram_accumulate_cpu);
  m.impl("grouped_gram", &prism::grouped_gram_cpu);
  m.impl("grouped_frobenius_sq", &prism::grouped_frobenius_sq_cpu);
  m.impl("rbf_matvec", &prism::rbf_matvec_cpu);
  m.impl("sketch", &prism::sketch_cpu);
}

#ifdef PRISM_WITH_CUDA
TORCH_LIBRARY_IMPL(prism, CUDA, m) {
  m.impl("grid_histogram", &prism::grid_histogram_cuda);
  m.impl("grid_cells", &prism::grid_cells_cuda);
  m.impl("window_counts", &prism::window_counts_cuda);
  m.impl("gram_accumulate", &prism::gram_accumulate_cuda);
  m.impl("sketch", &prism::sketch_cuda);
}
#endif
