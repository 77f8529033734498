// The only file with extern "C" definitions of psd.h. Each function body runs inside
// PSD_CAPI_GUARD, which maps the C++ exceptions of kernels/common/check.h to psd_status_t and
// records the message in a thread-local string for psd_last_error().
//
// It lives under runtime/capi (not kernels/) because the ABI is the runtime's product surface;
// kernels/ stays a plain C++ library with no C linkage concerns.
#include "psd/psd.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "../../kernels/align/align.h"
#include "../../kernels/common/check.h"
#include "../../kernels/common/cpu_isa.h"
#include "../../kernels/common/reduce.h"
#include "../../kernels/common/workspace.h"
#include "../../kernels/cspn/cspn.h"
#include "../../kernels/guided/guided.h"
#include "../../kernels/ip_basic/ip_basic.h"
#include "../../kernels/knn/knn.h"
#include "../../kernels/preprocess/preprocess.h"
#include "../../kernels/project/project.h"
#include "../../kernels/propagate/propagate.h"
#include "../../kernels/resample/resample.h"

#if defined(PSD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

using psd::Device;
namespace k = psd::kernels;

static_assert(static_cast<float>(PSD_IP_BASIC_MIN_M) == k::kIpBasicEps,
              "psd.h's PSD_IP_BASIC_MIN_M is the kernel's threshold");

namespace {

thread_local std::string g_last_error;

psd_status_t Fail(psd_status_t st, const char* what) {
  g_last_error = what;
  return st;
}

Device ToDevice(psd_device_t d) {
  if (d == PSD_DEVICE_CPU) return Device::kCpu;
  if (d == PSD_DEVICE_CUDA) return Device::kCuda;
  throw psd::InvalidArgument("device must be PSD_DEVICE_CPU (0) or PSD_DEVICE_CUDA (1)");
}

k::KnnParams ToKnn(const psd_propagation_params* p) {
  k::KnnParams kp;
  kp.k = p->k;
  kp.rate = p->rate;
  kp.candidates = p->candidates;
  kp.seed = p->seed;
  kp.brute_force = (p->flags & PSD_FLAG_KNN_BRUTE_FORCE) != 0;
  return kp;
}

void CheckParams(const psd_propagation_params* p) {
  PSD_REQUIRE(p != nullptr, NullPointer, "null pointer: params");
  PSD_REQUIRE(p->struct_size >= sizeof(psd_propagation_params), InvalidArgument,
              "params->struct_size must be sizeof(psd_propagation_params)");
}

void CheckDesc(const psd_frame_desc* d) {
  PSD_REQUIRE(d != nullptr, NullPointer, "null pointer: desc");
  PSD_REQUIRE(d->struct_size >= sizeof(psd_frame_desc), InvalidArgument,
              "desc->struct_size must be sizeof(psd_frame_desc)");
}

k::PropagationShape ToShape(const psd_frame_desc* d) {
  return k::PropagationShape{d->height,        d->width,       d->rel_height, d->rel_width,
                             d->feat_channels, d->feat_height, d->feat_width};
}

k::PropagationConfig ToConfig(const psd_propagation_params* p, const float* cam_params,
                              bool need_cam) {
  k::PropagationConfig c;
  PSD_REQUIRE(p->mode >= 0 && p->mode < PSD_MODE_COUNT, InvalidArgument,
              "mode must be a psd_mode_t (0..2)");
  PSD_REQUIRE(p->camera >= 0 && p->camera < PSD_CAMERA_COUNT, InvalidArgument,
              "camera must be a psd_camera_t (0..2)");
  c.mode = static_cast<k::Mode>(p->mode);
  c.camera = static_cast<k::Camera>(p->camera);
  if (need_cam) c.cam = k::MakeCameraParams(p->camera, cam_params);
  c.knn = ToKnn(p);
  c.iters_quarter = p->iters_quarter;
  c.iters_full = p->iters_full;
  return c;
}

k::GuidedConfig ToGuided(const psd_guided_params* p) {
  PSD_REQUIRE(p != nullptr, NullPointer, "null pointer: params");
  PSD_REQUIRE(p->struct_size >= sizeof(psd_guided_params), InvalidArgument,
              "params->struct_size must be sizeof(psd_guided_params)");
  PSD_REQUIRE((p->flags & ~(PSD_GUIDED_FLAG_GENERIC | PSD_GUIDED_FLAG_BASELINE_ISA)) == 0,
              InvalidArgument, "params->flags has unknown bits; use 0 or PSD_GUIDED_FLAG_*");
  k::GuidedConfig c;
  c.channels = p->channels;
  c.colour_scale = p->colour_scale;
  c.levels = p->levels;
  c.iterations = p->iterations;
  c.generic = (p->flags & PSD_GUIDED_FLAG_GENERIC) != 0;
  c.baseline_isa = (p->flags & PSD_GUIDED_FLAG_BASELINE_ISA) != 0;
  c.w = p->projection_w;
  c.b = p->projection_b;
  c.method = p->method;
  c.dt.kind = p->kind;
  c.dt.lambda = p->lambda;
  c.dt.sigma_s = p->sigma_s;
  c.dt.sigma_s_scan = p->sigma_s_scan;
  c.dt.sigma_r = p->sigma_r;
  c.dt.beta = p->beta;
  c.dt.iterations = p->dt_iterations;
  c.dt.rounds = p->rounds;
  c.dt.occl_rx = p->occl_rx;
  c.dt.occl_ry = p->occl_ry;
  c.dt.occl_rel = p->occl_rel;
  c.dt.generic = c.generic;
  c.dt.baseline_isa = c.baseline_isa;
  return c;
}

size_t PropagateBytes(const psd_frame_desc* desc, const psd_propagation_params* params,
                      bool has_ip) {
  const k::PropagationShape s = ToShape(desc);
  const k::PropagationConfig c = ToConfig(params, nullptr, false);
  k::ValidatePropagation(s, c);
  psd::Workspace ws(nullptr, 0);
  k::PlanPropagation(ws, s, c, has_ip);
  return ws.used();
}

}  // namespace

