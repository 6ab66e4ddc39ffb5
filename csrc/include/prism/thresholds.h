// Host-side construction of the per-axis binning thresholds used by grid.h.
// Torch-free; uses <cmath> nextafter, so it is host-only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace prism {
namespace grid {

// Smallest float f with (double)f >= e, so that for float32 x: (double)x >= e  <=>  x >= f.
inline float float32_at_least(double e) {
  float f = static_cast<float>(e);
  if (static_cast<double>(f) < e) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// Smallest float f with (double)f > e, so that for float32 x: (double)x <= e  <=>  x < f.
inline float float32_above(double e) {
  float f = static_cast<float>(e);
  if (static_cast<double>(f) <= e) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// Thresholds for one axis from its n + 1 numpy edges: see Axis in grid.h.
inline void float32_thresholds(const double* edges, int32_t n, float* out) {
  for (int32_t i = 0; i < n; ++i) out[i] = float32_at_least(edges[i]);
  out[n] = float32_above(edges[n]);
}

inline void float64_thresholds(const double* edges, int32_t n, double* out) {
  for (int32_t i = 0; i < n; ++i) out[i] = edges[i];
  out[n] = std::nextafter(edges[n], std::numeric_limits<double>::infinity());
}

// First-guess parameters of an axis: guess = (x - lower) * scale.
template <typename T>
inline void axis_guess(const double* edges, int32_t n, const T* thresholds, T* lower, T* scale) {
  *lower = thresholds[0];
  *scale = static_cast<T>(static_cast<double>(n) / (edges[n] - edges[0]));
}

}  // namespace grid
}  // namespace prism
