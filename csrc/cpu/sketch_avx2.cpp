// Tile generation for the dense sketch kinds: Philox words -> unscaled matrix entries.
//
// The AVX2 Rademacher path runs Philox4x32-10 on 8 input coordinates at once (32-bit high/low
// products from two _mm256_mul_epu32) and expands each word into 32 floats +-1 by moving bit b to
// the sign bit of 1.0f. It is bit-identical to the scalar path (prism/sketch.h), which the tests
// check by running both (cpu::set_simd_enabled). The AVX2 Gaussian path runs the float32
// Box-Muller of prism/sketch.h on 8 coordinates at once with the same IEEE operations in the same
// order (no FMA), so it too matches the scalar path bit for bit.
#include <cstring>

#include "histogram_blocks.h"
#include "sketch_tiles.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PRISM_SKETCH_X86 1
#endif

namespace prism {
namespace cpu {

void dense_tile_scalar(sketch::Kind kind, const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0,
                       int64_t cols, float* tile, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    float* out = tile + r * ld;
    const uint64_t j = j0 + static_cast<uint64_t>(r);
    if (kind == sketch::Kind::kRademacher) {
      for (int64_t c = 0; c < cols; c += sketch::kRademacherGroup) {
        const philox::Words w = sketch::words(key, j, static_cast<uint32_t>((col0 + c) >> 7));
        for (int q = 0; q < 4; ++q)
          for (int b = 0; b < 32; ++b) out[c + 32 * q + b] = sketch::sign_of_bit(w.w[q] >> b);
      }
    } else {
      for (int64_t c = 0; c < cols; c += sketch::kGaussianGroup) {
        const philox::Words w = sketch::words(key, j, static_cast<uint32_t>((col0 + c) >> 2));
        sketch::gaussian_group(w, out + c);
      }
    }
  }
}

#if defined(PRISM_SKETCH_X86)

namespace {

// (hi, lo) of the 32x32-bit products m * x in every lane.
__attribute__((target("avx2"))) inline void mulhilo8(__m256i m, __m256i x, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(x, m);                        // lanes 0, 2, 4, 6 (64-bit)
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);  // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox4x32-10 on 8 counters (c0, c1 per lane; c2, c3 shared).
__attribute__((target("avx2"))) inline void philox8(__m256i c0, __m256i c1, uint32_t c2s, uint32_t c3s,
                                                    uint32_t k0s, uint32_t k1s, __m256i out[4]) {
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(philox::kRoundA));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(philox::kRoundB));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(c2s));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(c3s));
  uint32_t k0 = k0s, k1 = k1s;
  for (int round = 0; round < 10; ++round) {
    __m256i hi_a, lo_a, hi_b, lo_b;
    mulhilo8(ma, c0, &hi_a, &lo_a);
    mulhilo8(mb, c2, &hi_b, &lo_b);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo_b;
    c3 = lo_a;
    k0 += philox::kKeyA;
    k1 += philox::kKeyB;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Counter words 0 and 1 of coordinates j .. j + 7, one per lane (the low word may carry into the
// high word part-way through, so each lane is split on its own).
__attribute__((target("avx2"))) inline void coordinate_counters(uint64_t j, __m256i* c0, __m256i* c1) {
  alignas(32) uint32_t lo[8], hi[8];
  for (int l = 0; l < 8; ++l) {
    lo[l] = static_cast<uint32_t>(j + l);
    hi[l] = static_cast<uint32_t>((j + l) >> 32);
  }
  *c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
  *c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
}

__attribute__((target("avx2"))) void rademacher_tile_avx2(const sketch::Key& key, uint64_t j0, int64_t rows,
                                                          int64_t col0, int64_t cols, float* tile, int64_t ld) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i one = _mm256_set1_epi32(0x3f800000);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  // Shift that moves bit (8 h + l) of a word to bit 31 in lane l, for h = 0..3.
  __m256i to_sign[4];
  for (int h = 0; h < 4; ++h) to_sign[h] = _mm256_sub_epi32(_mm256_set1_epi32(31 - 8 * h), lane);
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) {
    __m256i c0, c1;
    coordinate_counters(j0 + static_cast<uint64_t>(r), &c0, &c1);
    for (int64_t c = 0; c < cols; c += sketch::kRademacherGroup) {
      __m256i w[4];
      philox8(c0, c1, static_cast<uint32_t>((col0 + c) >> 7), key.block, key.k0, key.k1, w);
      alignas(32) uint32_t words[4][8];
      for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(words[q]), w[q]);
      for (int l = 0; l < 8; ++l) {
        float* out = tile + (r + l) * ld + c;
        for (int q = 0; q < 4; ++q) {
          const __m256i v = _mm256_set1_epi32(static_cast<int>(words[q][l]));
          for (int h = 0; h < 4; ++h) {
            const __m256i bits = _mm256_and_si256(_mm256_sllv_epi32(v, to_sign[h]), sign);
            _mm256_storeu_ps(out + 32 * q + 8 * h, _mm256_castsi256_ps(_mm256_or_si256(bits, one)));
          }
        }
      }
    }
  }
  if (r < rows)
    dense_tile_scalar(sketch::Kind::kRademacher, key, j0 + static_cast<uint64_t>(r), rows - r, col0, cols,
                      tile + r * ld, ld);
}

// Eight lanes of prism::sketch::box_muller with the same float32 operations in the same order
// (IEEE mul/add/div/sqrt, no FMA) and the same constants (prism/gaussian_table.h), hence the same bits.
__attribute__((target("avx2"))) inline __m256 f(float x) { return _mm256_set1_ps(x); }

