// Portability macros shared by every translation unit (C++ and CUDA).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define WGAN_HOST_DEVICE __host__ __device__
#define WGAN_INLINE __forceinline__
#else
#define WGAN_HOST_DEVICE
#define WGAN_INLINE inline
#endif

// CPU loops compiled three times on x86-64 Linux with GCC (AVX-512, AVX2, baseline); the loader picks one for the
// CPU it runs on.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define WGAN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define WGAN_CPU_CLONES
#endif
