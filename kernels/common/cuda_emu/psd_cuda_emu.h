// psdrt's CUDA runtime emulation: the .cu sources compiled as plain C++ (g++ -x c++
// -D__CUDACC__ -include psd_cuda_emu.h) run on the host with the semantics a GPU gives them, so
// that every CUDA path of the project runs, and is tested, on machines without a GPU.
// `python build.py --cuda-emulation` builds libpsd_kernels_cuda_emu.so this way. It is a test
// fixture: nothing loads it unless asked to by name.
//
// What it emulates, and the bugs each part exists to find:
//  * Kernel launches (psd_emu_launch, reached through PSD_LAUNCH_KERNEL, the project's only
//    launch site) run the whole grid on the stream's worker thread, every (block, thread) once,
//    in a configurable order (serial, reversed, seeded shuffle: psd_emu_set_thread_order or
//    $PSD_CUDA_EMU_ORDER). A kernel whose result depends on the order of its threads (an
//    in-place stencil, a read of a value another thread writes) gives different results under
//    two orders. Launches the hardware rejects (a block of more than 1024 threads, block or grid
//    dimensions over the limits, too much shared memory, a stream of another device) fail
//    synchronously with the error a GPU gives (cudaGetLastError).
//  * Device memory is guarded: cudaMalloc maps pages that are inaccessible (PROT_NONE) except
//    while a kernel or a copy executes, so host code that dereferences a device pointer faults
//    at once (a SIGSEGV with a message naming the allocation). Each allocation is followed by a
//    guard page (an overrun past its 256-byte-rounded size faults, in kernels too), starts
//    filled with 0xFF bytes (NaN as float: reads of never-written memory show), and copies must
//    name the right cudaMemcpyKind and stay inside one allocation. Copies are counted by
//    direction (psd_emu_copies), so a test can show that a device path never stages a frame
//    through the host.
//  * Streams are asynchronous: each stream executes its queue on its own worker thread, in
//    order; events, cudaStreamWaitEvent and the legacy default stream's implicit
//    synchronisation with blocking streams order work across streams, and nothing else does.
//    Work that is not ordered really overlaps, so a missing synchronisation gives a wrong
//    result instead of luck (psd_emu_stream_sleep makes such a race deterministic). Copies
//    between host and device memory are as asynchronous as the API allows (as with pinned
//    memory): the host buffer is read or written when the copy executes, not when it is
//    enqueued.
//  * Stream capture and CUDA graphs: between cudaStreamBeginCapture and cudaStreamEndCapture the
//    kernels, async copies, memsets, event records and graph launches enqueued on the capturing
//    stream are recorded, not executed; cudaGraphLaunch replays them in order on the launch
//    stream (kernel arguments as captured, buffer contents as they are at replay). What would
//    fail on a GPU fails here, with the runtime's error: synchronising or querying a capturing
//    stream (cudaErrorStreamCaptureUnsupported, the capture is invalidated and every later call
//    on the stream and cudaStreamEndCapture report cudaErrorStreamCaptureInvalidated); the
//    "potentially unsafe" calls (cudaMalloc, cudaFree, cudaMemcpy/cudaMemcpy2D/cudaMemset,
//    cudaDeviceSynchronize) while the calling thread is prohibited by the capture modes
//    (cudaStreamCaptureModeGlobal/ThreadLocal/Relaxed, cudaThreadExchangeStreamCaptureMode; the
//    captures that prohibit the call are invalidated); a copy between host and device memory on a
//    capturing stream (host memory is pageable here); waiting on an event recorded outside the
//    capture (cudaErrorStreamCaptureIsolation); querying an event recorded in a capture
//    (cudaErrorCapturedEvent); legacy-default-stream work while a blocking stream captures
//    (cudaErrorStreamCaptureImplicit); ending a capture from another thread
//    (cudaErrorStreamCaptureWrongThread). Cross-stream capture (another stream joining through
//    an event recorded in the capture) is not emulated: that wait fails with
//    cudaErrorStreamCaptureUnsupported and invalidates the capture.
//  * Errors: launch errors are per host thread (cudaGetLastError resets them); device faults
//    (psd_emu_inject_fault) are sticky, as on a GPU, and every later call reports them.
//
// Arithmetic is the host compiler's (no FMA contraction on x86-64's baseline ISA), so an
// emulated CUDA kernel gives the bits of the same source compiled for the CPU; a real GPU may
// differ by FMA contraction (nvcc's default --fmad=true).
//
// Not emulated (the project does not use them; they fail to compile here): shared memory,
// __syncthreads, warp intrinsics, atomics, texture memory, explicit graph construction
// (cudaGraphAdd*Node), graph update, multi-stream capture, pinned host memory, peer access. A kernel reading host memory runs here but faults on a discrete GPU: that class
// of bug is not caught.
#pragma once

#if !defined(__CUDACC__)
#error "psd_cuda_emu.h is force-included into .cu sources compiled with -D__CUDACC__"
#endif

#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

// ------------------------------------------------------------------ execution-space qualifiers
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
// nvcc --extended-lambda's trait: every lambda is a host function here.
#define __nv_is_extended_host_device_lambda_closure_type(X) true

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace psd_emu {
// The built-in index variables of the thread being executed. Set by the launch's own closure
// (below), in the module that holds the kernel, so that they are the variables its code reads.
inline thread_local uint3 tls_thread_idx{0, 0, 0};
inline thread_local uint3 tls_block_idx{0, 0, 0};
inline thread_local dim3 tls_block_dim{1, 1, 1};
inline thread_local dim3 tls_grid_dim{1, 1, 1};

// One thread of a grid: its block and thread index, and the launch's dimensions.
using ThreadBody = std::function<void(const uint3& block, const uint3& thread, const dim3& grid, const dim3& dims)>;

// Validates the launch (synchronously, setting the thread's last error as a GPU does) and
// enqueues `body` to run once per thread of the grid on the stream's worker. `site` names the
// kernel in the emulator's messages.
PSD_EMU_API cudaError_t EnqueueKernel(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                      ThreadBody body, const char* site);
}  // namespace psd_emu

#define threadIdx (::psd_emu::tls_thread_idx)
#define blockIdx (::psd_emu::tls_block_idx)
#define blockDim (::psd_emu::tls_block_dim)
#define gridDim (::psd_emu::tls_grid_dim)

// kernel<<<grid, block, shared_bytes, stream>>>(args...): the arguments are copied at launch,
// as into a GPU's parameter space.
// `site` names the launch in the emulator's messages.
template <typename... P, typename... A>
cudaError_t psd_emu_launch(const char* site, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes,
                           cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  return ::psd_emu::EnqueueKernel(
      grid, block, shared_bytes, stream,
      [kernel, params](const uint3& b, const uint3& t, const dim3& g, const dim3& d) {
        ::psd_emu::tls_block_idx = b;
        ::psd_emu::tls_thread_idx = t;
        ::psd_emu::tls_grid_dim = g;
        ::psd_emu::tls_block_dim = d;
        std::apply(kernel, params);
      },
      site);
}