namespace psd {
namespace capi {
// The session code (runtime/capi/session.cpp) reports through the same thread-local string.
void SetLastError(const std::string& message) { g_last_error = message; }
}  // namespace capi
}  // namespace psd

#define PSD_CAPI_GUARD(...)                                                    \
  try {                                                                        \
    __VA_ARGS__;                                                                   \
    return PSD_OK;                                                             \
  } catch (const psd::NullPointer& e) {                                        \
    return Fail(PSD_E_NULL_POINTER, e.what());                                 \
  } catch (const psd::ShapeMismatch& e) {                                      \
    return Fail(PSD_E_SHAPE_MISMATCH, e.what());                               \
  } catch (const psd::InvalidArgument& e) {                                    \
    return Fail(PSD_E_INVALID_ARGUMENT, e.what());                             \
  } catch (const psd::WorkspaceTooSmall& e) {                                  \
    return Fail(PSD_E_WORKSPACE_TOO_SMALL, e.what());                          \
  } catch (const psd::NotBuiltWithCuda& e) {                                   \
    return Fail(PSD_E_NOT_BUILT_WITH_CUDA, e.what());                          \
  } catch (const psd::CudaError& e) {                                          \
    return Fail(PSD_E_CUDA, e.what());                                         \
  } catch (const std::bad_alloc&) {                                            \
    return Fail(PSD_E_OUT_OF_MEMORY, "out of host memory");                    \
  } catch (const std::exception& e) {                                          \
    return Fail(PSD_E_INTERNAL, e.what());                                     \
  } catch (...) {                                                              \
    return Fail(PSD_E_INTERNAL, "unknown C++ exception");                      \
  }

extern "C" {

PSD_API uint32_t psd_abi_version(void) { return PSD_ABI_VERSION; }

PSD_API const char* psd_last_error(void) { return g_last_error.c_str(); }

PSD_API const char* psd_status_string(psd_status_t status) {
  switch (status) {
    case PSD_OK: return "PSD_OK";
    case PSD_E_INVALID_ARGUMENT: return "PSD_E_INVALID_ARGUMENT";
    case PSD_E_NULL_POINTER: return "PSD_E_NULL_POINTER";
    case PSD_E_SHAPE_MISMATCH: return "PSD_E_SHAPE_MISMATCH";
    case PSD_E_WORKSPACE_TOO_SMALL: return "PSD_E_WORKSPACE_TOO_SMALL";
    case PSD_E_OUT_OF_MEMORY: return "PSD_E_OUT_OF_MEMORY";
    case PSD_E_NOT_BUILT_WITH_CUDA: return "PSD_E_NOT_BUILT_WITH_CUDA";
    case PSD_E_CUDA: return "PSD_E_CUDA";
    case PSD_E_INTERNAL: return "PSD_E_INTERNAL";
    case PSD_E_UNSUPPORTED: return "PSD_E_UNSUPPORTED";
    case PSD_E_ARTIFACT: return "PSD_E_ARTIFACT";
    case PSD_E_BACKEND_UNAVAILABLE: return "PSD_E_BACKEND_UNAVAILABLE";
    case PSD_E_BACKEND: return "PSD_E_BACKEND";
    default: return "PSD_E_UNKNOWN";
  }
}

PSD_API const char* psd_cpu_isa(void) {
  switch (psd::kernels::MaxCpuIsa()) {
    case psd::kernels::CpuIsa::kAvx512: return "avx512";
    case psd::kernels::CpuIsa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

PSD_API psd_status_t psd_build_info(uint32_t* flags) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE_PTR(flags);
    uint32_t f = 0;
#if defined(PSD_WITH_CUDA)
    f |= PSD_BUILD_CUDA;
#endif
#if defined(_OPENMP)
    f |= PSD_BUILD_OPENMP;
#endif
#if defined(PSD_SANITIZE)
    f |= PSD_BUILD_SANITIZE;
#endif
#if defined(PSD_CUDA_EMULATION)
    f |= PSD_BUILD_CUDA_EMULATION;
#endif
    *flags = f;
  })
}

