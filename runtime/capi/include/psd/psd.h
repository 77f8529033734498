/* psd.h - the one public C header of the psdrt kernels library (libpsd_kernels_cpu.so /
 * libpsd_kernels_cuda.so): metric alignment and dual-space propagation of PSD depth completion.
 *
 * Conventions (every function below follows them; "Docs" blocks answer the five questions):
 *  - Every fallible function returns psd_status_t (PSD_OK = 0). On failure the thread-local
 *    psd_last_error() string says what went wrong and how to fix it.
 *  - Arrays are float32 (uint8 for images), C-contiguous, planar (C, H, W), batch 1. They live
 *    on `device`: host memory for PSD_DEVICE_CPU, CUDA device memory for PSD_DEVICE_CUDA.
 *    Small parameter arrays (camera parameters, sizes, structs) are always host memory.
 *  - Outputs and workspace are caller-allocated; the library never allocates per call. Size the
 *    workspace with the matching *_workspace_size function (device memory for CUDA calls).
 *  - Ownership: the library keeps no pointer after a call returns.
 *  - Synchrony: PSD_DEVICE_CPU calls are synchronous (OpenMP inside). PSD_DEVICE_CUDA calls
 *    enqueue on `stream` and return; outputs are valid once the stream is synchronised, and
 *    inputs/workspace must stay alive until then.
 *  - Streams: `stream` is a cudaStream_t passed as void*; NULL means cudaStreamPerThread, never
 *    the legacy default stream. Ignored for PSD_DEVICE_CPU.
 *  - Thread safety: every function is reentrant; concurrent calls are safe as long as they do
 *    not share a workspace or an output buffer.
 *  - A CPU-only build answers PSD_DEVICE_CUDA with PSD_E_NOT_BUILT_WITH_CUDA.
 *  - Data-dependent degenerate inputs never produce a status (the GPU would need a host sync)
 *    and never produce NaN: see the behaviour notes on psd_propagate.
 *
 * C99 + stdint only. CUDA 11.4 (JetPack 5) builds the implementation.
 */
#ifndef PSD_PSD_H_
#define PSD_PSD_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(PSD_BUILDING_LIBRARY)
#define PSD_API __declspec(dllexport)
#else
#define PSD_API __declspec(dllimport)
#endif
#else
#if defined(PSD_BUILDING_LIBRARY)
#define PSD_API __attribute__((visibility("default")))
#else
#define PSD_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define PSD_ABI_VERSION 1

typedef enum psd_status_t {
  PSD_OK = 0,
  PSD_E_INVALID_ARGUMENT = 1,    /* bad enum, count, rate, k, non-invertible K, aliasing */
  PSD_E_NULL_POINTER = 2,        /* a required pointer is NULL */
  PSD_E_SHAPE_MISMATCH = 3,      /* a size is non-positive or too small for the operation */
  PSD_E_WORKSPACE_TOO_SMALL = 4, /* workspace_bytes below the *_workspace_size answer */
  PSD_E_OUT_OF_MEMORY = 5,       /* std::bad_alloc (never expected: nothing is allocated) */
  PSD_E_NOT_BUILT_WITH_CUDA = 6, /* PSD_DEVICE_CUDA requested from the CPU library */
  PSD_E_CUDA = 7,                /* a CUDA runtime error (message has its name) */
  PSD_E_INTERNAL = 8,            /* a bug: please report with psd_last_error() */
  /* sessions (psd_session_*, end of this header) */
  PSD_E_UNSUPPORTED = 9,          /* a valid request this build/session cannot serve */
  PSD_E_ARTIFACT = 10,            /* artefact directory: manifest, file, hash, gate, precision */
  PSD_E_BACKEND_UNAVAILABLE = 11, /* inference runtime (ONNX Runtime/TensorRT) not loadable */
  PSD_E_BACKEND = 12,             /* the inference runtime failed (message has its error) */
  PSD_STATUS_COUNT = 13
} psd_status_t;

typedef enum psd_device_t { PSD_DEVICE_CPU = 0, PSD_DEVICE_CUDA = 1, PSD_DEVICE_COUNT = 2 } psd_device_t;

typedef enum psd_mode_t {
  PSD_MODE_3D_2D = 0,      /* kNN then CSPN (default, all datasets but VKITTI2) */
  PSD_MODE_3D_PLUS_2D = 1, /* kNN and CSPN in parallel, averaged (VKITTI2) */
  PSD_MODE_2D_3D = 2,      /* CSPN then kNN */
  PSD_MODE_COUNT = 3
} psd_mode_t;

typedef enum psd_camera_t {
  PSD_CAMERA_PINHOLE = 0,  /* params: K (3x3, row-major) at the working resolution */
  PSD_CAMERA_EQUIRECT = 1, /* params unused (may be NULL) */
  PSD_CAMERA_MEI = 2,      /* params: xi, k1, k2, p1, p2, gamma1, gamma2, u0, v0 */
  PSD_CAMERA_COUNT = 3
} psd_camera_t;

typedef enum psd_resize_t { PSD_RESIZE_BICUBIC = 0, PSD_RESIZE_BILINEAR = 1, PSD_RESIZE_COUNT = 2 } psd_resize_t;

typedef void* psd_stream_t; /* cudaStream_t */

/* Flags of psd_build_info. */
#define PSD_BUILD_CUDA 1u     /* the library contains CUDA kernels */
#define PSD_BUILD_OPENMP 2u   /* the CPU kernels are OpenMP-parallel */
#define PSD_BUILD_SANITIZE 4u /* ASan/UBSan instrumented build */
#define PSD_BUILD_CUDA_EMULATION 8u /* the CUDA paths run on the emulated CUDA runtime (a test
                                       build: `build.py --cuda-emulation`; PSD_BUILD_CUDA is set too) */

/* Library ABI version (PSD_ABI_VERSION of the build). Never fails; thread-safe. */
PSD_API uint32_t psd_abi_version(void);

/* The last error message of the calling thread ("" if none). Owned by the library; valid until
 * the next failing psd_* call on this thread. Never fails; thread-safe (thread-local). */
PSD_API const char* psd_last_error(void);

/* Static name of a status ("PSD_OK", ...); "PSD_E_UNKNOWN" for other values. Thread-safe. */
PSD_API const char* psd_status_string(psd_status_t status);

/* Build flags (PSD_BUILD_*).
 * @param[out] flags  host memory.  Synchronous; thread-safe.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER. */
PSD_API psd_status_t psd_build_info(uint32_t* flags);

/* The vector ISA of the CPU kernels' run-time chosen variants on this CPU: "avx512", "avx2" (AVX2
 * with FMA) or "baseline" (SSE2 on x86-64, NEON on AArch64); the widest the CPU has, capped by the
 * environment variable PSD_MAX_CPU_ISA=baseline|avx2|avx512 read at the first call. Every variant
 * computes the same values. Static string; never fails; thread-safe. */
PSD_API const char* psd_cpu_isa(void);

/* Probes the CUDA runtime through this library (works without a driver).
 * @param[out] device_count  number of usable devices (0 on any CUDA error or in a CPU build).
 * @param[out] cuda_error    the cudaError_t of cudaGetDeviceCount (35 = no driver,
 *                           100 = no device, 0 = ok); -1 in a CPU build.
 * Synchronous; thread-safe. Statuses: PSD_OK (also when no GPU exists), PSD_E_NULL_POINTER. */
PSD_API psd_status_t psd_cuda_device_count(int32_t* device_count, int32_t* cuda_error);

/* Makes stream `consumer` (NULL = cudaStreamPerThread) wait, on the device, for the work
 * enqueued on stream `producer` so far (an event recorded on `producer`, waited on by
 * `consumer`; the host does not block). `producer` may be a cudaStream_t or the special handles
 * 1 (the legacy default stream) and 2 (cudaStreamPerThread) of the DLPack and CUDA array
 * interface protocols. Use it when device inputs were produced on another stream than the one
 * a call is enqueued on. Thread-safe.
 * Statuses: PSD_OK, PSD_E_INVALID_ARGUMENT (producer NULL/0, ambiguous), PSD_E_CUDA,
 * PSD_E_NOT_BUILT_WITH_CUDA. */
