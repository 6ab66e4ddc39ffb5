// Tile kernels of the on-the-fly kernel mat-vec (kernel_vendi's "slq" method).
//
// Torch-free and single-threaded: the CPU driver (csrc/cpu/kernel_cpu.cpp) computes a tile of dot
// products x_i . x_j with BLAS, turns it into RBF exponents here, exponentiates it (vectorised) and
// multiplies it into the vector block. The maths is in prism_kernels/reference/kernel_vendi.py.
#pragma once

#include <cstdint>

#include "prism/macros.h"

namespace prism {
namespace kernel {

// In place over a ti x tj tile of dot products g (row stride ld):
//     g[i, j] <- -gamma * max(0, sq_i[i] + sq_j[j] - 2 g[i, j])
// so that exp(g) is the RBF kernel value exp(-gamma ||x_i - x_j||^2).
PRISM_HOST_DEVICE PRISM_INLINE void rbf_exponent_tile(double* g, int64_t ld, int64_t ti, int64_t tj,
                                                      const double* sq_i, const double* sq_j, double gamma) {
  for (int64_t i = 0; i < ti; ++i) {
    double* row = g + i * ld;
    const double si = sq_i[i];
    for (int64_t j = 0; j < tj; ++j) {
      const double d2 = si + sq_j[j] - 2.0 * row[j];
      row[j] = d2 > 0.0 ? -gamma * d2 : 0.0;
    }
  }
}

}  // namespace kernel
}  // namespace prism
