// Validation, FM input size and device switch for the preprocessing.
#include "preprocess.h"

#include <cmath>

#include "../common/check.h"

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

}  // namespace kernels
}  // namespace psd