PSD_API psd_status_t psd_cuda_stream_wait(psd_stream_t consumer, psd_stream_t producer);

/* Checks a 3x3 pinhole K (row-major float64, host memory) for an image of height x width; the
 * one definition of a usable K (psdrt.runtime.io.validate_intrinsics and the sessions call it).
 * Rules, each failure named with its fix in psd_last_error():
 *  - every value finite; bottom row (0, 0, 1); K[1][0] = 0; fx, fy > 0; not singular;
 *  - skew |K[0][1]| <= fx (a 45-degree shear; real cameras have 0);
 *  - fy / fx within [1/5, 5] (pixel aspect);
 * and with height, width > 0 (0 x 0 skips these):
 *  - fx and fy within [0.01, 1000] x max(height, width) pixels (a field of view from about 179
 *    down to 0.06 degrees);
 *  - the principal point inside the image, 0 <= cx <= width and 0 <= cy <= height (a K left at
 *    another resolution or missing a crop offset fails here).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT. */
PSD_API psd_status_t psd_check_intrinsics(const double* K, int64_t height, int64_t width);

/* Checks a frame size for a pipeline mode (psd_session_mode_t: PSD = 1, PROPAGATE = 2,
 * GUIDED = 3; 0 = any mode), before anything is allocated or any network runs; the one
 * definition of a usable size (the sessions, psdrt.runtime.inputs.validate_frame and
 * `psdrt build --size` call it). Rules:
 *  - every mode: 4 <= height, width <= 32768;
 *  - psd: height, width >= 17 (the correction head's 1/16 level needs 2 pixels);
 *  - psd, propagate: the longer side at most 10 times the shorter one (the foundation model's
 *    input keeps the aspect ratio with both sides >= its lower bound: 4 x 400 would run it at
 *    392 x 39200).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_SHAPE_MISMATCH, PSD_E_INVALID_ARGUMENT (mode). */
PSD_API psd_status_t psd_check_frame_size(int32_t mode, int64_t height, int64_t width);

/* Sparse depth as every pipeline accepts it: the one definition (the sessions,
 * psdrt.runtime.inputs.validate_frame and so every Python pipeline call it). Host memory.
 *  - errors: a NaN/Inf or negative value (0 marks a missing pixel), no point > 0;
 *  - rejected (set to 0 in `out`, counted): points outside [PSD_SPARSE_MIN_M, PSD_SPARSE_MAX_M]
 *    (less than a millimetre or more than 10 km: a LiDAR's spurious near-zero or max-range
 *    returns, or depths not in metres), then points more than PSD_SPARSE_OUTLIER_RATIO times
 *    above or below the median of the rest (one far return would otherwise drag the whole frame);
 *  - an error when nothing is left (the message names the units).
 * Points inside those bounds are untouched, so frames without such points are processed exactly
 * as the official method does. */
#define PSD_SPARSE_MIN_M 1e-3
#define PSD_SPARSE_MAX_M 1e4
#define PSD_SPARSE_OUTLIER_RATIO 100.0
/* The output guard: every pipeline's final depth lies in [PSD_DEPTH_GUARD_LOW x dmin,
 * PSD_DEPTH_GUARD_HIGH x dmax] of the accepted sparse points; values outside are clamped and
 * counted (psd_guard_depth). */
#define PSD_DEPTH_GUARD_LOW 0.5
#define PSD_DEPTH_GUARD_HIGH 2.0

typedef struct psd_sparse_stats {
  uint32_t struct_size;      /* sizeof(psd_sparse_stats) */
  uint32_t reserved;
  int64_t points;            /* accepted points (> 0 in out) */
  int64_t interior;          /* accepted points strictly between dmin and dmax (the least-squares
                                alignment needs 2; fewer = a degenerate alignment) */
  int64_t rejected_range;    /* outside [PSD_SPARSE_MIN_M, PSD_SPARSE_MAX_M] */
  int64_t rejected_outliers; /* beyond PSD_SPARSE_OUTLIER_RATIO x the median */
  double dmin, dmax;         /* smallest / largest accepted depth */
  double median;             /* lower median of the in-range points (the outlier rule's) */
} psd_sparse_stats;

/* Validates `sparse` (height rows of width float32, rows `stride` bytes apart; 0 = packed) and
 * writes the accepted map to `out` (packed height x width, may equal `sparse` when packed).
 * `scratch`: height x width floats of workspace (nothing is allocated).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_SHAPE_MISMATCH,
 * PSD_E_INVALID_ARGUMENT (NaN/Inf, negative, no point, none left; stats->struct_size; scratch
 * aliasing). */
PSD_API psd_status_t psd_prepare_sparse(int64_t height, int64_t width, const float* sparse, int64_t stride,
                                        float* scratch, float* out, psd_sparse_stats* stats);

/* Clamps a final depth map (host, packed height x width) in place to [PSD_DEPTH_GUARD_LOW x dmin,
 * PSD_DEPTH_GUARD_HIGH x dmax] (psd_sparse_stats of the frame); *clamped (may be NULL) gets the
 * number of values changed. Non-finite values are left as they are (a bug the pipelines report
 * as PSD_E_INTERNAL, never a clamped number). Synchronous; thread-safe.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_SHAPE_MISMATCH, PSD_E_INVALID_ARGUMENT (dmin, dmax). */
PSD_API psd_status_t psd_guard_depth(int64_t height, int64_t width, double dmin, double dmax, float* depth,
                                     int64_t* clamped);

/* Foundation-model input size: aspect kept, both sides >= lower, multiples of `multiple`
 * (Depth Anything's lower-bound rule, NumPy half-to-even rounding): 228x304 -> 392x518.
 * @param[out] out_h, out_w  host memory. Synchronous; thread-safe.
 * Statuses: PSD_OK, PSD_E_INVALID_ARGUMENT, PSD_E_NULL_POINTER. */
PSD_API psd_status_t psd_fm_input_size(int64_t h, int64_t w, int64_t lower, int64_t multiple,
                                       int64_t* out_h, int64_t* out_w);

/* ------------------------------------------------------------------ composed per-frame calls */

/* Sizes of one frame. struct_size must be sizeof(psd_frame_desc). */
typedef struct psd_frame_desc {
  uint32_t struct_size;
  uint32_t reserved;
  int64_t height, width;       /* H x W of sparse, ip and the output (>= 4 each) */
  int64_t rel_height, rel_width; /* size of the FM relative inverse depth (any, >= 1) */
  int64_t feat_channels, feat_height, feat_width; /* guidance features (FM path_feats[0]) */
} psd_frame_desc;

/* Propagation hyper-parameters (a dataset preset). struct_size = sizeof(psd_propagation_params).
 * Official values per dataset: psdrt.runtime.presets. */
typedef struct psd_propagation_params {
  uint32_t struct_size;
  int32_t mode;          /* psd_mode_t */
  int32_t camera;        /* psd_camera_t */
  int32_t k;             /* kNN neighbours kept, 1..16 */
  double rate;           /* fraction of empty 1/4 cells updated, (0, 1]; < 1 draws a seeded subset */
  int64_t candidates;    /* cap on kNN candidate cells, 0 = all; a cap draws a seeded subset */
  uint64_t seed;         /* seed of the subsets above (ignored when rate = 1 and candidates = 0) */
  int32_t iters_quarter; /* CSPN sweeps at 1/4 resolution (official 3) */
  int32_t iters_full;    /* CSPN sweeps at full resolution (official 3) */
  uint32_t flags;        /* PSD_FLAG_*; 0 normally */
  uint32_t reserved;
} psd_propagation_params;

#define PSD_FLAG_KNN_BRUTE_FORCE 1u /* CPU: brute-force kNN instead of the grid (same result) */

