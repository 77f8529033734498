// Validation, FM input size and device switch for the preprocessing.
#include "preprocess.h"

#include <cmath>

#include "../common/check.h"
#include "../common/reduce.h"

namespace psd {
namespace kernels {

void FmInputSize(int64_t h, int64_t w, int64_t lower, int64_t multiple, int64_t* out_h,
                 int64_t* out_w) {
  PSD_REQUIRE_PTR(out_h);
  PSD_REQUIRE_PTR(out_w);
  PSD_REQUIRE(h > 0 && w > 0 && lower > 0 && multiple > 0, InvalidArgument,
              "fm_input_size needs positive sizes");
  // the foundation model's input is at least lower x lower: bounded so that a typo cannot ask
  // for gigabytes (runtime.preprocess.fm_input_size has the same bounds)
  PSD_REQUIRE(lower <= 4096 && multiple <= 1024, InvalidArgument,
              "fm_input_size: lower must be <= 4096 and multiple <= 1024 (PSD uses 392 and 14; Depth Anything "
              "518 and 14)");
  const double s = std::fmax(static_cast<double>(lower) / h, static_cast<double>(lower) / w);
  auto constrain = [&](double x) {
    // std::nearbyint rounds half to even in the default rounding mode, like np.round
    int64_t y = static_cast<int64_t>(std::nearbyint(x / multiple) * multiple);
    if (y < lower) y = static_cast<int64_t>(std::ceil(x / multiple) * multiple);
    return y;
  };
  *out_h = constrain(s * h);
  *out_w = constrain(s * w);
}

void PreprocessChecked(Device d, const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out,
                       int64_t out_h, int64_t out_w, Stream s) {
  PSD_REQUIRE_PTR(rgb);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(h > 0 && w > 0 && out_h > 0 && out_w > 0, ShapeMismatch,
              "preprocess needs positive input and output sizes");
  if (d == Device::kCpu) PreprocessRgb<Device::kCpu>(rgb, h, w, bgr, out, out_h, out_w, s);
  else PSD_CUDA_CALL(PreprocessRgb<Device::kCuda>, rgb, h, w, bgr, out, out_h, out_w, s);
}

int64_t PreprocessOfficialDoubles(int64_t h, int64_t w, int64_t out_h, int64_t out_w) {
  (void)out_w;
  return 3 * h * w + 3 * out_h * w + 2 + 2 * kChunks + 8 * (out_h + out_w) + 2 * (2 * kMaxGaussRadius + 1) +
         3 * h * w;
}

size_t PreprocessWorkspaceBytes(int32_t method, int64_t h, int64_t w, int64_t out_h, int64_t out_w) {
  PSD_REQUIRE(method == 0 || method == 1, InvalidArgument,
              "preprocess method must be 0 (official: scikit-image resize order=3) or 1 (bicubic)");
  PSD_REQUIRE(h > 0 && w > 0 && out_h > 0 && out_w > 0, ShapeMismatch,
              "preprocess needs positive input and output sizes");
  return method == 1 ? 0 : static_cast<size_t>(PreprocessOfficialDoubles(h, w, out_h, out_w)) * sizeof(double) + 256;
}

void PreprocessMethodChecked(Device d, int32_t method, const uint8_t* rgb, int64_t h, int64_t w, bool bgr,
                             float* out, int64_t out_h, int64_t out_w, void* work, size_t work_bytes, Stream s) {
  const size_t need = PreprocessWorkspaceBytes(method, h, w, out_h, out_w);
  if (method == 1) return PreprocessChecked(d, rgb, h, w, bgr, out, out_h, out_w, s);
  PSD_REQUIRE_PTR(rgb);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(work != nullptr, NullPointer, "null pointer: workspace");
  PSD_REQUIRE(work_bytes >= need, WorkspaceTooSmall,
              "preprocess workspace too small; size it with psd_preprocess_workspace_size");
  // skimage's anti-aliasing Gaussian is computed up to a radius of kMaxGaussRadius
  PSD_REQUIRE(GaussRadius(AntiAliasSigma(h, out_h)) <= kMaxGaussRadius &&
                  GaussRadius(AntiAliasSigma(w, out_w)) <= kMaxGaussRadius,
              InvalidArgument,
              "official preprocessing down-scales by at most 32x (its anti-aliasing Gaussian); resize the frame "
              "first");
  const uintptr_t a = reinterpret_cast<uintptr_t>(work);
  double* ws = reinterpret_cast<double*>(a + (256 - a % 256) % 256);
  if (d == Device::kCpu) PreprocessOfficial<Device::kCpu>(rgb, h, w, bgr, out, out_h, out_w, ws, s);
  else PSD_CUDA_CALL(PreprocessOfficial<Device::kCuda>, rgb, h, w, bgr, out, out_h, out_w, ws, s);
}

}  // namespace kernels
}  // namespace psd
