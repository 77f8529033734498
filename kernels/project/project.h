// Point-cloud projection family: LiDAR / ToF / SLAM points (N x stride float32, x y z first, in
// the sensor frame) -> a z-buffered sparse depth image (H, W) float32 metres, 0 = no point.
//
// For each point p (skipped if any coordinate is not finite):
//   c = T * [p, 1]              (T: 4x4 sensor-to-camera, row-major float64, host memory)
//   kept iff min_depth < c.z <= max_depth (points behind the camera or too close are dropped)
//   u = (K00 c.x + K01 c.y + K02 c.z) / c.z,  v = (K11 c.y + K12 c.z) / c.z
//   pixel (row, col) = (floor(v + 0.5), floor(u + 0.5)): the nearest pixel centre, centres at
//   integer coordinates (0-based, OpenCV's and psdrt's K convention); kept iff inside the image
//   depth = (float) c.z (the camera's z, not the range); where several points hit one pixel, the
//   nearest wins (z-buffer).
// Every product and sum is float64 and unfused, in the order written (left to right), on the
// CPU and the GPU alike, so both pick the same pixel for every point, and the NumPy reference
// (psdrt.runtime.points.reference_project_points) equals them bit for bit. The z-buffer is an
// atomic minimum over the depth's bits (positive floats order like their bit patterns), so the
// result does not depend on the order in which points are processed.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace psd {
namespace kernels {

// Passed by value to kernels: T's top 3 rows and K's top 2 rows (row-major), the depth range.
struct ProjectParams {
  double t[12];
  double k[6];
  double min_depth, max_depth;
};

// out (h, w): the bit patterns of the z-buffer (uint32 view of the float32 output).
template <Device D>
void ZBufferClear(uint32_t* out, int64_t n, Stream s);
template <Device D>
void ProjectPoints(const float* points, int64_t n, int64_t stride, ProjectParams p, int64_t h,
                   int64_t w, uint32_t* out, Stream s);
template <Device D>
void ZBufferFinish(uint32_t* out, int64_t n, Stream s);

// Occlusion (parallax) filter of a sparse depth image, for scan-line LiDAR input. A LiDAR mounted
// apart from the camera sees background past a foreground edge where the camera sees the
// foreground; projected, those background returns land inside the foreground's silhouette,
// between its scan lines. A valid point p (depth d, valid = finite and > 0) is dropped iff the
// window of rows [y - ry, y - 1] and [y + 1, y + ry], columns [x - rx, x + rx] (clipped to the
// image) holds valid points q with q < d * (1 - rel) (float32 product) above p and below p, and
// at columns <= x and >= x (counted over both row ranges): p is enclosed by nearer returns, so
// a nearer surface covers it. A background point beside a silhouette has nearer points on one
// side only and stays. Missing pixels come out 0;
// every comparison is exact, so the NumPy reference (psdrt.runtime.points.
// reference_filter_occluded) equals the CPU and CUDA results bit for bit.
struct OcclusionParams {
  int32_t rx, ry;
  float keep;  // 1 - rel, rounded to float32 on the host
};
template <Device D>
void OcclusionFilter(const float* sparse, int64_t h, int64_t w, OcclusionParams p, float* out,
                     Stream s);
// rx 0..64, ry 1..64, 0 < rel < 1; out must not alias sparse.
void OcclusionFilterChecked(Device d, const float* sparse, int64_t h, int64_t w, int32_t rx,
                            int32_t ry, double rel, float* out, Stream s);

// ---- validated entry point (project.cpp): T NULL = identity; K a usable pinhole K
// (psd_check_intrinsics' rules); 0 < min_depth < max_depth; n = 0 gives an all-zero image.
void ProjectPointsChecked(Device d, const float* points, int64_t n, int64_t stride, const double* T,
                          const double* K, int64_t h, int64_t w, double min_depth, double max_depth,
                          float* out, Stream s);

}  // namespace kernels
}  // namespace psd