// sketch::horner on eight lanes.
__attribute__((target("avx2"))) inline __m256 horner8(const sketch::table::Horner& poly, __m256 x) {
  __m256 p = f(poly.c[0]);
  for (int i = 1; i < poly.n; ++i) p = _mm256_add_ps(_mm256_mul_ps(p, x), f(poly.c[i]));
  return p;
}

__attribute__((target("avx2"))) inline void box_muller8(__m256i a, __m256i b, __m256* cos_out, __m256* sin_out) {
  const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_srli_epi32(a, 8), _mm256_set1_epi32(1))),
                                 f(sketch::table::kTwoPowM24));
  // log_unit(u)
  const __m256i bits = _mm256_castps_si256(u);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                                 _mm256_set1_epi32(0x3f800000)));
  const __m256 big = _mm256_cmp_ps(m, f(sketch::table::kSqrt2), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, f(0.5f)), big);
  e = _mm256_sub_epi32(e, _mm256_castps_si256(big));  // big lanes are all ones (-1)
  const __m256 one = f(1.0f);
  const __m256 sv = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
  constexpr sketch::table::Horner kLog = sketch::table::log_series();
  const __m256 ln_m = _mm256_mul_ps(_mm256_mul_ps(f(2.0f), sv), horner8(kLog, _mm256_mul_ps(sv, sv)));
  const __m256 ln_u = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(e), f(sketch::table::kLn2)), ln_m);
  const __m256 radius = _mm256_sqrt_ps(_mm256_mul_ps(f(-2.0f), ln_u));
  // angle
  const __m256i quadrant = _mm256_srli_epi32(b, 30);
  const __m256 x = _mm256_mul_ps(
      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 8), _mm256_set1_epi32(0x3fffff))),
                    f(sketch::table::kTwoPowM22)),
      f(sketch::table::kHalfPi));
  const __m256 x2 = _mm256_mul_ps(x, x);
  constexpr sketch::table::Horner kSin = sketch::table::sin_series(), kCos = sketch::table::cos_series();
  const __m256 sn = _mm256_mul_ps(x, horner8(kSin, x2));
  const __m256 cs = horner8(kCos, x2);
  const __m256i zero = _mm256_setzero_si256();
  const __m256 q_odd = _mm256_castsi256_ps(
      _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_and_si256(quadrant, _mm256_set1_epi32(1)), zero),
                       _mm256_set1_epi32(-1)));
  __m256 cos_part = _mm256_blendv_ps(cs, sn, q_odd);
  __m256 sin_part = _mm256_blendv_ps(sn, cs, q_odd);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i neg_cos = _mm256_or_si256(_mm256_cmpeq_epi32(quadrant, _mm256_set1_epi32(1)),
                                          _mm256_cmpeq_epi32(quadrant, _mm256_set1_epi32(2)));
  const __m256i neg_sin = _mm256_cmpgt_epi32(quadrant, _mm256_set1_epi32(1));
  cos_part = _mm256_xor_ps(cos_part, _mm256_castsi256_ps(_mm256_and_si256(neg_cos, sign)));
  sin_part = _mm256_xor_ps(sin_part, _mm256_castsi256_ps(_mm256_and_si256(neg_sin, sign)));
  *cos_out = _mm256_mul_ps(radius, cos_part);
  *sin_out = _mm256_mul_ps(radius, sin_part);
}

__attribute__((target("avx2"))) void gaussian_tile_avx2(const sketch::Key& key, uint64_t j0, int64_t rows,
                                                        int64_t col0, int64_t cols, float* tile, int64_t ld) {
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) {
    __m256i c0, c1;
    coordinate_counters(j0 + static_cast<uint64_t>(r), &c0, &c1);
    for (int64_t c = 0; c < cols; c += sketch::kGaussianGroup) {
      __m256i w[4];
      philox8(c0, c1, static_cast<uint32_t>((col0 + c) >> 2), key.block, key.k0, key.k1, w);
      alignas(32) float z[4][8];
      __m256 z0, z1, z2, z3;
      box_muller8(w[0], w[1], &z0, &z1);
      box_muller8(w[2], w[3], &z2, &z3);
      _mm256_store_ps(z[0], z0);
      _mm256_store_ps(z[1], z1);
      _mm256_store_ps(z[2], z2);
      _mm256_store_ps(z[3], z3);
      for (int l = 0; l < 8; ++l) {
        float* out = tile + (r + l) * ld + c;
        out[0] = z[0][l];
        out[1] = z[1][l];
        out[2] = z[2][l];
        out[3] = z[3][l];
      }
    }
  }
  if (r < rows)
    dense_tile_scalar(sketch::Kind::kGaussian, key, j0 + static_cast<uint64_t>(r), rows - r, col0, cols,
                      tile + r * ld, ld);
}

}  // namespace

void gaussian_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                   int64_t ld) {
  if (simd_enabled())
    gaussian_tile_avx2(key, j0, rows, col0, cols, tile, ld);
  else
    dense_tile_scalar(sketch::Kind::kGaussian, key, j0, rows, col0, cols, tile, ld);
}

void rademacher_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                     int64_t ld) {
  if (simd_enabled())
    rademacher_tile_avx2(key, j0, rows, col0, cols, tile, ld);
  else
    dense_tile_scalar(sketch::Kind::kRademacher, key, j0, rows, col0, cols, tile, ld);
}

#else  // not x86

void gaussian_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                   int64_t ld) {
  dense_tile_scalar(sketch::Kind::kGaussian, key, j0, rows, col0, cols, tile, ld);
}

void rademacher_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                     int64_t ld) {
  dense_tile_scalar(sketch::Kind::kRademacher, key, j0, rows, col0, cols, tile, ld);
}

#endif

}  // namespace cpu
}  // namespace prism
