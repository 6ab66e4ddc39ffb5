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
  m.def("sketch(Tensor rows, int k, str kind, int seed, int block, int offset, int s, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(prism, CPU, m) {
  m.impl("grid_histogram", &prism::grid_histogram_cpu);
  m.impl("grid_cells", &prism::grid_cells_cpu);
  m.impl("window_counts", &prism::window_counts_cpu);
  m.impl("sketch", &prism::sketch_cpu);
}

#ifdef PRISM_WITH_CUDA
TORCH_LIBRARY_IMPL(prism, CUDA, m) {
  m.impl("grid_histogram", &prism::grid_histogram_cuda);
  m.impl("grid_cells", &prism::grid_cells_cuda);
  m.impl("window_counts", &prism::window_counts_cuda);
  m.impl("sketch", &prism::sketch_cuda);
}
#endif