PSD_API psd_status_t psd_cuda_device_count(int32_t* device_count, int32_t* cuda_error) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE_PTR(device_count);
    PSD_REQUIRE_PTR(cuda_error);
#if defined(PSD_WITH_CUDA)
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    *cuda_error = static_cast<int32_t>(e);
    *device_count = e == cudaSuccess ? n : 0;
#else
    *cuda_error = -1;
    *device_count = 0;
#endif
  })
}

PSD_API psd_status_t psd_cuda_stream_wait(psd_stream_t consumer, psd_stream_t producer) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE(producer != nullptr, InvalidArgument,
                "producer stream 0 is ambiguous (the protocols forbid it); give 1 (legacy default stream), 2 "
                "(per-thread default stream) or a cudaStream_t");
#if defined(PSD_WITH_CUDA)
    const cudaStream_t c = consumer ? static_cast<cudaStream_t>(consumer) : cudaStreamPerThread;
    const cudaStream_t p = static_cast<cudaStream_t>(producer);
    if (c == p) return PSD_OK;  // a stream is ordered with itself
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(ev, p);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(c, ev, 0);
    if (ev) cudaEventDestroy(ev);  // released once the wait has been satisfied
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw psd::CudaError(std::string("psd_cuda_stream_wait: ") + cudaGetErrorName(e) + " (" +
                               cudaGetErrorString(e) + ")",
                           static_cast<int>(e));
    }
#else
    (void)consumer;
    throw psd::NotBuiltWithCuda("psd_cuda_stream_wait needs the CUDA build of the library");
#endif
  })
}

PSD_API psd_status_t psd_check_intrinsics(const double* K, int64_t height, int64_t width) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE(K != nullptr, NullPointer, "null pointer: K (3x3 intrinsics)");
    auto num = [](double v) {
      char b[64];
      std::snprintf(b, sizeof b, "%.6g", v);
      return std::string(b);
    };
    for (int i = 0; i < 9; ++i)
      PSD_REQUIRE(std::isfinite(K[i]), InvalidArgument, "intrinsics K contains NaN or Inf; fix the calibration file");
    const double fx = K[0], skew = K[1], cx = K[2], k10 = K[3], fy = K[4], cy = K[5];
    auto close = [](double a, double b) { return std::fabs(a - b) <= 1e-8 + 1e-5 * std::fabs(b); };
    PSD_REQUIRE(close(K[6], 0.0) && close(K[7], 0.0) && close(K[8], 1.0), InvalidArgument,
                "intrinsics K bottom row is [" + num(K[6]) + ", " + num(K[7]) + ", " + num(K[8]) +
                    "], expected [0, 0, 1]; normalise K by K[2, 2]");
    PSD_REQUIRE(fx > 0 && fy > 0, InvalidArgument,
                "intrinsics K has non-positive focal lengths fx=" + num(fx) + ", fy=" + num(fy) +
                    "; focal lengths are in pixels and must be > 0");
    const double det = K[0] * (K[4] * K[8] - K[5] * K[7]) - K[1] * (K[3] * K[8] - K[5] * K[6]) +
                       K[2] * (K[3] * K[7] - K[4] * K[6]);
    PSD_REQUIRE(std::fabs(det) >= 1e-12, InvalidArgument,
                "intrinsics K is singular; fix the calibration (fx, fy must be non-zero)");
    PSD_REQUIRE(close(k10, 0.0), InvalidArgument,
                "intrinsics K[1, 0] is " + num(k10) + ", expected 0: a pinhole K is upper triangular "
                "[[fx, s, cx], [0, fy, cy], [0, 0, 1]]; is the matrix transposed?");
    PSD_REQUIRE(std::fabs(skew) <= fx, InvalidArgument,
                "intrinsics K skew K[0, 1] = " + num(skew) + " exceeds fx = " + num(fx) +
                    " (psdrt accepts |skew| <= fx; real cameras have 0); fix the calibration");
    PSD_REQUIRE(fy >= fx / 5.0 && fy <= fx * 5.0, InvalidArgument,
                "intrinsics K focal lengths fx=" + num(fx) + ", fy=" + num(fy) +
                    " differ by more than 5x (psdrt accepts fy/fx in [1/5, 5]); fx and fy are in pixels of the "
                    "same image: fix the calibration");
    if (height > 0 && width > 0) {
      const double side = static_cast<double>(height > width ? height : width);
      PSD_REQUIRE(fx >= 0.01 * side && fx <= 1000.0 * side && fy >= 0.01 * side && fy <= 1000.0 * side,
                  InvalidArgument,
                  "intrinsics K focal lengths fx=" + num(fx) + ", fy=" + num(fy) + " are implausible for a " +
                      std::to_string(width) + "x" + std::to_string(height) +
                      " image (psdrt accepts 0.01 to 1000 times the longer side, " + num(0.01 * side) + " to " +
                      num(1000.0 * side) + " pixels); K is probably in other units or for another resolution");
      PSD_REQUIRE(cx >= 0 && cx <= static_cast<double>(width) && cy >= 0 && cy <= static_cast<double>(height),
                  InvalidArgument,
                  "principal point (" + num(cx) + ", " + num(cy) + ") is outside the " + std::to_string(width) +
                      "x" + std::to_string(height) +
                      " image; K is probably for another resolution: scale fx, cx by the width ratio and fy, cy "
                      "by the height ratio (and shift cx, cy by any crop offset)");
    }
  })
}

