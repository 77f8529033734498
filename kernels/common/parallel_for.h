// ParallelFor<Device>(n, stream, f): calls f(i) for i in [0, n).
//  * CPU: an OpenMP static loop (the stream is ignored; the call is synchronous).
//  * CUDA: a grid-stride kernel enqueued on `stream` (NULL = cudaStreamPerThread, never the
//    legacy default stream); asynchronous.
// The stream is always explicit: there is no global current stream.
#pragma once

#include <cstdint>

#include "host_device.h"
#include "check.h"

namespace psd {

template <Device D>
struct ParallelForImpl;

template <>
struct ParallelForImpl<Device::kCpu> {
  template <typename F>
  static void Run(int64_t n, Stream /*stream*/, const F& f) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
  }
};

#if defined(__CUDACC__)
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
  static void Run(int64_t n, Stream stream, const F& f) {
    PSD_STATIC_ASSERT_HD_LAMBDA(F);
    if (n <= 0) return;
    const int threads = 256;
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535) blocks = 65535;
    ParallelForKernel<<<(unsigned)blocks, threads, 0, ToCudaStream(stream)>>>(n, f);
    PSD_CHECK_LAST_CUDA_ERROR("ParallelFor");
  }
};
#endif

template <Device D, typename F>
void ParallelFor(int64_t n, Stream stream, const F& f) {
  ParallelForImpl<D>::Run(n, stream, f);
}

// Device-to-device (or host-to-host) copy of n floats on `stream`.
template <Device D>
void CopyFloats(float* dst, const float* src, int64_t n, Stream stream) {
  ParallelFor<D>(n, stream, [=] PSD_HOST_DEVICE(int64_t i) { dst[i] = src[i]; });
}

}  // namespace psd
