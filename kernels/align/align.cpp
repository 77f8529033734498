// Validation, workspace plan and device switch for the alignment family.
#include "align.h"

#include "../common/check.h"
#include "../common/reduce.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

AlignWork PlanAlign(Workspace& ws, int64_t n) {
  AlignWork w;
  w.stats = ws.Take<AlignStats>(1);
  w.partials = ws.Take<double>(kChunks * 5);
  w.counts = ws.Take<int64_t>(kChunks + 1);
  w.index = ws.Take<int64_t>(n);
  w.values = ws.Take<float>(2 * n);
  return w;
}

void AlignChecked(Device d, bool median, const float* data, const float* sparse, int64_t h,
                  int64_t w, void* workspace, size_t bytes, float* out, Stream s) {
  PSD_REQUIRE_PTR(data);
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "alignment needs H, W > 0");
  PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
  const int64_t n = h * w;
  Workspace ws(workspace, bytes);
  const AlignWork aw = PlanAlign(ws, n);
  if (d == Device::kCpu) {
    if (median) {
      // the LS pass also counts the interior points, which the median pass needs
      AlignStatsPass<Device::kCpu>(data, sparse, n, aw, s);
      AlignMedianPass<Device::kCpu>(data, sparse, n, aw, s);
      AlignApplyMedian<Device::kCpu>(data, n, aw, out, s);
    } else {
      AlignStatsPass<Device::kCpu>(data, sparse, n, aw, s);
      AlignApplyInverse<Device::kCpu>(data, n, aw, out, s);
    }
  } else if (median) {
    PSD_CUDA_CALL(AlignStatsPass<Device::kCuda>, data, sparse, n, aw, s);
    PSD_CUDA_CALL(AlignMedianPass<Device::kCuda>, data, sparse, n, aw, s);
    PSD_CUDA_CALL(AlignApplyMedian<Device::kCuda>, data, n, aw, out, s);
  } else {
    PSD_CUDA_CALL(AlignStatsPass<Device::kCuda>, data, sparse, n, aw, s);
    PSD_CUDA_CALL(AlignApplyInverse<Device::kCuda>, data, n, aw, out, s);
  }
}

size_t AlignWorkspaceBytes(int64_t h, int64_t w) {
  Workspace ws(nullptr, 0);
  PlanAlign(ws, h * w);
  return ws.used();
}

}  // namespace kernels
}  // namespace psd
