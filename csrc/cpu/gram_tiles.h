// Register-blocked Gram tile products for the Vendi accumulation (csrc/cpu/gram_avx512.cpp).
//
// Both read the prepared rows in place: y is [rows, *] with row stride ld, and a micro-tile's
// operands, y[r, i..i+MR) and y[r, j..j+NR), are contiguous runs of the same row, so nothing is
// packed. The caller pads ld so that successive rows fall in different cache sets.
#pragma once

#include <cstdint>

namespace prism {
namespace cpu {

bool cpu_has_avx512f();

// Whether the AVX-512 tile products may run: the CPU has AVX-512F and nobody switched SIMD off
// (cpu::simd_enabled).
bool gram_avx512_enabled();

// acc[i, j] += sum_{r < rows} a[r * ld + i] * b[r * ld + j] for i < ti, j < tj (acc row-major, row stride
// ld_acc), where a and b are columns i0 and j0 of the same rows and i_minus_j = i0 - j0. Only
// micro-tiles that reach the lower triangle (j0 + j <= i0 + i) are computed; entries of those above
// the diagonal receive their product too and are to be ignored. float32: products summed in float32
// registers over the `rows` rows (keep it small: the rounding grows with it), each sum then added to
// acc in float64. float64: float64 throughout. The next_bytes bytes at next_a and at next_b (the
// operands of the caller's next tile, or null) are prefetched along the way.
void gram_tile_f32_avx512(const float* a, const float* b, int64_t ld, int64_t rows, int64_t ti, int64_t tj,
                          int64_t i_minus_j, double* acc, int64_t ld_acc, const void* next_a,
                          const void* next_b, int64_t next_bytes);
void gram_tile_f64_avx512(const double* a, const double* b, int64_t ld, int64_t rows, int64_t ti, int64_t tj,
                          int64_t i_minus_j, double* acc, int64_t ld_acc, const void* next_a,
                          const void* next_b, int64_t next_bytes);

}  // namespace cpu
}  // namespace prism