PSD_API psd_status_t psd_check_frame_size(int32_t mode, int64_t height, int64_t width) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE(mode >= 0 && mode <= 3, InvalidArgument,
                "mode must be 0 (any), 1 (psd), 2 (propagate) or 3 (guided)");
    const std::string hw = std::to_string(height) + "x" + std::to_string(width) + " (HxW)";
    PSD_REQUIRE(height >= 4 && width >= 4 && height <= 32768 && width <= 32768, ShapeMismatch,
                "frame size " + hw + " is out of range: both sides must be in [4, 32768]");
    PSD_REQUIRE(mode != 1 || (height >= 17 && width >= 17), ShapeMismatch,
                "frame size " + hw + " is too small for psd mode: both sides must be >= 17 (the correction "
                "head's 1/16 level); upsample the frame (and scale K), or use mode guided");
    const int64_t lo = height < width ? height : width, hi = height < width ? width : height;
    PSD_REQUIRE((mode != 1 && mode != 2) || hi <= 10 * lo, ShapeMismatch,
                "frame size " + hw + " has an aspect ratio over 10:1, which would run the foundation model on a "
                "huge input (both sides >= its lower bound); crop the frame into pieces of at most 10:1, or use "
                "mode guided");
  })
}

PSD_API psd_status_t psd_prepare_sparse(int64_t height, int64_t width, const float* sparse, int64_t stride,
                                        float* scratch, float* out, psd_sparse_stats* stats) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE_PTR(sparse);
    PSD_REQUIRE_PTR(scratch);
    PSD_REQUIRE_PTR(out);
    PSD_REQUIRE(scratch != out && scratch != sparse, InvalidArgument, "scratch must not alias sparse or out");
    PSD_REQUIRE_PTR(stats);
    PSD_REQUIRE(stats->struct_size >= sizeof(psd_sparse_stats), InvalidArgument,
                "stats->struct_size must be sizeof(psd_sparse_stats)");
    PSD_REQUIRE(height > 0 && width > 0, ShapeMismatch, "sparse depth must be at least 1 x 1");
    const int64_t row = width * static_cast<int64_t>(sizeof(float));
    const int64_t pitch = stride == 0 ? row : stride;
    PSD_REQUIRE(pitch >= row && pitch % static_cast<int64_t>(sizeof(float)) == 0, ShapeMismatch,
                "sparse stride must be >= 4 * width and a multiple of 4 bytes (0 = packed)");
    const int64_t n = height * width;
    bool bad = false, neg = false;
    int64_t in_range = 0, rejected_range = 0;
    for (int64_t y = 0; y < height; ++y) {
      const float* r = reinterpret_cast<const float*>(reinterpret_cast<const char*>(sparse) + y * pitch);
      float* o = out + y * width;
      for (int64_t x = 0; x < width; ++x) {
        const float v = r[x];
        bad |= !std::isfinite(v);
        neg |= v < 0.0f;
        float keep = 0.0f;
        if (v > 0.0f) {
          if (v >= static_cast<float>(PSD_SPARSE_MIN_M) && v <= static_cast<float>(PSD_SPARSE_MAX_M)) {
            keep = v;
            scratch[in_range++] = v;
          } else {
            ++rejected_range;
          }
        }
        o[x] = keep;  // out may alias a packed `sparse`: v was read first
      }
    }
    PSD_REQUIRE(!bad, InvalidArgument, "sparse depth contains NaN or Inf; mark missing pixels with 0 instead");
    PSD_REQUIRE(!neg, InvalidArgument,
                "sparse depth contains negative values; depths are metres >= 0 with 0 = missing");
    PSD_REQUIRE(in_range > 0 || rejected_range > 0, InvalidArgument,
                "sparse depth has no valid point (all zeros); at least one measurement is needed to fix the "
                "metric scale");
    PSD_REQUIRE(in_range > 0, InvalidArgument,
                "sparse depth has no point within [0.001, 10000] m (" + std::to_string(rejected_range) +
                    " points outside): depths must be metres; convert millimetres (/ 1000) or a PNG's stored "
                    "units (e.g. / 256 for KITTI) first");
    // the lower median, as torch.median; in place in the caller's scratch (no allocation)
    const double median = psd::SelectKth(scratch, in_range, (in_range - 1) / 2);
    const double hi = median * PSD_SPARSE_OUTLIER_RATIO, lo = median / PSD_SPARSE_OUTLIER_RATIO;
    int64_t outliers = 0, points = 0;
    double dmin = INFINITY, dmax = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const double v = out[i];
      if (v <= 0.0) continue;
      if (v > hi || v < lo) {
        out[i] = 0.0f;
        ++outliers;
        continue;
      }
      ++points;
      dmin = v < dmin ? v : dmin;
      dmax = v > dmax ? v : dmax;
    }
    int64_t interior = 0;
    for (int64_t i = 0; i < n; ++i) interior += (out[i] > dmin && out[i] < dmax) ? 1 : 0;
    stats->points = points;
    stats->interior = interior;
    stats->rejected_range = rejected_range;
    stats->rejected_outliers = outliers;
    stats->dmin = dmin;
    stats->dmax = dmax;
    stats->median = median;
  })
}

