// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): the one
// random stream behind every sketch, identical on the CPU, in CUDA and in Triton (tl.philox with
// uint32 counter words). Torch-free, integer-only, host and device.
//
// Stream version 1 (prism_kernels.projection.STREAM_VERSION, exported as pk.STREAM_VERSION).
// Changing anything here changes every sketch ever made; the golden vectors in tests/test_sketch_stream.py pin it.
#pragma once

#include <cstdint>

#include "prism/macros.h"

namespace prism {
namespace philox {

constexpr uint32_t kRoundA = 0xD2511F53u;  // multiplier of counter word 0
constexpr uint32_t kRoundB = 0xCD9E8D57u;  // multiplier of counter word 2
constexpr uint32_t kKeyA = 0x9E3779B9u;    // Weyl increment of key word 0 (golden ratio)
constexpr uint32_t kKeyB = 0xBB67AE85u;    // Weyl increment of key word 1 (sqrt(3) - 1)

struct Words {
  uint32_t w[4];
};

PRISM_HOST_DEVICE PRISM_INLINE uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Ten rounds of Philox4x32 on counter (c0, c1, c2, c3) with key (k0, k1). Each round:
//   (c0, c1, c2, c3) <- (hi(B c2) ^ c1 ^ k0, lo(B c2), hi(A c0) ^ c3 ^ k1, lo(A c0)),
//   (k0, k1) += (kKeyA, kKeyB).
PRISM_HOST_DEVICE PRISM_INLINE Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                  uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = mulhi32(kRoundB, a2) ^ c1 ^ k0;
    c2 = mulhi32(kRoundA, a0) ^ c3 ^ k1;
    c1 = kRoundB * a2;
    c3 = kRoundA * a0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  return Words{{c0, c1, c2, c3}};
}

}  // namespace philox
}  // namespace prism
