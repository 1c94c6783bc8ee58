// Portability macros shared by every translation unit (C++ and CUDA).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define WGAN_HOST_DEVICE __host__ __device__
#define WGAN_INLINE __forceinline__
#else
#define WGAN_HOST_DEVICE
#define WGAN_INLINE inline
#endif
