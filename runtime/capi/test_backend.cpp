// THE TEST FIXTURE BACKEND: an InferenceBackend that is not a network. Selected only by the
// environment variable PSD_BACKEND_TEST_FIXTURE, read at psd_session_create (never by an option,
// never by default), so that a deployment can never pick it silently; its Describe() says
// "TEST FIXTURE" and psd_session_info.backend shows it.
//
//   PSD_BACKEND_TEST_FIXTURE=1               the fixture, capturable into CUDA graphs
//   PSD_BACKEND_TEST_FIXTURE=refuse-capture  the fixture, reporting CaptureRefusal() (as ONNX
//                                            Runtime's CUDA provider does)
//   PSD_BACKEND_TEST_FIXTURE=sync-in-run     the fixture, synchronising the caller's stream in
//                                            Run() (a backend that breaks a capture midway)
//   unset, "" or "0"                         the real backends
//
// It computes fixed, cheap, deterministic functions of its inputs (kernels/fixture/fixture.h,
// one source for CPU and CUDA) on the session's device and stream, with the tensor names and
// shapes read from the artefact directory's ONNX file (graph inputs and outputs, parsed here
// from the protobuf: no ONNX Runtime needed). Everything around it is the session's real code
// (manifest checks, buffers, preprocessing, propagation, post-processing, streams, graphs), so
// the psd and propagate paths run end to end where no network runtime can: under the CUDA
// emulator. Its depth means nothing.
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "../../kernels/common/check.h"
#include "../../kernels/fixture/fixture.h"
#include "session_internal.h"

#if defined(PSD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace psd {
namespace capi {

namespace {

// ------------------------------------------------------------------ ONNX graph inputs/outputs
// The protobuf wire format, just enough of onnx.proto: ModelProto.graph (7) -> GraphProto.input
// (11) / output (12) / initializer (5, TensorProto.name 8) -> ValueInfoProto.name (1), .type (2)
// -> TypeProto.tensor_type (1) -> elem_type (1), shape (2) -> dim (1) -> dim_value (1).
class Reader {
 public:
  Reader(const char* p, size_t n, const std::string& file) : p_(p), end_(p + n), file_(file) {}
  bool done() const { return p_ >= end_; }
  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) Bad("truncated varint");
      const uint8_t b = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    Bad("varint too long");
  }
  // Next field: its number and wire type; *sub = its bytes for length-delimited fields.
  bool Next(uint32_t* field, Reader* sub) {
    if (done()) return false;
    const uint64_t key = Varint();
    *field = static_cast<uint32_t>(key >> 3);
    switch (key & 7) {
      case 0: last_ = Varint(); *sub = Reader(p_, 0, file_); return true;
      case 1: Skip(8); return true;
      case 5: Skip(4); return true;
      case 2: {
        const uint64_t n = Varint();
        if (n > static_cast<uint64_t>(end_ - p_)) Bad("field longer than the file");
        *sub = Reader(p_, static_cast<size_t>(n), file_);
        p_ += n;
        return true;
      }
      default: Bad("unsupported wire type");
    }
  }
  uint64_t last_varint() const { return last_; }
  std::string Str() const { return std::string(p_, end_); }

 private:
  void Skip(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) Bad("truncated field");
    p_ += n;
  }
  [[noreturn]] void Bad(const char* why) const {
    Throw(PSD_E_ARTIFACT, "test fixture backend: " + file_ + " is not a readable ONNX model (" + why + ")");
  }
  const char* p_;
  const char* end_;
  std::string file_;
  uint64_t last_ = 0;
};

