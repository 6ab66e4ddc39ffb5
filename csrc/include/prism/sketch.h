// The random projection matrices of prism_kernels.sketch, entry by entry, from the Philox stream.
//
// Torch-free, single-threaded, host and device: the CPU driver (csrc/cpu/sketch_cpu.cpp) and the
// CUDA kernels (csrc/cuda/sketch_kernels.cu) build their tiles from these functions, the Triton
// kernel (prism_kernels/triton/sketch.py) and the reference (prism_kernels/reference/sketch.py)
// transcribe them. A sketch of rows X [B, P] is out[b, i] = scale * sum_j X[b, j] * M[i, offset + j]
// where M [k, 2^64] is the unscaled matrix below and `scale` is computed on the host.
//
// Key: (k0, k1) = (low, high 32 bits of seed). Counter: (j low, j high, group, block) for input
// coordinate j (64-bit, offset included) and parameter block id `block` (uint32).
//   rademacher  group = i / 128; bit (i % 32) of word (i / 32) % 4; bit 1 -> -1, 0 -> +1.
//               scale = 1 / sqrt(k).
//   gaussian    group = i / 4; words (2p, 2p + 1) with p = (i / 2) % 2 give one Box-Muller pair,
//               column i takes its cosine (i even) or sine (i odd) part. scale = 1 / sqrt(k).
//   sparse      s nonzeros per coordinate j; nonzero t uses word t % 4 of group t / 4:
//               sign = bit 0 (1 -> -1), row = ((w >> 1) * k) >> 31. Rows are drawn independently,
//               so two nonzeros of one column MAY COLLIDE; they then add (giving 0 or +-2). Every
//               nonzero is an independent +-1 with E[sign] = 0, so E ||scale M x||^2 = ||x||^2
//               holds exactly with collisions. scale = 1 / sqrt(s).
//
// The Gaussian maths uses only +, -, *, IEEE division and sqrt on float32 (no libm), evaluated in a
// fixed order, with the constants of prism/gaussian_table.h; built without FMA contraction
// (-ffp-contract=off, nvcc --fmad=false, Triton enable_fp_fusion=False) it is bit-identical on
// every backend.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

#include "prism/gaussian_table.h"
#include "prism/macros.h"
#include "prism/philox.h"

namespace prism {
namespace sketch {

enum class Kind : int32_t { kRademacher = 0, kGaussian = 1, kSparse = 2 };

// Columns covered by one Philox call of a dense kind.
constexpr int64_t kRademacherGroup = 128;
constexpr int64_t kGaussianGroup = 4;

struct Key {
  uint32_t k0, k1;  // seed low, seed high
  uint32_t block;
};

PRISM_HOST_DEVICE PRISM_INLINE Key make_key(uint64_t seed, uint32_t block) {
  return Key{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), block};
}

// The four words of counter (j, group, block).
PRISM_HOST_DEVICE PRISM_INLINE philox::Words words(const Key& key, uint64_t j, uint32_t group) {
  return philox::philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32), group, key.block,
                               key.k0, key.k1);
}

PRISM_HOST_DEVICE PRISM_INLINE float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

PRISM_HOST_DEVICE PRISM_INLINE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

// +1.0f or -1.0f from bit 0 of `bit`.
PRISM_HOST_DEVICE PRISM_INLINE float sign_of_bit(uint32_t bit) {
  return bits_to_float(0x3f800000u | ((bit & 1u) << 31));
}

// Horner evaluation of a table::Horner polynomial at x, in the table's order (no FMA contraction).
PRISM_HOST_DEVICE PRISM_INLINE float horner(const table::Horner& poly, float x) {
  float p = poly.c[0];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 1; i < poly.n; ++i) p = p * x + poly.c[i];
  return p;
}

// ln(u) for u in [2^-24, 1]: u = 2^e m with m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1),
// ln m = 2 s (1 + s^2/3 + s^4/5 + ... + s^12/13). Absolute error < 1e-7.
PRISM_HOST_DEVICE PRISM_INLINE float log_unit(float u) {
  const uint32_t bits = float_to_bits(u);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f800000u);
  if (m > table::kSqrt2) {
    m = m * 0.5f;
    e = e + 1;
  }
  const float s = (m - 1.0f) / (m + 1.0f);
  constexpr table::Horner kLog = table::log_series();
  const float ln_m = (2.0f * s) * horner(kLog, s * s);
  return static_cast<float>(e) * table::kLn2 + ln_m;
}

// sin and cos of x in [0, pi/2) by Taylor polynomials (error < 1e-9 before rounding).
PRISM_HOST_DEVICE PRISM_INLINE float sin_quarter(float x) {
  constexpr table::Horner kSin = table::sin_series();
  return x * horner(kSin, x * x);
}

PRISM_HOST_DEVICE PRISM_INLINE float cos_quarter(float x) {
  constexpr table::Horner kCos = table::cos_series();
  return horner(kCos, x * x);
}

// Box-Muller pair from two words: radius from a, angle from b. u = (a >> 8 + 1) 2^-24 in (0, 1];
// angle = q pi/2 + f pi/2 with quadrant q = b >> 30 and f = ((b >> 8) & (2^22 - 1)) 2^-22.
PRISM_HOST_DEVICE PRISM_INLINE void box_muller(uint32_t a, uint32_t b, float* cos_out, float* sin_out) {
  const float u = static_cast<float>((a >> 8) + 1u) * table::kTwoPowM24;
  const float radius = sqrtf(-2.0f * log_unit(u));
  const uint32_t quadrant = b >> 30;
  const float x = static_cast<float>((b >> 8) & 0x3fffffu) * table::kTwoPowM22 * table::kHalfPi;
  const float c = cos_quarter(x), s = sin_quarter(x);
  // (cos, sin) of q pi/2 + x: q=0 (c, s), 1 (-s, c), 2 (-c, -s), 3 (s, -c).
  float cos_part = (quadrant & 1u) ? s : c;
  float sin_part = (quadrant & 1u) ? c : s;
  if (quadrant == 1u || quadrant == 2u) cos_part = -cos_part;
  if (quadrant >= 2u) sin_part = -sin_part;
  *cos_out = radius * cos_part;
  *sin_out = radius * sin_part;
}

// The four Gaussian entries of columns 4g .. 4g + 3 from the words of group g.
PRISM_HOST_DEVICE PRISM_INLINE void gaussian_group(const philox::Words& w, float* out4) {
  box_muller(w.w[0], w.w[1], out4 + 0, out4 + 1);
  box_muller(w.w[2], w.w[3], out4 + 2, out4 + 3);
}

// Sparse nonzero t of column j: its row in [0, k) and its sign (+-1.0f).
struct Nonzero {
  uint32_t row;
  float sign;
};

PRISM_HOST_DEVICE PRISM_INLINE Nonzero sparse_from_word(uint32_t w, uint32_t k) {
  return Nonzero{static_cast<uint32_t>((static_cast<uint64_t>(w >> 1) * k) >> 31), sign_of_bit(w)};
}

}  // namespace sketch
}  // namespace prism