PSD_API psd_status_t psd_guard_depth(int64_t height, int64_t width, double dmin, double dmax, float* depth,
                                     int64_t* clamped) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE_PTR(depth);
    PSD_REQUIRE(height > 0 && width > 0, ShapeMismatch, "depth must be at least 1 x 1");
    PSD_REQUIRE(std::isfinite(dmin) && std::isfinite(dmax) && dmin > 0 && dmax >= dmin, InvalidArgument,
                "dmin, dmax must be finite with 0 < dmin <= dmax (psd_sparse_stats of the frame)");
    const float lo = static_cast<float>(PSD_DEPTH_GUARD_LOW * dmin), hi = static_cast<float>(PSD_DEPTH_GUARD_HIGH * dmax);
    int64_t k = 0;
    for (int64_t i = 0; i < height * width; ++i) {
      const float v = depth[i];
      if (!std::isfinite(v)) continue;  // a bug, not a range problem: the pipelines report it
      if (v < lo) {
        depth[i] = lo;
        ++k;
      } else if (v > hi) {
        depth[i] = hi;
        ++k;
      }
    }
    if (clamped) *clamped = k;
  })
}

PSD_API psd_status_t psd_fm_input_size(int64_t h, int64_t w, int64_t lower, int64_t multiple,
                                       int64_t* out_h, int64_t* out_w) {
  PSD_CAPI_GUARD(k::FmInputSize(h, w, lower, multiple, out_h, out_w))
}

PSD_API psd_status_t psd_propagate_workspace_size(psd_device_t device, const psd_frame_desc* desc,
                                                  const psd_propagation_params* params,
                                                  int32_t has_ip, size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    CheckDesc(desc);
    CheckParams(params);
    PSD_REQUIRE_PTR(bytes);
    *bytes = PropagateBytes(desc, params, has_ip != 0);
  })
}

