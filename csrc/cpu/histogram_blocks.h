// Single-threaded loops that compute the cells of a block of points, shared by the CPU drivers.
#pragma once

#include <cstdint>

#include "prism/grid.h"

namespace prism {
namespace cpu {

// Whether the AVX2 loops may run: the CPU has AVX2 and nobody switched SIMD off.
bool simd_enabled();
void set_simd_enabled(bool enabled);
bool cpu_has_avx2();

// Per-axis bound, in bins, on how far the float32 first guess (x - lower) * scale can be from the
// exact position of x among numpy's float64 edges; see histogram_avx2.cpp. Infinity disables the
// gather-free fast path for that axis.
float guess_margin(const double* edges, int32_t bins);

// The AVX2 loop handles float32 points with D = 2 or 3 whose axes have at most 2^24 bins and
// whose grid has fewer than 2^31 cells (cells are computed in int32 lanes).
bool avx2_cells_applicable(int32_t dims, const grid::Axis<float>* axes, int64_t cells);

// cells[i] = row-major cell of point i (rows of `dims` floats), or -1 if it is dropped.
void cells_avx2(const float* points, int64_t count, int32_t dims, const grid::Axis<float>* axes,
                const float* margins, int64_t* cells);

template <typename T>
inline void cells_scalar(const T* points, int64_t count, int32_t dims, const grid::Axis<T>* axes,
                         int64_t* cells) {
  for (int64_t i = 0; i < count; ++i) cells[i] = grid::cell_of<T>(points + i * dims, dims, axes);
}

}  // namespace cpu
}  // namespace prism
