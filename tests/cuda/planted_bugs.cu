// Planted bugs for tests/cuda/test_emulator.py: each scenario is one class of bug the CUDA
// emulator exists to catch, written the way project code is (ParallelFor, PSD_LAUNCH_KERNEL).
// Compiled against the emulator exactly as the library's .cu files are (build.py
// emulation_flags) and linked with the emulated library, whose CUDA runtime it uses.
//
//   planted_bugs host-access       host code reads device memory: must die with SIGSEGV
//   planted_bugs overrun           a kernel writes past its allocation: must die with SIGSEGV
//   planted_bugs streams           unordered vs event-ordered producer/consumer on two streams
//   planted_bugs stencil ORDER     an in-place and an out-of-place 1-D blur under a thread order
//   planted_bugs launch-limits     oversized blocks and grids are rejected, valid ones run
//   planted_bugs uninitialised     a never-written buffer reads as NaN
// Prints "key value" lines for the test to parse.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "parallel_for.h"

using psd::Device;
using psd::ParallelFor;

namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("error %s %s\n", what, cudaGetErrorName(e));
    std::exit(3);
  }
}

float* DeviceFloats(int64_t n) {
  void* p = nullptr;
  Check(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(float)), "cudaMalloc");
  return static_cast<float*>(p);
}

std::vector<float> Download(const float* d, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  Check(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return h;
}

int HostAccess() {
  float* d = DeviceFloats(16);
  ParallelFor<Device::kCuda>(16, nullptr, [=] PSD_HOST_DEVICE(int64_t i) { d[i] = 1.0f; });
  Check(cudaDeviceSynchronize(), "sync");
  std::printf("before %f\n", Download(d, 16)[3]);
  std::fflush(stdout);
  volatile float x = d[3];  // the bug: a device pointer dereferenced on the host
  std::printf("survived %f\n", static_cast<double>(x));
  return 0;
}

int Overrun() {
  float* d = DeviceFloats(64);  // 256 bytes: the next page is the guard
  ParallelFor<Device::kCuda>(65 + 1024, nullptr, [=] PSD_HOST_DEVICE(int64_t i) { d[i] = 1.0f; });
  Check(cudaDeviceSynchronize(), "sync");
  std::printf("survived\n");
  return 0;
}

// Producer on stream a fills x (after a long-running kernel); consumer on stream b doubles it.
int Streams() {
  const int64_t n = 4096;
  float* x = DeviceFloats(n);
  float* y = DeviceFloats(n);
  cudaStream_t a, b;
  Check(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), "stream");
  Check(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), "stream");
  cudaEvent_t ready;
  Check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "event");
  for (int synced = 0; synced < 2; ++synced) {
    ParallelFor<Device::kCuda>(n, b, [=] PSD_HOST_DEVICE(int64_t i) { x[i] = 0.0f; });
    Check(cudaStreamSynchronize(b), "sync");
    Check(psd_emu_stream_sleep(a, 100.0), "sleep");  // the producer is slow
    ParallelFor<Device::kCuda>(n, a, [=] PSD_HOST_DEVICE(int64_t i) { x[i] = static_cast<float>(i + 1); });
    if (synced) {  // the fix: the consumer's stream waits for the producer's event
      Check(cudaEventRecord(ready, a), "record");
      Check(cudaStreamWaitEvent(b, ready, 0), "wait");
    }
    ParallelFor<Device::kCuda>(n, b, [=] PSD_HOST_DEVICE(int64_t i) { y[i] = 2.0f * x[i]; });
    Check(cudaDeviceSynchronize(), "sync");
    const std::vector<float> h = Download(y, n);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += h[static_cast<size_t>(i)] != 2.0f * static_cast<float>(i + 1);
    std::printf("%s %lld\n", synced ? "wrong_synced" : "wrong_unsynced", static_cast<long long>(wrong));
  }
  // the legacy default stream orders itself after blocking streams: no event needed there
  cudaStream_t blocking;
  Check(cudaStreamCreate(&blocking), "stream");
  Check(psd_emu_stream_sleep(blocking, 100.0), "sleep");
  ParallelFor<Device::kCuda>(n, blocking, [=] PSD_HOST_DEVICE(int64_t i) { x[i] = 3.0f; });
  ParallelFor<Device::kCuda>(n, cudaStreamLegacy, [=] PSD_HOST_DEVICE(int64_t i) { y[i] = x[i]; });
  Check(cudaDeviceSynchronize(), "sync");
  std::printf("legacy_after_blocking %f\n", static_cast<double>(Download(y, n)[7]));
  // ... but not after non-blocking ones
  Check(psd_emu_stream_sleep(a, 100.0), "sleep");
  ParallelFor<Device::kCuda>(n, a, [=] PSD_HOST_DEVICE(int64_t i) { x[i] = 4.0f; });
  ParallelFor<Device::kCuda>(n, cudaStreamLegacy, [=] PSD_HOST_DEVICE(int64_t i) { y[i] = x[i]; });
  Check(cudaDeviceSynchronize(), "sync");
  std::printf("legacy_after_nonblocking %f\n", static_cast<double>(Download(y, n)[7]));
  cudaEventDestroy(ready);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
  cudaStreamDestroy(blocking);
  cudaFree(x);
  cudaFree(y);
  return 0;
}