PSD_API psd_status_t psd_propagate(psd_device_t device, const psd_frame_desc* desc,
                                   const psd_propagation_params* params, const float* rel_inv,
                                   const float* sparse, const float* ip, const float* cam_params,
                                   const float* feat, void* workspace, size_t workspace_bytes,
                                   psd_stream_t stream, float* depth_diff, float* depth_polyfit) {
  PSD_CAPI_GUARD({
    const Device d = ToDevice(device);
    CheckDesc(desc);
    CheckParams(params);
    PSD_REQUIRE_PTR(rel_inv);
    PSD_REQUIRE_PTR(sparse);
    PSD_REQUIRE_PTR(feat);
    PSD_REQUIRE_PTR(depth_diff);
    PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
    PSD_REQUIRE(depth_diff != sparse && depth_diff != rel_inv && depth_diff != feat &&
                    depth_diff != ip && (depth_polyfit == nullptr || depth_polyfit != depth_diff),
                InvalidArgument, "outputs must not alias inputs or each other");
    const k::PropagationShape s = ToShape(desc);
    const k::PropagationConfig c = ToConfig(params, cam_params, true);
    k::ValidatePropagation(s, c);
    const size_t need = PropagateBytes(desc, params, ip != nullptr);
    PSD_REQUIRE(workspace_bytes >= need, WorkspaceTooSmall,
                "workspace too small: need " + std::to_string(need) + " bytes, got " +
                    std::to_string(workspace_bytes) + "; use psd_propagate_workspace_size");
    psd::Workspace ws(workspace, workspace_bytes);
    const k::PropagationBuffers b = k::PlanPropagation(ws, s, c, ip != nullptr);
    if (d == Device::kCpu)
      k::DualPropagation<Device::kCpu>(s, c, b, rel_inv, sparse, ip, feat, depth_diff,
                                       depth_polyfit, stream);
    else
      PSD_CUDA_CALL(k::DualPropagation<Device::kCuda>, s, c, b, rel_inv, sparse, ip, feat,
                    depth_diff, depth_polyfit, stream);
  })
}

PSD_API psd_status_t psd_post_process_workspace_size(psd_device_t device, const psd_frame_desc* desc,
                                                     int64_t channels, int32_t iterations,
                                                     size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    CheckDesc(desc);
    PSD_REQUIRE_PTR(bytes);
    PSD_REQUIRE(channels > 0, InvalidArgument, "channels must be > 0 (official 32)");
    const k::PostShape s{desc->height, desc->width, desc->feat_channels, desc->feat_height,
                         desc->feat_width, channels};
    psd::Workspace ws(nullptr, 0);
    k::PlanPost(ws, s, iterations);
    *bytes = iterations > 0 ? ws.used() : 0;
  })
}

PSD_API psd_status_t psd_post_process(psd_device_t device, const psd_frame_desc* desc,
                                      int64_t channels, int32_t iterations, const float* fd0,
                                      const float* dense, const float* sparse, void* workspace,
                                      size_t workspace_bytes, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD({
    const Device d = ToDevice(device);
    CheckDesc(desc);
    PSD_REQUIRE_PTR(dense);
    PSD_REQUIRE_PTR(sparse);
    PSD_REQUIRE_PTR(out);
    PSD_REQUIRE(out != sparse, InvalidArgument, "out must not alias sparse");
    PSD_REQUIRE(desc->height > 0 && desc->width > 0, ShapeMismatch, "H and W must be > 0");
    PSD_REQUIRE(channels > 0, InvalidArgument, "channels must be > 0 (official 32)");
    const k::PostShape s{desc->height, desc->width, desc->feat_channels, desc->feat_height,
                         desc->feat_width, channels};
    k::PostBuffers b{};
    if (iterations > 0) {
      PSD_REQUIRE_PTR(fd0);
      PSD_REQUIRE(s.feat_c > 0 && s.feat_h > 0 && s.feat_w > 0, ShapeMismatch,
                  "fd0 dimensions must be > 0");
      PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
      psd::Workspace ws(workspace, workspace_bytes);
      b = k::PlanPost(ws, s, iterations);
    }
    if (d == Device::kCpu)
      k::PostProcess<Device::kCpu>(s, iterations, b, fd0, dense, sparse, out, stream);
    else
      PSD_CUDA_CALL(k::PostProcess<Device::kCuda>, s, iterations, b, fd0, dense, sparse, out,
                    stream);
  })
}

PSD_API psd_status_t psd_align_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                              size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    PSD_REQUIRE(height > 0 && width > 0, ShapeMismatch, "H and W must be > 0");
    *bytes = k::AlignWorkspaceBytes(height, width);
  })
}

PSD_API psd_status_t psd_align_inverse_ls(psd_device_t device, int64_t height, int64_t width,
                                          const float* rel_inv, const float* sparse,
                                          void* workspace, size_t workspace_bytes,
                                          psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::AlignChecked(ToDevice(device), false, rel_inv, sparse, height, width,
                                 workspace, workspace_bytes, out, stream))
}

