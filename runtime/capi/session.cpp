// psd_session_*: the whole per-frame pipeline behind the C ABI (psd.h, "sessions").
//
// The orchestration mirrors psdrt.runtime.pipeline.Pipeline.__call__ step by step and calls the
// same kernels through their C entry points (psd_preprocess, psd_propagate,
// psd_post_process, ...); the networks run behind InferenceBackend (ort_backend.cpp,
// trt_backend.cpp; test_backend.cpp is the test fixture). Every buffer is allocated at create (or
// at the first frame of a size in guided mode), so a warm psd_session_run allocates nothing.
// CUDA graphs (options.cuda_graph): psd_session_enqueue's device frame is captured once per input
// geometry and replayed (RunGraphFrame).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <algorithm>
#include <array>
#include <new>
#include <string>
#include <vector>

#include "guided_projection.h"
#include "session_internal.h"

#if defined(PSD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

using psd::capi::ArtifactSelection;
using psd::capi::BackendConfig;
using psd::capi::Error;
using psd::capi::InferenceBackend;
using psd::capi::TensorSpec;
using psd::capi::Throw;

namespace {

constexpr int32_t kMaxThreads = 1024;  // psdrt.runtime.config.MAX_THREADS
constexpr int64_t kPostChannels = 32;  // Pipeline: kernels.post_process(..., channels=32)

const char* ModeName(int32_t m) {
  switch (m) {
    case PSD_SESSION_MODE_PSD: return "psd";
    case PSD_SESSION_MODE_PROPAGATE: return "propagate";
    case PSD_SESSION_MODE_GUIDED: return "guided";
    default: return "auto";
  }
}
const char* PrecisionName(int32_t p) {
  switch (p) {
    case PSD_PRECISION_FP16: return "fp16";
    case PSD_PRECISION_INT8: return "int8";
    default: return "fp32";
  }
}

int32_t PrecisionOf(const std::string& p) {
  return p == "fp32" ? PSD_PRECISION_FP32 : p == "fp16" ? PSD_PRECISION_FP16 : p == "int8" ? PSD_PRECISION_INT8 : -1;
}

// "fp32" | "fp16" | "int8" | "ENC+HEAD": the encoder's and the head's precision (the one parser of
// the spelling: sessions, psd_artifacts_read, Pipeline.from_artifacts through it).
void ParsePrecisionSpec(const std::string& spec, std::string* encoder, std::string* head) {
  const size_t plus = spec.find('+');
  *encoder = spec.substr(0, plus);
  *head = plus == std::string::npos ? spec : spec.substr(plus + 1);
  if (PrecisionOf(*encoder) < 0 || PrecisionOf(*head) < 0)
    Throw(PSD_E_INVALID_ARGUMENT, "unknown precision '" + spec + "'; use fp32, fp16 or int8, or ENC+HEAD for the "
                                  "encoder and the head apart (e.g. int8+fp32)");
}

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

template <typename F>
psd_status_t Guard(F&& f) {
  try {
    f();
    return PSD_OK;
  } catch (const Error& e) {
    psd::capi::SetLastError(e.what());
    return e.status;
  } catch (const std::bad_alloc&) {
    psd::capi::SetLastError("out of host memory: the session's buffers (they grow with H x W) do not fit; use a "
                            "smaller frame (split a large image into tiles) or free memory");
    return PSD_E_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    psd::capi::SetLastError(std::string("internal error: ") + e.what() + " (please report)");
    return PSD_E_INTERNAL;
  } catch (...) {
    psd::capi::SetLastError("unknown C++ exception (please report)");
    return PSD_E_INTERNAL;
  }
}

#if defined(PSD_WITH_CUDA)
void CudaCheck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // consumed here, so that the next call does not report it again
    Throw(PSD_E_CUDA, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
  }
}

// cudaMalloc'd memory freed with the session.
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Release(); }
  void Release() {
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
  void Resize(size_t n) {
    if (n <= bytes && p) return;
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
    CudaCheck(cudaMalloc(&p, n ? n : 1), "cudaMalloc");
    bytes = n;
  }
  float* f() const { return static_cast<float*>(p); }
};

// Page-locked host memory (cudaHostAlloc): the staging of psd_session_run's host frames on a CUDA
// session, allocated at the first frame of a size and kept, so that the copies are true
// asynchronous DMA (from pageable memory the runtime stages each copy through its own buffer and
// blocks the host).
struct PinnedBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { Release(); }
  void Release() {
    if (p) cudaFreeHost(p);
    p = nullptr;
    bytes = 0;
  }
  void Resize(size_t n) {
    if (n <= bytes && p) return;
    Release();
    CudaCheck(cudaHostAlloc(&p, n ? n : 1, cudaHostAllocDefault), "cudaHostAlloc (pinned staging)");
    bytes = n;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};
#endif

// A host buffer or a device buffer, by the session's device.
struct Buffer {
  std::vector<float> host;
#if defined(PSD_WITH_CUDA)
  DeviceBuffer dev;
#endif
  float* ptr = nullptr;
  int64_t count = 0;
  void Resize(int32_t device, int64_t n) {
    count = n;
#if defined(PSD_WITH_CUDA)
    if (device == PSD_DEVICE_CUDA) {
      dev.Resize(static_cast<size_t>(n) * sizeof(float));
      ptr = dev.f();
      return;
    }
#endif
    (void)device;
    host.assign(static_cast<size_t>(n > 0 ? n : 1), 0.0f);
    ptr = host.data();
  }
};

struct ValidFrame {
  int64_t h = 0, w = 0;
  const uint8_t* rgb = nullptr;  // contiguous H x W x 3 (the caller's or our copy)
  bool bgr = false;
  float K[9] = {0};  // float32 K as the kernels take it (Pipeline: float64 -> float32)
  int64_t points = 0, interior = 0;
  psd_sparse_stats stats{};  // psd_prepare_sparse's
};

}  // namespace

struct psd_session {
  int32_t mode = PSD_SESSION_MODE_GUIDED;
  int32_t device = PSD_DEVICE_CPU;
  int32_t precision = PSD_PRECISION_FP32;  // the encoder's
  int32_t head_precision = PSD_PRECISION_FP32;
  bool gate_approved = true;  // false: a latency-only session (PSD_ARTIFACTS_ALLOW_UNGATED, a failed gate)
  int32_t device_id = 0;
  psd_preset preset{};
  uint64_t seed = 0;
  int64_t height = 0, width = 0;  // 0 = any size (guided without artefacts)
  int64_t fm_h = 0, fm_w = 0, fm_lower = 392;
  int32_t preprocess = PSD_PREPROCESS_OFFICIAL;  // the manifest's
  int32_t guided_levels = 2, guided_iterations = 40;
  double guided_colour_scale = 10.0;
  std::vector<float> guided_w, guided_b;  // the projection (3 x C, C), copied at create
  psd_guided_params guided{};
  std::string artifact_dir, backend_desc;
  std::unique_ptr<InferenceBackend> encoder, head;

  // buffers of the working size (device memory for CUDA sessions)
  int64_t buf_h = 0, buf_w = 0;
  std::vector<uint8_t> rgb_host;  // contiguous copy of a strided host image
  std::vector<float> sparse_scratch;  // psd_prepare_sparse's workspace
  Buffer sparse, x, rel_inv, diff, depth_pix, fd0, depth;
  Buffer feat[4];
  Buffer ip;  // the IP-Basic fill (needs_ip presets)
  std::vector<uint8_t> ws_prop, ws_post, ws_guided, ws_pre, ws_ip;
  // the preset's propagation depends on the IP-Basic fill: rate < 1, a candidate cap or a mode
  // other than 3D-2D (Pipeline's test; psd_method.md §1.4)
  bool needs_ip = false;
  psd_frame_desc desc{};
  psd_frame_desc post_desc{};
  psd_propagation_params params{};
  int64_t feat_shape[4][3] = {{0}};
  int64_t fd0_shape[3] = {0, 0, 0};
  int64_t rel_shape[2] = {0, 0};
  std::mutex call;  // calls on one session are serialised (psd.h, thread safety)
  // per-stage times of the last call: host clock (CPU sessions) or CUDA events (CUDA ones)
  double stage_ms[PSD_STAGE_COUNT] = {0};
#if defined(PSD_WITH_CUDA)
  DeviceBuffer d_rgb, d_ws_prop, d_ws_post, d_ws_guided, d_ws_pre, d_ws_ip;
  PinnedBuffer pin_rgb, pin_sparse, pin_out;  // host frames: rgb, sparse and depth staging
  cudaStream_t stream = nullptr;  // staging of psd_session_run on the GPU
  // `done` is recorded at the end of every call on its stream and waited on at the start of the
  // next, so calls on different streams never overlap on the session's buffers.
  cudaEvent_t done = nullptr;
  // timing events: ev_start at the start of a call's device work, ev_stage[i] at the end of
  // stage i; stages_recorded lists the stages of the last call in order
  cudaEvent_t ev_start = nullptr;
  cudaEvent_t ev_stage[PSD_STAGE_COUNT] = {nullptr};
  std::vector<int> stages_recorded;
  bool timings_pending = false;  // the last call's events have not been read yet
  cudaGraphExec_t graph_exec = nullptr;  // the captured frame (options.cuda_graph), for graph_key
#endif
  // CUDA graphs of psd_session_enqueue (options.cuda_graph; psd.h "CUDA graphs")
  int32_t graph_state = PSD_CUDA_GRAPH_OFF;
  std::string graph_fallback;  // why plain launches (state FALLBACK)
  bool graph_warmed = false;   // the first (uncaptured) enqueue has run
  int64_t graph_nodes = 0, graph_captures = 0, graph_replays = 0;
  std::array<uint64_t, 20> graph_key{};  // the geometry graph_exec was captured for
  // bumped whenever a buffer of the session is (re)allocated: a graph holds their addresses
  uint64_t buffers_epoch = 0;

