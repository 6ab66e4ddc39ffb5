// Portability macros shared by the CPU and CUDA builds. Torch-free: included by plain nvcc.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PRISM_HOST_DEVICE __host__ __device__
#define PRISM_DEVICE __device__
#else
#define PRISM_HOST_DEVICE
#define PRISM_DEVICE
#endif

#define PRISM_INLINE inline