// A 1-D three-tap blur, once in place (the bug: threads read neighbours other threads have
// already overwritten) and once into a second buffer.
int Stencil(int order) {
  psd_emu_set_thread_order(order, 12345);
  const int64_t n = 1000;
  std::vector<float> h(n);
  for (int64_t i = 0; i < n; ++i) h[static_cast<size_t>(i)] = std::sin(0.1f * static_cast<float>(i)) * 10.0f;
  float* a = DeviceFloats(n);
  float* b = DeviceFloats(n);
  for (int in_place = 0; in_place < 2; ++in_place) {
    Check(cudaMemcpy(a, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), "upload");
    float* out = in_place ? a : b;
    const float* src = a;
    ParallelFor<Device::kCuda>(n, nullptr, [=] PSD_HOST_DEVICE(int64_t i) {
      const float l = src[i > 0 ? i - 1 : i], c = src[i], r = src[i + 1 < n ? i + 1 : i];
      out[i] = (l + c + r) / 3.0f;
    });
    const std::vector<float> o = Download(out, n);
    double sum = 0.0;
    for (float v : o) sum += static_cast<double>(v) * 1e3;
    std::printf("%s %.9g\n", in_place ? "in_place" : "out_of_place", sum);
  }
  return 0;
}

template <typename T>
__global__ void Fill(T* p, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x +
                    static_cast<int64_t>(blockIdx.y) * gridDim.x * blockDim.x;
  if (i < n) p[i] = static_cast<T>(i);
}

int LaunchLimits() {
  float* d = DeviceFloats(4096);
  struct Case {
    const char* name;
    dim3 grid, block;
    size_t shared;
  } cases[] = {{"block_1024", dim3(4), dim3(1024), 0},   {"block_2048", dim3(2), dim3(2048), 0},
               {"block_32x64", dim3(2), dim3(32, 64), 0}, {"block_z128", dim3(1), dim3(1, 1, 128), 0},
               {"grid_y65536", dim3(1, 65536), dim3(32), 0}, {"grid_0", dim3(0), dim3(32), 0},
               {"shared_64k", dim3(1), dim3(32), 64 * 1024}};
  for (const Case& c : cases) {
    PSD_LAUNCH_KERNEL("LaunchLimits", Fill<float>, c.grid, c.block, c.shared, cudaStreamPerThread, d, int64_t{4096});
    const cudaError_t e = cudaGetLastError();
    std::printf("%s %s\n", c.name, cudaGetErrorName(e));
  }
  // ParallelFor turns a refused launch into a CudaError naming the caller
  psd_emu_inject_launch_error(1, cudaErrorLaunchOutOfResources);
  try {
    ParallelFor<Device::kCuda>(10, nullptr, [=] PSD_HOST_DEVICE(int64_t i) { d[i] = 0.0f; });
    std::printf("no_throw\n");
  } catch (const psd::CudaError& e) {
    std::printf("message %s\n", e.what());
  }
  Check(cudaDeviceSynchronize(), "sync");
  std::printf("value %f\n", static_cast<double>(Download(d, 4096)[4095]));
  return 0;
}

int Uninitialised() {
  float* d = DeviceFloats(8);
  const std::vector<float> h = Download(d, 8);
  std::printf("nan %d\n", std::isnan(h[5]) ? 1 : 0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* what = argv[1];
  if (!std::strcmp(what, "host-access")) return HostAccess();
  if (!std::strcmp(what, "overrun")) return Overrun();
  if (!std::strcmp(what, "streams")) return Streams();
  if (!std::strcmp(what, "stencil")) return Stencil(argc > 2 ? std::atoi(argv[2]) : 0);
  if (!std::strcmp(what, "launch-limits")) return LaunchLimits();
  if (!std::strcmp(what, "uninitialised")) return Uninitialised();
  return 2;
}
