// Tile generation for the dense sketch kinds: Philox words -> unscaled matrix entries.
//
// The AVX2 Rademacher path runs Philox4x32-10 on 8 input coordinates at once (32-bit high/low
// products from two _mm256_mul_epu32) and expands each word into 32 floats +-1 by moving bit b to
// the sign bit of 1.0f. It is bit-identical to the scalar path (prism/sketch.h), which the tests
// check by running both (cpu::set_simd_enabled).
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
    const uint64_t j = j0 + static_cast<uint64_t>(r);
    // Low words j + lane (may carry into the high word: handle per lane).
    alignas(32) uint32_t lo[8], hi[8];
    for (int l = 0; l < 8; ++l) {
      lo[l] = static_cast<uint32_t>(j + l);
      hi[l] = static_cast<uint32_t>((j + l) >> 32);
    }
    const __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    const __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
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

}  // namespace

void rademacher_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                     int64_t ld) {
  if (simd_enabled())
    rademacher_tile_avx2(key, j0, rows, col0, cols, tile, ld);
  else
    dense_tile_scalar(sketch::Kind::kRademacher, key, j0, rows, col0, cols, tile, ld);
}

#else  // not x86

void rademacher_tile(const sketch::Key& key, uint64_t j0, int64_t rows, int64_t col0, int64_t cols, float* tile,
                     int64_t ld) {
  dense_tile_scalar(sketch::Kind::kRademacher, key, j0, rows, col0, cols, tile, ld);
}

#endif

}  // namespace cpu
}  // namespace prism