TensorSpec ReadValueInfo(Reader r, const std::string& file) {
  TensorSpec spec;
  int64_t elem = -1;
  uint32_t f;
  Reader sub(nullptr, 0, file);
  while (r.Next(&f, &sub)) {
    if (f == 1) spec.name = sub.Str();
    if (f != 2) continue;
    Reader type = sub;
    uint32_t tf;
    Reader tsub(nullptr, 0, file);
    while (type.Next(&tf, &tsub)) {
      if (tf != 1) continue;  // tensor_type
      Reader tensor = tsub;
      uint32_t xf;
      Reader xsub(nullptr, 0, file);
      while (tensor.Next(&xf, &xsub)) {
        if (xf == 1) elem = static_cast<int64_t>(tensor.last_varint());
        if (xf != 2) continue;  // shape
        Reader shape = xsub;
        uint32_t sf;
        Reader dim(nullptr, 0, file);
        while (shape.Next(&sf, &dim)) {
          if (sf != 1) continue;
          int64_t value = 0;
          uint32_t df;
          Reader dsub(nullptr, 0, file);
          while (dim.Next(&df, &dsub))
            if (df == 1) value = static_cast<int64_t>(dim.last_varint());
          spec.shape.push_back(value);
        }
      }
    }
  }
  if (elem != 1)
    Throw(PSD_E_ARTIFACT, "test fixture backend: " + file + ": tensor '" + spec.name + "' is not float32");
  for (int64_t d : spec.shape)
    if (d <= 0)
      Throw(PSD_E_ARTIFACT, "test fixture backend: " + file + ": tensor '" + spec.name +
                                "' has a dynamic dimension (psdrt exports static shapes)");
  return spec;
}

void ReadOnnxSpecs(const std::string& path, std::vector<TensorSpec>* ins, std::vector<TensorSpec>* outs) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Throw(PSD_E_ARTIFACT, "test fixture backend: cannot read " + path + " (it reads ONNX models only)");
  const std::string blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Reader model(blob.data(), blob.size(), path);
  uint32_t field;
  Reader sub(nullptr, 0, path);
  bool graph_seen = false;
  while (model.Next(&field, &sub)) {
    if (field != 7) continue;
    graph_seen = true;
    std::vector<std::string> initializers;
    std::vector<TensorSpec> in;
    Reader graph = sub;
    uint32_t gf;
    Reader gsub(nullptr, 0, path);
    while (graph.Next(&gf, &gsub)) {
      if (gf == 11) in.push_back(ReadValueInfo(gsub, path));
      if (gf == 12) outs->push_back(ReadValueInfo(gsub, path));
      if (gf == 5) {
        Reader t = gsub;
        uint32_t tf;
        Reader tsub(nullptr, 0, path);
        while (t.Next(&tf, &tsub))
          if (tf == 8) initializers.push_back(tsub.Str());
      }
    }
    for (const TensorSpec& s : in) {  // graph inputs that are initializers are weights, not inputs
      bool weight = false;
      for (const std::string& n : initializers) weight = weight || n == s.name;
      if (!weight) ins->push_back(s);
    }
  }
  if (!graph_seen || ins->empty() || outs->empty())
    Throw(PSD_E_ARTIFACT, "test fixture backend: " + path + " has no graph with inputs and outputs");
}

// ------------------------------------------------------------------ the backend
void Fixture(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error&) {
    throw;
  } catch (const psd::CudaError& e) {
    Throw(PSD_E_CUDA, std::string("test fixture backend: ") + e.what());
  } catch (const std::exception& e) {
    Throw(PSD_E_INTERNAL, std::string("test fixture backend: ") + e.what());
  }
}

const TensorSpec* Find(const std::vector<TensorSpec>& v, const std::string& name) {
  for (const TensorSpec& s : v)
    if (s.name == name) return &s;
  return nullptr;
}

class TestBackend final : public InferenceBackend {
 public:
  TestBackend(const std::string& path, const BackendConfig& cfg, const std::string& variant)
      : cfg_(cfg), variant_(variant), path_(path) {
    ReadOnnxSpecs(path, &in_, &out_);
    encoder_ = in_.size() == 1;  // the encoder takes the image only; the head takes sparse, diff, feat*
  }

  const std::vector<TensorSpec>& inputs() const override { return in_; }
  const std::vector<TensorSpec>& outputs() const override { return out_; }

  void Bind(const std::vector<float*>& ins, const std::vector<std::string>& wanted,
            const std::vector<float*>& outs) override {
    if (ins.size() != in_.size() || outs.size() != wanted.size())
      Throw(PSD_E_INTERNAL, "TestBackend::Bind: buffer count mismatch");
    in_ptr_ = ins;
    wanted_ = wanted;
    out_ptr_ = outs;
    for (const std::string& w : wanted) {
      if (!Find(out_, w)) Throw(PSD_E_INTERNAL, "TestBackend::Bind: no output " + w);
      const bool known = encoder_ ? (w == "rel_inv" || (w.size() == 5 && w.compare(0, 4, "feat") == 0))
                                  : (w == "depth_pix" || w == "fd0");
      if (!known) Throw(PSD_E_ARTIFACT, "test fixture backend: cannot compute output '" + w + "' of " + path_);
    }
    if (!encoder_)
      for (const char* n : {"sparse", "depth_diff", "feat0"})
        if (!Find(in_, n)) Throw(PSD_E_ARTIFACT, "test fixture backend: the head " + path_ + " has no input " + n);
  }

