// Validation, workspace plan and device switch for the kNN propagation.
#include "knn.h"

#include "../common/check.h"
#include "../common/reduce.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

KnnWork PlanKnn(Workspace& ws, int64_t c, int64_t n) {
  KnnWork k;
  k.unit = ws.Take<float>(n * c);
  k.counts = ws.Take<int64_t>(kChunks + 1);
  k.scalars = ws.Take<int64_t>(8);
  k.cand = ws.Take<int64_t>(n);
  k.query = ws.Take<int64_t>(n);
  k.cell_of = ws.Take<int64_t>(n);
  k.cell_start = ws.Take<int64_t>(KnnGridCells(n) + 1);
  k.cell_items = ws.Take<int64_t>(n);
  return k;
}

void ValidateKnnParams(const KnnParams& p) {
  PSD_REQUIRE(p.k >= 1 && p.k <= kKnnMaxK, InvalidArgument, "kNN k must be in [1, 16]");
  PSD_REQUIRE(p.rate > 0.0 && p.rate <= 1.0, InvalidArgument, "kNN rate must be in (0, 1]");
  PSD_REQUIRE(p.candidates >= 0, InvalidArgument, "kNN candidates must be >= 0 (0 = all)");
}

size_t KnnWorkspaceBytes(int64_t c, int64_t h, int64_t w) {
  Workspace ws(nullptr, 0);
  PlanKnn(ws, c, h * w);
  return ws.used();
}

void KnnChecked(Device d, const float* feat, int64_t c, const float* points, const float* init,
                const float* sparse4, int64_t h, int64_t w, const KnnParams& p, void* workspace,
                size_t bytes, float* out, Stream s) {
  PSD_REQUIRE_PTR(feat);
  PSD_REQUIRE_PTR(points);
  PSD_REQUIRE_PTR(init);
  PSD_REQUIRE_PTR(sparse4);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
  PSD_REQUIRE(c > 0 && h > 0 && w > 0, ShapeMismatch, "kNN needs C, h, w > 0");
  PSD_REQUIRE(out != sparse4 && out != points && out != feat, InvalidArgument,
              "kNN output must not alias its inputs (init excepted)");
  ValidateKnnParams(p);
  Workspace ws(workspace, bytes);
  const KnnWork kw = PlanKnn(ws, c, h * w);
  if (d == Device::kCpu)
    KnnPropagate<Device::kCpu>(feat, c, points, init, sparse4, h, w, p, kw, out, s);
  else
    PSD_CUDA_CALL(KnnPropagate<Device::kCuda>, feat, c, points, init, sparse4, h, w, p, kw, out, s);
}

}  // namespace kernels
}  // namespace psd
