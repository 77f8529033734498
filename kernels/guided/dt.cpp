// Validation, host-side arguments, workspace plan and device switch of the guided mode's default
// method (dt.h).
#include "dt.h"

#include <cmath>
#include <string>

#include "../common/check.h"
#include "../common/reduce.h"

namespace psd {
namespace kernels {

void ValidateGuidedDt(int64_t h, int64_t w, const GuidedDtConfig& c) {
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "guided: height and width must be > 0");
  PSD_REQUIRE(h <= (int64_t{1} << 20) && w <= (int64_t{1} << 20), ShapeMismatch,
              "guided: height and width must be <= 1048576; split the frame");
  PSD_REQUIRE(c.kind >= kGuidedKindAuto && c.kind <= kGuidedKindScan, InvalidArgument,
              "guided: kind must be 0 (auto), 1 (scattered) or 2 (scan)");
  auto finite_ge0 = [](float v) { return std::isfinite(v) && v >= 0.0f; };
  auto finite_gt0 = [](float v) { return std::isfinite(v) && v > 0.0f; };
  PSD_REQUIRE(finite_ge0(c.lambda), InvalidArgument,
              "guided: lambda must be a finite number >= 0 (default 0.1)");
  PSD_REQUIRE(finite_gt0(c.sigma_s) && finite_gt0(c.sigma_s_scan) && finite_gt0(c.sigma_r),
              InvalidArgument,
              "guided: sigma_s, sigma_s_scan and sigma_r must be finite numbers > 0 (defaults 20, 5, 100)");
  PSD_REQUIRE(finite_ge0(c.beta), InvalidArgument,
              "guided: beta must be a finite number >= 0 (default 10)");
  PSD_REQUIRE(c.iterations >= 1 && c.iterations <= 16, InvalidArgument,
              "guided: iterations must be 1..16 (default 3)");
  PSD_REQUIRE(c.rounds >= 1 && c.rounds <= 16, InvalidArgument,
              "guided: rounds must be 1..16 (default 2)");
  PSD_REQUIRE(c.occl_rx >= 0 && c.occl_rx <= 64 && c.occl_ry >= 1 && c.occl_ry <= 64, InvalidArgument,
              "guided: the occlusion window must be rx 0..64 and ry 1..64 (defaults 4 and 8)");
  PSD_REQUIRE(std::isfinite(c.occl_rel) && c.occl_rel > 0.0f && c.occl_rel < 1.0f, InvalidArgument,
              "guided: occlusion rel must be in (0, 1) (default 0.1)");
}

GuidedDtArgs GuidedDtArguments(const GuidedDtConfig& c) {
  GuidedDtArgs a{};
  a.kind = c.kind;
  a.lambda = c.lambda;
  a.beta = c.beta;
  const int32_t N = c.iterations;
  const float sig[2] = {c.sigma_s, c.sigma_s_scan};
  for (int k = 0; k < 2; ++k) {
    const double ss = sig[k];
    a.kc[k] = static_cast<float>(ss / static_cast<double>(c.sigma_r));
    const double s0 = ss * std::sqrt(3.0) * std::pow(2.0, N - 1) / std::sqrt(std::pow(4.0, N) - 1.0);
    a.m0[k] = static_cast<float>(-std::sqrt(2.0) / s0);
  }
  a.iterations = N;
  a.rounds = c.rounds;
  a.occl = OcclusionParams{c.occl_rx, c.occl_ry, static_cast<float>(1.0 - static_cast<double>(c.occl_rel))};
  a.sigma_s = c.sigma_s;
  a.sigma_r = c.sigma_r;
  a.generic = c.generic;
  a.baseline_isa = c.baseline_isa;
  return a;
}

GuidedDtPlan PlanGuidedDt(Workspace& ws, int64_t h, int64_t w) {
  GuidedDtPlan P;
  P.h = h;
  P.w = w;
  const int64_t n = h * w;
  P.counts = ws.Take<int64_t>(3 * kChunks);
  P.scan = ws.Take<int32_t>(1);
  P.range = ws.Take<float>(3 + 3 * kChunks);
  P.band = ws.Take<float>(2);
  for (float** pl : {&P.sp, &P.dist, &P.fill, &P.sv, &P.sh, &P.cl, &P.cr, &P.wh, &P.wv, &P.v, &P.c, &P.ipraw,
                      &P.base})
    *pl = ws.Take<float>(n);
  P.ip = PlanIpBasic(ws, h, w);
  return P;
}

size_t GuidedDtWorkspaceBytes(int64_t h, int64_t w, const GuidedDtConfig& cfg) {
  ValidateGuidedDt(h, w, cfg);
  Workspace ws(nullptr, 0);
  PlanGuidedDt(ws, h, w);
  return ws.used();
}

void GuidedDtRun(Device d, int64_t h, int64_t w, const GuidedDtConfig& cfg, const uint8_t* rgb,
                 const float* sparse, Workspace& ws, float* out, Stream s) {
  const GuidedDtPlan plan = PlanGuidedDt(ws, h, w);
  const GuidedDtArgs a = GuidedDtArguments(cfg);
  if (d == Device::kCpu) GuidedDt<Device::kCpu>(plan, a, rgb, sparse, out, s);
  else PSD_CUDA_CALL(GuidedDt<Device::kCuda>, plan, a, rgb, sparse, out, s);
}

}  // namespace kernels
}  // namespace psd
