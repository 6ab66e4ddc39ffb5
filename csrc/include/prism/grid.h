// Grid-density tile kernels: numpy.histogramdd-exact binning and summed-area-table window sums.
//
// Torch-free and single-threaded: the CPU drivers (csrc/cpu) loop over these with at::parallel_for,
// the CUDA kernels (csrc/cuda) call them per thread. All maths is in the reference
// (prism_kernels/reference/grid.py); this file only has to agree with it bit for bit.
#pragma once

#include <cstdint>

#include "prism/macros.h"

namespace prism {
namespace grid {

// One axis of one group's grid, as seen by the binning loop.
//
// `thresholds` has n + 1 entries of the point's own precision T: a coordinate x lands in bin b iff
// thresholds[b] <= x < thresholds[b + 1], and is dropped outside [thresholds[0], thresholds[n]).
// For T = double they are numpy's edges with the last one nudged up by one ulp (so that `<` means
// `<= hi`); for T = float they are the float32 images of those double comparisons (see
// float32_thresholds), which lets float32 points be binned exactly without converting to double.
// `lower` and `scale` (= n / width) only give a first guess of the bin; the thresholds decide.
template <typename T>
struct Axis {
  const T* thresholds;
  int32_t bins;
  T lower;
  T scale;
};

// Bin of coordinate x on one axis, or -1 if x is NaN, infinite or outside the axis range.
// The guess is corrected by walking the thresholds, so any rounding in it is harmless.
template <typename T>
PRISM_HOST_DEVICE PRISM_INLINE int32_t bin_of(T x, const Axis<T>& axis) {
  const T* thr = axis.thresholds;
  const int32_t n = axis.bins;
  if (!(x >= thr[0] && x < thr[n])) return -1;
  const T guess = (x - axis.lower) * axis.scale;  // >= 0, or NaN when scale overflowed
  const T top = static_cast<T>(n - 1);
  int32_t b = static_cast<int32_t>(guess < top ? guess : top);
  if (b > n - 1) b = n - 1;     // float(n - 1) rounds up to n once n > 2^24
  while (x >= thr[b + 1]) ++b;  // stops by b = n - 1 because x < thr[n]
  while (x < thr[b]) --b;       // stops by b = 0 because x >= thr[0]
  return b;
}

// Whether one axis's edges e[0..n] can be binned against: finite and non-decreasing. NaN edges
// would make the backends disagree (each compares differently), so the ops reject them.
PRISM_HOST_DEVICE PRISM_INLINE bool edges_valid(const double* e, int64_t n) {
  for (int64_t i = 0; i <= n; ++i) {
    if (!(e[i] - e[i] == 0.0)) return false;  // NaN or +-inf
    if (i > 0 && !(e[i - 1] <= e[i])) return false;
  }
  return true;
}

// Row-major cell of a D-dimensional point, or -1 if it is dropped on any axis.
template <typename T>
PRISM_HOST_DEVICE PRISM_INLINE int64_t cell_of(const T* point, int32_t dims, const Axis<T>* axes) {
  int64_t cell = 0;
  for (int32_t d = 0; d < dims; ++d) {
    const int32_t b = bin_of<T>(point[d], axes[d]);
    if (b < 0) return -1;
    cell = cell * axes[d].bins + b;
  }
  return cell;
}

// Sum of a 3-D grid over the box [a0, b0) x [a1, b1) x [a2, b2) from its summed-area table `sat`
// of shape [n0 + 1, n1 + 1, n2 + 1] (row-major, strides s0 and s1, zero first plane per axis).
PRISM_HOST_DEVICE PRISM_INLINE int64_t box_sum(const int64_t* sat, int64_t s0, int64_t s1, int64_t a0,
                                               int64_t a1, int64_t a2, int64_t b0, int64_t b1,
                                               int64_t b2) {
  const int64_t* lo0 = sat + a0 * s0;
  const int64_t* hi0 = sat + b0 * s0;
  return (hi0[b1 * s1 + b2] - lo0[b1 * s1 + b2]) - (hi0[a1 * s1 + b2] - lo0[a1 * s1 + b2]) -
         (hi0[b1 * s1 + a2] - lo0[b1 * s1 + a2]) + (hi0[a1 * s1 + a2] - lo0[a1 * s1 + a2]);
}

}  // namespace grid
}  // namespace prism
