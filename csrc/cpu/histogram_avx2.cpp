// AVX2 cell computation for float32 points, compiled for AVX2 by function attribute and chosen at
// run time, so the installed library runs on any x86-64 (and elsewhere falls back to scalar).
//
// Eight points at a time, three tiers, each exact:
//  1. fast: guess t = (x - lower) * scale in float32 and take floor(t) when t is at least `margin`
//     away from every integer and from [0, n]; `margin` bounds the guess's rounding error (below),
//     so floor(t) is then the exact numpy bin;
//  2. gather: for a block where some lane is near an edge, confirm floor(t) against the exact
//     float32 thresholds (grid.h) with two gathers per axis;
//  3. scalar: lanes not confirmed (a point outside the grid, NaN, or a guess off by one) walk the
//     thresholds with grid::cell_of.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "histogram_blocks.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PRISM_X86 1
#endif

namespace prism {
namespace cpu {

namespace {
std::atomic<bool> g_simd_enabled{std::getenv("PRISM_KERNELS_NO_SIMD") == nullptr};
}

bool cpu_has_avx2() {
#if defined(PRISM_X86)
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

bool simd_enabled() { return g_simd_enabled.load(std::memory_order_relaxed) && cpu_has_avx2(); }
void set_simd_enabled(bool enabled) { g_simd_enabled.store(enabled); }

// Error of the float32 guess t = fl(fl(x - lower32) * scale32), in bins, against the exact position
// of x among the float64 edges e[i] = fl(fl(i * step) + lo):
//   |lower32 - lo| <= 2^-23 |lo|; the subtraction, the product and scale32 each add a relative
//   2^-24 (of a value <= n bins); the edges are within ~3 ulp(max(|lo|, |hi|)) of lo + i * width / n.
// Summed with M = max(|lo|, |hi|) and w = width: 2^-23 M n / w + 3 * 2^-24 n + 2^-50 M n / w. The
// margin doubles a bound that already rounds each term up: 2 * (2^-21 M n / w + 2^-21 n + 2^-48 M n / w).
float guess_margin(const double* edges, int32_t bins) {
  const double lo = edges[0], hi = edges[bins], width = hi - lo;
  const double big = std::fmax(std::fabs(lo), std::fabs(hi));
  if (!(width > 0) || !std::isfinite(width)) return std::numeric_limits<float>::infinity();
  const double per_bin = static_cast<double>(bins) / width;
  const double bound = std::ldexp(big * per_bin, -21) + std::ldexp(static_cast<double>(bins), -21) +
                       std::ldexp(big * per_bin, -48);
  const double margin = 2.0 * bound;
  return margin < 0.25 ? static_cast<float>(margin) : std::numeric_limits<float>::infinity();
}

bool avx2_cells_applicable(int32_t dims, const grid::Axis<float>* axes, int64_t cells) {
  if (!simd_enabled() || (dims != 2 && dims != 3) || cells >= (int64_t{1} << 31)) return false;
  for (int32_t d = 0; d < dims; ++d)
    if (axes[d].bins > (1 << 22)) return false;
  return true;
}

#if defined(PRISM_X86)

template <int D>
__attribute__((target("avx2"))) static void cells_avx2_d(const float* points, int64_t count,
                                                         const grid::Axis<float>* axes, const float* margins,
                                                         int64_t* cells) {
  __m256 lower[D], scale[D], top[D], low_margin[D], high_margin[D], one_minus_margin[D];
  __m256i bins[D];
  const float* thresholds[D];
  for (int d = 0; d < D; ++d) {
    const float n = static_cast<float>(axes[d].bins);
    lower[d] = _mm256_set1_ps(axes[d].lower);
    scale[d] = _mm256_set1_ps(axes[d].scale);
    top[d] = _mm256_set1_ps(n - 1.0f);
    low_margin[d] = _mm256_set1_ps(margins[d]);       // inf: the fast test always fails
    high_margin[d] = _mm256_set1_ps(n - margins[d]);
    one_minus_margin[d] = _mm256_set1_ps(1.0f - margins[d]);
    bins[d] = _mm256_set1_epi32(axes[d].bins);
    thresholds[d] = axes[d].thresholds;
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256 all_lanes = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const __m256i row_offsets = _mm256_setr_epi32(0, D, 2 * D, 3 * D, 4 * D, 5 * D, 6 * D, 7 * D);
  // The D = 2 deinterleave leaves points in lane order 0 1 4 5 2 3 6 7; this permutation (its own
  // inverse) restores point order, so the tiers can treat lane j as point j.
  const __m256i natural_order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);

  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const float* p = points + i * D;
    __m256 x[D];
    if constexpr (D == 2) {
      const __m256 a = _mm256_loadu_ps(p);
      const __m256 b = _mm256_loadu_ps(p + 8);
      x[0] = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, 0x88), natural_order);
      x[1] = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, 0xDD), natural_order);
    } else {
      for (int d = 0; d < D; ++d) x[d] = _mm256_i32gather_ps(p + d, row_offsets, 4);
    }
    // Tier 1: floor of the guess, trusted when it is clear of every edge by the margin.
    __m256i cell = _mm256_setzero_si256();
    __m256 clear = all_lanes;
    __m256 guess[D];
    for (int d = 0; d < D; ++d) {
      guess[d] = _mm256_mul_ps(_mm256_sub_ps(x[d], lower[d]), scale[d]);
      const __m256 floor = _mm256_round_ps(guess[d], _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m256 frac = _mm256_sub_ps(guess[d], floor);
      const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(guess[d], low_margin[d], _CMP_GE_OQ),
                                          _mm256_cmp_ps(guess[d], high_margin[d], _CMP_LE_OQ));
      const __m256 off_edge = _mm256_and_ps(_mm256_cmp_ps(frac, low_margin[d], _CMP_GE_OQ),
                                            _mm256_cmp_ps(frac, one_minus_margin[d], _CMP_LE_OQ));
      clear = _mm256_and_ps(clear, _mm256_and_ps(inside, off_edge));
      cell = _mm256_add_epi32(_mm256_mullo_epi32(cell, bins[d]), _mm256_cvttps_epi32(floor));
    }
    int confirmed = _mm256_movemask_ps(clear);
    if (confirmed != 0xFF) {
      // Tier 2: clamp the guess into [0, n - 1] (min/max map NaN to their second operand) and
      // confirm it against the exact thresholds.
      cell = _mm256_setzero_si256();
      __m256 ok = all_lanes;
      for (int d = 0; d < D; ++d) {
        const __m256 clamped = _mm256_max_ps(_mm256_min_ps(guess[d], top[d]), zero);
        const __m256i bin = _mm256_cvttps_epi32(clamped);
        const __m256 below = _mm256_i32gather_ps(thresholds[d], bin, 4);
        const __m256 above = _mm256_i32gather_ps(thresholds[d] + 1, bin, 4);
        ok = _mm256_and_ps(ok, _mm256_and_ps(_mm256_cmp_ps(x[d], below, _CMP_GE_OQ),
                                             _mm256_cmp_ps(x[d], above, _CMP_LT_OQ)));
        cell = _mm256_add_epi32(_mm256_mullo_epi32(cell, bins[d]), bin);
      }
      confirmed = _mm256_movemask_ps(ok);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cells + i),
                        _mm256_cvtepi32_epi64(_mm256_castsi256_si128(cell)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cells + i + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(cell, 1)));
    if (confirmed != 0xFF) {
      for (int j = 0; j < 8; ++j)  // Tier 3
        if (!(confirmed & (1 << j))) cells[i + j] = grid::cell_of<float>(p + j * D, D, axes);
    }
  }
  cells_scalar<float>(points + i * D, count - i, D, axes, cells + i);
}

void cells_avx2(const float* points, int64_t count, int32_t dims, const grid::Axis<float>* axes,
                const float* margins, int64_t* cells) {
  if (dims == 2)
    cells_avx2_d<2>(points, count, axes, margins, cells);
  else
    cells_avx2_d<3>(points, count, axes, margins, cells);
}

#else  // not x86: never applicable, but keep the symbol so the drivers link.

void cells_avx2(const float* points, int64_t count, int32_t dims, const grid::Axis<float>* axes,
                const float* margins, int64_t* cells) {
  cells_scalar<float>(points, count, dims, axes, cells);
}

#endif

}  // namespace cpu
}  // namespace prism
