// Workspace plans and validation of the composed propagation (device switch: runtime/capi).
#include "propagate.h"

#include "../common/check.h"

namespace psd {
namespace kernels {

void ValidatePropagation(const PropagationShape& s, const PropagationConfig& c) {
  PSD_REQUIRE(s.h >= 4 && s.w >= 4, ShapeMismatch, "propagation needs H >= 4 and W >= 4");
  PSD_REQUIRE(s.fm_h > 0 && s.fm_w > 0, ShapeMismatch, "relative inverse depth size must be > 0");
  PSD_REQUIRE(s.feat_c > 0 && s.feat_h > 0 && s.feat_w > 0, ShapeMismatch,
              "feature map dimensions must be > 0");
  PSD_REQUIRE(c.mode == Mode::k3D2D || c.mode == Mode::k3DPlus2D || c.mode == Mode::k2D3D,
              InvalidArgument, "mode must be 0 (3D-2D), 1 (3D+2D) or 2 (2D-3D)");
  PSD_REQUIRE(c.iters_quarter >= 0 && c.iters_full >= 0, InvalidArgument,
              "CSPN iteration counts must be >= 0");
  PSD_REQUIRE(c.quarter_channels > 0 && c.full_channels > 0, InvalidArgument,
              "compressed channel counts must be > 0");
  ValidateKnnParams(c.knn);
}

PropagationBuffers PlanPropagation(Workspace& ws, const PropagationShape& s,
                                   const PropagationConfig& c, bool has_ip) {
  const int64_t N = s.h * s.w, L = (s.h / 4) * (s.w / 4);
  const int64_t ce = 3 + c.quarter_channels, nf = s.feat_h * s.feat_w;
  const bool full_tmp = c.mode != Mode::k3D2D;
  PropagationBuffers b{};
  b.align = PlanAlign(ws, N);
  b.knn = PlanKnn(ws, ce, L);
  b.r = ws.Take<float>(N);
  b.dp = ws.Take<float>(N);
  b.ipm = has_ip ? ws.Take<float>(N) : nullptr;
  b.points = ws.Take<float>(3 * N);
  b.e4 = ws.Take<float>(ce * L);
  b.i4 = ws.Take<float>(L);
  b.s4 = ws.Take<float>(L);
  b.d4 = ws.Take<float>(L);
  b.c4 = ws.Take<float>(L);
  b.k4 = ws.Take<float>(L);
  b.mixq = ws.Take<float>(c.quarter_channels * nf);
  b.mixf = ws.Take<float>(c.full_channels * nf);
  b.wq = ws.Take<float>(9 * L);
  b.drawq = ws.Take<float>(L);
  b.bufq = ws.Take<float>(L);
  b.unitf = ws.Take<float>(c.full_channels * N);
  b.wf = ws.Take<float>(9 * N);
  b.draw = ws.Take<float>(N);
  b.buf = ws.Take<float>(N);
  b.d1 = ws.Take<float>(N);
  b.tmp = full_tmp ? ws.Take<float>(N) : nullptr;
  return b;
}

PostBuffers PlanPost(Workspace& ws, const PostShape& s, int32_t iterations) {
  PostBuffers b{};
  if (iterations <= 0) return b;
  const int64_t N = s.h * s.w;
  b.mix = ws.Take<float>(s.channels * s.feat_h * s.feat_w);
  b.unit = ws.Take<float>(s.channels * N);
  b.weights = ws.Take<float>(9 * N);
  b.draw = ws.Take<float>(N);
  b.buf = ws.Take<float>(N);
  return b;
}

}  // namespace kernels
}  // namespace psd
