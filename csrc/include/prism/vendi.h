// Vendi / Gram-entropy tile kernels: row scaling (L2 normalisation and weights, with the NaN / Inf
// / zero-norm checks), sub-block centring for the float32 path, and small per-group Grams.
//
// Torch-free and single-threaded: the CPU driver (csrc/cpu/vendi_cpu.cpp) runs these per row or
// per group inside at::parallel_for; the CUDA kernels (csrc/cuda/vendi_kernels.cu) reuse row_scale.
// The maths is in prism_kernels/reference/vendi.py.
#pragma once

#include <cmath>
#include <cstdint>

#include "prism/macros.h"

namespace prism {
namespace vendi {

// Second entry of gram_accumulate's status output.
enum Status : int32_t { kOk = 0, kNonFinite = 1, kZeroNorm = 2 };

// Dot product in double (any input type) with eight independent partial sums, so the loop
// vectorises without -ffast-math.
template <typename T>
PRISM_HOST_DEVICE PRISM_INLINE double dot(const T* u, const T* v, int64_t d) {
  double p[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t k = 0;
  for (; k + 8 <= d; k += 8)
    for (int l = 0; l < 8; ++l) p[l] += static_cast<double>(u[k + l]) * static_cast<double>(v[k + l]);
  for (; k < d; ++k) p[0] += static_cast<double>(u[k]) * static_cast<double>(v[k]);
  return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

// Scale s of one row so that y = s * x: sqrt(w) / ||x|| (normalize) or sqrt(w).
// The sum of squares is taken in double, so float32 / half rows cannot overflow it. A row whose
// squares overflow (float64 entries near 1e155 and above) or underflow into the subnormals (below
// about 1e-140, where squaring loses digits and 1e-170 squares to 0) is divided by its largest
// magnitude before squaring: ||x|| = big * ||x / big||. Returns a Status.
constexpr double kMaxSquares = 1.7976931348623157e308;
constexpr double kMinSquares = 1e-280;  // sums below this lose precision (DBL_MIN * 2^53 ~ 2e-292)

template <typename T>
PRISM_HOST_DEVICE PRISM_INLINE int32_t row_scale(const T* row, int64_t d, double weight, bool normalize,
                                                 double* scale) {
  const double sq = dot(row, row, d);
  if (!(sq <= kMaxSquares) || (normalize && sq < kMinSquares)) {  // NaN, overflow or (near) underflow
    double big = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      const double v = static_cast<double>(row[k]);
      if (!(v - v == 0.0)) return kNonFinite;  // NaN or +-inf
      big = fabs(v) > big ? fabs(v) : big;
    }
    if (big == 0.0) {
      if (normalize) return kZeroNorm;
      *scale = sqrt(weight);
      return kOk;
    }
    double scaled = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      const double v = static_cast<double>(row[k]) / big;
      scaled += v * v;
    }
    const double norm = big * sqrt(scaled);
    // a subnormal row (norm below 1 / DBL_MAX) has no finite scale: reported like a zero row
    if (normalize && !(1.0 / norm <= kMaxSquares)) return kZeroNorm;
    *scale = normalize ? sqrt(weight) / norm : sqrt(weight);
    return kOk;
  }
  *scale = normalize ? sqrt(weight) / sqrt(sq) : sqrt(weight);
  return kOk;
}

// Float32 sub-block of r rows for the "fast" path: writes y_i = fl32(s_i * x_i) centred by
// m = fl32(mean of the y_i) into `out` [r, d] (row stride ld), and sum_i y_i (double) into `sum` [d]
// and m into `mean` [d]. With c_i = y_i - m (as stored):
//     sum_i y_i y_i^T = sum_i c_i c_i^T + m sum^T + sum m^T - r m m^T
// and the float32 product of the c_i has no common offset left to round systematically. The CPU
// driver adds the float32 products with add_f32_tile and the mean terms of all the sub-blocks of a
// chunk at once (float64 products of their [subs, d] means and sums).
PRISM_HOST_DEVICE PRISM_INLINE void center_block(float* out, int64_t r, int64_t d, int64_t ld, double* sum,
                                                 float* mean) {
  for (int64_t k = 0; k < d; ++k) sum[k] = 0.0;
  for (int64_t i = 0; i < r; ++i)
    for (int64_t k = 0; k < d; ++k) sum[k] += static_cast<double>(out[i * ld + k]);
  for (int64_t k = 0; k < d; ++k) mean[k] = static_cast<float>(sum[k] / static_cast<double>(r));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t k = 0; k < d; ++k) out[i * ld + k] -= mean[k];
}

// acc[i, j] += prod[i, j] (float32 -> float64) over a ti x tj tile (row strides ld_acc, ld_prod).
PRISM_HOST_DEVICE PRISM_INLINE void add_f32_tile(double* acc, int64_t ld_acc, const float* prod, int64_t ld_prod,
                                                 int64_t ti, int64_t tj) {
  for (int64_t i = 0; i < ti; ++i) {
    double* arow = acc + i * ld_acc;
    const float* prow = prod + i * ld_prod;
    for (int64_t j = 0; j < tj; ++j) arow[j] += static_cast<double>(prow[j]);
  }
}

// Gram of one group's n rows y [n, d] (row stride d), full symmetric, into `out` (row stride ld):
// Y Y^T (n x n) when n <= d, else Y^T Y (d x d). Lower triangle computed, then mirrored.
PRISM_HOST_DEVICE PRISM_INLINE void small_gram(const double* y, int64_t n, int64_t d, double* out,
                                               int64_t ld) {
  if (n <= d) {
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b <= a; ++b) {
        const double s = dot(y + a * d, y + b * d, d);
        out[a * ld + b] = s;
        out[b * ld + a] = s;
      }
    return;
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) out[i * ld + j] = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    const double* row = y + r * d;
    for (int64_t i = 0; i < d; ++i) {
      const double yi = row[i];
      double* orow = out + i * ld;
      for (int64_t j = 0; j <= i; ++j) orow[j] += yi * row[j];
    }
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < i; ++j) out[j * ld + i] = out[i * ld + j];
}

}  // namespace vendi
}  // namespace prism
