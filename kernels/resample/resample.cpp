// Validation and device switch for the resampling family (compiled by the host compiler in both
// libraries; it sees only template declarations, never the kernel bodies).
#include "resample.h"

#include <cmath>

#include "../common/check.h"

namespace psd {
namespace kernels {

CameraParams MakeCameraParams(int32_t camera, const float* params) {
  PSD_REQUIRE(camera >= 0 && camera <= 2, InvalidArgument,
              "camera must be 0 (pinhole), 1 (equirectangular) or 2 (MEI)");
  CameraParams p{};
  if (camera == 1) return p;
  PSD_REQUIRE(params != nullptr, NullPointer, "null pointer: camera parameters");
  if (camera == 2) {
    for (int k = 0; k < 9; ++k) p.v[k] = params[k];
    PSD_REQUIRE(p.v[5] != 0.0f && p.v[6] != 0.0f, InvalidArgument, "MEI gamma1/gamma2 is zero");
    return p;
  }
  const double a = params[0], b = params[1], c = params[2], d = params[3], e = params[4],
               f = params[5], g = params[6], h = params[7], i = params[8];
  const double A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const double det = a * A + b * B + c * C;
  PSD_REQUIRE(std::isfinite(det) && det != 0.0, InvalidArgument,
              "intrinsics K are singular or not finite");
  const double inv[9] = {A / det, -(b * i - c * h) / det, (b * f - c * e) / det,
                         B / det, (a * i - c * g) / det,  -(a * f - c * d) / det,
                         C / det, -(a * h - b * g) / det, (a * e - b * d) / det};
  for (int k = 0; k < 9; ++k) p.v[k] = static_cast<float>(inv[k]);
  return p;
}

namespace {
void RequireDims(int64_t a, int64_t b, int64_t c) {
  PSD_REQUIRE(a > 0 && b > 0 && c > 0, ShapeMismatch, "all dimensions must be positive");
}
}  // namespace

void Resize(Device d, ResizeMode mode, const float* in, int64_t c, int64_t hin, int64_t win,
            float* out, int64_t hout, int64_t wout, Stream s) {
  PSD_REQUIRE_PTR(in);
  PSD_REQUIRE_PTR(out);
  RequireDims(c, hin, win);
  RequireDims(1, hout, wout);
  PSD_REQUIRE(mode == ResizeMode::kBicubic || mode == ResizeMode::kBilinear, InvalidArgument,
              "resize mode must be 0 (bicubic) or 1 (bilinear)");
  const bool cubic = mode == ResizeMode::kBicubic;
  if (d == Device::kCpu) {
    if (cubic) Bicubic<Device::kCpu>(in, c, hin, win, out, hout, wout, s);
    else Bilinear<Device::kCpu>(in, c, hin, win, out, hout, wout, s);
  } else if (cubic) {
    PSD_CUDA_CALL(Bicubic<Device::kCuda>, in, c, hin, win, out, hout, wout, s);
  } else {
    PSD_CUDA_CALL(Bilinear<Device::kCuda>, in, c, hin, win, out, hout, wout, s);
  }
}

void CompressChannels(Device d, const float* in, int64_t cin, int64_t hin, int64_t win,
                      float* out, int64_t cout, int64_t hout, int64_t wout, float* work,
                      Stream s) {
  PSD_REQUIRE_PTR(in);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE_PTR(work);
  RequireDims(cin, hin, win);
  RequireDims(cout, hout, wout);
  if (d == Device::kCpu) {
    ChannelMix<Device::kCpu>(in, cin, hin * win, work, cout, s);
    Bilinear<Device::kCpu>(work, cout, hin, win, out, hout, wout, s);
  } else {
    PSD_CUDA_CALL(ChannelMix<Device::kCuda>, in, cin, hin * win, work, cout, s);
    PSD_CUDA_CALL(Bilinear<Device::kCuda>, work, cout, hin, win, out, hout, wout, s);
  }
}

void SparsePool4(Device d, const float* sparse, int64_t h, int64_t w, float* out, Stream s) {
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(h >= 4 && w >= 4, ShapeMismatch, "sparse pooling needs H >= 4 and W >= 4");
  if (d == Device::kCpu) SparsePool<Device::kCpu>(sparse, h, w, 4, out, s);
  else PSD_CUDA_CALL(SparsePool<Device::kCuda>, sparse, h, w, 4, out, s);
}

void BackprojectChecked(Device d, int32_t camera, const float* depth, int64_t h, int64_t w,
                        const float* params, float* out, Stream s) {
  PSD_REQUIRE_PTR(depth);
  PSD_REQUIRE_PTR(out);
  RequireDims(1, h, w);
  const CameraParams p = MakeCameraParams(camera, params);
  const Camera cam = static_cast<Camera>(camera);
  if (d == Device::kCpu) Backproject<Device::kCpu>(depth, h, w, cam, p, out, s);
  else PSD_CUDA_CALL(Backproject<Device::kCuda>, depth, h, w, cam, p, out, s);
}

}  // namespace kernels
}  // namespace psd
