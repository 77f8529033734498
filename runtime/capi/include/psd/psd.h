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
  PSD_STATUS_COUNT = 9
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

/* Probes the CUDA runtime through this library (works without a driver).
 * @param[out] device_count  number of usable devices (0 on any CUDA error or in a CPU build).
 * @param[out] cuda_error    the cudaError_t of cudaGetDeviceCount (35 = no driver,
 *                           100 = no device, 0 = ok); -1 in a CPU build.
 * Synchronous; thread-safe. Statuses: PSD_OK (also when no GPU exists), PSD_E_NULL_POINTER. */
PSD_API psd_status_t psd_cuda_device_count(int32_t* device_count, int32_t* cuda_error);

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
/* (channels, in_h, in_w) -> (channels, out_h, out_w), PyTorch align_corners=False semantics. */
PSD_API psd_status_t psd_resize(psd_device_t device, int32_t mode, int64_t channels, int64_t in_h,
                                int64_t in_w, int64_t out_h, int64_t out_w, const float* in,
                                psd_stream_t stream, float* out);
/* (H, W) -> (H/4, W/4): sum / (count(> 0) + 1e-5) per 4x4 cell. */
PSD_API psd_status_t psd_sparse_pool(psd_device_t device, int64_t height, int64_t width,
                                     const float* sparse, psd_stream_t stream, float* out);
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
/* FM input: rgb uint8 (H, W, 3) RGB (bgr = 0) or BGR (bgr != 0) -> out (3, out_h, out_w),
 * bicubic + ImageNet mean/std (kernels/preprocess/preprocess.h). */
PSD_API psd_status_t psd_preprocess_rgb(psd_device_t device, int64_t height, int64_t width,
                                        int32_t bgr, int64_t out_h, int64_t out_w,
                                        const uint8_t* rgb, psd_stream_t stream, float* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PSD_PSD_H_ */
