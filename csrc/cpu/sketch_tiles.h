// Single-threaded tile generators of the sketch matrices for the CPU driver (sketch_cpu.cpp):
// a scalar path from prism/sketch.h, and an AVX2 path (sketch_avx2.cpp) chosen at run time that
// produces the same bits.
#pragma once

#include <cstdint>

#include "prism/sketch.h"

namespace prism {
namespace cpu {

// tile[r * ld + c] = unscaled M[col0 + c, j0 + r] for r < rows, c < cols (cols <= ld).
// col0 must be a multiple of 128 (Rademacher) or 4 (Gaussian); entries past `cols` up to the next
// group boundary may be written too, so ld must cover round_up(cols, 128).
void dense_tile_scalar(sketch::Kind kind, const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0,
                       int64_t cols, float* tile, int64_t ld);

// AVX2 version of the Rademacher case (8 coordinates per Philox vector); falls back to the scalar
// loop when AVX2 is unavailable or switched off (cpu::simd_enabled).
void rademacher_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                     int64_t ld);

// AVX2 version of the Gaussian case (8 coordinates at once, same float32 operations and bits).
void gaussian_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                   int64_t ld);

}  // namespace cpu
}  // namespace prism
