// Validation and device switch for the point-cloud projection (compiled by the host compiler in
// both libraries; it sees only template declarations, never the kernel bodies). K itself is
// checked by the C ABI with psd_check_intrinsics, the one K rule, before this runs.
#include "project.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "../common/check.h"

namespace psd {
namespace kernels {

namespace {
std::string Num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", v);
  return std::string(b);
}

// T: finite, bottom row (0, 0, 0, 1), rotation orthonormal within 1e-3 (a rigid transform; a
// transposed matrix or one in other units fails here).
void CheckExtrinsics(const double* T) {
  for (int i = 0; i < 16; ++i)
    PSD_REQUIRE(std::isfinite(T[i]), InvalidArgument,
                "extrinsics T contains NaN or Inf; fix the calibration file");
  PSD_REQUIRE(T[12] == 0.0 && T[13] == 0.0 && T[14] == 0.0 && T[15] == 1.0, InvalidArgument,
              "extrinsics T bottom row is [" + Num(T[12]) + ", " + Num(T[13]) + ", " + Num(T[14]) + ", " +
                  Num(T[15]) + "], expected [0, 0, 0, 1]: T is the 4x4 sensor-to-camera transform, "
                  "row-major (is it transposed?)");
  double worst = 0.0;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) {
      double dot = 0.0;
      for (int r = 0; r < 3; ++r) dot += T[r * 4 + a] * T[r * 4 + b];
      worst = std::fmax(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
    }
  PSD_REQUIRE(worst <= 1e-3, InvalidArgument,
              "extrinsics T's rotation is not orthonormal (max |R^T R - I| = " + Num(worst) +
                  "); pass a rigid sensor-to-camera transform (rotation + translation in metres)");
}
}  // namespace

void ProjectPointsChecked(Device d, const float* points, int64_t n, int64_t stride, const double* T,
                          const double* K, int64_t h, int64_t w, double min_depth, double max_depth,
                          float* out, Stream s) {
  PSD_REQUIRE_PTR(K);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(n >= 0, InvalidArgument, "the number of points must be >= 0");
  PSD_REQUIRE(n == 0 || points != nullptr, NullPointer, "null pointer: points");
  PSD_REQUIRE(stride >= 3, InvalidArgument,
              "point stride must be >= 3 floats (x, y, z first; 4 for KITTI's x, y, z, reflectance)");
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "the image size must be positive");
  PSD_REQUIRE(h <= (int64_t{1} << 15) && w <= (int64_t{1} << 15), ShapeMismatch,
              "the image is larger than 32768 pixels on a side; resize the frame");
  PSD_REQUIRE(n <= INT64_MAX / stride, InvalidArgument, "too many points");
  PSD_REQUIRE(std::isfinite(min_depth) && min_depth > 0.0, InvalidArgument,
              "min_depth must be finite and > 0 (metres; points at or behind the camera are dropped)");
  PSD_REQUIRE(!(max_depth <= min_depth) && !std::isnan(max_depth), InvalidArgument,
              "max_depth must be > min_depth (metres; +inf keeps every point in front of the camera)");
  ProjectParams p{};
  if (T != nullptr) {
    CheckExtrinsics(T);
    for (int i = 0; i < 12; ++i) p.t[i] = T[i];
  } else {
    p.t[0] = p.t[5] = p.t[10] = 1.0;
  }
  for (int i = 0; i < 6; ++i) p.k[i] = K[i];
  p.min_depth = min_depth;
  p.max_depth = max_depth;
  uint32_t* bits = reinterpret_cast<uint32_t*>(out);
  const int64_t np = h * w;
  if (d == Device::kCpu) {
    ZBufferClear<Device::kCpu>(bits, np, s);
    if (n > 0) ProjectPoints<Device::kCpu>(points, n, stride, p, h, w, bits, s);
    ZBufferFinish<Device::kCpu>(bits, np, s);
  } else {
    PSD_CUDA_CALL(ZBufferClear<Device::kCuda>, bits, np, s);
    if (n > 0) PSD_CUDA_CALL(ProjectPoints<Device::kCuda>, points, n, stride, p, h, w, bits, s);
    PSD_CUDA_CALL(ZBufferFinish<Device::kCuda>, bits, np, s);
  }
}

void OcclusionFilterChecked(Device d, const float* sparse, int64_t h, int64_t w, int32_t rx,
                            int32_t ry, double rel, float* out, Stream s) {
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "the image size must be positive");
  PSD_REQUIRE(h <= (int64_t{1} << 15) && w <= (int64_t{1} << 15), ShapeMismatch,
              "the image is larger than 32768 pixels on a side; resize the frame");
  PSD_REQUIRE(rx >= 0 && rx <= 64, InvalidArgument,
              "occlusion filter: rx (half-width in pixels) must be 0..64 (default 4)");
  PSD_REQUIRE(ry >= 1 && ry <= 64, InvalidArgument,
              "occlusion filter: ry (rows above and below) must be 1..64 (default 8)");
  PSD_REQUIRE(std::isfinite(rel) && rel > 0.0 && rel < 1.0, InvalidArgument,
              "occlusion filter: rel (relative depth margin) must be in (0, 1) (default 0.1)");
  PSD_REQUIRE(out != sparse, InvalidArgument, "occlusion filter: out must not alias sparse");
  const OcclusionParams p{rx, ry, static_cast<float>(1.0 - rel)};
  if (d == Device::kCpu) OcclusionFilter<Device::kCpu>(sparse, h, w, p, out, s);
  else PSD_CUDA_CALL(OcclusionFilter<Device::kCuda>, sparse, h, w, p, out, s);
}

}  // namespace kernels
}  // namespace psd