  void Run(void* stream) override {
    const Device dev = cfg_.device == PSD_DEVICE_CUDA ? Device::kCuda : Device::kCpu;
#if defined(PSD_WITH_CUDA)
    if (dev == Device::kCuda && variant_ == "sync-in-run") {
      // what a backend that waits for its inputs on the host does: illegal while capturing
      const cudaError_t e = cudaStreamSynchronize(stream ? static_cast<cudaStream_t>(stream) : cudaStreamPerThread);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        Throw(PSD_E_CUDA, std::string("test fixture backend (sync-in-run): cudaStreamSynchronize: ") +
                              cudaGetErrorName(e));
      }
    }
#endif
    Fixture([&] {
      if (encoder_) {
        const TensorSpec& x = in_[0];
        for (size_t i = 0; i < wanted_.size(); ++i) {
          const TensorSpec& o = *Find(out_, wanted_[i]);
          const int32_t which = wanted_[i] == "rel_inv" ? 0 : 1 + (wanted_[i][4] - '0');
          kernels::FixtureEncoderMapChecked(dev, in_ptr_[0], x.shape[1], x.shape[2], x.shape[3], which, out_ptr_[i],
                                            o.shape[1], o.shape[2], o.shape[3], stream);
        }
        return;
      }
      const TensorSpec& f0 = *Find(in_, "feat0");
      const TensorSpec& dp = *Find(out_, "depth_pix");
      const TensorSpec& fd = *Find(out_, "fd0");
      float* depth_pix = nullptr;
      float* fd0 = nullptr;
      for (size_t i = 0; i < wanted_.size(); ++i) (wanted_[i] == "fd0" ? fd0 : depth_pix) = out_ptr_[i];
      if (!depth_pix || !fd0) Throw(PSD_E_INTERNAL, "test fixture backend: the head computes depth_pix and fd0 together");
      const int64_t h = dp.shape[dp.shape.size() - 2], w = dp.shape.back();
      kernels::FixtureHeadChecked(dev, Input("sparse"), Input("depth_diff"), h, w, Input("feat0"), f0.shape[1],
                                  f0.shape[2], f0.shape[3], depth_pix, fd0, fd.shape[1], fd.shape[2], fd.shape[3],
                                  stream);
    });
  }

  std::string Describe() const override {
    return std::string("TEST FIXTURE backend (PSD_BACKEND_TEST_FIXTURE=") + variant_ +
           "; not a network: a fixed function of its inputs, for tests only) on " +
           (cfg_.device == PSD_DEVICE_CUDA ? "cuda" : "cpu");
  }

  std::string CaptureRefusal() const override {
    if (variant_ == "refuse-capture")
      return "the test fixture backend refuses capture (PSD_BACKEND_TEST_FIXTURE=refuse-capture)";
    return "";
  }

 private:
  float* Input(const char* name) const {
    for (size_t i = 0; i < in_.size(); ++i)
      if (in_[i].name == name) return in_ptr_[i];
    return nullptr;
  }

  BackendConfig cfg_;
  std::string variant_, path_;
  bool encoder_ = true;
  std::vector<TensorSpec> in_, out_;
  std::vector<float*> in_ptr_, out_ptr_;
  std::vector<std::string> wanted_;
};

}  // namespace

std::string TestFixtureRequest() {
  const char* v = std::getenv("PSD_BACKEND_TEST_FIXTURE");
  if (!v || !*v || std::string(v) == "0") return "";
  const std::string s = v;
  if (s == "1" || s == "refuse-capture" || s == "sync-in-run") return s;
  Throw(PSD_E_INVALID_ARGUMENT, "PSD_BACKEND_TEST_FIXTURE='" + s + "' is not a test fixture variant; unset it "
                                "for the real backends (it is for tests only), or use 1, refuse-capture or "
                                "sync-in-run");
}

std::unique_ptr<InferenceBackend> CreateTestBackend(const std::string& model_path, const BackendConfig& config,
                                                    const std::string& variant) {
  return std::unique_ptr<InferenceBackend>(new TestBackend(model_path, config, variant));
}

}  // namespace capi
}  // namespace psd