  psd_session() = default;
  psd_session(const psd_session&) = delete;
  psd_session& operator=(const psd_session&) = delete;
  ~psd_session() {
#if defined(PSD_WITH_CUDA)
    if (device == PSD_DEVICE_CUDA) {
      int prev = -1;
      if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
      cudaSetDevice(device_id);
      if (done) cudaEventSynchronize(done);  // nothing may still run when the buffers go
      if (stream) cudaStreamSynchronize(stream);
      if (graph_exec) cudaGraphExecDestroy(graph_exec);
      encoder.reset();
      head.reset();
      if (stream) cudaStreamDestroy(stream);
      if (done) cudaEventDestroy(done);
      if (ev_start) cudaEventDestroy(ev_start);
      for (cudaEvent_t e : ev_stage)
        if (e) cudaEventDestroy(e);
      d_rgb.Release();
      for (PinnedBuffer* b : {&pin_rgb, &pin_sparse, &pin_out}) b->Release();
      d_ws_prop.Release();
      d_ws_post.Release();
      d_ws_guided.Release();
      d_ws_pre.Release();
      d_ws_ip.Release();
      for (Buffer* b : {&sparse, &x, &rel_inv, &diff, &depth_pix, &fd0, &depth, &feat[0], &feat[1], &feat[2], &feat[3],
                        &ip})
        b->dev.Release();
      (void)cudaGetLastError();
      if (prev >= 0) cudaSetDevice(prev);
    }
#endif
  }
};