/* Sizes the workspace of psd_propagate.
 * @param[in]  desc, params  host memory; validated as psd_propagate does.
 * @param[in]  has_ip        nonzero if psd_propagate will get an ip map.
 * @param[out] bytes         host memory. Linear in H*W (about 140 B per pixel + 1/4-res terms).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT,
 * PSD_E_SHAPE_MISMATCH. */
PSD_API psd_status_t psd_propagate_workspace_size(psd_device_t device, const psd_frame_desc* desc,
                                                  const psd_propagation_params* params,
                                                  int32_t has_ip, size_t* bytes);

/* Alignment (psd_method.md §3) + dual-space propagation (§4.4) of one frame: one call per frame.
 * @param[in]  rel_inv     (rel_height, rel_width) FM relative inverse depth; resized bicubically.
 * @param[in]  sparse      (H, W) metric depth, <= 0 = missing.
 * @param[in]  ip          (H, W) IP-Basic fill, or NULL: then the aligned FM depth serves as the
 *                         initial value of cells the kNN does not overwrite (with rate = 1 and
 *                         mode 3D-2D the official output does not depend on ip, §1.4).
 * @param[in]  cam_params  host memory, 9 floats (see psd_camera_t); NULL for EQUIRECT.
 * @param[in]  feat        (feat_channels, feat_height, feat_width) guidance features.
 * @param[in,out] workspace  >= psd_propagate_workspace_size bytes; contents are scratch.
 * @param[out] depth_diff  (H, W) propagated depth. Must not alias an input.
 * @param[out] depth_polyfit (H, W) aligned FM depth, or NULL if not wanted.
 * Behaviour: no valid sparse point -> both outputs 0 (0 = invalid depth); < 2 interior points ->
 * depth_polyfit = max sparse depth (official); empty interior for the median -> all valid points;
 * fewer than 2k kNN candidates -> all are used; zero affinity sums -> documented fallbacks
 * (kernels/knn/knn.h, kernels/cspn/cspn.h). Output never contains NaN for finite inputs.
 * Ownership: none retained. Synchrony/stream: see header notes (CUDA: async on `stream`).
 * Thread safety: safe concurrently with distinct workspaces and outputs.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH,
 * PSD_E_WORKSPACE_TOO_SMALL, PSD_E_NOT_BUILT_WITH_CUDA, PSD_E_CUDA. */
PSD_API psd_status_t psd_propagate(psd_device_t device, const psd_frame_desc* desc,
                                   const psd_propagation_params* params, const float* rel_inv,
                                   const float* sparse, const float* ip, const float* cam_params,
                                   const float* feat, void* workspace, size_t workspace_bytes,
                                   psd_stream_t stream, float* depth_diff, float* depth_polyfit);

/* Sizes the workspace of psd_post_process (0 when iterations <= 0).
 * desc: height, width and feat_* (fd0) are used; rel_* ignored. channels: compressed channels
 * (official 32). Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER,
 * PSD_E_SHAPE_MISMATCH, PSD_E_INVALID_ARGUMENT. */
PSD_API psd_status_t psd_post_process_workspace_size(psd_device_t device, const psd_frame_desc* desc,
                                                     int64_t channels, int32_t iterations,
                                                     size_t* bytes);

/* Post-processing (§5.6): iterations < 0 copies dense; 0 re-injects sparse; > 0 runs that many
 * CSPN sweeps guided by fd0 (feat_channels, feat_height, feat_width) compressed to `channels`.
 * @param[out] out (H, W); may alias dense, not sparse. Ownership, synchrony, stream and thread
 * safety as psd_propagate. Statuses: as psd_propagate. */
PSD_API psd_status_t psd_post_process(psd_device_t device, const psd_frame_desc* desc,
                                      int64_t channels, int32_t iterations, const float* fd0,
                                      const float* dense, const float* sparse, void* workspace,
                                      size_t workspace_bytes, psd_stream_t stream, float* out);

/* ------------------------------------------------------------------ building blocks
 * Same conventions as psd_propagate (ownership: none retained; CPU synchronous; CUDA async on
 * `stream`; thread-safe with distinct workspaces/outputs). Statuses: PSD_OK,
 * PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH, PSD_E_WORKSPACE_TOO_SMALL,
 * PSD_E_NOT_BUILT_WITH_CUDA, PSD_E_CUDA. */

/* Workspace of psd_align_inverse_ls / psd_align_median for an H x W frame. */
PSD_API psd_status_t psd_align_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                              size_t* bytes);
/* depth_polyfit (H, W) from rel_inv (H, W, already resized) and sparse (H, W) (§3.1). */
PSD_API psd_status_t psd_align_inverse_ls(psd_device_t device, int64_t height, int64_t width,
                                          const float* rel_inv, const float* sparse,
                                          void* workspace, size_t workspace_bytes,
                                          psd_stream_t stream, float* out);
/* ip_median (H, W) from ip (H, W) and sparse (H, W) (§3.2, lower medians). */
PSD_API psd_status_t psd_align_median(psd_device_t device, int64_t height, int64_t width,
                                      const float* ip, const float* sparse, void* workspace,
                                      size_t workspace_bytes, psd_stream_t stream, float* out);
/* IP-Basic's validity threshold (metres): psd_ip_basic treats depths <= this as empty and needs
 * at least one above it. */
#define PSD_IP_BASIC_MIN_M 0.1
/* Workspace of psd_ip_basic for an H x W map: 2 H W floats + about 5 KiB (device memory for CUDA).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_SHAPE_MISMATCH (H, W < 1),
 * PSD_E_INVALID_ARGUMENT (device). */
PSD_API psd_status_t psd_ip_basic_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                                 size_t* bytes);
/* IP-Basic fill (PSD's fill_in_fast, psd_method.md §1.4; kernels/ip_basic/ip_basic.h lists the
 * steps) of sparse (H, W) metres, 0 = missing -> out (H, W): the `ip` map of psd_propagate. Equal
 * bit for bit to psdrt.runtime.classical.ip_basic_fill (OpenCV's dilate, morphologyEx, medianBlur
 * and GaussianBlur in their x86-64 FMA build), upstream quirks included: pixels whose filled value
 * is within PSD_IP_BASIC_MIN_M of the maximum come out ~0, and depths in (0, PSD_IP_BASIC_MIN_M]
 * take part uninverted. out must not alias sparse (it is scratch until the last step); H, W >= 1.
 * Invalid input: a NaN/Inf or negative value, or no depth > PSD_IP_BASIC_MIN_M. PSD_DEVICE_CPU
 * returns PSD_E_INVALID_ARGUMENT (nothing written); PSD_DEVICE_CUDA cannot report it without a
 * host sync and writes 0 everywhere (never NaN; 0 = invalid depth).
 * Ownership: none retained. Synchrony/stream: CPU synchronous, CUDA async on `stream`.
 * Thread safety: safe concurrently with distinct workspaces and outputs.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH,
 * PSD_E_WORKSPACE_TOO_SMALL, PSD_E_NOT_BUILT_WITH_CUDA, PSD_E_CUDA. */
PSD_API psd_status_t psd_ip_basic(psd_device_t device, int64_t height, int64_t width, const float* sparse,
                                  void* workspace, size_t workspace_bytes, psd_stream_t stream, float* out);
/* (channels, in_h, in_w) -> (channels, out_h, out_w), PyTorch align_corners=False semantics. */
PSD_API psd_status_t psd_resize(psd_device_t device, int32_t mode, int64_t channels, int64_t in_h,
                                int64_t in_w, int64_t out_h, int64_t out_w, const float* in,
                                psd_stream_t stream, float* out);
/* (H, W) -> (H/4, W/4): sum / (count(> 0) + 1e-5) per 4x4 cell. */
PSD_API psd_status_t psd_sparse_pool(psd_device_t device, int64_t height, int64_t width,
                                     const float* sparse, psd_stream_t stream, float* out);