PSD_API psd_status_t psd_align_median(psd_device_t device, int64_t height, int64_t width,
                                      const float* ip, const float* sparse, void* workspace,
                                      size_t workspace_bytes, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::AlignChecked(ToDevice(device), true, ip, sparse, height, width, workspace,
                                 workspace_bytes, out, stream))
}

PSD_API psd_status_t psd_ip_basic_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                                 size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    *bytes = k::IpBasicWorkspaceBytes(height, width);
  })
}

PSD_API psd_status_t psd_ip_basic(psd_device_t device, int64_t height, int64_t width, const float* sparse,
                                  void* workspace, size_t workspace_bytes, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::IpBasicChecked(ToDevice(device), sparse, height, width, workspace, workspace_bytes, out,
                                   stream))
}

PSD_API psd_status_t psd_resize(psd_device_t device, int32_t mode, int64_t channels, int64_t in_h,
                                int64_t in_w, int64_t out_h, int64_t out_w, const float* in,
                                psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::Resize(ToDevice(device), static_cast<k::ResizeMode>(mode), in, channels,
                           in_h, in_w, out, out_h, out_w, stream))
}

PSD_API psd_status_t psd_sparse_pool(psd_device_t device, int64_t height, int64_t width,
                                     const float* sparse, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::SparsePool4(ToDevice(device), sparse, height, width, out, stream))
}

PSD_API psd_status_t psd_project_points(psd_device_t device, int64_t n, int64_t stride,
                                        const float* points, const double* T, const double* K,
                                        int64_t height, int64_t width, double min_depth,
                                        double max_depth, psd_stream_t stream, float* out) {
  // the one K rule first (psd_check_intrinsics), then the projection's own checks
  const psd_status_t st = psd_check_intrinsics(K, height, width);
  if (st != PSD_OK) return st;
  PSD_CAPI_GUARD(k::ProjectPointsChecked(ToDevice(device), points, n, stride, T, K, height, width,
                                         min_depth, max_depth, out, stream))
}

PSD_API psd_status_t psd_occlusion_filter(psd_device_t device, int64_t height, int64_t width,
                                          const float* sparse, int32_t rx, int32_t ry, double rel,
                                          psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::OcclusionFilterChecked(ToDevice(device), sparse, height, width, rx, ry, rel, out,
                                           stream))
}

PSD_API psd_status_t psd_backproject(psd_device_t device, int32_t camera, int64_t height,
                                     int64_t width, const float* depth, const float* cam_params,
                                     psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::BackprojectChecked(ToDevice(device), camera, depth, height, width, cam_params,
                                       out, stream))
}

PSD_API psd_status_t psd_compress_workspace_size(psd_device_t device, int64_t in_h, int64_t in_w,
                                                 int64_t out_channels, size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    PSD_REQUIRE(in_h > 0 && in_w > 0 && out_channels > 0, ShapeMismatch, "sizes must be > 0");
    *bytes = static_cast<size_t>(out_channels * in_h * in_w) * sizeof(float);
  })
}

PSD_API psd_status_t psd_compress_channels(psd_device_t device, int64_t in_channels, int64_t in_h,
                                           int64_t in_w, int64_t out_channels, int64_t out_h,
                                           int64_t out_w, const float* in, void* workspace,
                                           size_t workspace_bytes, psd_stream_t stream,
                                           float* out) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
    PSD_REQUIRE(out_channels > 0 && in_h > 0 && in_w > 0, ShapeMismatch, "sizes must be > 0");
    PSD_REQUIRE(workspace_bytes >= static_cast<size_t>(out_channels * in_h * in_w) * sizeof(float),
                WorkspaceTooSmall, "workspace too small; use psd_compress_workspace_size");
    k::CompressChannels(ToDevice(device), in, in_channels, in_h, in_w, out, out_channels, out_h,
                        out_w, static_cast<float*>(workspace), stream);
  })
}

PSD_API psd_status_t psd_knn_workspace_size(psd_device_t device, int64_t channels, int64_t height,
                                            int64_t width, size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    PSD_REQUIRE(channels > 0 && height > 0 && width > 0, ShapeMismatch, "sizes must be > 0");
    *bytes = k::KnnWorkspaceBytes(channels, height, width);
  })
}

PSD_API psd_status_t psd_knn_propagate(psd_device_t device, const psd_propagation_params* params,
                                       int64_t channels, int64_t height, int64_t width,
                                       const float* feat, const float* points, const float* init,
                                       const float* sparse4, void* workspace,
                                       size_t workspace_bytes, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD({
    const Device d = ToDevice(device);
    CheckParams(params);
    k::KnnChecked(d, feat, channels, points, init, sparse4, height, width, ToKnn(params),
                  workspace, workspace_bytes, out, stream);
  })
}

