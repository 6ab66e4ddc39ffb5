// Single-threaded loops over a block of points, shared by the CPU drivers: compute the cells of a
// chunk of points, then count them.
#pragma once

#include <algorithm>
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

// Points per chunk: cells are computed into a stack buffer of this size, then counted.
constexpr int64_t kCellChunk = 2048;
// How far ahead the counting loop prefetches counters of a grid too large for the caches.
constexpr int64_t kPrefetchAhead = 16;

// Adds the `count` points of one group to that group's `hist` [C]. kSliced: only cells in
// [cell_begin, cell_end) are counted (the caller owns that slice of the output). Dropped points
// are added to *dropped. `margins` may be null (no float32 fast path).
template <typename T, typename Counter, bool kSliced>
void histogram_block(const T* points, int64_t count, int32_t dims, const grid::Axis<T>* axes,
                     const float* margins, bool use_avx2, bool prefetch, Counter* hist, int64_t cell_begin,
                     int64_t cell_end, int64_t* dropped) {
  int64_t cells[kCellChunk];
  int64_t lost = 0;
  for (int64_t start = 0; start < count; start += kCellChunk) {
    const int64_t n = std::min(kCellChunk, count - start);
    const T* block = points + start * dims;
    if constexpr (sizeof(T) == 4) {
      if (use_avx2) {
        cells_avx2(block, n, dims, axes, margins, cells);
      } else {
        cells_scalar<T>(block, n, dims, axes, cells);
      }
    } else {
      cells_scalar<T>(block, n, dims, axes, cells);
    }
    for (int64_t j = 0; j < n; ++j) {
      if (prefetch && j + kPrefetchAhead < n)
        __builtin_prefetch(hist + std::max<int64_t>(cells[j + kPrefetchAhead], 0), 1);
      const int64_t cell = cells[j];
      if (cell < 0) {
        ++lost;
        continue;
      }
      if (kSliced && (cell < cell_begin || cell >= cell_end)) continue;
      ++hist[cell];
    }
  }
  *dropped += lost;
}

}  // namespace cpu
}  // namespace prism
