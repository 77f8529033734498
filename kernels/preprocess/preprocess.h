// Foundation-model input preprocessing (psd_method.md §2.2, Depth Anything): uint8 HWC RGB (or
// BGR) -> float (3, out_h, out_w), two methods:
//  * official (PreprocessOfficial): what the official PSD loaders compute, scikit-image's
//    resize(img, (out_h, out_w), order=3) on the uint8 image: x = u8 / 255 in double; cubic
//    B-spline interpolation (scipy.ndimage.zoom(order=3, grid_mode=True, mode='mirror')): the
//    spline prefilter per column then per row (pole sqrt(3) - 2, gain 6, whole-sample symmetric
//    boundary initialisers), evaluation at (o + 0.5) * in / out - 0.5 with the coordinate and the
//    taps mirrored at the borders; clipped to [min, max] of the input image; then
//    (x - mean) / std in double and a float32 cast (torchvision Normalize, ConvertImageDtype).
//    Anti-aliasing: before a down-scale by f = in / out, skimage smooths the axis with a Gaussian
//    of sigma (f - 1) / 2 (scipy's gaussian_filter1d: radius int(4 sigma + 0.5), mirror border),
//    reproduced here up to f = 33 (radius 64; more is refused). Separable
//    evaluation (rows, then columns) instead of scipy's 64-tap product over (y, x, channel):
//    equal in exact arithmetic, within 1e-15 in double (tests/kernels/test_preprocess.py).
//  * bicubic (PreprocessRgb): PyTorch bicubic resize (a = -0.75, half-pixel, no antialias,
//    clamped taps) in float32, then (x - mean) / std: what an exported graph's Resize computes.
// FmInputSize matches fm_input_size.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"

namespace psd {
namespace kernels {

template <Device D>
void PreprocessRgb(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                   int64_t out_w, Stream s);

// skimage's anti-aliasing sigma for an axis resized from n_in to n_out (0 when up-scaling), the
// Gaussian's radius (scipy: int(4 sigma + 0.5)), and the largest radius computed (f <= 33).
constexpr int kMaxGaussRadius = 64;
PSD_HOST_DEVICE PSD_INLINE double AntiAliasSigma(int64_t n_in, int64_t n_out) {
  const double f = static_cast<double>(n_in) / static_cast<double>(n_out);
  return f > 1.0 ? (f - 1.0) / 2.0 : 0.0;
}
PSD_HOST_DEVICE PSD_INLINE int GaussRadius(double sigma) { return static_cast<int>(4.0 * sigma + 0.5); }

// Workspace of PreprocessOfficial, in doubles.
int64_t PreprocessOfficialDoubles(int64_t h, int64_t w, int64_t out_h, int64_t out_w);
template <Device D>
void PreprocessOfficial(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                        int64_t out_w, double* work, Stream s);

// Lower-bound, aspect-preserving size, multiples of `multiple` (NumPy half-to-even rounding).
void FmInputSize(int64_t h, int64_t w, int64_t lower, int64_t multiple, int64_t* out_h,
                 int64_t* out_w);
void PreprocessChecked(Device d, const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out,
                       int64_t out_h, int64_t out_w, Stream s);
// method 0 = official, 1 = bicubic (psd_preprocess_t); `work`: PreprocessWorkspaceBytes bytes.
size_t PreprocessWorkspaceBytes(int32_t method, int64_t h, int64_t w, int64_t out_h, int64_t out_w);
void PreprocessMethodChecked(Device d, int32_t method, const uint8_t* rgb, int64_t h, int64_t w, bool bgr,
                             float* out, int64_t out_h, int64_t out_w, void* work, size_t work_bytes, Stream s);

}  // namespace kernels
}  // namespace psd