PSD_API psd_status_t psd_cspn_workspace_size(psd_device_t device, int64_t channels, int64_t height,
                                             int64_t width, size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    PSD_REQUIRE(channels > 0 && height > 0 && width > 0, ShapeMismatch, "sizes must be > 0");
    *bytes = static_cast<size_t>(k::CspnWorkspaceFloats(channels, height, width)) * sizeof(float);
  })
}

PSD_API psd_status_t psd_cspn(psd_device_t device, int64_t channels, int64_t height, int64_t width,
                              int32_t iterations, const float* sparse, const float* dense,
                              const float* feat, void* workspace, size_t workspace_bytes,
                              psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::CspnChecked(ToDevice(device), sparse, dense, feat, channels, height, width,
                                iterations, static_cast<float*>(workspace),
                                static_cast<int64_t>(workspace_bytes / sizeof(float)), out,
                                stream))
}

PSD_API psd_status_t psd_preprocess_rgb(psd_device_t device, int64_t height, int64_t width,
                                        int32_t bgr, int64_t out_h, int64_t out_w,
                                        const uint8_t* rgb, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::PreprocessChecked(ToDevice(device), rgb, height, width, bgr != 0, out, out_h,
                                      out_w, stream))
}

PSD_API psd_status_t psd_preprocess_workspace_size(psd_device_t device, int32_t method, int64_t height,
                                                   int64_t width, int64_t out_h, int64_t out_w, size_t* bytes) {
  PSD_CAPI_GUARD({
    ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    *bytes = k::PreprocessWorkspaceBytes(method, height, width, out_h, out_w);
  })
}

PSD_API psd_status_t psd_preprocess(psd_device_t device, int32_t method, int64_t height, int64_t width,
                                    int32_t bgr, int64_t out_h, int64_t out_w, const uint8_t* rgb,
                                    void* workspace, size_t workspace_bytes, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::PreprocessMethodChecked(ToDevice(device), method, rgb, height, width, bgr != 0, out, out_h,
                                            out_w, workspace, workspace_bytes, stream))
}

PSD_API psd_status_t psd_guided_params_init(psd_guided_params* params) {
  PSD_CAPI_GUARD({
    PSD_REQUIRE_PTR(params);
    const k::GuidedConfig c;
    *params = psd_guided_params{};
    params->struct_size = sizeof(psd_guided_params);
    params->channels = c.channels;
    params->colour_scale = c.colour_scale;
    params->levels = c.levels;
    params->iterations = c.iterations;
    params->method = c.method;
    params->kind = c.dt.kind;
    params->lambda = c.dt.lambda;
    params->sigma_s = c.dt.sigma_s;
    params->sigma_s_scan = c.dt.sigma_s_scan;
    params->sigma_r = c.dt.sigma_r;
    params->beta = c.dt.beta;
    params->dt_iterations = c.dt.iterations;
    params->rounds = c.dt.rounds;
    params->occl_rx = c.dt.occl_rx;
    params->occl_ry = c.dt.occl_ry;
    params->occl_rel = c.dt.occl_rel;
  })
}

PSD_API psd_status_t psd_guided_workspace_size(psd_device_t device, int64_t height, int64_t width,
                                               const psd_guided_params* params, size_t* bytes) {
  PSD_CAPI_GUARD({
    const Device d = ToDevice(device);
    PSD_REQUIRE_PTR(bytes);
    *bytes = k::GuidedWorkspaceBytes(d, height, width, ToGuided(params));
  })
}

PSD_API psd_status_t psd_guided(psd_device_t device, int64_t height, int64_t width,
                                const psd_guided_params* params, const uint8_t* rgb, int32_t bgr,
                                const float* sparse, void* workspace, size_t workspace_bytes,
                                psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::GuidedChecked(ToDevice(device), height, width, ToGuided(params), rgb, bgr != 0,
                                  sparse, workspace, workspace_bytes, out, stream))
}

PSD_API psd_status_t psd_guided_features(psd_device_t device, int64_t height, int64_t width,
                                         const psd_guided_params* params, const uint8_t* rgb,
                                         int32_t bgr, psd_stream_t stream, float* out) {
  PSD_CAPI_GUARD(k::GuidedFeaturesChecked(ToDevice(device), height, width, ToGuided(params), rgb,
                                          bgr != 0, out, stream))
}

}  // extern "C"