/* Point cloud -> z-buffered sparse depth (H, W) float32 metres, 0 = no point
 * (kernels/project/project.h states the arithmetic). points: n x stride float32 on `device`,
 * x y z first (stride 4 for KITTI's x, y, z, reflectance); non-finite points are skipped.
 * T: 4x4 sensor-to-camera, row-major float64, host memory, NULL = identity (points already in
 * the camera frame); finite, bottom row (0, 0, 0, 1), rotation orthonormal within 1e-3.
 * K: 3x3 pinhole, host memory, psd_check_intrinsics' rules for height x width. A point is kept
 * iff min_depth < z <= max_depth in the camera frame (0 < min_depth; max_depth may be +inf)
 * and its nearest pixel centre (floor(u + 0.5), floor(v + 0.5); centres at integer
 * coordinates) is inside the image; the nearest point wins a pixel. The value is the camera's
 * z, not the range. n = 0 gives an all-zero image. Asynchronous on CUDA (stream-ordered).
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH,
 * PSD_E_CUDA, PSD_E_NOT_BUILT_WITH_CUDA. */
PSD_API psd_status_t psd_project_points(psd_device_t device, int64_t n, int64_t stride,
                                        const float* points, const double* T, const double* K,
                                        int64_t height, int64_t width, double min_depth,
                                        double max_depth, psd_stream_t stream, float* out);
/* Occlusion (parallax) filter for scan-line LiDAR sparse depth (H, W) float32 metres, 0 =
 * missing (kernels/project/project.h states the rule): a point with nearer returns
 * (q < d * (1 - rel)) within columns x - rx..x + rx in the ry rows above and in the ry rows
 * below, at columns <= x and at columns >= x, is dropped (set to 0); other points are copied,
 * missing or non-finite pixels become 0.
 * rx 0..64, ry 1..64, 0 < rel < 1 (psdrt's defaults 4, 8, 0.1); out must not alias sparse.
 * Asynchronous on CUDA. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT,
 * PSD_E_SHAPE_MISMATCH, PSD_E_CUDA, PSD_E_NOT_BUILT_WITH_CUDA. */
PSD_API psd_status_t psd_occlusion_filter(psd_device_t device, int64_t height, int64_t width,
                                          const float* sparse, int32_t rx, int32_t ry, double rel,
                                          psd_stream_t stream, float* out);
/* depth (H, W) -> points (3, H, W); cam_params host memory (see psd_camera_t). */
PSD_API psd_status_t psd_backproject(psd_device_t device, int32_t camera, int64_t height,
                                     int64_t width, const float* depth, const float* cam_params,
                                     psd_stream_t stream, float* out);
/* Workspace of psd_compress_channels. */
PSD_API psd_status_t psd_compress_workspace_size(psd_device_t device, int64_t in_h, int64_t in_w,
                                                 int64_t out_channels, size_t* bytes);
/* (in_channels, in_h, in_w) -> (out_channels, out_h, out_w): trilinear over (channel, y, x). */
PSD_API psd_status_t psd_compress_channels(psd_device_t device, int64_t in_channels, int64_t in_h,
                                           int64_t in_w, int64_t out_channels, int64_t out_h,
                                           int64_t out_w, const float* in, void* workspace,
                                           size_t workspace_bytes, psd_stream_t stream, float* out);
/* Workspace of psd_knn_propagate for (channels, h, w). */
PSD_API psd_status_t psd_knn_workspace_size(psd_device_t device, int64_t channels, int64_t height,
                                            int64_t width, size_t* bytes);
/* 3D kNN propagation (§4.2, kernels/knn/knn.h): feat (channels, h, w), points (3, h, w),
 * init (h, w), sparse4 (h, w) -> out (h, w). Uses params->k, rate, candidates, seed, flags.
 * out may alias init, nothing else. */
PSD_API psd_status_t psd_knn_propagate(psd_device_t device, const psd_propagation_params* params,
                                       int64_t channels, int64_t height, int64_t width,
                                       const float* feat, const float* points, const float* init,
                                       const float* sparse4, void* workspace,
                                       size_t workspace_bytes, psd_stream_t stream, float* out);
/* Workspace of psd_cspn. */
PSD_API psd_status_t psd_cspn_workspace_size(psd_device_t device, int64_t channels, int64_t height,
                                             int64_t width, size_t* bytes);
/* CSPN (§4.3, kernels/cspn/cspn.h): sparse, dense (H, W), feat (channels, H, W) -> out (H, W).
 * out may alias dense, not sparse. iterations >= 0. */
PSD_API psd_status_t psd_cspn(psd_device_t device, int64_t channels, int64_t height, int64_t width,
                              int32_t iterations, const float* sparse, const float* dense,
                              const float* feat, void* workspace, size_t workspace_bytes,
                              psd_stream_t stream, float* out);
/* Methods of psd_preprocess (kernels/preprocess/preprocess.h states each exactly). */
typedef enum psd_preprocess_t {
  PSD_PREPROCESS_OFFICIAL = 0, /* the official PSD loaders': scikit-image resize(order=3), a cubic
                                  B-spline, clipped, normalised in double (the default) */
  PSD_PREPROCESS_BICUBIC = 1,  /* PyTorch bicubic (a = -0.75, half-pixel) in float32: an exported
                                  graph's Resize */
  PSD_PREPROCESS_COUNT = 2
} psd_preprocess_t;
/* Workspace of psd_preprocess (0 for BICUBIC; device memory for CUDA). */
PSD_API psd_status_t psd_preprocess_workspace_size(psd_device_t device, int32_t method, int64_t height,
                                                   int64_t width, int64_t out_h, int64_t out_w, size_t* bytes);
/* FM input: rgb uint8 (H, W, 3) RGB (bgr = 0) or BGR (bgr != 0) -> out (3, out_h, out_w) float32
 * by `method`. OFFICIAL refuses a down-scale of 1.25x or more (skimage would smooth first).
 * workspace may be NULL for BICUBIC. */
PSD_API psd_status_t psd_preprocess(psd_device_t device, int32_t method, int64_t height, int64_t width,
                                    int32_t bgr, int64_t out_h, int64_t out_w, const uint8_t* rgb,
                                    void* workspace, size_t workspace_bytes, psd_stream_t stream, float* out);
/* FM input, the BICUBIC method (kept from ABI 1): rgb uint8 (H, W, 3) RGB (bgr = 0) or BGR
 * (bgr != 0) -> out (3, out_h, out_w), bicubic + ImageNet mean/std. */
PSD_API psd_status_t psd_preprocess_rgb(psd_device_t device, int64_t height, int64_t width,
                                        int32_t bgr, int64_t out_h, int64_t out_w,
                                        const uint8_t* rgb, psd_stream_t stream, float* out);

/* ------------------------------------------------------------------ weight-free guided mode
 * The whole `guided` mode of psdrt (psdrt.runtime.guided) in one call. Two methods:
 * PSD_GUIDED_METHOD_DT (the default; kernels/guided/dt.h): input kind (scan-line LiDAR or
 * scattered points, detected per frame or given), parallax filter for scan input
 * (psd_occlusion_filter), colour-geodesic nearest fill, normalised convolution with an
 * edge-aware recursive domain-transform filter, clamp to the sparse depth range.
 * PSD_GUIDED_METHOD_CSPN (the earlier method; kernels/guided/guided.h): CIELAB colour ->
 * random Fourier features -> cosine affinities, nearest-neighbour fill, coarse-to-fine CSPN
 * over a short pyramid, clamp. No learned weight in either. */

/* Parameters (psdrt.runtime.guided.GuidedParams). struct_size = sizeof(psd_guided_params); new
 * fields are appended, and a library accepts any struct_size >= the one it was built with. */
