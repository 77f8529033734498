// ParallelFor<Device>(n, stream, f): calls f(i) for i in [0, n).
//  * CPU: an OpenMP static loop (the stream is ignored; the call is synchronous).
//  * CUDA: a grid-stride kernel enqueued on `stream` (NULL = cudaStreamPerThread, never the
//    legacy default stream); asynchronous. Its one launch goes through PSD_LAUNCH_KERNEL, which
//    the CUDA emulation (kernels/common/cuda_emu) takes over in emulated builds; a failed launch
//    throws CudaError naming the calling function and line (the kernel).
// The stream is always explicit: there is no global current stream.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "host_device.h"
#include "check.h"

namespace psd {

template <Device D>
struct ParallelForImpl;

// Where a kernel was launched from (the caller of ParallelFor), for launch-error messages.
struct LaunchSite {
  const char* function;
  const char* file;
  int line;
};

template <>
struct ParallelForImpl<Device::kCpu> {
  template <typename F>
  static void Run(int64_t n, Stream /*stream*/, const F& f, const LaunchSite& /*site*/) {
    // n == 1 (the "one thread folds the chunks" steps of reduce.h / align_impl.h) runs on the
    // calling thread: waking the OpenMP team for it costs microseconds.
#pragma omp parallel for schedule(static) if (n > 1)
    for (int64_t i = 0; i < n; ++i) f(i);
  }
};

// CPU only: calls f(begin, end, part) once per part on a static split of [0, n) into at most
// max_parts contiguous ranges (at most one per OpenMP thread; part < max_parts indexes
// per-part scratch). Lets a thread keep state across its range (cached rows, tap tables), which
// ParallelFor's per-index functor cannot.
inline int64_t CpuThreads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename F>
void CpuParallelRanges(int64_t n, int64_t max_parts, const F& f) {
  if (n <= 0) return;
  int64_t parts = CpuThreads();
  parts = parts < max_parts ? parts : max_parts;
  parts = parts < n ? parts : n;
  if (parts <= 1) {
    f(int64_t{0}, n, int64_t{0});
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(static_cast<int>(parts))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    f(n * t / nt, n * (t + 1) / nt, t);
  }
#endif
}

#if defined(__CUDACC__)
// Launch errors (cudaGetLastError right after the launch) become a CudaError naming the
// launch site. A sticky device fault found there is named as a fault of asynchronous work (this
// kernel's or earlier work's), not as a launch error.
void ThrowLaunchError(cudaError_t e, const LaunchSite& site);
inline void CheckLaunch(const LaunchSite& site) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) ThrowLaunchError(e, site);
}

inline cudaStream_t ToCudaStream(Stream s) {
  return s ? static_cast<cudaStream_t>(s) : cudaStreamPerThread;
}

template <typename F>
__global__ void ParallelForKernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)blockDim.x * gridDim.x)
    f(i);
}

template <>
struct ParallelForImpl<Device::kCuda> {
  template <typename F>
  static void Run(int64_t n, Stream stream, const F& f, const LaunchSite& site) {
    PSD_STATIC_ASSERT_HD_LAMBDA(F);
    if (n <= 0) return;
    const int threads = 256;
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535) blocks = 65535;
    PSD_LAUNCH_KERNEL(site.function, ParallelForKernel<F>, dim3((unsigned)blocks), dim3(threads), 0,
                      ToCudaStream(stream), n, f);
    CheckLaunch(site);
  }
};
#endif

// The site defaults to the caller's function and line (GCC/nvcc builtins evaluated at the
// call), so every kernel is named without naming it at each call site.
template <Device D, typename F>
void ParallelFor(int64_t n, Stream stream, const F& f, const char* function = __builtin_FUNCTION(),
                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ParallelForImpl<D>::Run(n, stream, f, LaunchSite{function, file, line});
}

// Device-to-device (or host-to-host) copy of n floats on `stream`.
template <Device D>
void CopyFloats(float* dst, const float* src, int64_t n, Stream stream) {
  ParallelFor<D>(n, stream, [=] PSD_HOST_DEVICE(int64_t i) { dst[i] = src[i]; });
}

}  // namespace psd
