// Resampling family: bicubic / bilinear resize (PyTorch align_corners=False semantics), channel
// compression (trilinear over channels), 4x4 sparse pooling, back-projection.
// Launchers are templates on the device; definitions in resample_impl.h, instantiated in
// resample_cpu.cpp and resample_cuda.cu. Every pointer lives on the launcher's device.
// All maps are planar float (C, H, W), contiguous.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace psd {
namespace kernels {

enum class ResizeMode : int32_t { kBicubic = 0, kBilinear = 1 };
enum class Camera : int32_t { kPinhole = 0, kEquirect = 1, kMei = 2 };

// Passed by value to kernels. Pinhole: K^-1 row-major; MEI: xi, k1, k2, p1, p2, gamma1,
// gamma2, u0, v0; equirectangular: unused.
struct CameraParams {
  float v[9];
};

// Host helpers (resample.cpp). MakeCameraParams inverts K (closed form, double) for pinhole and
// throws InvalidArgument for a singular or non-finite K, or an unknown camera.
CameraParams MakeCameraParams(int32_t camera, const float* params);

template <Device D>
void Bicubic(const float* in, int64_t c, int64_t hin, int64_t win, float* out, int64_t hout,
             int64_t wout, Stream s);
template <Device D>
void Bilinear(const float* in, int64_t c, int64_t hin, int64_t win, float* out, int64_t hout,
              int64_t wout, Stream s);
// (cin, n) -> (cout, n): the channel axis of the trilinear compression.
template <Device D>
void ChannelMix(const float* in, int64_t cin, int64_t n, float* out, int64_t cout, Stream s);
// (h, w) -> (h/scale, w/scale): sum / (count(> 0) + 1e-5).
template <Device D>
void SparsePool(const float* sparse, int64_t h, int64_t w, int64_t scale, float* out, Stream s);
// depth (h, w) -> points (3, h, w) = depth * ray(u, v).
template <Device D>
void Backproject(const float* depth, int64_t h, int64_t w, Camera cam, CameraParams p,
                 float* out, Stream s);

// ---- validated entry points (resample.cpp): check pointers/shapes, then switch on device.
void Resize(Device d, ResizeMode mode, const float* in, int64_t c, int64_t hin, int64_t win,
            float* out, int64_t hout, int64_t wout, Stream s);
// work: cout * hin * win floats on the device.
void CompressChannels(Device d, const float* in, int64_t cin, int64_t hin, int64_t win,
                      float* out, int64_t cout, int64_t hout, int64_t wout, float* work, Stream s);
void SparsePool4(Device d, const float* sparse, int64_t h, int64_t w, float* out, Stream s);
void BackprojectChecked(Device d, int32_t camera, const float* depth, int64_t h, int64_t w,
                        const float* params, float* out, Stream s);

}  // namespace kernels
}  // namespace psd
