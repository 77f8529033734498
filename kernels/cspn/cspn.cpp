// Validation and device switch for the CSPN family.
#include "cspn.h"

#include "../common/check.h"

namespace psd {
namespace kernels {

int64_t CspnWorkspaceFloats(int64_t c, int64_t h, int64_t w) {
  const int64_t n = h * w;
  return n * c + 9 * n + 2 * n;  // unit features, weights, draw, ping-pong buffer
}

void CspnChecked(Device d, const float* sparse, const float* dense, const float* feat, int64_t c,
                 int64_t h, int64_t w, int32_t iterations, float* work, int64_t work_floats,
                 float* out, Stream s) {
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(dense);
  PSD_REQUIRE_PTR(feat);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(c > 0 && h > 0 && w > 0, ShapeMismatch, "CSPN needs C, H, W > 0");
  PSD_REQUIRE(iterations >= 0, InvalidArgument, "CSPN iterations must be >= 0");
  PSD_REQUIRE(out != sparse, InvalidArgument, "CSPN output must not alias the sparse map");
  PSD_REQUIRE(work != nullptr || CspnWorkspaceFloats(c, h, w) == 0, NullPointer,
              "null pointer: workspace");
  PSD_REQUIRE(work_floats >= CspnWorkspaceFloats(c, h, w), WorkspaceTooSmall,
              "CSPN workspace too small; size it with psd_cspn_workspace_size");
  const int64_t n = h * w;
  float* unit = work;
  float* weights = unit + n * c;
  float* draw = weights + 9 * n;
  float* buf = draw + n;
  if (d == Device::kCpu) {
    NormalizeFeatures<Device::kCpu>(feat, c, n, unit, s);
    Affinity<Device::kCpu>(unit, c, h, w, weights, s);
    CspnSweeps<Device::kCpu>(weights, sparse, dense, h, w, iterations, draw, buf, out, s);
  } else {
    PSD_CUDA_CALL(NormalizeFeatures<Device::kCuda>, feat, c, n, unit, s);
    PSD_CUDA_CALL(Affinity<Device::kCuda>, unit, c, h, w, weights, s);
    PSD_CUDA_CALL(CspnSweeps<Device::kCuda>, weights, sparse, dense, h, w, iterations, draw, buf,
                  out, s);
  }
}

}  // namespace kernels
}  // namespace psd