namespace {

void CheckStructSize(uint32_t got, size_t want, const char* name) {
  if (got < want)
    Throw(PSD_E_INVALID_ARGUMENT, std::string(name) + "->struct_size is " + std::to_string(got) +
                                      ", expected sizeof(" + name + ") = " + std::to_string(want) +
                                      "; set it (or use the *_init function) with this psd.h");
}

// ------------------------------------------------------------------ frame validation (host)
void ValidateK(const psd_frame_in* in, ValidFrame* f) {
  if (in->K == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: in->K (3x3 intrinsics)");
  if (in->K_dtype != PSD_DTYPE_FLOAT64 && in->K_dtype != PSD_DTYPE_FLOAT32)
    Throw(PSD_E_INVALID_ARGUMENT, "in->K_dtype must be PSD_DTYPE_FLOAT64 (0) or PSD_DTYPE_FLOAT32 (1)");
  double K[9];
  for (int i = 0; i < 9; ++i) {
    if (in->K_dtype == PSD_DTYPE_FLOAT64) {
      std::memcpy(&K[i], static_cast<const char*>(in->K) + i * sizeof(double), sizeof(double));
    } else {
      float v;
      std::memcpy(&v, static_cast<const char*>(in->K) + i * sizeof(float), sizeof(float));
      K[i] = v;
    }
  }
  // the one definition of a usable K (psd_check_intrinsics; Python's validate_intrinsics calls it too)
  const psd_status_t st = psd_check_intrinsics(K, f->h, f->w);
  if (st != PSD_OK) Throw(st, psd_last_error());
  for (int i = 0; i < 9; ++i) f->K[i] = static_cast<float>(K[i]);
}

int64_t Stride(int64_t given, int64_t min_bytes, int64_t h, int64_t elem, const char* name) {
  const int64_t s = given == 0 ? min_bytes : given;
  if (s < min_bytes)
    Throw(PSD_E_SHAPE_MISMATCH, std::string(name) + " is " + std::to_string(given) +
                                    " bytes, smaller than one row (" + std::to_string(min_bytes) +
                                    " bytes); pass the row pitch in bytes, or 0 for packed rows");
  if (s % elem != 0)
    Throw(PSD_E_SHAPE_MISMATCH, std::string(name) + " (" + std::to_string(s) + " bytes) must be a multiple of " +
                                    std::to_string(elem) + " bytes");
  if (s > std::numeric_limits<int64_t>::max() / (h + 1))
    Throw(PSD_E_SHAPE_MISMATCH, std::string(name) + " is implausibly large (" + std::to_string(s) + " bytes)");
  return s;
}

void CheckAligned(const void* p, size_t a, const char* name) {
  if (reinterpret_cast<uintptr_t>(p) % a != 0)
    Throw(PSD_E_INVALID_ARGUMENT, std::string(name) + " must be " + std::to_string(a) + "-byte aligned");
}

struct Strides {
  int64_t rgb, sparse, depth, mm;
};

// Pointers, sizes, strides and the session's size: everything but the pixel values.
Strides ValidateLayout(const psd_session* s, const psd_frame_in* in, const psd_frame_out* out,
                       bool device_pointers, ValidFrame* f) {
  if (in == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: in (psd_frame_in)");
  if (out == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: out (psd_frame_out)");
  CheckStructSize(in->struct_size, sizeof(psd_frame_in), "psd_frame_in");
  CheckStructSize(out->struct_size, PSD_FRAME_OUT_SIZE_V1, "psd_frame_out");  // older callers: no new fields
  if (in->flags & ~PSD_FRAME_BGR)
    Throw(PSD_E_INVALID_ARGUMENT, "in->flags has unknown bits; use 0 or PSD_FRAME_BGR");
  const int64_t h = in->height, w = in->width;
  const psd_status_t size_ok = psd_check_frame_size(s->mode, h, w);  // the one size rule
  if (size_ok != PSD_OK) Throw(size_ok, psd_last_error());
  if (s->height > 0 && (h != s->height || w != s->width)) {
    const std::string hw = std::to_string(h) + "x" + std::to_string(w);
    Throw(PSD_E_SHAPE_MISMATCH, "frame is " + hw + " but the artefacts were built for " +
                                    std::to_string(s->height) + "x" + std::to_string(s->width) +
                                    "; resize the frame, or rebuild with `psdrt build --size " + hw + "`");
  }
  if (in->rgb == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: in->rgb (H x W x 3 uint8)");
  if (in->sparse == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: in->sparse (H x W float32 metres)");
  if (out->depth == nullptr) Throw(PSD_E_NULL_POINTER, "null pointer: out->depth (H x W float32)");
  CheckAligned(in->sparse, alignof(float), "in->sparse");
  CheckAligned(out->depth, alignof(float), "out->depth");
  if (out->depth_mm) CheckAligned(out->depth_mm, alignof(uint16_t), "out->depth_mm");
  Strides st;
  st.rgb = Stride(in->rgb_stride, 3 * w, h, 1, "in->rgb_stride");
  st.sparse = Stride(in->sparse_stride, 4 * w, h, 4, "in->sparse_stride");
  st.depth = Stride(out->depth_stride, 4 * w, h, 4, "out->depth_stride");
  st.mm = out->depth_mm ? Stride(out->depth_mm_stride, 2 * w, h, 2, "out->depth_mm_stride") : 0;
  (void)device_pointers;
  f->h = h;
  f->w = w;
  f->bgr = (in->flags & PSD_FRAME_BGR) != 0;
  return st;
}

// Copies the sparse depth into `dst` (contiguous) through psd_prepare_sparse: the checks and
// the rejection rule of every pipeline (validate_frame calls it too).
void CopySparse(const psd_frame_in* in, int64_t stride, float* dst, std::vector<float>* scratch, ValidFrame* f) {
  f->stats = psd_sparse_stats{};
  f->stats.struct_size = sizeof(psd_sparse_stats);
  scratch->resize(static_cast<size_t>(f->h * f->w));  // allocates only for a new frame size
  const psd_status_t st = psd_prepare_sparse(f->h, f->w, in->sparse, stride, scratch->data(), dst, &f->stats);
  if (st != PSD_OK) Throw(st, psd_last_error());
  f->points = f->stats.points;
  f->interior = f->stats.interior;
}

void KernelOk(psd_status_t st, const char* what) { psd::capi::CheckKernel(st, what); }

// psd_ip_basic's input rule on the accepted sparse depth (a depth > PSD_IP_BASIC_MIN_M), checked
// on the host before any network runs: a CUDA fill could not report it (psd.h).
void CheckIpBasicInput(const psd_session* s, const ValidFrame& f) {
  if (!s->needs_ip || static_cast<float>(f.stats.dmax) > static_cast<float>(PSD_IP_BASIC_MIN_M)) return;
  char dmax[32];
  std::snprintf(dmax, sizeof dmax, "%.4g", f.stats.dmax);
  Throw(PSD_E_INVALID_ARGUMENT, std::string("preset '") + s->preset.name +
                                    "' fills the sparse depth with IP-Basic, which needs at least one sparse depth > "
                                    "0.1 m; the largest accepted depth of this frame is " + dmax +
                                    " m: check the units (metres: divide millimetres by 1000)");
}

// ------------------------------------------------------------------ buffers
void AllocateForSize(psd_session* s, int64_t h, int64_t w) {
  if (s->buf_h == h && s->buf_w == w) return;
  ++s->buffers_epoch;  // new addresses: a captured graph no longer applies
  const int32_t dev = s->device;
  s->sparse.Resize(dev, h * w);
  s->diff.Resize(dev, h * w);
  s->depth.Resize(dev, h * w);
  if (s->mode == PSD_SESSION_MODE_GUIDED) {
    size_t bytes = 0;
    KernelOk(psd_guided_workspace_size(static_cast<psd_device_t>(dev), h, w, &s->guided, &bytes), "guided mode");
#if defined(PSD_WITH_CUDA)
    if (dev == PSD_DEVICE_CUDA) s->d_ws_guided.Resize(bytes);
    else
#endif
      s->ws_guided.assign(bytes, 0);
  }
  s->buf_h = h;
  s->buf_w = w;
}

// Binds the networks to the buffers and sizes the kernels' workspaces (fixed working size).
void SetUpNetworks(psd_session* s) {
  const int64_t h = s->height, w = s->width;
  const int32_t dev = s->device;
  AllocateForSize(s, h, w);
  InferenceBackend& enc = *s->encoder;
  // encoder: rgb (1, 3, fm_h, fm_w) -> rel_inv (1, 1, h', w'), feat0..3 (1, C, h, w)
  const std::string where = " of " + s->artifact_dir + "'s encoder";
  if (enc.inputs().size() != 1 || enc.inputs()[0].shape.size() != 4 || enc.inputs()[0].shape[0] != 1 ||
      enc.inputs()[0].shape[1] != 3)
    Throw(PSD_E_ARTIFACT, "the encoder must have one input (1, 3, H, W)" + where +
                              "; rebuild the directory with `psdrt build`");
  const TensorSpec& xin = enc.inputs()[0];
  if (xin.shape[2] != s->fm_h || xin.shape[3] != s->fm_w)
    Throw(PSD_E_ARTIFACT, "the encoder input is " + std::to_string(xin.shape[2]) + "x" + std::to_string(xin.shape[3]) +
                              " but the working size " + std::to_string(h) + "x" + std::to_string(w) +
                              " with fm_lower " + std::to_string(s->fm_lower) + " needs " + std::to_string(s->fm_h) +
                              "x" + std::to_string(s->fm_w) + "; rebuild with `psdrt build --size " +
                              std::to_string(h) + "x" + std::to_string(w) + " --force`");
  s->x.Resize(dev, xin.count());
  size_t pre_bytes = 0;
  KernelOk(psd_preprocess_workspace_size(static_cast<psd_device_t>(dev), s->preprocess, h, w, s->fm_h, s->fm_w,
                                         &pre_bytes),
           "preprocess");
#if defined(PSD_WITH_CUDA)
  if (dev == PSD_DEVICE_CUDA) {
    if (pre_bytes) s->d_ws_pre.Resize(pre_bytes);
  } else
#endif
    s->ws_pre.assign(pre_bytes, 0);
  std::vector<std::string> names = {"rel_inv", "feat0", "feat1", "feat2", "feat3"};
  std::vector<float*> outs;
  for (size_t i = 0; i < names.size(); ++i) {
    const TensorSpec* spec = nullptr;
    for (const auto& o : enc.outputs())
      if (o.name == names[i]) spec = &o;
    if (!spec || spec->shape.size() != 4 || spec->shape[0] != 1 || (i == 0 && spec->shape[1] != 1))
      Throw(PSD_E_ARTIFACT, "the encoder has no output " + names[i] + " of shape (1, C, H, W)" + where +
                                "; rebuild the directory with `psdrt build`");
    Buffer& b = i == 0 ? s->rel_inv : s->feat[i - 1];
    b.Resize(dev, spec->count());
    outs.push_back(b.ptr);
    if (i == 0) {
      s->rel_shape[0] = spec->shape[2];
      s->rel_shape[1] = spec->shape[3];
    } else {
      for (int k = 0; k < 3; ++k) s->feat_shape[i - 1][k] = spec->shape[k + 1];
    }
  }
  enc.Bind({s->x.ptr}, names, outs);
  // propagation
  s->desc = psd_frame_desc{sizeof(psd_frame_desc), 0, h, w, s->rel_shape[0], s->rel_shape[1],
                           s->feat_shape[0][0], s->feat_shape[0][1], s->feat_shape[0][2]};
  s->params = psd_propagation_params{};
  s->params.struct_size = sizeof(psd_propagation_params);
  s->params.mode = s->preset.mode;
  s->params.camera = s->preset.camera;
  s->params.k = s->preset.k;
  s->params.rate = s->preset.rate;
  s->params.candidates = s->preset.candidates;
  s->params.seed = s->seed;
  s->params.iters_quarter = s->preset.iters_quarter;
  s->params.iters_full = s->preset.iters_full;
  size_t bytes = 0;
  KernelOk(psd_propagate_workspace_size(static_cast<psd_device_t>(dev), &s->desc, &s->params, s->needs_ip ? 1 : 0,
                                        &bytes),
           "propagation parameters");
#if defined(PSD_WITH_CUDA)
  if (dev == PSD_DEVICE_CUDA) s->d_ws_prop.Resize(bytes);
  else
#endif
    s->ws_prop.assign(bytes, 0);
  if (s->needs_ip) {  // the IP-Basic fill of every frame: its map and its workspace
    s->ip.Resize(dev, h * w);
    size_t ip_bytes = 0;
    KernelOk(psd_ip_basic_workspace_size(static_cast<psd_device_t>(dev), h, w, &ip_bytes), "IP-Basic fill");
#if defined(PSD_WITH_CUDA)
    if (dev == PSD_DEVICE_CUDA) s->d_ws_ip.Resize(ip_bytes);
    else
#endif
      s->ws_ip.assign(ip_bytes, 0);
  }
  if (s->mode != PSD_SESSION_MODE_PSD) return;
  // head: sparse, depth_diff (1, 1, H, W), feat0..3 -> depth_pix (1, 1, H, W), fd0 (1, C, h, w)
  InferenceBackend& hd = *s->head;
  std::vector<float*> ins;
  for (const TensorSpec& in : hd.inputs()) {
    const std::string& n = in.name;
    if (n == "sparse" || n == "depth_diff") {
      if (in.count() != h * w)
        Throw(PSD_E_ARTIFACT, "the head input " + n + " does not have the working size " + std::to_string(h) + "x" +
                                  std::to_string(w) + "; rebuild the directory with `psdrt build --force`");
      ins.push_back(n == "sparse" ? s->sparse.ptr : s->diff.ptr);
    } else if (n.size() == 5 && n.compare(0, 4, "feat") == 0 && n[4] >= '0' && n[4] <= '3') {
      const Buffer& b = s->feat[n[4] - '0'];
      if (in.count() != b.count)
        Throw(PSD_E_ARTIFACT, "the head input " + n + " does not match the encoder's output; rebuild the "
                                  "directory with `psdrt build --force`");
      ins.push_back(b.ptr);
    } else {
      Throw(PSD_E_ARTIFACT, "the head has an unexpected input '" + n + "'; rebuild the directory with `psdrt build`");
    }
  }
  const TensorSpec* dp = nullptr;
  const TensorSpec* f0 = nullptr;
  for (const auto& o : hd.outputs()) {
    if (o.name == "depth_pix") dp = &o;
    if (o.name == "fd0") f0 = &o;
  }
  if (!dp || dp->count() != h * w || !f0 || f0->shape.size() != 4 || f0->shape[0] != 1)
    Throw(PSD_E_ARTIFACT, "the head has no depth_pix (1, 1, H, W) / fd0 (1, C, h, w) outputs; rebuild the "
                          "directory with `psdrt build`");
  s->depth_pix.Resize(dev, dp->count());
  s->fd0.Resize(dev, f0->count());
  for (int k = 0; k < 3; ++k) s->fd0_shape[k] = f0->shape[k + 1];
  hd.Bind(ins, {"depth_pix", "fd0"}, {s->depth_pix.ptr, s->fd0.ptr});
  s->post_desc = psd_frame_desc{sizeof(psd_frame_desc), 0, h, w, 0, 0, s->fd0_shape[0], s->fd0_shape[1],
                                s->fd0_shape[2]};
  bytes = 0;
  KernelOk(psd_post_process_workspace_size(static_cast<psd_device_t>(dev), &s->post_desc, kPostChannels,
                                           s->preset.post_iters, &bytes),
           "post-processing parameters");
#if defined(PSD_WITH_CUDA)
  if (dev == PSD_DEVICE_CUDA) s->d_ws_post.Resize(bytes);
  else
#endif
    s->ws_post.assign(bytes, 0);
}

// ------------------------------------------------------------------ stage timing
// Per-stage times of one call: the host clock around each (synchronous) stage of a CPU session;
// CUDA events recorded on the call's stream between the stages of a CUDA session, read once the
// work has run (StageTimes), so they measure the device's execution, not the host's enqueue.
class StageTimer {
 public:
  // timed = false: a CUDA frame being captured into a graph records no events (an event recorded
  // during capture does not measure the replays); its times come from RunGraphFrame.
  StageTimer(psd_session* s, void* stream, bool timed = true)
      : s_(s), stream_(stream), timed_(timed), last_(std::chrono::steady_clock::now()) {
#if defined(PSD_WITH_CUDA)
    if (s->device == PSD_DEVICE_CUDA && timed_) {
      s->stages_recorded.clear();
      s->timings_pending = true;
      CudaCheck(cudaEventRecord(s->ev_start, static_cast<cudaStream_t>(stream)), "cudaEventRecord");
    }
#endif
  }
  // The stage that just ended.
  void Mark(int stage) {
#if defined(PSD_WITH_CUDA)
    if (s_->device == PSD_DEVICE_CUDA) {
      if (!timed_) return;
      CudaCheck(cudaEventRecord(s_->ev_stage[stage], static_cast<cudaStream_t>(stream_)), "cudaEventRecord");
      s_->stages_recorded.push_back(stage);
      return;
    }
#endif
    const auto now = std::chrono::steady_clock::now();
    s_->stage_ms[stage] = Ms(last_, now);
    last_ = now;
  }

 private:
  psd_session* s_;
  void* stream_;
  bool timed_;
  std::chrono::steady_clock::time_point last_;
};

// Waits for the last call's device work and turns its events into s->stage_ms (CUDA sessions;
// a no-op otherwise). TOTAL of a CUDA call is its device time, from the first to the last event.
void StageTimes(psd_session* s) {
#if defined(PSD_WITH_CUDA)
  if (s->device != PSD_DEVICE_CUDA || !s->timings_pending) return;
  CudaCheck(cudaEventSynchronize(s->done), "cudaEventSynchronize");  // the whole call, output copy included
  cudaEvent_t prev = s->ev_start;
  for (int stage : s->stages_recorded) {
    CudaCheck(cudaEventSynchronize(s->ev_stage[stage]), "cudaEventSynchronize");
    float ms = 0.f;
    CudaCheck(cudaEventElapsedTime(&ms, prev, s->ev_stage[stage]), "cudaEventElapsedTime");
    s->stage_ms[stage] = ms;
    prev = s->ev_stage[stage];
  }
  float total = 0.f;
  if (prev != s->ev_start) CudaCheck(cudaEventElapsedTime(&total, s->ev_start, prev), "cudaEventElapsedTime");
  s->stage_ms[PSD_STAGE_TOTAL] = total;
  s->timings_pending = false;
#else
  (void)s;
#endif
}

// ------------------------------------------------------------------ the per-frame pipeline
// Runs every stage on `stream` (device sessions) or synchronously (host sessions) from
// s->sparse (contiguous) and a contiguous rgb, into s->depth; times them with StageTimer.
void RunStages(psd_session* s, const uint8_t* rgb, const ValidFrame& f, void* stream, bool timed = true) {
  const psd_device_t dev = static_cast<psd_device_t>(s->device);
  StageTimer timer(s, stream, timed);
  if (s->mode == PSD_SESSION_MODE_GUIDED) {
    void* ws = s->ws_guided.data();
    size_t n = s->ws_guided.size();
#if defined(PSD_WITH_CUDA)
    if (s->device == PSD_DEVICE_CUDA) {
      ws = s->d_ws_guided.p;
      n = s->d_ws_guided.bytes;
    }
#endif
    // the projection pointers are host memory read during the call (psd.h)
    s->guided.projection_w = s->guided_w.data();
    s->guided.projection_b = s->guided_b.data();
    KernelOk(psd_guided(dev, f.h, f.w, &s->guided, rgb, f.bgr ? 1 : 0, s->sparse.ptr, ws, n, stream, s->depth.ptr),
             "guided mode");
    timer.Mark(PSD_STAGE_GUIDED);
    return;
  }
  void* wpre = s->ws_pre.data();
  size_t wpre_n = s->ws_pre.size();
#if defined(PSD_WITH_CUDA)
  if (s->device == PSD_DEVICE_CUDA) {
    wpre = s->d_ws_pre.p;
    wpre_n = s->d_ws_pre.bytes;
  }
#endif
  KernelOk(psd_preprocess(dev, s->preprocess, f.h, f.w, f.bgr ? 1 : 0, s->fm_h, s->fm_w, rgb, wpre_n ? wpre : nullptr,
                          wpre_n, stream, s->x.ptr),
           "preprocess");
  timer.Mark(PSD_STAGE_PREPROCESS);
  s->encoder->Run(stream);
  timer.Mark(PSD_STAGE_ENCODER);
  void* wsp = s->ws_prop.data();
  size_t wsn = s->ws_prop.size();
#if defined(PSD_WITH_CUDA)
  if (s->device == PSD_DEVICE_CUDA) {
    wsp = s->d_ws_prop.p;
    wsn = s->d_ws_prop.bytes;
  }
#endif
  // ip = NULL for presets with rate 1, no cap and mode 3D-2D, whose official output does not depend
  // on the IP-Basic fill (psd_method.md §1.4); the others fill it from the sparse depth first
  // (Pipeline: both inside the propagation stage)
  if (s->needs_ip) {
    void* wip = s->ws_ip.data();
    size_t wipn = s->ws_ip.size();
#if defined(PSD_WITH_CUDA)
    if (s->device == PSD_DEVICE_CUDA) {
      wip = s->d_ws_ip.p;
      wipn = s->d_ws_ip.bytes;
    }
#endif
    KernelOk(psd_ip_basic(dev, f.h, f.w, s->sparse.ptr, wip, wipn, stream, s->ip.ptr), "IP-Basic fill");
  }
  KernelOk(psd_propagate(dev, &s->desc, &s->params, s->rel_inv.ptr, s->sparse.ptr, s->needs_ip ? s->ip.ptr : nullptr,
                         f.K, s->feat[0].ptr, wsp, wsn, stream, s->diff.ptr, nullptr),
           "propagation");
  timer.Mark(PSD_STAGE_PROPAGATION);
  if (s->mode != PSD_SESSION_MODE_PSD) return;  // propagate: the result is s->diff (Result())
  s->head->Run(stream);
  timer.Mark(PSD_STAGE_HEAD);
  void* wpp = s->ws_post.data();
  size_t wpn = s->ws_post.size();
#if defined(PSD_WITH_CUDA)
  if (s->device == PSD_DEVICE_CUDA) {
    wpp = s->d_ws_post.p;
    wpn = s->d_ws_post.bytes;
  }
#endif
  KernelOk(psd_post_process(dev, &s->post_desc, kPostChannels, s->preset.post_iters, s->fd0.ptr, s->depth_pix.ptr,
                            s->sparse.ptr, wpn ? wpp : nullptr, wpn, stream, s->depth.ptr),
           "post-processing");
  timer.Mark(PSD_STAGE_POST);
}

#if defined(PSD_WITH_CUDA)
// Makes `device` current for a scope and restores the caller's device after it, so that a
// session on device 1 works from any thread and leaves the thread's device as it was.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      (void)cudaGetLastError();
      prev_ = -1;
    }
    CudaCheck(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() {
    if (prev_ >= 0 && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = -1;
};

// One call of a CUDA session on `stream`: sets the session's device (the calling thread may be on
// another), refuses to start on an error left by earlier asynchronous work (so that it is not
// blamed on this call), orders the call after the previous one (the `done` event), and records
// `done` at the end, also when the call fails midway.
class CudaCall {
 public:
  CudaCall(psd_session* s, cudaStream_t stream) : device_(s->device_id), s_(s), stream_(stream) {
    const cudaError_t pending = cudaGetLastError();
    if (pending != cudaSuccess)
      Throw(PSD_E_CUDA, std::string("CUDA reported ") + cudaGetErrorName(pending) + " (" + cudaGetErrorString(pending) +
                            ") before this call started: it comes from earlier asynchronous work on device " +
                            std::to_string(s->device_id) +
                            " (a previous frame, or other CUDA code of this process), not from this call. A sticky "
                            "fault (illegal address, launch failure) leaves the CUDA context unusable: restart the "
                            "process");
    CudaCheck(cudaStreamWaitEvent(stream, s->done, 0), "cudaStreamWaitEvent(previous call)");
    armed_ = true;
  }
  ~CudaCall() {
    if (armed_ && cudaEventRecord(s_->done, stream_) != cudaSuccess) (void)cudaGetLastError();
  }
  CudaCall(const CudaCall&) = delete;
  CudaCall& operator=(const CudaCall&) = delete;

 private:
  DeviceScope device_;  // first: set before the body runs, restored after the destructor's body
  psd_session* s_;
  cudaStream_t stream_;
  bool armed_ = false;
};
#endif

#if defined(PSD_WITH_CUDA)
// d_rgb (the packed copy of a strided or host image) of at least n bytes; a new address
// invalidates a captured graph.
void ResizeRgbStaging(psd_session* s, size_t n) {
  void* before = s->d_rgb.p;
  s->d_rgb.Resize(n);
  if (s->d_rgb.p != before) ++s->buffers_epoch;
}

// Everything a captured frame depends on besides buffer contents (psd.h "CUDA graphs").
std::array<uint64_t, 20> GraphKey(const psd_session* s, const psd_frame_in* in, const psd_frame_out* out,
                                  const ValidFrame& f, const Strides& st) {
  std::array<uint64_t, 20> k{};
  size_t i = 0;
  k[i++] = static_cast<uint64_t>(f.h);
  k[i++] = static_cast<uint64_t>(f.w);
  k[i++] = f.bgr ? 1 : 0;
  for (float v : f.K) {  // the kernels take K by value: it is in the graph
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    k[i++] = bits;
  }
  k[i++] = reinterpret_cast<uintptr_t>(in->rgb);
  k[i++] = static_cast<uint64_t>(st.rgb);
  k[i++] = reinterpret_cast<uintptr_t>(in->sparse);
  k[i++] = static_cast<uint64_t>(st.sparse);
  k[i++] = reinterpret_cast<uintptr_t>(out->depth);
  k[i++] = static_cast<uint64_t>(st.depth);
  k[i++] = s->buffers_epoch;
  k[i++] = 1;  // marks a filled key (a zero key never matches)
  return k;
}

// Turns graphs off for the session: plain launches from now on, `why` in psd_session_info.
void GraphFallback(psd_session* s, const std::string& why) {
  if (s->graph_exec) cudaGraphExecDestroy(s->graph_exec);
  s->graph_exec = nullptr;
  s->graph_nodes = 0;
  s->graph_state = PSD_CUDA_GRAPH_FALLBACK;
  s->graph_fallback = why;
  (void)cudaGetLastError();  // the failed capture's error is reported here, not by the next call
}

// One psd_session_enqueue device frame under options.cuda_graph: `work(timed)` enqueues the
// whole frame on `stream`. The first frame runs uncaptured (warm-up); a frame of a new geometry
// is captured and launched; a frame of the captured geometry replays it. A capture that fails
// turns graphs off (GraphFallback) and the frame runs uncaptured.
template <typename Work>
void RunGraphFrame(psd_session* s, const std::array<uint64_t, 20>& key, cudaStream_t stream, const Work& work) {
  if (!s->graph_warmed) {
    s->graph_warmed = true;
    work(true);
    return;
  }
  const bool replay = s->graph_exec && key == s->graph_key;
  if (!replay) {
    if (s->graph_exec) cudaGraphExecDestroy(s->graph_exec);
    s->graph_exec = nullptr;
    s->graph_nodes = 0;
    s->graph_key = {};
    std::string why;
    cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
      why = std::string("cudaStreamBeginCapture: ") + cudaGetErrorName(e);
    } else {
      try {  // whatever fails, the capture must be ended below
        work(false);
      } catch (const Error& err) {
        why = err.what();
      } catch (const std::exception& err) {
        why = std::string("internal error: ") + err.what();
      } catch (...) {
        why = "unknown C++ exception";
      }
      cudaGraph_t graph = nullptr;
      e = cudaStreamEndCapture(stream, &graph);  // always ends the capture, also after a failure
      if (why.empty() && e != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorName(e);
      if (why.empty()) {
        e = cudaGraphInstantiateWithFlags(&s->graph_exec, graph, 0);  // CUDA 11.4 and 12 spell it so
        if (e != cudaSuccess) {
          s->graph_exec = nullptr;
          why = std::string("cudaGraphInstantiate: ") + cudaGetErrorName(e);
        }
      }
      if (why.empty()) {
        size_t n = 0;
        if (cudaGraphGetNodes(graph, nullptr, &n) == cudaSuccess) s->graph_nodes = static_cast<int64_t>(n);
      }
      if (graph) cudaGraphDestroy(graph);
    }
    if (!why.empty()) {
      GraphFallback(s, "capture of a device frame failed: " + why);
      work(true);
      return;
    }
    s->graph_key = key;
    s->graph_state = PSD_CUDA_GRAPH_READY;
    ++s->graph_captures;
  } else {
    ++s->graph_replays;
  }
  // timings of a graph frame: its device time as a whole (TOTAL), the stages inside are not split
  for (int i = PSD_STAGE_PREPROCESS; i < PSD_STAGE_COUNT; ++i) s->stage_ms[i] = 0.0;
  s->stages_recorded.assign(1, PSD_STAGE_TOTAL);
  s->timings_pending = true;
  CudaCheck(cudaEventRecord(s->ev_start, stream), "cudaEventRecord");
  CudaCheck(cudaGraphLaunch(s->graph_exec, stream), "cudaGraphLaunch");
  CudaCheck(cudaEventRecord(s->ev_stage[PSD_STAGE_TOTAL], stream), "cudaEventRecord");
}
#endif

// The final depth map of the last RunStages (host sessions).
float* Result(const psd_session* s) {
  return s->mode == PSD_SESSION_MODE_PROPAGATE ? s->diff.ptr : s->depth.ptr;
}

// The output guard (psd_guard_depth), then the caller's buffers. `depth` is the session's host
// result, clamped in place.
void WriteOutputs(float* depth, const ValidFrame& f, const Strides& st, psd_frame_out* out) {
  const int64_t n = f.h * f.w;
  int64_t clamped = 0;
  const psd_status_t g = psd_guard_depth(f.h, f.w, f.stats.dmin, f.stats.dmax, depth, &clamped);
  if (g != PSD_OK) Throw(PSD_E_INTERNAL, std::string("output guard: ") + psd_last_error());
  if (out->struct_size >= sizeof(psd_frame_out)) {
    out->rejected_range = f.stats.rejected_range;
    out->rejected_outliers = f.stats.rejected_outliers;
    out->clamped = clamped;
  }
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(depth[i]))
      Throw(PSD_E_INTERNAL, "the pipeline produced non-finite depth; check the artefacts with the correctness "
                            "gate (psdrt.export.gate) and report the inputs");
  for (int64_t y = 0; y < f.h; ++y) {
    float* row = reinterpret_cast<float*>(reinterpret_cast<char*>(out->depth) + y * st.depth);
    std::memcpy(row, depth + y * f.w, static_cast<size_t>(f.w) * sizeof(float));
  }
  if (out->depth_mm) {
    for (int64_t y = 0; y < f.h; ++y) {
      uint16_t* row = reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(out->depth_mm) + y * st.mm);
      const float* d = depth + y * f.w;
      for (int64_t x = 0; x < f.w; ++x) {
        // DepthResult.depth_mm: rint(depth * 1000) in float64 (half to even), < 0 -> 0, saturate
        const double mm = std::nearbyint(static_cast<double>(d[x]) * 1000.0);
        row[x] = static_cast<uint16_t>(mm <= 0.0 ? 0.0 : (mm >= 65535.0 ? 65535.0 : mm));
      }
    }
  }
}

void RunHost(psd_session* s, const psd_frame_in* in, psd_frame_out* out) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  ValidFrame f;
  const Strides st = ValidateLayout(s, in, out, false, &f);
  ValidateK(in, &f);
#if defined(PSD_WITH_CUDA)
  if (s->device == PSD_DEVICE_CUDA) {
    // host frame on a GPU session, through pinned staging: the image goes to the device while the
    // host validates the sparse depth; then the sparse depth, the stages and the depth back
    const size_t n = static_cast<size_t>(f.h * f.w);
    s->pin_rgb.Resize(n * 3);
    s->pin_sparse.Resize(n * sizeof(float));
    s->pin_out.Resize(n * sizeof(float));
    uint8_t* prgb = s->pin_rgb.as<uint8_t>();
    if (st.rgb == 3 * f.w) {
      std::memcpy(prgb, in->rgb, n * 3);
    } else {  // the kernels read packed rows
      for (int64_t y = 0; y < f.h; ++y)
        std::memcpy(prgb + y * f.w * 3, in->rgb + y * st.rgb, static_cast<size_t>(f.w) * 3);
    }
    {
      CudaCall call(s, s->stream);
      if (s->height == 0) AllocateForSize(s, f.h, f.w);
      ResizeRgbStaging(s, n * 3);
      CudaCheck(cudaMemcpyAsync(s->d_rgb.p, prgb, n * 3, cudaMemcpyHostToDevice, s->stream), "cudaMemcpyAsync(rgb)");
      try {
        CopySparse(in, st.sparse, s->pin_sparse.as<float>(), &s->sparse_scratch, &f);
        CheckIpBasicInput(s, f);
      } catch (...) {
        (void)cudaStreamSynchronize(s->stream);  // the image copy still reads the staging
        throw;
      }
      s->stage_ms[PSD_STAGE_VALIDATE] = Ms(t0, clock::now());
      CudaCheck(cudaMemcpyAsync(s->sparse.ptr, s->pin_sparse.p, n * sizeof(float), cudaMemcpyHostToDevice, s->stream),
                "cudaMemcpyAsync(sparse)");
      RunStages(s, static_cast<const uint8_t*>(s->d_rgb.p), f, s->stream);
      CudaCheck(cudaMemcpyAsync(s->pin_out.p, Result(s), n * sizeof(float), cudaMemcpyDeviceToHost, s->stream),
                "cudaMemcpyAsync(depth)");
    }
    CudaCheck(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize");
    StageTimes(s);
    WriteOutputs(s->pin_out.as<float>(), f, st, out);
  } else
#endif
  {
    const uint8_t* rgb = in->rgb;
    if (st.rgb != 3 * f.w) {  // the kernels read packed rows
      s->rgb_host.resize(static_cast<size_t>(f.h * f.w * 3));
      for (int64_t y = 0; y < f.h; ++y)
        std::memcpy(s->rgb_host.data() + y * f.w * 3, in->rgb + y * st.rgb, static_cast<size_t>(f.w) * 3);
      rgb = s->rgb_host.data();
    }
    if (s->height == 0) AllocateForSize(s, f.h, f.w);
    CopySparse(in, st.sparse, s->sparse.ptr, &s->sparse_scratch, &f);
    CheckIpBasicInput(s, f);
    s->stage_ms[PSD_STAGE_VALIDATE] = Ms(t0, clock::now());
    RunStages(s, rgb, f, nullptr);
    WriteOutputs(Result(s), f, st, out);
  }
  out->points = f.points;
  out->alignment_degenerate = f.interior >= 2 ? 0 : 1;
  // a CUDA run's stages are device times; its total is the whole call as the host saw it
  s->stage_ms[PSD_STAGE_TOTAL] = Ms(t0, clock::now());
  for (int i = 0; i < PSD_STAGE_COUNT; ++i) out->timings_ms[i] = s->stage_ms[i];
}

}  // namespace

namespace psd {
namespace capi {
void CheckKernel(psd_status_t status, const char* what) {
  if (status != PSD_OK) Throw(status, std::string(what) + ": " + psd_last_error());
}
}  // namespace capi
}  // namespace psd

// ====================================================================== C ABI
extern "C" {

PSD_API uint32_t psd_session_abi_version(void) { return PSD_SESSION_ABI_VERSION; }

PSD_API psd_status_t psd_preset_get(const char* name, psd_preset* out) {
  return Guard([&] {
    if (!name) Throw(PSD_E_NULL_POINTER, "null pointer: name");
    if (!out) Throw(PSD_E_NULL_POINTER, "null pointer: out");
    CheckStructSize(out->struct_size, sizeof(psd_preset), "psd_preset");
    psd_preset p{};
    if (!psd::capi::LookupPreset(name, &p))
      Throw(PSD_E_INVALID_ARGUMENT, std::string("unknown dataset preset '") + name + "'; use one of: " +
                                        psd::capi::KnownPresets());
    p.struct_size = sizeof(psd_preset);
    *out = p;
  });
}

PSD_API psd_status_t psd_session_options_init(psd_session_options* options) {
  return Guard([&] {
    if (!options) Throw(PSD_E_NULL_POINTER, "null pointer: options");
    std::memset(options, 0, sizeof(*options));
    options->struct_size = sizeof(psd_session_options);
    options->device = PSD_DEVICE_CPU;
    options->precision = PSD_PRECISION_FP32;
    options->mode = PSD_SESSION_MODE_AUTO;
    options->backend = PSD_BACKEND_AUTO;
  });
}

PSD_API psd_status_t psd_session_create(const char* artifact_dir, const psd_session_options* options,
                                        psd_session** out) {
  if (out) *out = nullptr;
  return Guard([&] {
    if (!out) Throw(PSD_E_NULL_POINTER, "null pointer: out (psd_session**)");
    psd_session_options o;
    psd_session_options_init(&o);
    if (options) {  // an older caller's struct: the fields it has, the defaults for the rest
      CheckStructSize(options->struct_size, PSD_SESSION_OPTIONS_SIZE_V1, "psd_session_options");
      std::memcpy(&o, options, std::min<size_t>(options->struct_size, sizeof(o)));
      o.struct_size = sizeof(o);
    }
    if (o.cuda_graph != 0 && o.cuda_graph != 1)
      Throw(PSD_E_INVALID_ARGUMENT, "options.cuda_graph must be 0 (plain launches) or 1 (CUDA graphs), got " +
                                        std::to_string(o.cuda_graph));
    if (o.cuda_graph && o.device != PSD_DEVICE_CUDA)
      Throw(PSD_E_INVALID_ARGUMENT, "options.cuda_graph needs device = PSD_DEVICE_CUDA (CUDA graphs replay "
                                    "psd_session_enqueue's device frames); leave it 0 for CPU sessions");
    if (o.reserved_options != 0) Throw(PSD_E_INVALID_ARGUMENT, "options.reserved_options must be 0");
    const std::string fixture = psd::capi::TestFixtureRequest();  // TEST ONLY: $PSD_BACKEND_TEST_FIXTURE
    if (o.device != PSD_DEVICE_CPU && o.device != PSD_DEVICE_CUDA)
      Throw(PSD_E_INVALID_ARGUMENT, "options.device must be PSD_DEVICE_CPU (0) or PSD_DEVICE_CUDA (1)");
#if !defined(PSD_WITH_CUDA)
    if (o.device == PSD_DEVICE_CUDA)
      Throw(PSD_E_NOT_BUILT_WITH_CUDA, "options.device is PSD_DEVICE_CUDA but this library was built without "
                                       "CUDA; use the CUDA library (libpsd_kernels_cuda.so, `python build.py` "
                                       "with nvcc) or PSD_DEVICE_CPU");
#endif
    if (o.mode < 0 || o.mode >= PSD_SESSION_MODE_COUNT)
      Throw(PSD_E_INVALID_ARGUMENT, "options.mode must be a psd_session_mode_t (0..3)");
    if (o.backend < 0 || o.backend >= PSD_BACKEND_COUNT)
      Throw(PSD_E_INVALID_ARGUMENT, "options.backend must be a psd_backend_t (0..2)");
    if (o.intra_op_threads < 0 || o.intra_op_threads > kMaxThreads)
      Throw(PSD_E_INVALID_ARGUMENT, "options.intra_op_threads must be 0..1024 (0 = ONNX Runtime's default), got " +
                                        std::to_string(o.intra_op_threads));
    if (o.fm_lower < 0 || o.fm_lower > 4096)
      Throw(PSD_E_INVALID_ARGUMENT, "options.fm_lower must be 0..4096 (0 = the manifest's; PSD uses 392), got " +
                                        std::to_string(o.fm_lower));
    int32_t precision = o.precision;
    if (!o.precision_name && (precision < 0 || precision >= PSD_PRECISION_COUNT))
      Throw(PSD_E_INVALID_ARGUMENT, "options.precision must be a psd_precision_t (0..2)");
    std::string enc_precision = PrecisionName(precision), head_precision = enc_precision;
    if (o.precision_name) {
      ParsePrecisionSpec(o.precision_name, &enc_precision, &head_precision);
      precision = PrecisionOf(enc_precision);
    }
    if (o.artifact_flags & ~(PSD_ARTIFACTS_SKIP_SHA256 | PSD_ARTIFACTS_ALLOW_UNGATED))
      Throw(PSD_E_INVALID_ARGUMENT, "options.artifact_flags has unknown bits; use PSD_ARTIFACTS_* flags");
    if (o.guided_levels < 0 || o.guided_iterations < 0 || !(o.guided_colour_scale >= 0.0) ||
        !std::isfinite(o.guided_colour_scale))
      Throw(PSD_E_INVALID_ARGUMENT, "guided options must be >= 0 (0 = the default) and finite");
    // their upper bounds are the guided kernel's, checked below through psd_guided_workspace_size
    int32_t mode = o.mode;
    if (mode == PSD_SESSION_MODE_AUTO && !artifact_dir) mode = PSD_SESSION_MODE_GUIDED;
    if (!artifact_dir && mode != PSD_SESSION_MODE_GUIDED)
      Throw(PSD_E_NULL_POINTER, std::string("null pointer: artifact_dir; mode '") + ModeName(mode) +
                                    "' needs a directory built by `psdrt build` (mode 'guided' needs none)");

    std::unique_ptr<psd_session> s(new psd_session());
    s->device = o.device;
    s->device_id = o.device_id;
    s->precision = precision;
    s->seed = o.seed;
    if (o.guided_levels) s->guided_levels = o.guided_levels;
    if (o.guided_iterations) s->guided_iterations = o.guided_iterations;
    if (o.guided_colour_scale > 0) s->guided_colour_scale = o.guided_colour_scale;
    if ((o.guided_projection_w == nullptr) != (o.guided_projection_b == nullptr))
      Throw(PSD_E_NULL_POINTER, "options.guided_projection_w and guided_projection_b go together (both NULL = "
                                "the built-in default projection)");
    if (o.guided_projection_w) {
      const int32_t c = o.guided_channels;
      if (c < 2 || c > 64)
        Throw(PSD_E_INVALID_ARGUMENT, "options.guided_channels must be 2..64 with a projection (got " +
                                          std::to_string(c) + ")");
      s->guided_w.assign(o.guided_projection_w, o.guided_projection_w + 3 * c);
      s->guided_b.assign(o.guided_projection_b, o.guided_projection_b + c);
    } else {
      if (o.guided_channels != 0 && o.guided_channels != psd::capi::kGuidedDefaultChannels)
        Throw(PSD_E_INVALID_ARGUMENT, "options.guided_channels other than 32 needs guided_projection_w/_b "
                                      "(psdrt.runtime.guided.rff_projection / projection_json)");
      s->guided_w.assign(psd::capi::kGuidedDefaultW, psd::capi::kGuidedDefaultW + 3 * psd::capi::kGuidedDefaultChannels);
      s->guided_b.assign(psd::capi::kGuidedDefaultB, psd::capi::kGuidedDefaultB + psd::capi::kGuidedDefaultChannels);
    }
    for (float v : s->guided_w)
      if (!std::isfinite(v)) Throw(PSD_E_INVALID_ARGUMENT, "options.guided_projection_w has NaN/Inf");
    for (float v : s->guided_b)
      if (!std::isfinite(v)) Throw(PSD_E_INVALID_ARGUMENT, "options.guided_projection_b has NaN/Inf");
    if (o.guided_params) {
      const psd_guided_params& g = *o.guided_params;
      if (o.guided_levels || o.guided_iterations || o.guided_colour_scale > 0 || o.guided_channels ||
          o.guided_projection_w)
        Throw(PSD_E_INVALID_ARGUMENT, "options.guided_params replaces options.guided_levels, _iterations, "
                                      "_colour_scale, _channels and _projection_*: leave those 0 / NULL");
      if (g.struct_size < sizeof(psd_guided_params))
        Throw(PSD_E_INVALID_ARGUMENT, "options.guided_params->struct_size must be sizeof(psd_guided_params) "
                                      "(psd_guided_params_init)");
      s->guided = g;
      s->guided.struct_size = sizeof(psd_guided_params);
      if (g.method == PSD_GUIDED_METHOD_CSPN) {
        if (!g.projection_w || !g.projection_b || g.channels < 2 || g.channels > 64)
          Throw(PSD_E_NULL_POINTER, "options.guided_params with METHOD_CSPN needs channels 2..64 and "
                                    "projection_w/_b (psdrt.runtime.guided.rff_projection)");
        s->guided_w.assign(g.projection_w, g.projection_w + 3 * g.channels);
        s->guided_b.assign(g.projection_b, g.projection_b + g.channels);
      }
    } else {
      KernelOk(psd_guided_params_init(&s->guided), "guided mode");
      s->guided.channels = static_cast<int32_t>(s->guided_b.size());
      s->guided.colour_scale = static_cast<float>(s->guided_colour_scale);
      s->guided.levels = s->guided_levels;
      s->guided.iterations = s->guided_iterations;
    }
    s->guided.flags = 0;
    s->guided.projection_w = s->guided_w.data();
    s->guided.projection_b = s->guided_b.data();
    std::string preset_name = "NYUv2";
    const std::string backend_name = o.backend == PSD_BACKEND_TENSORRT ? "tensorrt" : "onnxruntime";
    ArtifactSelection sel;
    if (artifact_dir) {
      const char* over = mode == PSD_SESSION_MODE_PSD ? "psd" : mode == PSD_SESSION_MODE_PROPAGATE ? "propagate"
                                                               : mode == PSD_SESSION_MODE_GUIDED ? "guided" : "";
      psd::capi::ArtifactRequest req;
      req.encoder_precision = enc_precision;
      req.head_precision = head_precision;
      req.backend = backend_name;
      req.mode_override = over;
      req.check_files = !(o.artifact_flags & PSD_ARTIFACTS_SKIP_SHA256);
      req.allow_ungated = (o.artifact_flags & PSD_ARTIFACTS_ALLOW_UNGATED) != 0;
      sel = psd::capi::ReadArtifacts(artifact_dir, req);
      s->artifact_dir = artifact_dir;
      s->gate_approved = sel.gate_approved;
      s->head_precision = PrecisionOf(sel.head_precision.empty() ? enc_precision : sel.head_precision);
      s->height = sel.height;
      s->width = sel.width;
      s->fm_lower = o.fm_lower > 0 ? o.fm_lower : sel.fm_lower;
      s->preprocess = sel.preprocess == "bicubic" ? PSD_PREPROCESS_BICUBIC : PSD_PREPROCESS_OFFICIAL;
      preset_name = sel.preset;
      if (mode == PSD_SESSION_MODE_AUTO) mode = sel.mode == "psd" ? PSD_SESSION_MODE_PSD : PSD_SESSION_MODE_PROPAGATE;
    }
    s->mode = mode;
    if (o.cuda_graph) s->graph_state = PSD_CUDA_GRAPH_ARMED;  // FALLBACK below if a backend refuses
    // preset: override struct > option name > manifest
    if (o.preset_override) {
      CheckStructSize(o.preset_override->struct_size, sizeof(psd_preset), "options.preset_override");
      s->preset = *o.preset_override;
      s->preset.name[sizeof(s->preset.name) - 1] = '\0';
      const psd_preset& p = s->preset;
      if (p.mode < 0 || p.mode >= PSD_MODE_COUNT || p.camera < 0 || p.camera >= PSD_CAMERA_COUNT || p.k < 1 ||
          p.k > 16 || !(p.rate > 0.0 && p.rate <= 1.0) || p.candidates < 0 || p.iters_quarter < 0 ||
          p.iters_full < 0 || p.post_iters < -1)
        Throw(PSD_E_INVALID_ARGUMENT, "options.preset_override is invalid (mode 0..2, camera 0..2, k 1..16, "
                                      "rate in (0, 1], candidates >= 0, iterations >= 0, post_iters >= -1); "
                                      "start from psd_preset_get and change single fields");
    } else {
      const std::string name = o.preset ? o.preset : preset_name;
      if (!psd::capi::LookupPreset(name, &s->preset))
        Throw(o.preset ? PSD_E_INVALID_ARGUMENT : PSD_E_ARTIFACT,
              "unknown dataset preset '" + name + "'" + (o.preset ? "" : " in the manifest") + "; use one of: " +
                  psd::capi::KnownPresets());
    }
    s->preset.struct_size = sizeof(psd_preset);
#if defined(PSD_WITH_CUDA)
    std::unique_ptr<DeviceScope> scope;  // create runs on the session's device, then restores the caller's
    if (s->device == PSD_DEVICE_CUDA) {  // the stream of psd_session_run's host<->device staging
      scope.reset(new DeviceScope(o.device_id));
      CudaCheck(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
      CudaCheck(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming), "cudaEventCreate");
      CudaCheck(cudaEventCreate(&s->ev_start), "cudaEventCreate");
      for (cudaEvent_t& e : s->ev_stage) CudaCheck(cudaEventCreate(&e), "cudaEventCreate");
    }
#endif
    if (mode != PSD_SESSION_MODE_GUIDED) {
      const psd_preset& p = s->preset;
      s->needs_ip = !(p.rate >= 1.0 && p.candidates == 0 && p.mode == PSD_MODE_3D_2D);
      if (p.camera != PSD_CAMERA_PINHOLE)
        Throw(PSD_E_UNSUPPORTED, std::string("preset '") + p.name + "' uses a non-pinhole camera; sessions take a "
                                                                   "3x3 pinhole K");
      int64_t fh = 0, fw = 0;
      psd::capi::CheckKernel(psd_fm_input_size(s->height, s->width, s->fm_lower, 14, &fh, &fw), "encoder input size");
      s->fm_h = fh;
      s->fm_w = fw;
      BackendConfig cfg;
      cfg.device = o.device;
      cfg.device_id = o.device_id;
      cfg.intra_op_threads = o.intra_op_threads;
      cfg.ort_library = o.ort_library ? o.ort_library : "";
      auto make = [&](const std::string& path) {
        if (!fixture.empty()) return psd::capi::CreateTestBackend(path, cfg, fixture);  // tests only
        return o.backend == PSD_BACKEND_TENSORRT ? psd::capi::CreateTrtBackend(path, cfg)
                                                 : psd::capi::CreateOrtBackend(path, cfg);
      };
      s->encoder = make(sel.encoder_path);
      if (mode == PSD_SESSION_MODE_PSD) s->head = make(sel.head_path);
      s->backend_desc = s->encoder->Describe();
      SetUpNetworks(s.get());
      if (o.cuda_graph) {  // a backend that cannot be captured: plain launches, and info says why
        for (const auto* b : {s->encoder.get(), s->head.get()}) {
          const std::string why = b ? b->CaptureRefusal() : "";
          if (!why.empty() && s->graph_fallback.empty()) {
            s->graph_state = PSD_CUDA_GRAPH_FALLBACK;
            s->graph_fallback = std::string(b == s->encoder.get() ? "the encoder" : "the head") +
                                "'s backend cannot be captured: " + why;
          }
        }
      }
    } else {
      s->backend_desc = "none (guided mode: no network)";
      // validates the guided parameters now rather than at the first frame
      size_t bytes = 0;
      KernelOk(psd_guided_workspace_size(static_cast<psd_device_t>(s->device), s->height > 0 ? s->height : 64,
                                         s->width > 0 ? s->width : 64, &s->guided, &bytes),
               "guided options");
      if (s->height > 0) AllocateForSize(s.get(), s->height, s->width);
    }
    *out = s.release();
  });
}

PSD_API void psd_session_destroy(psd_session* session) { delete session; }

PSD_API psd_status_t psd_session_input_shape(const psd_session* session, int64_t* height, int64_t* width) {
  return Guard([&] {
    if (!session) Throw(PSD_E_NULL_POINTER, "null pointer: session");
    if (!height || !width) Throw(PSD_E_NULL_POINTER, "null pointer: height/width");
    *height = session->height;
    *width = session->width;
  });
}

PSD_API psd_status_t psd_session_output_shape(const psd_session* session, int64_t* height, int64_t* width) {
  return psd_session_input_shape(session, height, width);
}

PSD_API psd_status_t psd_session_get_info(const psd_session* session, psd_session_info* info) {
  return Guard([&] {
    if (!session) Throw(PSD_E_NULL_POINTER, "null pointer: session");
    if (!info) Throw(PSD_E_NULL_POINTER, "null pointer: info");
    CheckStructSize(info->struct_size, PSD_SESSION_INFO_SIZE_V1, "psd_session_info");
    const uint32_t given = info->struct_size;
    psd_session_info i{};
    i.struct_size = sizeof(psd_session_info);
    i.mode = session->mode;
    i.device = session->device;
    i.precision = session->mode == PSD_SESSION_MODE_GUIDED ? PSD_PRECISION_FP32 : session->precision;
    i.height = session->height;
    i.width = session->width;
    i.fm_height = session->fm_h;
    i.fm_width = session->fm_w;
    i.preset = session->preset;
    i.backend = session->backend_desc.c_str();
    i.artifact_dir = session->artifact_dir.c_str();
    i.gate_approved = session->gate_approved ? 1 : 0;
    i.head_precision = session->mode == PSD_SESSION_MODE_PSD ? session->head_precision : i.precision;
    // the graph fields change during enqueue calls: read them under the session's call lock
    std::lock_guard<std::mutex> lock(const_cast<psd_session*>(session)->call);
    i.cuda_graph = session->graph_state;
    i.graph_nodes = static_cast<int32_t>(session->graph_nodes);
    i.graph_captures = session->graph_captures;
    i.graph_replays = session->graph_replays;
    // set at most once (FALLBACK is final), so the pointer stays valid until destroy
    i.graph_fallback = session->graph_fallback.empty() ? "" : session->graph_fallback.c_str();
    // a caller compiled against an older psd.h gets only the fields its struct has
    std::memcpy(info, &i, given < sizeof(i) ? given : sizeof(i));
    info->struct_size = given;
  });
}

PSD_API psd_status_t psd_artifacts_read(const char* artifact_dir, const char* precision, int32_t backend, int32_t mode,
                                        uint32_t flags, psd_artifact_info* out) {
  return Guard([&] {
    if (!artifact_dir) Throw(PSD_E_NULL_POINTER, "null pointer: artifact_dir");
    if (!out) Throw(PSD_E_NULL_POINTER, "null pointer: out");
    CheckStructSize(out->struct_size, sizeof(psd_artifact_info), "psd_artifact_info");
    if (backend < 0 || backend >= PSD_BACKEND_COUNT)
      Throw(PSD_E_INVALID_ARGUMENT, "backend must be a psd_backend_t (0..2)");
    if (mode < 0 || mode >= PSD_SESSION_MODE_COUNT)
      Throw(PSD_E_INVALID_ARGUMENT, "mode must be a psd_session_mode_t (0..3)");
    if (flags & ~(PSD_ARTIFACTS_SKIP_SHA256 | PSD_ARTIFACTS_ALLOW_UNGATED))
      Throw(PSD_E_INVALID_ARGUMENT, "flags has unknown bits; use PSD_ARTIFACTS_* flags");
    psd::capi::ArtifactRequest req;
    ParsePrecisionSpec(precision ? precision : "fp32", &req.encoder_precision, &req.head_precision);
    req.backend = backend == PSD_BACKEND_TENSORRT ? "tensorrt" : "onnxruntime";
    req.mode_override = mode == PSD_SESSION_MODE_PSD ? "psd" : mode == PSD_SESSION_MODE_PROPAGATE ? "propagate"
                        : mode == PSD_SESSION_MODE_GUIDED ? "guided" : "";
    req.check_files = !(flags & PSD_ARTIFACTS_SKIP_SHA256);
    req.allow_ungated = (flags & PSD_ARTIFACTS_ALLOW_UNGATED) != 0;
    const ArtifactSelection sel = psd::capi::ReadArtifacts(artifact_dir, req);
    psd_artifact_info i{};
    i.struct_size = sizeof(psd_artifact_info);
    i.mode = sel.mode == "psd" ? PSD_SESSION_MODE_PSD : sel.mode == "guided" ? PSD_SESSION_MODE_GUIDED
                                                                             : PSD_SESSION_MODE_PROPAGATE;
    i.height = sel.height;
    i.width = sel.width;
    i.fm_lower = sel.fm_lower;
    i.gate_approved = sel.gate_approved ? 1 : 0;
    i.preprocess = sel.preprocess == "bicubic" ? PSD_PREPROCESS_BICUBIC : PSD_PREPROCESS_OFFICIAL;
    auto put = [](char* dst, size_t cap, const std::string& v, const char* what) {
      if (v.size() >= cap) Throw(PSD_E_ARTIFACT, std::string(what) + " is longer than " + std::to_string(cap - 1) +
                                                     " bytes; move the directory to a shorter path");
      std::memcpy(dst, v.c_str(), v.size() + 1);
    };
    put(i.preset, sizeof(i.preset), sel.preset, "the preset name");
    put(i.encoder_precision, sizeof(i.encoder_precision), sel.encoder_precision, "the encoder precision");
    put(i.head_precision, sizeof(i.head_precision), sel.head_precision, "the head precision");
    put(i.encoder_path, sizeof(i.encoder_path), sel.encoder_path, "the encoder's path");
    put(i.head_path, sizeof(i.head_path), sel.head_path, "the head's path");
    const std::string gf = sel.gate_failures.substr(0, sizeof(i.gate_failures) - 1);
    put(i.gate_failures, sizeof(i.gate_failures), gf, "gate failures");
    *out = i;
  });
}

PSD_API psd_status_t psd_session_run(psd_session* session, const psd_frame_in* in, psd_frame_out* out) {
  return Guard([&] {
    if (!session) Throw(PSD_E_NULL_POINTER, "null pointer: session");
    std::lock_guard<std::mutex> lock(session->call);
    RunHost(session, in, out);
  });
}

PSD_API psd_status_t psd_session_enqueue(psd_session* session, const psd_frame_in* in, psd_frame_out* out,
                                         psd_stream_t stream) {
  return Guard([&] {
    if (!session) Throw(PSD_E_NULL_POINTER, "null pointer: session");
#if !defined(PSD_WITH_CUDA)
    (void)in;
    (void)out;
    (void)stream;
    Throw(PSD_E_UNSUPPORTED, "psd_session_enqueue takes device pointers and needs the CUDA build of the library "
                             "(libpsd_kernels_cuda.so); this is the CPU build: use psd_session_run with host "
                             "memory");
#else
    if (session->device != PSD_DEVICE_CUDA)
      Throw(PSD_E_UNSUPPORTED, "psd_session_enqueue needs a session created with device = PSD_DEVICE_CUDA; use "
                               "psd_session_run for host memory");
    std::lock_guard<std::mutex> lock(session->call);
    const auto t0 = std::chrono::steady_clock::now();
    ValidFrame f;
    const Strides st = ValidateLayout(session, in, out, true, &f);
    ValidateK(in, &f);
    if (out->depth_mm)
      Throw(PSD_E_UNSUPPORTED, "out->depth_mm is not produced by psd_session_enqueue (device path); convert "
                               "out->depth on the device, or use psd_session_run");
    cudaStream_t s = stream ? static_cast<cudaStream_t>(stream) : cudaStreamPerThread;
    CudaCall call(session, s);  // before any capture: waiting on the previous call's event is not capturable
    // every allocation before the device work: nothing may allocate while it is being captured
    if (session->height == 0) AllocateForSize(session, f.h, f.w);
    const bool strided_rgb = st.rgb != 3 * f.w;
    if (strided_rgb) ResizeRgbStaging(session, static_cast<size_t>(f.h * f.w * 3));
    session->stage_ms[PSD_STAGE_VALIDATE] = Ms(t0, std::chrono::steady_clock::now());
    // the frame's device work: what a CUDA graph captures (copies in, stages, copy out)
    auto work = [&](bool timed) {
      const uint8_t* rgb = in->rgb;
      if (strided_rgb) {
        CudaCheck(cudaMemcpy2DAsync(session->d_rgb.p, static_cast<size_t>(3 * f.w), in->rgb,
                                    static_cast<size_t>(st.rgb), static_cast<size_t>(3 * f.w),
                                    static_cast<size_t>(f.h), cudaMemcpyDeviceToDevice, s),
                  "cudaMemcpy2DAsync(rgb)");
        rgb = static_cast<const uint8_t*>(session->d_rgb.p);
      }
      CudaCheck(cudaMemcpy2DAsync(session->sparse.ptr, static_cast<size_t>(4 * f.w), in->sparse,
                                  static_cast<size_t>(st.sparse), static_cast<size_t>(4 * f.w),
                                  static_cast<size_t>(f.h), cudaMemcpyDeviceToDevice, s),
                "cudaMemcpy2DAsync(sparse)");
      RunStages(session, rgb, f, s, timed);
      CudaCheck(cudaMemcpy2DAsync(out->depth, static_cast<size_t>(st.depth), Result(session),
                                  static_cast<size_t>(4 * f.w), static_cast<size_t>(4 * f.w),
                                  static_cast<size_t>(f.h), cudaMemcpyDeviceToDevice, s),
                "cudaMemcpy2DAsync(depth)");
    };
    if (session->graph_state == PSD_CUDA_GRAPH_ARMED || session->graph_state == PSD_CUDA_GRAPH_READY)
      RunGraphFrame(session, GraphKey(session, in, out, f, st), s, work);
    else
      work(true);
#endif
  });
}

PSD_API psd_status_t psd_session_timings(psd_session* session, double* timings_ms, int32_t count) {
  return Guard([&] {
    if (!session) Throw(PSD_E_NULL_POINTER, "null pointer: session");
    if (!timings_ms) Throw(PSD_E_NULL_POINTER, "null pointer: timings_ms");
    if (count < 0) Throw(PSD_E_INVALID_ARGUMENT, "count must be >= 0 (PSD_STAGE_COUNT for every stage)");
    std::lock_guard<std::mutex> lock(session->call);
#if defined(PSD_WITH_CUDA)
    std::unique_ptr<DeviceScope> scope;
    if (session->device == PSD_DEVICE_CUDA) scope.reset(new DeviceScope(session->device_id));
#endif
    StageTimes(session);
    for (int32_t i = 0; i < count; ++i) timings_ms[i] = i < PSD_STAGE_COUNT ? session->stage_ms[i] : 0.0;
  });
}

}  // extern "C"
