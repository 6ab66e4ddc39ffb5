// AVX-512 Gram tile products (gram_tiles.h), compiled for AVX-512F by function attribute and chosen
// at run time; without AVX-512 the Vendi driver multiplies tiles with BLAS instead.
//
// Micro-kernel: an MR x (NV * W) block of the output (W = 16 float32 or 8 float64 lanes; MR = 12,
// NV = 2) lives in 24 zmm registers; for every row r it loads y[r, j..j + NV W) once and multiplies
// it by MR broadcasts of y[r, i..i + MR). After the last row the block is added to the float64
// accumulator (float32 sums are widened first), with masks at the right edge. Of 12 x 2, 8 x 3,
// 6 x 4, 7 x 3, 5 x 4 and 4 x 4 (rows x vectors), 12 x 2 was fastest on this machine (Sapphire
// Rapids class) in interleaved runs, float32 and float64: its column panel (128 rows x 32 float32)
// leaves room in L1 for the streaming row panels.
//
// Tile loop: column panels outer, so one panel of rows x NV W values stays in L1 while the row
// panels of the tile stream past it from L2. Micro-tiles wholly above the diagonal are skipped and
// those across it stop at its last column (a narrower instance), so the triangle costs ~1/2 of a
// square tile, not ~9/16.
#include "gram_tiles.h"

#include <algorithm>
#include <array>
#include <utility>