typedef struct psd_guided_params {
  uint32_t struct_size;
  int32_t channels;      /* random Fourier feature channels C, 2..64 (default 32) */
  float colour_scale;    /* CIELAB distance (OpenCV 8-bit Lab units) of one kernel bandwidth,
                          * > 0 (default 10); smaller = sharper edges */
  int32_t levels;        /* pyramid levels, >= 1 (default 2); at most floor(log2(min(H, W))) - 1
                          * are used, so the coarsest level keeps >= 4 pixels per side */
  int32_t iterations;    /* CSPN sweeps per level, 0..100000 (default 40) */
  uint32_t flags;        /* PSD_GUIDED_FLAG_*; 0 normally */
  /* The random projection of the features, host memory, float32, read during the call only:
   * W is 3 x C row-major, b has C values; feature c of a pixel is
   * sqrt(2 / C) cos((lab / colour_scale) . W[:, c] + b[c]) with lab = (L * 255 / 100, a + 128,
   * b + 128). psdrt draws them from NumPy's default_rng(seed) (psdrt.runtime.guided.
   * rff_projection, seed 0 by default); an embedder ships them with its artefacts
   * (psdrt.runtime.guided.projection_json writes them) and passes the same values every frame. */
  const float* projection_w;  /* METHOD_CSPN only (NULL otherwise) */
  const float* projection_b;
  /* --- the method, and the parameters of PSD_GUIDED_METHOD_DT (kernels/guided/dt.h);
   * psd_guided_params_init writes the defaults of every field */
  int32_t method;        /* PSD_GUIDED_METHOD_DT (0, default) or PSD_GUIDED_METHOD_CSPN (1) */
  int32_t kind;          /* PSD_GUIDED_KIND_*: 0 auto (detected per frame), 1 scattered, 2 scan */
  float lambda;          /* colour weight of the geodesic step cost, >= 0 (default 0.1) */
  float sigma_s;         /* bound on the filter's bandwidth (px), scattered input (default 20): min(sigma_s, 1.2 sqrt(H W / points)) */
  float sigma_s_scan;    /* the same for scan-line input (default 5) */
  float sigma_r;         /* colour bandwidth (sum of |dR|+|dG|+|dB|), > 0 (default 100) */
  float beta;            /* weight of |d ln fill| in the edge distance, >= 0 (default 10) */
  int32_t dt_iterations; /* filter iterations, 1..16 (default 3) */
  int32_t rounds;        /* geodesic fill rounds, 1..16 (default 2) */
  int32_t occl_rx, occl_ry; /* scan input: occlusion filter window (defaults 4, 8) */
  float occl_rel;        /* and its relative depth margin, (0, 1) (default 0.1) */
} psd_guided_params;

#define PSD_GUIDED_METHOD_DT 0
#define PSD_GUIDED_METHOD_CSPN 1
#define PSD_GUIDED_KIND_AUTO 0
#define PSD_GUIDED_KIND_SCATTERED 1
#define PSD_GUIDED_KIND_SCAN 2

/* Fills *params with the defaults (method DT, kind auto; CSPN fields C 32, colour scale 10,
 * 2 levels, 40 iterations, projection NULL) and struct_size. Statuses: PSD_OK,
 * PSD_E_NULL_POINTER. Thread-safe. */
PSD_API psd_status_t psd_guided_params_init(psd_guided_params* params);

/* CPU: run the per-pixel implementation that the CUDA library runs instead of the row-streamed
 * CPU one (slower, same results bit for bit on the CPU); METHOD_DT: the shared per-row bodies
 * instead of the CPU's vectorised row passes (same results bit for bit); for tests. */
#define PSD_GUIDED_FLAG_GENERIC 1u
/* CPU: keep the baseline instruction set even where the CPU has AVX2 (same results); for tests. */
#define PSD_GUIDED_FLAG_BASELINE_ISA 2u

/* Sizes the workspace of psd_guided. METHOD_DT: 44 bytes per pixel on either device (20 MB at
 * 375 x 1242). METHOD_CSPN depends on the device: the CPU path streams the features
 * (about 76 bytes per pixel with C = 32, e.g. 34 MB at 375 x 1242); the CUDA path (and the CPU
 * with PSD_GUIDED_FLAG_GENERIC) stores the feature maps, about 4 (C + 1) * 4/3 bytes per pixel
 * more (103 MB at 375 x 1242). params->projection_* are not read.
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT,
 * PSD_E_SHAPE_MISMATCH. */
PSD_API psd_status_t psd_guided_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                               const psd_guided_params* params, size_t* bytes);

/* Dense depth of one frame in the guided mode.
 * @param[in]  height, width  frame size, 1..1048576 each.
 * @param[in]  params     host memory (see psd_guided_params).
 * @param[in]  rgb        (H, W, 3) uint8, RGB (bgr = 0) or BGR (bgr != 0).
 * @param[in]  sparse     (H, W) metric depth; values <= 0 or non-finite are missing.
 * @param[in,out] workspace  >= psd_guided_workspace_size bytes; contents are scratch.
 * @param[out] out        (H, W) metres; must not alias sparse.
 * Behaviour: no valid sparse point -> out is 0 everywhere (no status: a GPU would need a host
 * sync; the Python binding raises InputError first); one point or all points equal -> out is
 * that value everywhere (the clamp range; the parallax filter never drops the nearest point).
 * METHOD_CSPN: pixels whose 8 affinities sum to 0 keep their initial value (kernels/cspn/cspn.h);
 * nearest-fill ties resolve as scipy.ndimage.distance_transform_edt. Never NaN for finite
 * inputs.
 * Ownership: none retained. Synchrony/stream: see header notes (CUDA: async on `stream`).
 * Thread safety: safe concurrently with distinct workspaces and outputs.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH,
 * PSD_E_WORKSPACE_TOO_SMALL, PSD_E_NOT_BUILT_WITH_CUDA, PSD_E_CUDA. */
PSD_API psd_status_t psd_guided(psd_device_t device, int64_t height, int64_t width,
                                const psd_guided_params* params, const uint8_t* rgb, int32_t bgr,
                                const float* sparse, void* workspace, size_t workspace_bytes,
                                psd_stream_t stream, float* out);

/* The guidance features of psd_guided as a (C, H, W) map (psdrt.runtime.guided.guided_features):
 * sqrt(2 / C) cos(z), no workspace; params->levels and iterations are validated but unused.
 * Same conventions and statuses as psd_guided (no PSD_E_WORKSPACE_TOO_SMALL). */
PSD_API psd_status_t psd_guided_features(psd_device_t device, int64_t height, int64_t width,
                                         const psd_guided_params* params, const uint8_t* rgb,
                                         int32_t bgr, psd_stream_t stream, float* out);

/* ================================================================== sessions: the whole pipeline
 *
 * A psd_session runs the complete per-frame pipeline of psdrt.runtime.pipeline.Pipeline
 * (preprocess -> encoder -> alignment + dual-space propagation -> head -> post-processing) from
 * host images, in one call. Modes:
 *  - PSD_SESSION_MODE_PSD:       encoder + propagation + correction head (+ post-processing);
 *  - PSD_SESSION_MODE_PROPAGATE: encoder + propagation (no head);
 *  - PSD_SESSION_MODE_GUIDED:    no network and no weights (artifact_dir may be NULL).
 * The networks come from an artefact directory written by `psdrt build` (manifest.json): it is
 * checked exactly as Pipeline.from_artifacts checks it (format 1, files present, SHA-256 of every
 * file used, correctness gate passed, the requested precision present). The encoder and head
 * run in ONNX Runtime, loaded at run time with dlopen (no link-time dependency); search order:
 * psd_session_options.ort_library, $PSD_ONNXRUNTIME_LIB, the library recorded by build.py (the
 * onnxruntime Python wheel found at build time), then dlopen("libonnxruntime.so").
 *
 * Ownership: the session owns everything it allocates; psd_session_destroy frees it. It keeps
 *   no pointer to the caller's options, strings or frames after a call returns. Strings returned
 *   by the library (psd_last_error, psd_session_info.*) are owned by the library.
 * Allocation: buffers are allocated at create (fixed working size) or at the first run of a
 *   frame size (guided without artefacts; a new size reallocates once). psd_session_run never
 *   allocates for a frame of the size already seen.
 * Synchrony: psd_session_run is synchronous: the outputs are complete when it returns.
 *   psd_session_enqueue (CUDA builds) enqueues everything on the caller's stream and returns;
 *   outputs are valid after the stream is synchronised, inputs must stay alive until then.
 * Streams and ordering (CUDA sessions): psd_session_enqueue takes a cudaStream_t as void*
 *   (NULL = cudaStreamPerThread); psd_session_run uses a stream of the session. Every call is
 *   ordered after the previous call of the same session, whatever streams they use: the
 *   session records an event at the end of each call's work and the next call's stream waits
 *   on it before touching the session's buffers. Two enqueues on two streams therefore run one
 *   after the other on the device (they share the session's buffers); use one session per
 *   stream for concurrent frames. Each call makes the session's device current for its
 *   duration and restores the caller's device afterwards, so any thread may call.
 * Errors of earlier work: a CUDA call first checks cudaGetLastError(); an error left by earlier
 *   asynchronous work (a device fault of a previous frame, or of other CUDA code) is reported
 *   as PSD_E_CUDA saying so, before this call enqueues anything. Launch errors name the
 *   kernel's function and source line.
 * Thread safety: calls on one session are serialised by the session (a second thread's call
 *   waits for the first to return); distinct sessions are independent and may run
 *   concurrently. psd_last_error() is thread-local. create is thread-safe; destroy must not
 *   race with a call on the same session.
 * Errors: every call returns a psd_status_t; psd_last_error() says what failed and how to fix it.
 *   Bad frames: PSD_E_NULL_POINTER, PSD_E_SHAPE_MISMATCH (sizes, strides, frame size differs
 *   from the artefacts'), PSD_E_INVALID_ARGUMENT (NaN/Inf/negative sparse depth, no sparse
 *   point, invalid K, bad struct_size or enum). The output never contains NaN or Inf: a
 *   non-finite result is reported as PSD_E_INTERNAL instead of being written.
 */
