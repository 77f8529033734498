// The CUDA runtime API subset psdrt uses, emulated on the host (the project's own test fixture;
// see psd_cuda_emu.h for what the emulation guarantees). Declarations only: cuda_emu.cpp
// implements them. The spellings and numeric values of the enums follow NVIDIA's
// cuda_runtime_api.h / driver_types.h, so code compiled against this header is the code that
// nvcc compiles against the real one.
//
// Covered: device count, properties and attributes; cudaSetDevice/cudaGetDevice;
// cudaMalloc/cudaFree; cudaMemcpy, cudaMemcpyAsync, cudaMemcpy2D(Async), cudaMemset(Async);
// streams (cudaStreamCreate(WithFlags), blocking and non-blocking, the legacy default stream,
// cudaStreamPerThread, cudaStreamSynchronize, cudaStreamQuery, cudaStreamWaitEvent,
// cudaStreamDestroy); events (create, record, synchronize, query, elapsed time, destroy);
// cudaDeviceSynchronize; cudaGetLastError, cudaPeekAtLastError, cudaGetErrorString,
// cudaGetErrorName; stream capture and CUDA graphs (cudaStreamBeginCapture, cudaStreamEndCapture,
// cudaStreamIsCapturing, cudaThreadExchangeStreamCaptureMode, cudaGraphInstantiate(WithFlags),
// cudaGraphLaunch, cudaGraphGetNodes, cudaGraphExecDestroy, cudaGraphDestroy: single-stream
// capture, see psd_cuda_emu.h). Anything else does not exist here and fails to compile, which is the point:
// a new CUDA call must be added here (and emulated) before the project can use it.
#pragma once

#include <stddef.h>
#include <stdint.h>

#define PSD_CUDA_EMULATION 1

#if defined(__cplusplus)
extern "C" {
#endif

#if defined(__GNUC__)
#define PSD_EMU_API __attribute__((visibility("default")))
#else
#define PSD_EMU_API
#endif

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureIsolation = 905,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorCapturedEvent = 907,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorUnknown = 999
} cudaError_t;

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;
typedef struct CUgraphNode_st* cudaGraphNode_t;

typedef enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
} cudaStreamCaptureMode;

typedef enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
} cudaStreamCaptureStatus;

// The special stream handles of the real runtime (driver_types.h).
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01

#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02

typedef enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxBlockDimY = 3,
  cudaDevAttrMaxBlockDimZ = 4,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrIntegrated = 18,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76
} cudaDeviceAttr;

// A subset of cudaDeviceProp, by field name (`name` first, as in every CUDA release).
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
  int integrated;
};

PSD_EMU_API cudaError_t cudaGetDeviceCount(int* count);
PSD_EMU_API cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device);
PSD_EMU_API cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device);
PSD_EMU_API cudaError_t cudaSetDevice(int device);
PSD_EMU_API cudaError_t cudaGetDevice(int* device);
PSD_EMU_API cudaError_t cudaDeviceSynchronize(void);

PSD_EMU_API cudaError_t cudaMalloc(void** ptr, size_t size);
PSD_EMU_API cudaError_t cudaFree(void* ptr);
PSD_EMU_API cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind);
// Page-locked host memory: host-accessible like malloc's (the emulator needs no DMA); counted by
// psd_emu_live_host_allocations; cudaFreeHost of any other pointer is cudaErrorInvalidValue.
#define cudaHostAllocDefault 0u
#define cudaHostAllocPortable 1u
#define cudaHostAllocMapped 2u
#define cudaHostAllocWriteCombined 4u
PSD_EMU_API cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags);
PSD_EMU_API cudaError_t cudaMallocHost(void** ptr, size_t size);
PSD_EMU_API cudaError_t cudaFreeHost(void* ptr);
PSD_EMU_API cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                                        cudaStream_t stream);
PSD_EMU_API cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                     size_t height, enum cudaMemcpyKind kind);
PSD_EMU_API cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                          size_t height, enum cudaMemcpyKind kind, cudaStream_t stream);
PSD_EMU_API cudaError_t cudaMemset(void* ptr, int value, size_t count);
PSD_EMU_API cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream);

PSD_EMU_API cudaError_t cudaStreamCreate(cudaStream_t* stream);
PSD_EMU_API cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
PSD_EMU_API cudaError_t cudaStreamDestroy(cudaStream_t stream);
PSD_EMU_API cudaError_t cudaStreamSynchronize(cudaStream_t stream);
PSD_EMU_API cudaError_t cudaStreamQuery(cudaStream_t stream);
PSD_EMU_API cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags);

