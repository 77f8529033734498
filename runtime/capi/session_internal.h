// Internals of the session API (psd_session_*): the error type, the preset table, the manifest
// reader and the one interface every inference backend implements, so the orchestration in
// session.cpp is written once. Not installed; not part of the ABI.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "psd/psd.h"

namespace psd {
namespace capi {

// Every failure inside the session code: a status and a message that names the fix.
struct Error : std::runtime_error {
  Error(psd_status_t s, const std::string& what) : std::runtime_error(what), status(s) {}
  psd_status_t status;
};

[[noreturn]] inline void Throw(psd_status_t s, const std::string& what) { throw Error(s, what); }

// Sets the calling thread's psd_last_error() text (defined in psd_capi.cpp, which owns it).
void SetLastError(const std::string& message);

// Throws Error(status, psd_last_error()) when a psd_* kernel call failed.
void CheckKernel(psd_status_t status, const char* what);

// ------------------------------------------------------------------ presets (presets.cpp)
// The official name or alias -> preset (psdrt.runtime.presets.get_preset); false if unknown.
bool LookupPreset(const std::string& name, psd_preset* out);
// "NYUv2, KITTI, ..." for error messages.
std::string KnownPresets();

// ------------------------------------------------------------------ manifest (artifacts.cpp)
struct ArtifactSelection {
  std::string root;        // the directory
  std::string mode;        // "psd" | "propagate" (the manifest's, or the override)
  std::string preset;      // the manifest's preset name ("NYUv2" when absent)
  int64_t height = 0, width = 0;
  int64_t fm_lower = 392;
  std::string preprocess = "official";  // the encoder input's method (psd_preprocess_t name)
  std::string encoder_path, head_path;  // head_path empty unless mode == "psd"
  std::string encoder_precision, head_precision;
  bool gate_approved = true;  // false: an artefact failed its gate and was taken for a latency-only run
  std::string gate_failures;  // what failed, when !gate_approved
};

struct ArtifactRequest {
  std::string encoder_precision = "fp32";
  std::string head_precision = "fp32";
  std::string backend = "onnxruntime";
  std::string mode_override;  // "" | "psd" | "propagate" | "guided"
  bool check_files = true;    // SHA-256 of every file used
  bool allow_ungated = false; // latency-only: take artefacts that failed the correctness gate
};

// Reads and checks <dir>/manifest.json: the one implementation of these rules (the sessions and,
// through psd_artifacts_read, Pipeline.from_artifacts use it): format 1, a manifest of at most
// 64 MiB and 64 nesting levels, model mode psd/propagate, the working size by
// psd_check_frame_size, fm_lower 1..4096, the preprocessing ("official" or "bicubic"; a manifest
// without one predates it and is refused with the rebuild), every file entry a relative path inside the directory
// (no "..", no absolute path, no symlink leading out), present, with its SHA-256, of the requested
// precision and backend, gate passed. Throws Error(PSD_E_ARTIFACT) naming the fix.
ArtifactSelection ReadArtifacts(const std::string& dir, const ArtifactRequest& request);

// ------------------------------------------------------------------ backends
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // static shape (every dim > 0)
  int64_t count() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct BackendConfig {
  int32_t device = PSD_DEVICE_CPU;
  int32_t device_id = 0;
  int32_t intra_op_threads = 0;
  std::string ort_library;  // "" = search
};

// One network (encoder or head) with float32 inputs and outputs of static shapes. Buffers are
// bound once (host memory for CPU sessions, device memory for CUDA ones) and every Run() reads
// the inputs and writes the requested outputs in place: no allocation per frame.
class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  virtual const std::vector<TensorSpec>& inputs() const = 0;
  virtual const std::vector<TensorSpec>& outputs() const = 0;
  // buffers[i] for inputs()[i] / the outputs named in `wanted` (in that order). Call once.
  virtual void Bind(const std::vector<float*>& input_buffers, const std::vector<std::string>& wanted,
                    const std::vector<float*>& output_buffers) = 0;
  // Runs once. `stream`: the caller's cudaStream_t for device sessions (ordering is kept with
  // it), ignored on the CPU.
  virtual void Run(void* stream) = 0;
  // "onnxruntime 1.21.0 (CPUExecutionProvider)"
  virtual std::string Describe() const = 0;
  // "" when Run() on a CUDA stream can be captured into a CUDA graph (psd_session_options.
  // cuda_graph): it enqueues device work on that stream only, and neither allocates nor
  // synchronises after its first run. Otherwise why not; the session then launches plainly.
  virtual std::string CaptureRefusal() const { return "this backend has not been checked for CUDA graph capture"; }
};

std::unique_ptr<InferenceBackend> CreateOrtBackend(const std::string& model_path,
                                                   const BackendConfig& config);
// Throws Error(PSD_E_BACKEND_UNAVAILABLE) unless built with TensorRT (PSD_HAVE_TENSORRT).
std::unique_ptr<InferenceBackend> CreateTrtBackend(const std::string& engine_path,
                                                   const BackendConfig& config);
// TEST ONLY (test_backend.cpp): the variant $PSD_BACKEND_TEST_FIXTURE selects ("1",
// "refuse-capture", "sync-in-run"), "" when unset/""/"0" (the real backends); throws
// Error(PSD_E_INVALID_ARGUMENT) for another value. Read at psd_session_create only.
std::string TestFixtureRequest();
// The test fixture backend over the ONNX file's tensor names and shapes (not a network).
std::unique_ptr<InferenceBackend> CreateTestBackend(const std::string& model_path, const BackendConfig& config,
                                                    const std::string& variant);
// The ONNX Runtime library that would be loaded for `override_path` ("" = search), without
// creating anything; throws Error(PSD_E_BACKEND_UNAVAILABLE) when none loads.
std::string ProbeOrtLibrary(const std::string& override_path);

}  // namespace capi
}  // namespace psd
