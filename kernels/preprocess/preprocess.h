// Foundation-model input preprocessing (psd_method.md §2.2, Depth Anything): uint8 HWC RGB (or
// BGR) -> float (3, out_h, out_w): x = u8 / 255, PyTorch bicubic resize (a = -0.75, half-pixel,
// no antialias, clamped taps), then (x - mean) / std with the ImageNet statistics. Matches the
// NumPy reference psdrt.runtime.preprocess.preprocess_rgb; FmInputSize matches fm_input_size.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace psd {
namespace kernels {

template <Device D>
void PreprocessRgb(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                   int64_t out_w, Stream s);

// Lower-bound, aspect-preserving size, multiples of `multiple` (NumPy half-to-even rounding).
void FmInputSize(int64_t h, int64_t w, int64_t lower, int64_t multiple, int64_t* out_h,
                 int64_t* out_w);
void PreprocessChecked(Device d, const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out,
                       int64_t out_h, int64_t out_w, Stream s);

}  // namespace kernels
}  // namespace psd