#define PSD_SESSION_ABI_VERSION 1

#define PSD_STATUS_UNSUPPORTED PSD_E_UNSUPPORTED /* spelling used in the session docs */

typedef struct psd_session psd_session; /* opaque */

typedef enum psd_session_mode_t {
  PSD_SESSION_MODE_AUTO = 0,      /* the manifest's mode; guided when artifact_dir is NULL */
  PSD_SESSION_MODE_PSD = 1,
  PSD_SESSION_MODE_PROPAGATE = 2,
  PSD_SESSION_MODE_GUIDED = 3,
  PSD_SESSION_MODE_COUNT = 4
} psd_session_mode_t;

typedef enum psd_precision_t {
  PSD_PRECISION_FP32 = 0,
  PSD_PRECISION_FP16 = 1,
  PSD_PRECISION_INT8 = 2,
  PSD_PRECISION_COUNT = 3
} psd_precision_t;

typedef enum psd_backend_t {
  PSD_BACKEND_AUTO = 0,        /* ONNX Runtime */
  PSD_BACKEND_ONNXRUNTIME = 1, /* the manifest's onnxruntime artefacts */
  PSD_BACKEND_TENSORRT = 2,    /* the manifest's tensorrt engines (builds with TensorRT only) */
  PSD_BACKEND_COUNT = 3
} psd_backend_t;

/* Session ABI version (PSD_SESSION_ABI_VERSION of the build). A library built with
 * `build.py --no-session` exports none of the psd_session_* / psd_preset_get symbols.
 * Never fails; thread-safe. */
PSD_API uint32_t psd_session_abi_version(void);

/* A dataset preset (psdrt.runtime.presets): the propagation and post-processing parameters. */
typedef struct psd_preset {
  uint32_t struct_size;  /* sizeof(psd_preset) */
  int32_t mode;          /* psd_mode_t */
  int32_t camera;        /* psd_camera_t (sessions support PSD_CAMERA_PINHOLE) */
  int32_t k;             /* kNN neighbours, >= 1 */
  double rate;           /* (0, 1] */
  int64_t candidates;    /* >= 0, 0 = all */
  int32_t post_iters;    /* -1 = none, 0 = re-inject sparse, > 0 = CSPN sweeps */
  int32_t iters_quarter; /* >= 0 */
  int32_t iters_full;    /* >= 0 */
  int32_t reserved;
  double min_depth, max_depth; /* the dataset's depth range (information only) */
  char name[32];         /* official dataset key, e.g. "NYUv2" */
} psd_preset;

/* Looks up a preset by its official name or alias ("NYUv2", "kitti", "default", ...), as
 * psdrt.runtime.presets.get_preset does.
 * @param[out] out  host memory; out->struct_size must be set to sizeof(psd_preset).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT
 * (unknown name: the message lists the known ones; bad struct_size). */
PSD_API psd_status_t psd_preset_get(const char* name, psd_preset* out);

/* Options of psd_session_create. Always initialise with psd_session_options_init. */
typedef struct psd_session_options {
  uint32_t struct_size;     /* sizeof(psd_session_options) (set by _init) */
  int32_t device;           /* psd_device_t: CPU (default) or CUDA (ORT CUDA EP, CUDA kernels) */
  int32_t precision;        /* psd_precision_t (default FP32); or see precision_name */
  int32_t mode;             /* psd_session_mode_t (default AUTO) */
  int32_t backend;          /* psd_backend_t (default AUTO = ONNX Runtime) */
  int32_t intra_op_threads; /* ONNX Runtime intra-op threads; 0 = its default */
  int32_t device_id;        /* CUDA device ordinal (default 0) */
  int32_t fm_lower;         /* encoder input lower bound; 0 = the manifest's (guided: unused) */
  uint64_t seed;            /* seed of the kNN subsets (presets with rate < 1 or a cap) */
  const char* precision_name; /* "fp32" / "fp16" / "int8", or "ENC+HEAD" for the encoder and the
                                 head apart (e.g. "int8+fp32"); overrides `precision` when not NULL */
  const char* ort_library;    /* path of libonnxruntime.so*; NULL = search (see above) */
  const char* preset;         /* preset name or alias; NULL = the manifest's ("NYUv2" without) */
  const psd_preset* preset_override; /* used instead of `preset` when not NULL (copied) */
  /* guided mode (psdrt.runtime.guided.GuidedParams, psd_guided); 0 / NULL = the default */
  int32_t guided_levels;      /* pyramid levels (default 2) */
  int32_t guided_iterations;  /* CSPN sweeps per level (default 40) */
  double guided_colour_scale; /* CIELAB distance of one kernel bandwidth (default 10) */
  int32_t guided_channels;    /* random Fourier features C, 2..64; with the projection below */
  uint32_t artifact_flags;    /* PSD_ARTIFACTS_* (psd_artifacts_read); 0 = the checked default.
                                 PSD_ARTIFACTS_ALLOW_UNGATED: a latency-only session (was reserved) */
  const float* guided_projection_w; /* 3 x C row-major and C values (copied at create); NULL = */
  const float* guided_projection_b; /* the built-in rff_projection(GuidedParams()): seed 0, C 32 */
  /* The guided mode's full parameters (psd_guided_params, copied at create with the CSPN
   * projection it points to); NULL = psd_guided_params_init's defaults (method DT, kind auto)
   * with the guided_* fields above. When set, those fields must be 0 / NULL. */
  const psd_guided_params* guided_params;
  /* since psdrt 0.3 (read when struct_size covers them; PSD_SESSION_OPTIONS_SIZE_V1 is the
   * size before them and is still accepted, with these fields 0): */
  int32_t cuda_graph; /* 1: psd_session_enqueue captures its device frame into a CUDA graph
                         and replays it (see "CUDA graphs" below); 0 (default): plain launches.
                         Needs device = PSD_DEVICE_CUDA. */
  int32_t reserved_options; /* 0 */
} psd_session_options;
/* struct_size of a psd_session_options from before cuda_graph (still accepted). */
#define PSD_SESSION_OPTIONS_SIZE_V1 offsetof(psd_session_options, cuda_graph)

