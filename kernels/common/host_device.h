// Portability macros: one kernel body compiles with nvcc (CUDA library) and g++ (CPU library).
// CUDA qualifiers exist only under __CUDACC__; in the CPU build they expand to nothing.
#pragma once

#include <math.h>  // fmaf (PSD_FMA_RN)

#include <cstdint>

#if defined(__CUDACC__)
#define PSD_HOST_DEVICE __host__ __device__
#define PSD_DEVICE __device__
#define PSD_INLINE __forceinline__
#define PSD_FORCE_INLINE __forceinline__
#else
#define PSD_HOST_DEVICE
#define PSD_DEVICE
#define PSD_INLINE inline
// inlined even where GCC's heuristics would not (a compare-exchange network of 100+ calls)
#define PSD_FORCE_INLINE inline __attribute__((always_inline))
#endif

namespace psd {

enum class Device : int32_t { kCpu = 0, kCuda = 1 };

// An opaque cudaStream_t (NULL = cudaStreamPerThread). Ignored by CPU launchers.
using Stream = void*;

// Unfused float multiply and add: nvcc contracts a * b + c into one FMA by default, which rounds
// once instead of twice. Where a result selects something discontinuously (the kNN's neighbours)
// the GPU must round as the CPU does, or it picks other neighbours at near-ties.
// PSD_FMA_RN is the opposite: one rounding of a * b + c on every device, where a reference
// (OpenCV's FMA build) fuses (host: C99 fmaf, exact in software where the CPU has no FMA unit).
#if defined(__CUDA_ARCH__)
#define PSD_MUL_RN(a, b) __fmul_rn((a), (b))
#define PSD_ADD_RN(a, b) __fadd_rn((a), (b))
#define PSD_FMA_RN(a, b, c) __fmaf_rn((a), (b), (c))
#else
#define PSD_MUL_RN(a, b) ((a) * (b))
#define PSD_ADD_RN(a, b) ((a) + (b))
#define PSD_FMA_RN(a, b, c) ::fmaf((a), (b), (c))
#endif

// Works identically in host and device code (no -ffast-math anywhere in the build).
PSD_HOST_DEVICE PSD_INLINE bool IsFinite(float x) { return (x - x) == 0.0f; }

}  // namespace psd

// The project's one kernel launch (ParallelFor): kernel<<<grid, block, shared_bytes, stream>>>(...)
// with nvcc; the emulated runtime's launcher (kernels/common/cuda_emu/psd_cuda_emu.h) in an
// emulated build, where the .cu sources are compiled as C++. `site` names the launch there.
#if defined(PSD_CUDA_EMULATION)
#define PSD_LAUNCH_KERNEL(site, kernel, grid, block, shared_bytes, stream, ...) \
  (void)::psd_emu_launch(site, kernel, grid, block, shared_bytes, stream, __VA_ARGS__)
#elif defined(__CUDACC__)
#define PSD_LAUNCH_KERNEL(site, kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<grid, block, shared_bytes, stream>>>(__VA_ARGS__)
#endif

// Checks at compile time that a lambda handed to ParallelFor<Device::kCuda> is host-device
// (nvcc --extended-lambda). No-op in the CPU build.
#if defined(__CUDACC__)
#define PSD_STATIC_ASSERT_HD_LAMBDA(F)                                            \
  static_assert(__nv_is_extended_host_device_lambda_closure_type(F),             \
                "ParallelFor<kCuda> needs a [=] PSD_HOST_DEVICE lambda")
#else
#define PSD_STATIC_ASSERT_HD_LAMBDA(F) static_assert(true, "")
#endif
