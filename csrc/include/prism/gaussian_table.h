// The float32 constants of the Gaussian sketch entries (prism/sketch.h: log_unit, sin_quarter,
// cos_quarter, box_muller), in one table. The scalar C++ path and the CUDA kernels (through
// sketch.h) and the AVX2 path (csrc/cpu/sketch_avx2.cpp) read them from here.
// prism_kernels/_gaussian_table.py holds the same numbers for the Triton kernel and the torch
// reference; tests/test_gaussian_table.py parses this file and checks that both are equal, and that
// every number is the double nearest its definition.
//
// Every constant is written as a double and rounded once to float32 (PRISM_F32), as Triton rounds
// Python floats. Changing any of them changes the Gaussian stream (its bits are pinned by
// tests/test_sketch_stream.py).
#pragma once

#include "prism/macros.h"

// A float32 constant written as a double and rounded once.
#define PRISM_F32(x) static_cast<float>(x)

namespace prism {
namespace sketch {
namespace table {

// A polynomial in Horner form, highest power first: p = c[0], then p = p * x + c[i] for i = 1 .. n - 1.
struct Horner {
  float c[9];
  int n;
};

// ln m = 2 s * P(s^2) with s = (m - 1) / (m + 1): P = 1 + s^2/3 + s^4/5 + ... + s^12/13.
PRISM_HOST_DEVICE constexpr Horner log_series() {
  return Horner{{PRISM_F32(0.07692307692307693),   // 1/13
                 PRISM_F32(0.09090909090909091),   // 1/11
                 PRISM_F32(0.1111111111111111),    // 1/9
                 PRISM_F32(0.14285714285714285),   // 1/7
                 PRISM_F32(0.2),                   // 1/5
                 PRISM_F32(0.3333333333333333),    // 1/3
                 PRISM_F32(1.0)},
                7};
}

// sin x = x * P(x^2) on [0, pi/2): P = 1 - x^2/3! + x^4/5! - ... + x^12/13!.
PRISM_HOST_DEVICE constexpr Horner sin_series() {
  return Horner{{PRISM_F32(1.6059043836821613e-10),   // 1/13!
                 PRISM_F32(-2.505210838544172e-08),   // -1/11!
                 PRISM_F32(2.7557319223985893e-06),   // 1/9!
                 PRISM_F32(-0.0001984126984126984),   // -1/7!
                 PRISM_F32(0.008333333333333333),     // 1/5!
                 PRISM_F32(-0.16666666666666666),     // -1/3!
                 PRISM_F32(1.0)},
                7};
}

// cos x = P(x^2) on [0, pi/2): P = 1 - x^2/2! + x^4/4! - ... + x^16/16!.
PRISM_HOST_DEVICE constexpr Horner cos_series() {
  return Horner{{PRISM_F32(4.779477332387385e-14),    // 1/16!
                 PRISM_F32(-1.1470745597729725e-11),  // -1/14!
                 PRISM_F32(2.08767569878681e-09),     // 1/12!
                 PRISM_F32(-2.755731922398589e-07),   // -1/10!
                 PRISM_F32(2.48015873015873e-05),     // 1/8!
                 PRISM_F32(-0.001388888888888889),    // -1/6!
                 PRISM_F32(0.041666666666666664),     // 1/4!
                 PRISM_F32(-0.5),                     // -1/2!
                 PRISM_F32(1.0)},
                9};
}

constexpr float kSqrt2 = PRISM_F32(1.4142135623730951);          // log_unit folds m into [sqrt(1/2), sqrt(2))
constexpr float kLn2 = PRISM_F32(0.6931471805599453);            // ln 2
constexpr float kTwoPowM24 = PRISM_F32(5.9604644775390625e-08);  // 2^-24: u = (a >> 8 + 1) 2^-24
constexpr float kTwoPowM22 = PRISM_F32(2.384185791015625e-07);   // 2^-22: the angle's fraction
constexpr float kHalfPi = PRISM_F32(1.5707963267948966);         // pi/2

}  // namespace table
}  // namespace sketch
}  // namespace prism