/* CUDA graphs (psd_session_options.cuda_graph = 1; CUDA sessions, psd_session_enqueue only).
 * The whole device frame of psd_session_enqueue (input copies, preprocessing, encoder,
 * propagation kernels, head, post-processing, output copy) is captured on the caller's stream
 * (cudaStreamCaptureModeThreadLocal) into a CUDA graph and replayed with cudaGraphLaunch, which
 * saves the launch overhead of the many small kernels. The first psd_session_enqueue of a session
 * runs uncaptured (a warm-up: backends allocate on their first run), the second is captured and
 * launched, later ones replay. A graph holds the kernels' arguments, so it belongs to one input
 * geometry: frame height and width, the BGR flag, the values of K, the addresses and row strides
 * of rgb, sparse and depth, and the session's own buffers; a frame that differs in any of them is
 * captured again (one graph is kept: alternating geometries capture every time). The contents of
 * the buffers may change freely between replays (that is the point). Where a backend cannot be
 * captured (its CaptureRefusal: ONNX Runtime's CUDA provider) or a capture fails (a call that is
 * illegal during capture), the session falls back to plain launches for good and
 * psd_session_info says why (cuda_graph = PSD_CUDA_GRAPH_FALLBACK, graph_fallback); the frame
 * whose capture failed is run plainly, so no frame is lost. psd_session_run (host frames: its
 * pageable host copies cannot be captured) always launches plainly. Stage timings of a graph
 * frame: only PSD_STAGE_VALIDATE (host) and PSD_STAGE_TOTAL (the graph's device time) are
 * measured; the other stages are 0. TensorRT's enqueueV3 is capturable, but that path is
 * untested (no TensorRT on the development machines); graphs are tested under the emulated
 * CUDA runtime only (tests/cuda/test_session_graphs.py), not on a GPU. */
typedef enum psd_cuda_graph_state_t {
  PSD_CUDA_GRAPH_OFF = 0,      /* not requested (or not a CUDA session) */
  PSD_CUDA_GRAPH_ARMED = 1,    /* requested, no graph yet (before the warm-up / first capture) */
  PSD_CUDA_GRAPH_READY = 2,    /* a graph is instantiated: frames of its geometry replay it */
  PSD_CUDA_GRAPH_FALLBACK = 3  /* capture refused or failed: plain launches (graph_fallback) */
} psd_cuda_graph_state_t;

/* Fills *options with the defaults (CPU, FP32, AUTO mode, ORT, seed 0, no CUDA graph) and struct_size.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER. Thread-safe. */
PSD_API psd_status_t psd_session_options_init(psd_session_options* options);

/* Creates a session.
 * @param[in]  artifact_dir  directory holding manifest.json (psdrt build), or NULL for
 *                           PSD_SESSION_MODE_GUIDED / AUTO (guided, any frame size).
 * @param[in]  options       NULL = defaults. Copied; not retained.
 * @param[out] out           the new session (*out = NULL on failure).
 * Loads ONNX Runtime, opens the encoder (and head) of the requested precision, allocates every
 * buffer of the working size. Synchronous; thread-safe.
 * Options: struct_size PSD_SESSION_OPTIONS_SIZE_V1 (a caller built against an older psd.h) or
 * sizeof(psd_session_options). Test builds only: the environment variable
 * PSD_BACKEND_TEST_FIXTURE (1 | refuse-capture | sync-in-run), read here, replaces the networks
 * by a fixed function of their inputs with the ONNX files' tensor shapes
 * (runtime/capi/test_backend.cpp; psd_session_info.backend then starts with "TEST FIXTURE"):
 * never set it in deployment.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT (options; cuda_graph not 0/1 or
 * set for a CPU session; an unknown PSD_BACKEND_TEST_FIXTURE value), PSD_E_ARTIFACT
 * (missing/corrupt manifest, missing file, SHA-256 mismatch, failed gate, precision not built),
 * PSD_E_BACKEND_UNAVAILABLE (ONNX Runtime not found/too old, CUDA EP missing, TensorRT not
 * built), PSD_E_BACKEND (ONNX Runtime refused the model), PSD_E_UNSUPPORTED (a preset with a
 * non-pinhole camera: Stanford, KITTI360). Presets that need the IP-Basic fill (rate < 1, a
 * candidate cap or a mode other than 3D-2D: ARGOVERSE, VKITTI2, DIMLi, ...) get its buffers here
 * and compute it every frame with psd_ip_basic on the session's device and stream,
 * PSD_E_NOT_BUILT_WITH_CUDA (device CUDA in the CPU library), PSD_E_OUT_OF_MEMORY. */
PSD_API psd_status_t psd_session_create(const char* artifact_dir, const psd_session_options* options,
                                        psd_session** out);

/* Destroys a session (NULL is a no-op). Not concurrently with a run of the same session. */
PSD_API void psd_session_destroy(psd_session* session);

/* Frame size (H, W) the session accepts: the artefacts' working size; 0 x 0 = any size (guided
 * without artefacts). Statuses: PSD_OK, PSD_E_NULL_POINTER. */
PSD_API psd_status_t psd_session_input_shape(const psd_session* session, int64_t* height,
                                             int64_t* width);
/* Output size: equal to the input size (0 x 0 = the size of each frame). */
PSD_API psd_status_t psd_session_output_shape(const psd_session* session, int64_t* height,
                                              int64_t* width);

/* What a session runs. Strings are owned by the session (valid until destroy). */
typedef struct psd_session_info {
  uint32_t struct_size;   /* sizeof(psd_session_info), set by the caller */
  int32_t mode;           /* psd_session_mode_t (never AUTO) */
  int32_t device;         /* psd_device_t */
  int32_t precision;      /* psd_precision_t (guided: FP32) */
  int64_t height, width;  /* as psd_session_input_shape */
  int64_t fm_height, fm_width; /* encoder input size (0 for guided) */
  psd_preset preset;      /* the effective preset */
  const char* backend;    /* e.g. "onnxruntime 1.32.0 (CPUExecutionProvider, <library path>)";
                             "none (guided mode: no network)" for guided */
  const char* artifact_dir; /* "" for guided without artefacts */
  /* since psdrt 0.2 (written when struct_size covers them): */
  int32_t gate_approved;  /* 0: a latency-only session over artefacts that failed the gate */
  int32_t head_precision; /* psd_precision_t of the head (psd mode; `precision` is the encoder's) */
  /* since psdrt 0.3: CUDA graphs (psd_session_options.cuda_graph, "CUDA graphs" above) */
  int32_t cuda_graph;     /* psd_cuda_graph_state_t */
  int32_t graph_nodes;    /* nodes of the current graph (0 without one) */
  int64_t graph_captures; /* graphs captured so far (one per new input geometry) */
  int64_t graph_replays;  /* frames that replayed an already captured graph */
  const char* graph_fallback; /* why plain launches are used (state FALLBACK), else "" */
} psd_session_info;
/* struct_size of the psdrt 0.1 struct (before gate_approved) and of the 0.2 one (before
 * cuda_graph): both still accepted; only the fields they cover are written. */
#define PSD_SESSION_INFO_SIZE_V1 offsetof(psd_session_info, gate_approved)
#define PSD_SESSION_INFO_SIZE_V2 offsetof(psd_session_info, cuda_graph)

/* info->struct_size: PSD_SESSION_INFO_SIZE_V1, _V2 or sizeof(psd_session_info). Thread-safe; waits
 * for a call in progress on the same session (the graph fields change during calls).
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT (struct_size). */
PSD_API psd_status_t psd_session_get_info(const psd_session* session, psd_session_info* info);

/* ------------------------------------------------------------------ artefact directories */
#define PSD_ARTIFACTS_SKIP_SHA256 1u   /* do not hash the files (the manifest and paths are still checked) */
#define PSD_ARTIFACTS_ALLOW_UNGATED 2u /* latency-only: take artefacts that failed the correctness
                                          gate (never for deployment: their output is not checked) */

/* What psd_artifacts_read selected. Paths are inside the directory. */
typedef struct psd_artifact_info {
  uint32_t struct_size;        /* sizeof(psd_artifact_info), set by the caller */
  int32_t mode;                /* psd_session_mode_t: PSD or PROPAGATE (or the override) */
  int64_t height, width;       /* the working size */
  int64_t fm_lower;
  int32_t gate_approved;       /* 0 only with PSD_ARTIFACTS_ALLOW_UNGATED and a failed gate */
  int32_t preprocess;          /* psd_preprocess_t the artefacts were built for */
  char preset[32];
  char encoder_precision[8], head_precision[8];
  char encoder_path[4096], head_path[4096]; /* head_path "" unless mode is PSD */
  char gate_failures[1024];    /* what failed its gate (latency-only), "" otherwise */
} psd_artifact_info;

