// TensorRT behind InferenceBackend (TensorRT 10 name-based API: setTensorAddress + enqueueV3).
// Compiled only when build.py finds NvInfer.h and libnvinfer (PSD_HAVE_TENSORRT); otherwise the
// factory reports PSD_E_BACKEND_UNAVAILABLE. NOT COMPILED OR RUN YET: no TensorRT on the
// development machines. Engines come from `psdrt build --target desktop-gpu|orin` (fingerprinted,
// with a sidecar manifest checked by the Python side; the session checks the SHA-256 of the
// engine file through manifest.json like every artefact).
#include <string>

#include "session_internal.h"

#if defined(PSD_HAVE_TENSORRT) && PSD_HAVE_TENSORRT && defined(PSD_WITH_CUDA)
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

namespace psd {
namespace capi {
namespace {

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last = msg;
  }
  std::string last;
};

class TrtBackend final : public InferenceBackend {
 public:
  TrtBackend(const std::string& path, const BackendConfig& cfg) {
    if (cfg.device != PSD_DEVICE_CUDA)
      Throw(PSD_E_INVALID_ARGUMENT, "TensorRT engines run on the GPU; create the session with device = PSD_DEVICE_CUDA");
    if (cudaSetDevice(cfg.device_id) != cudaSuccess) Throw(PSD_E_CUDA, "cudaSetDevice failed");
    std::ifstream f(path, std::ios::binary);
    if (!f) Throw(PSD_E_ARTIFACT, "cannot read TensorRT engine " + path);
    const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) Throw(PSD_E_BACKEND_UNAVAILABLE, "createInferRuntime failed: " + logger_.last);
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      Throw(PSD_E_ARTIFACT, path + " does not deserialise with this TensorRT (" + logger_.last +
                                "); engines are not portable across TensorRT versions or GPUs: rebuild "
                                "it on the target with `psdrt build --target desktop-gpu|orin`");
    context_.reset(engine_->createExecutionContext());
    if (!context_) Throw(PSD_E_BACKEND, "createExecutionContext failed: " + logger_.last);
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        Throw(PSD_E_ARTIFACT, path + ": tensor '" + name + "' is not float32");
      const nvinfer1::Dims d = engine_->getTensorShape(name);
      TensorSpec spec;
      spec.name = name;
      for (int32_t k = 0; k < d.nbDims; ++k) {
        if (d.d[k] <= 0) Throw(PSD_E_ARTIFACT, path + ": tensor '" + spec.name + "' has a dynamic dimension");
        spec.shape.push_back(d.d[k]);
      }
      (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? in_ : out_).push_back(spec);
    }
  }

  const std::vector<TensorSpec>& inputs() const override { return in_; }
  const std::vector<TensorSpec>& outputs() const override { return out_; }

  void Bind(const std::vector<float*>& ins, const std::vector<std::string>& wanted,
            const std::vector<float*>& outs) override {
    for (size_t i = 0; i < ins.size(); ++i)
      if (!context_->setTensorAddress(in_[i].name.c_str(), ins[i])) Throw(PSD_E_BACKEND, "setTensorAddress failed");
    for (size_t i = 0; i < wanted.size(); ++i)
      if (!context_->setTensorAddress(wanted[i].c_str(), outs[i])) Throw(PSD_E_BACKEND, "setTensorAddress failed");
    // outputs nobody asked for still need memory: one scratch buffer each
    for (const auto& o : out_) {
      bool bound = false;
      for (const auto& w : wanted) bound = bound || w == o.name;
      if (bound) continue;
      void* p = nullptr;
      if (cudaMalloc(&p, static_cast<size_t>(o.count()) * sizeof(float)) != cudaSuccess)
        Throw(PSD_E_OUT_OF_MEMORY, "cudaMalloc failed for " + o.name);
      scratch_.push_back(p);
      context_->setTensorAddress(o.name.c_str(), p);
    }
  }

  void Run(void* stream) override {
    cudaStream_t s = stream ? static_cast<cudaStream_t>(stream) : cudaStreamPerThread;
    if (!context_->enqueueV3(s)) Throw(PSD_E_BACKEND, "TensorRT enqueueV3 failed: " + logger_.last);
  }

  std::string Describe() const override { return "tensorrt " + std::to_string(getInferLibVersion()); }

  // enqueueV3 on the caller's stream is capturable once the context has run once (TensorRT's
  // documentation; the session's first device frame is that warm-up). UNTESTED: no TensorRT
  // and no GPU on the development machines; only the emulator's capture has been exercised.
  std::string CaptureRefusal() const override { return ""; }

  ~TrtBackend() override {
    for (void* p : scratch_) cudaFree(p);
  }

 private:
  template <typename T>
  struct Del {
    void operator()(T* p) const { delete p; }
  };
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime, Del<nvinfer1::IRuntime>> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine, Del<nvinfer1::ICudaEngine>> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext, Del<nvinfer1::IExecutionContext>> context_;
  std::vector<TensorSpec> in_, out_;
  std::vector<void*> scratch_;
};

}  // namespace

std::unique_ptr<InferenceBackend> CreateTrtBackend(const std::string& path, const BackendConfig& cfg) {
  return std::unique_ptr<InferenceBackend>(new TrtBackend(path, cfg));
}

}  // namespace capi
}  // namespace psd

#else

namespace psd {
namespace capi {

std::unique_ptr<InferenceBackend> CreateTrtBackend(const std::string& path, const BackendConfig&) {
  Throw(PSD_E_BACKEND_UNAVAILABLE,
        "this psd library was built without TensorRT, so it cannot run " + path +
            "; rebuild with `python build.py` on a machine where NvInfer.h and libnvinfer are "
            "found (and nvcc), or use backend = PSD_BACKEND_ONNXRUNTIME");
}

}  // namespace capi
}  // namespace psd

#endif