PSD_EMU_API cudaError_t cudaEventCreate(cudaEvent_t* event);
PSD_EMU_API cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
PSD_EMU_API cudaError_t cudaEventDestroy(cudaEvent_t event);
PSD_EMU_API cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
PSD_EMU_API cudaError_t cudaEventSynchronize(cudaEvent_t event);
PSD_EMU_API cudaError_t cudaEventQuery(cudaEvent_t event);
PSD_EMU_API cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// Stream capture and graphs (CUDA 12 spelling of cudaGraphInstantiate; cudaGraphInstantiateWithFlags
// is the spelling CUDA 11.4 and 12 share).
PSD_EMU_API cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode);
PSD_EMU_API cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
PSD_EMU_API cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status);
PSD_EMU_API cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode);
PSD_EMU_API cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags);
PSD_EMU_API cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph,
                                                      unsigned long long flags);
PSD_EMU_API cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
PSD_EMU_API cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
PSD_EMU_API cudaError_t cudaGraphDestroy(cudaGraph_t graph);
PSD_EMU_API cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count);

PSD_EMU_API cudaError_t cudaGetLastError(void);
PSD_EMU_API cudaError_t cudaPeekAtLastError(void);
PSD_EMU_API const char* cudaGetErrorString(cudaError_t error);
PSD_EMU_API const char* cudaGetErrorName(cudaError_t error);

// ------------------------------------------------------------------ emulator controls
// Not CUDA: the knobs of the test fixture, exported so that tests (C or ctypes) can set them.
// Thread orders of a kernel launch: every (block, thread) pair runs once, in this order.
#define PSD_EMU_ORDER_SERIAL 0   /* block-major, ascending: what a CPU loop would do */
#define PSD_EMU_ORDER_REVERSED 1 /* the exact reverse */
#define PSD_EMU_ORDER_SHUFFLED 2 /* a seeded pseudo-random permutation of the whole grid */
// Sets the order of the launches that follow (also from $PSD_CUDA_EMU_ORDER = serial | reversed |
// shuffled[:SEED] at start-up). Returns 0, or -1 for an unknown order.
PSD_EMU_API int psd_emu_set_thread_order(int order, uint64_t seed);
PSD_EMU_API int psd_emu_thread_order(uint64_t* seed);
// The next `count` kernels that execute fail as a real device fault does: they do not run and
// leave the sticky error `error` (e.g. cudaErrorIllegalAddress) that every later call reports.
PSD_EMU_API void psd_emu_inject_fault(int count, cudaError_t error);
// The next `count` launches fail synchronously with `error` (as a launch the hardware refuses:
// e.g. cudaErrorLaunchOutOfResources), so that launch-error reporting can be tested.
PSD_EMU_API void psd_emu_inject_launch_error(int count, cudaError_t error);
// Clears a sticky error (a real process would have to restart; tests share one process).
PSD_EMU_API void psd_emu_clear_sticky_error(void);
// Enqueues a host sleep of `ms` milliseconds on `stream`: a stand-in for a long kernel, so that
// tests can make a missing synchronisation deterministic.
PSD_EMU_API cudaError_t psd_emu_stream_sleep(cudaStream_t stream, double ms);
// Live device allocations / bytes, user streams and events (leak checks).
PSD_EMU_API int64_t psd_emu_live_allocations(int64_t* bytes);
PSD_EMU_API int64_t psd_emu_live_streams(void);
// Live page-locked host allocations (cudaHostAlloc / cudaMallocHost) and, in *bytes, their size.
PSD_EMU_API int64_t psd_emu_live_host_allocations(int64_t* bytes);
PSD_EMU_API int64_t psd_emu_live_events(void);
// Live graphs (cudaStreamEndCapture's) and, in *execs when not NULL, live executable graphs.
PSD_EMU_API int64_t psd_emu_live_graphs(int64_t* execs);
// Kernel launches executed so far (all streams, all devices).
PSD_EMU_API int64_t psd_emu_kernels_executed(void);
// Copies enqueued so far (cudaMemcpy*, all streams) whose source and destination sides are those of
// `kind` (cudaMemcpyHostToHost .. cudaMemcpyDeviceToDevice; cudaMemcpyDefault copies count under
// the direction they resolve to), and their bytes in *bytes (may be NULL). -1 for another kind.
// Tests use it to show that a path makes no host<->device copy.
PSD_EMU_API int64_t psd_emu_copies(int kind, int64_t* bytes);
// 1 when `ptr` lies in a live device allocation (its device in *device), else 0.
PSD_EMU_API int psd_emu_is_device_pointer(const void* ptr, int* device);

#if defined(__cplusplus)
}  // extern "C"
#endif
