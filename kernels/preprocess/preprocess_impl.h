// Kernel body of the FM preprocessing, written once for CPU and CUDA (see preprocess.h).
#pragma once

#include "../common/parallel_for.h"
#include "../resample/resample_impl.h"
#include "preprocess.h"

namespace psd {
namespace kernels {

template <Device D>
void PreprocessRgb(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                   int64_t out_w, Stream s) {
  const float sy = ResizeScale(h, out_h), sx = ResizeScale(w, out_w);
  const int64_t plane = out_h * out_w;
  ParallelFor<D>(3 * plane, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / plane, p = i % plane;
    const int64_t src_ch = bgr ? 2 - ch : ch;
    const float v = BicubicAt(p / out_w, p % out_w, h, w, sy, sx, [=](int64_t y, int64_t x) {
      return static_cast<float>(rgb[(y * w + x) * 3 + src_ch]) * (1.0f / 255.0f);
    });
    const float mean = ch == 0 ? 0.485f : (ch == 1 ? 0.456f : 0.406f);
    const float inv_std = ch == 0 ? 1.0f / 0.229f : (ch == 1 ? 1.0f / 0.224f : 1.0f / 0.225f);
    out[i] = (v - mean) * inv_std;
  });
}

#define PSD_INSTANTIATE_PREPROCESS(D)                                                   \
  template void PreprocessRgb<D>(const uint8_t*, int64_t, int64_t, bool, float*, int64_t, \
                                 int64_t, Stream);

}  // namespace kernels
}  // namespace psd