#include "histogram_blocks.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PRISM_GRAM_AVX512 1
// GCC 12's avx512fintrin.h reads _mm512_undefined_* values in the 256-bit casts: a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace prism {
namespace cpu {

bool cpu_has_avx512f() {
#if defined(PRISM_GRAM_AVX512)
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

bool gram_avx512_enabled() { return cpu_has_avx512f() && simd_enabled(); }

#if defined(PRISM_GRAM_AVX512)
namespace {

#ifndef PRISM_GRAM_MR  // (overridable only for the micro-kernel shape experiments)
#define PRISM_GRAM_MR 12
#define PRISM_GRAM_NV 2
#endif
constexpr int kMR = PRISM_GRAM_MR;
constexpr int kNV = PRISM_GRAM_NV;

#define PRISM_AVX512 __attribute__((target("avx512f"), always_inline)) inline

struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static PRISM_AVX512 V zero() { return _mm512_setzero_ps(); }
  static PRISM_AVX512 V load(M m, const T* p) { return _mm512_maskz_loadu_ps(m, p); }
  static PRISM_AVX512 V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static PRISM_AVX512 V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static PRISM_AVX512 M mask(int64_t n) { return n >= W ? M(0xFFFF) : M((1u << std::max<int64_t>(n, 0)) - 1u); }
  // acc[0..16) += v (widened), masked to the first n lanes.
  static PRISM_AVX512 void flush(double* acc, V v, int64_t n) {
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __mmask8 mlo = n >= 8 ? __mmask8(0xFF) : __mmask8((1u << std::max<int64_t>(n, 0)) - 1u);
    const __mmask8 mhi = n >= 16 ? __mmask8(0xFF) : __mmask8((1u << std::max<int64_t>(n - 8, 0)) - 1u);
    _mm512_mask_storeu_pd(acc, mlo, _mm512_add_pd(_mm512_maskz_loadu_pd(mlo, acc), lo));
    if (mhi) _mm512_mask_storeu_pd(acc + 8, mhi, _mm512_add_pd(_mm512_maskz_loadu_pd(mhi, acc + 8), hi));
  }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr int W = 8;
  static PRISM_AVX512 V zero() { return _mm512_setzero_pd(); }
  static PRISM_AVX512 V load(M m, const T* p) { return _mm512_maskz_loadu_pd(m, p); }
  static PRISM_AVX512 V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static PRISM_AVX512 V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static PRISM_AVX512 M mask(int64_t n) { return n >= W ? M(0xFF) : M((1u << std::max<int64_t>(n, 0)) - 1u); }
  static PRISM_AVX512 void flush(double* acc, V v, int64_t n) {
    const __mmask8 m = mask(n);
    _mm512_mask_storeu_pd(acc, m, _mm512_add_pd(_mm512_maskz_loadu_pd(m, acc), v));
  }
};

// acc[m, 0..nr) += sum_r a[r * lda + m] * b[r * ldb + 0..nr) for m < MR, nr <= NV * W.
template <class K, int NV, int MR>
__attribute__((target("avx512f"))) void micro(const typename K::T* a, int64_t lda, const typename K::T* b,
                                              int64_t ldb, int64_t rows, int64_t nr, double* acc, int64_t ld_acc) {
  using V = typename K::V;
  typename K::M mask[NV];
  V c[MR][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = K::mask(nr - v * K::W);
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) c[m][v] = K::zero();
  for (int64_t r = 0; r < rows; ++r) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = K::load(mask[v], b + v * K::W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const V av = K::bcast(a + m);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[m][v] = K::fma(av, bv[v], c[m][v]);
    }
    a += lda;
    b += ldb;
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      if (nr > v * K::W) K::flush(acc + m * ld_acc + v * K::W, c[m][v], nr - v * K::W);
}

// micro<K, nv, mr> for 1 <= nv <= kNV vectors of columns and 1 <= mr <= kMR rows.
template <class K, int NV, int... MRm1>
constexpr auto micro_row(std::integer_sequence<int, MRm1...>) {
  using Fn = void (*)(const typename K::T*, int64_t, const typename K::T*, int64_t, int64_t, int64_t, double*,
                      int64_t);
  return std::array<Fn, kMR>{&micro<K, NV, MRm1 + 1>...};
}

template <class K, int... NVm1>
constexpr auto micro_table(std::integer_sequence<int, NVm1...>) {
  return std::array{micro_row<K, NVm1 + 1>(std::make_integer_sequence<int, kMR>{})...};
}

template <class K>
struct Micros {
  static constexpr auto table = micro_table<K>(std::make_integer_sequence<int, kNV>{});
  static auto get(int64_t nv, int64_t mr) { return table[nv - 1][mr - 1]; }
};

template <class K>
void gram_tile(const typename K::T* a, const typename K::T* b, int64_t ld, int64_t rows, int64_t ti, int64_t tj,
               int64_t i_minus_j, double* acc, int64_t ld_acc, const void* next_a, const void* next_b,
               int64_t next_bytes) {
  constexpr int64_t NR = kNV * K::W;
  const auto above = [&](int64_t ip, int64_t mr, int64_t jp) { return ip + mr + i_minus_j <= jp; };
  // The next tile's rows are fetched into L2 a few lines per micro-tile, so that they arrive while
  // this tile computes (the hardware prefetchers do not follow the long row strides from L3).
  int64_t calls = 0;
  for (int64_t jp = 0; jp < tj; jp += NR)
    for (int64_t ip = 0; ip < ti; ip += kMR) calls += !above(ip, std::min<int64_t>(kMR, ti - ip), jp);
  const char* pf[2] = {static_cast<const char*>(next_a), static_cast<const char*>(next_b)};
  const char* const pf_end[2] = {pf[0] ? pf[0] + next_bytes : nullptr, pf[1] ? pf[1] + next_bytes : nullptr};
  if (pf[1] == pf[0]) pf[1] = pf_end[1];
  const int64_t pf_lines = calls ? (next_bytes / 64 + calls) / calls : 0;
  for (int64_t jp = 0; jp < tj; jp += NR) {
    const int64_t nr = std::min(NR, tj - jp);
    for (int64_t ip = 0; ip < ti; ip += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, ti - ip);
      if (above(ip, mr, jp)) continue;
      for (int q = 0; q < 2; ++q)
        for (int64_t l = 0; l < pf_lines && pf[q] < pf_end[q]; ++l, pf[q] += 64) __builtin_prefetch(pf[q], 0, 2);
      // on the diagonal, only the columns up to the micro-tile's last row are needed
      const int64_t cols = std::min(nr, ip + mr + i_minus_j - jp);
      Micros<K>::get((cols + K::W - 1) / K::W, mr)(a + ip, ld, b + jp, ld, rows, cols, acc + ip * ld_acc + jp, ld_acc);
    }
  }
}

}  // namespace

void gram_tile_f32_avx512(const float* a, const float* b, int64_t ld, int64_t rows, int64_t ti, int64_t tj,
                          int64_t i_minus_j, double* acc, int64_t ld_acc, const void* next_a, const void* next_b,
               int64_t next_bytes) {
  gram_tile<F32>(a, b, ld, rows, ti, tj, i_minus_j, acc, ld_acc, next_a, next_b, next_bytes);
}

void gram_tile_f64_avx512(const double* a, const double* b, int64_t ld, int64_t rows, int64_t ti, int64_t tj,
                          int64_t i_minus_j, double* acc, int64_t ld_acc, const void* next_a, const void* next_b,
               int64_t next_bytes) {
  gram_tile<F64>(a, b, ld, rows, ti, tj, i_minus_j, acc, ld_acc, next_a, next_b, next_bytes);
}

#else  // no AVX-512 build: gram_avx512_enabled() is false and these are never called

void gram_tile_f32_avx512(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, double*, int64_t, const void*,
                          const void*, int64_t) {}
void gram_tile_f64_avx512(const double*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t, double*, int64_t, const void*,
                          const void*, int64_t) {}

#endif

}  // namespace cpu
}  // namespace prism