/* Reads and checks <artifact_dir>/manifest.json and selects the artefacts of `precision`
 * ("fp32" / "fp16" / "int8", or "ENC+HEAD" such as "int8+fp32": encoder and head apart) for
 * ONNX Runtime (backend PSD_BACKEND_AUTO/ONNXRUNTIME) or TensorRT. The one implementation of the
 * directory rules (psd_session_create and Pipeline.from_artifacts use it): format 1; at most
 * 64 MiB and 64 levels of nesting; model mode psd or propagate; the working size by
 * psd_check_frame_size; fm_lower 1..4096; the preprocessing recorded (psdrt 0.1 directories, which
 * record none, are refused with the rebuild); every file entry a relative path inside the directory
 * (no "..", not absolute, no symlink leading out); present; its SHA-256 as listed (unless
 * PSD_ARTIFACTS_SKIP_SHA256); the gate passed (unless PSD_ARTIFACTS_ALLOW_UNGATED).
 * The SHA-256 list protects against damaged copies, not against tampering: whoever can edit the
 * files can edit the manifest too.
 * @param mode  psd_session_mode_t override (AUTO = the manifest's; GUIDED selects no network).
 * Synchronous; thread-safe. Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT
 * (precision, mode, flags, struct_size), PSD_E_ARTIFACT (the message names the rule and the fix). */
PSD_API psd_status_t psd_artifacts_read(const char* artifact_dir, const char* precision, int32_t backend,
                                        int32_t mode, uint32_t flags, psd_artifact_info* out);

#define PSD_FRAME_BGR 1u /* psd_frame_in.flags: rgb holds B, G, R (OpenCV order) */

typedef enum psd_dtype_t { PSD_DTYPE_FLOAT64 = 0, PSD_DTYPE_FLOAT32 = 1 } psd_dtype_t;

/* One input frame. Host memory for psd_session_run, device memory (rgb, sparse) for
 * psd_session_enqueue; K is always host memory. */
typedef struct psd_frame_in {
  uint32_t struct_size;    /* sizeof(psd_frame_in) */
  uint32_t flags;          /* PSD_FRAME_* */
  int64_t height, width;   /* >= 4 each */
  const uint8_t* rgb;      /* H rows of W x 3 uint8 (RGB, or BGR with PSD_FRAME_BGR) */
  int64_t rgb_stride;      /* bytes between rows; 0 = 3 * width */
  const float* sparse;     /* H rows of W float32 metres, 0 = missing; 4-byte aligned */
  int64_t sparse_stride;   /* bytes between rows (multiple of 4); 0 = 4 * width */
  const void* K;           /* 3x3 row-major pinhole intrinsics at H x W */
  int32_t K_dtype;         /* psd_dtype_t of K (default FLOAT64) */
  int32_t reserved;
} psd_frame_in;

/* Per-stage times of the last call, milliseconds (psd_frame_out.timings_ms,
 * psd_session_timings). CPU sessions: host wall time of each stage. CUDA sessions: the device's
 * execution time of each stage, from CUDA events recorded between the stages; VALIDATE is host
 * time; TOTAL is the whole call as the host saw it for psd_session_run, and the device time from
 * the first to the last stage for psd_session_enqueue (a CUDA-graph frame: VALIDATE and TOTAL
 * only). */
typedef enum psd_stage_t {
  PSD_STAGE_VALIDATE = 0, PSD_STAGE_PREPROCESS = 1, PSD_STAGE_ENCODER = 2,
  PSD_STAGE_PROPAGATION = 3, PSD_STAGE_HEAD = 4, PSD_STAGE_POST = 5, PSD_STAGE_GUIDED = 6,
  PSD_STAGE_TOTAL = 7, PSD_STAGE_COUNT = 8
} psd_stage_t;

/* One output frame: caller-allocated buffers plus what the run reports. */
typedef struct psd_frame_out {
  uint32_t struct_size;    /* sizeof(psd_frame_out) */
  uint32_t reserved;
  float* depth;            /* H rows of W float32 metres (required; finite) */
  int64_t depth_stride;    /* bytes between rows (multiple of 4); 0 = 4 * width */
  uint16_t* depth_mm;      /* optional: uint16 millimetres, round(depth * 1000) saturated to
                              65535, 0 = invalid (psdrt DepthResult.depth_mm) */
  int64_t depth_mm_stride; /* bytes between rows (even); 0 = 2 * width */
  /* written by psd_session_run: */
  int64_t points;          /* accepted sparse points (psd_prepare_sparse) */
  int32_t alignment_degenerate; /* 1: < 2 accepted points strictly between min and max depth */
  int32_t reserved2;
  double timings_ms[PSD_STAGE_COUNT];
  /* since psdrt 0.2, written when struct_size covers them (psd_prepare_sparse, psd_guard_depth): */
  int64_t rejected_range;    /* sparse points outside [PSD_SPARSE_MIN_M, PSD_SPARSE_MAX_M] */
  int64_t rejected_outliers; /* sparse points beyond PSD_SPARSE_OUTLIER_RATIO x the median */
  int64_t clamped;           /* output pixels clamped to the guard range */
} psd_frame_out;
/* struct_size of a psd_frame_out from before the rejected/clamped fields (still accepted). */
#define PSD_FRAME_OUT_SIZE_V1 (sizeof(psd_frame_out) - 3 * sizeof(int64_t))

/* Completes one frame (host memory in and out). Synchronous; allocation-free once warm.
 * PSD_E_INVALID_ARGUMENT also for a frame the preset's IP-Basic fill cannot take (no accepted
 * depth > PSD_IP_BASIC_MIN_M), checked before any network runs.
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT, PSD_E_SHAPE_MISMATCH,
 * PSD_E_BACKEND, PSD_E_UNSUPPORTED, PSD_E_INTERNAL (non-finite result; nothing is written). */
PSD_API psd_status_t psd_session_run(psd_session* session, const psd_frame_in* in,
                                     psd_frame_out* out);

/* Device-pointer variant (CUDA library, session created with device = PSD_DEVICE_CUDA):
 * in->rgb, in->sparse, out->depth are CUDA device memory (out->depth_mm must be NULL); every
 * stage is enqueued on `stream` after the session's previous call (see "Streams and
 * ordering") and the call returns without synchronising. Data-dependent checks (NaN, point
 * count, IP-Basic's depth > PSD_IP_BASIC_MIN_M, whose fill is then 0: psd_ip_basic) are not made
 * (they would need a host sync); points, alignment_degenerate and
 * timings_ms are not written (psd_session_timings reads the stage times once the work has run).
 * With options.cuda_graph the device frame is captured and replayed ("CUDA graphs" above); a
 * failed capture is not an error (the frame runs plainly, psd_session_info says why).
 * CPU builds and CPU sessions return PSD_E_UNSUPPORTED. */
PSD_API psd_status_t psd_session_enqueue(psd_session* session, const psd_frame_in* in,
                                         psd_frame_out* out, psd_stream_t stream);

/* Per-stage times of the session's last call (psd_stage_t order, see psd_frame_out.timings_ms).
 * For a CUDA session this waits until the last call's device work has run (it synchronises
 * with that work only, not with the device), then reads its CUDA events.
 * @param[out] timings_ms  host memory of `count` doubles (PSD_STAGE_COUNT for all; stages a mode
 *                         does not run are 0; entries beyond PSD_STAGE_COUNT are set to 0).
 * Statuses: PSD_OK, PSD_E_NULL_POINTER, PSD_E_INVALID_ARGUMENT (count < 0), PSD_E_CUDA. */
PSD_API psd_status_t psd_session_timings(psd_session* session, double* timings_ms, int32_t count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PSD_PSD_H_ */
