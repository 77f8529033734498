// Validation, host-side coefficients, workspace plan and device switch of the guided mode.
#include "guided.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../common/check.h"
#include "../common/reduce.h"

namespace psd {
namespace kernels {

int32_t GuidedLevels(int64_t h, int64_t w, int32_t requested) {
  const int64_t m = std::max<int64_t>(std::min(h, w), 1);
  int32_t lg = 0;  // floor(log2(m))
  while ((int64_t{1} << (lg + 1)) <= m) ++lg;
  return std::max<int32_t>(1, std::min<int32_t>(requested, lg - 1));
}

int64_t GuidedBandFloats(int64_t w, int32_t channels, int32_t levels) {
  int64_t f = 3 * GuidedRowStride(w) + 2 * (channels + 1) * GuidedRowStride(w);
  for (int32_t l = 1; l < levels; ++l) f += 2 * (channels + 1) * GuidedRowStride(w >> l);
  return f;
}

namespace {

void ValidateScalars(int64_t h, int64_t w, const GuidedConfig& cfg) {
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "guided: height and width must be > 0");
  PSD_REQUIRE(h <= kGuidedMaxSide && w <= kGuidedMaxSide, ShapeMismatch,
              "guided: height and width must be <= 1048576; split the frame");
  PSD_REQUIRE(cfg.channels >= 2 && cfg.channels <= kGuidedMaxChannels, InvalidArgument,
              "guided: channels must be 2..64 (default 32)");
  PSD_REQUIRE(std::isfinite(cfg.colour_scale) && cfg.colour_scale > 0.0f, InvalidArgument,
              "guided: colour_scale must be a finite number > 0 (default 10)");
  PSD_REQUIRE(cfg.levels >= 1 && cfg.levels <= 16, InvalidArgument,
              "guided: levels must be 1..16 (default 2; level l works at 1/2^l)");
  PSD_REQUIRE(cfg.iterations >= 0 && cfg.iterations <= 100000, InvalidArgument,
              "guided: iterations must be 0..100000 (default 40)");
}

}  // namespace

void ValidateGuided(int64_t h, int64_t w, const GuidedConfig& cfg) {
  ValidateScalars(h, w, cfg);
  PSD_REQUIRE(cfg.w != nullptr, NullPointer,
              "null pointer: params->projection_w (3 x C floats: "
              "psdrt.runtime.guided.rff_projection)");
  PSD_REQUIRE(cfg.b != nullptr, NullPointer,
              "null pointer: params->projection_b (C floats: psdrt.runtime.guided.rff_projection)");
  for (int32_t i = 0; i < 3 * cfg.channels; ++i)
    PSD_REQUIRE(std::isfinite(cfg.w[i]), InvalidArgument,
                "guided: projection_w has a non-finite value");
  for (int32_t i = 0; i < cfg.channels; ++i)
    PSD_REQUIRE(std::isfinite(cfg.b[i]), InvalidArgument,
                "guided: projection_b has a non-finite value");
}

GuidedCoeffs GuidedCoefficients(const GuidedConfig& cfg, bool scaled) {
  GuidedCoeffs k{};
  const int32_t C = cfg.channels;
  const double s = cfg.colour_scale, pi = 3.141592653589793;
  k.c = C;
  k.amp = scaled ? static_cast<float>(std::sqrt(2.0 / C)) : 1.0f;
  for (int32_t c = 0; c < C; ++c) {
    const double w0 = cfg.w[c], w1 = cfg.w[C + c], w2 = cfg.w[2 * C + c];
    k.k0[c] = static_cast<float>(w0 / (s * pi));
    k.k1[c] = static_cast<float>(w1 / (s * pi));
    k.k2[c] = static_cast<float>(w2 / (s * pi));
    // (L*2.55, a + 128, b + 128) = (Lc + 127.5, a + 128, b + 128): the offsets become a phase
    double ph = std::fmod((cfg.b[c] + (127.5 * w0 + 128.0 * w1 + 128.0 * w2) / s) / pi, 2.0);
    if (ph < 0.0) ph += 2.0;
    k.ph[c] = static_cast<float>(ph);
  }
  return k;
}

GuidedPlan PlanGuided(Workspace& ws, int64_t h, int64_t w, const GuidedConfig& cfg, Device d) {
  GuidedPlan P;
  P.h = h;
  P.w = w;
  P.c = cfg.channels;
  P.levels = GuidedLevels(h, w, cfg.levels);
  P.iterations = cfg.iterations;
  P.generic = cfg.generic || d == Device::kCuda;
  P.baseline_isa = cfg.baseline_isa;
  P.lut = ws.Take<float>(256);
  P.stats = ws.Take<float>(3 + 3 * kChunks);
  P.col = ws.Take<int32_t>(h * w);
  P.colval = ws.Take<float>(h * w);
  P.stack = ws.Take<int32_t>(h * w);
  P.next = ws.Take<int32_t>(w);
  P.fill = ws.Take<float>(h * w);
  for (int32_t l = 0; l < P.levels; ++l) {
    GuidedLevel& L = P.lv[l];
    L.h = h >> l;
    L.w = w >> l;
    L.p = kGuidedCol0 + GuidedUp8(L.w) + 8;
    const int64_t plane = (L.h + 2) * L.p;
    for (float** pl : {&L.ae, &L.as, &L.ase, &L.asw, &L.inv, &L.inve, &L.cdr, &L.cde, &L.a, &L.b})
      *pl = ws.Take<float>(plane);
    L.feat = P.generic ? ws.Take<float>((P.c + 1) * L.h * L.w) : nullptr;
  }
  if (!P.generic) {
    const int64_t block = int64_t{1} << (P.levels - 1);
    P.bands = std::min<int64_t>(8, (h + block - 1) / block);
    P.band_floats = GuidedBandFloats(w, P.c, P.levels);
    P.scratch = ws.Take<float>(P.bands * P.band_floats);
  }
  return P;
}

namespace {

// Every field of cfg is checked whatever the method: a bad field is an error even where the
// chosen method does not read it, so a caller's mistake never hides until the method changes.
void ValidateEveryField(int64_t h, int64_t w, const GuidedConfig& cfg) {
  PSD_REQUIRE(cfg.method == kGuidedMethodDt || cfg.method == kGuidedMethodCspn, InvalidArgument,
              "guided: method must be 0 (DT, the default) or 1 (CSPN)");
  ValidateScalars(h, w, cfg);
  ValidateGuidedDt(h, w, cfg.dt);
}

}  // namespace

size_t GuidedWorkspaceBytes(Device d, int64_t h, int64_t w, const GuidedConfig& cfg) {
  ValidateEveryField(h, w, cfg);
  if (cfg.method == kGuidedMethodDt) return GuidedDtWorkspaceBytes(h, w, cfg.dt);
  Workspace ws(nullptr, 0);
  PlanGuided(ws, h, w, cfg, d);
  return ws.used();
}

void GuidedChecked(Device d, int64_t h, int64_t w, const GuidedConfig& cfg, const uint8_t* rgb,
                   bool bgr, const float* sparse, void* workspace, size_t workspace_bytes,
                   float* out, Stream s) {
  const bool dt = cfg.method == kGuidedMethodDt;
  ValidateEveryField(h, w, cfg);
  if (!dt) ValidateGuided(h, w, cfg);  // CSPN: its projection too
  PSD_REQUIRE_PTR(rgb);
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
  PSD_REQUIRE(out != sparse, InvalidArgument, "guided: out must not alias sparse");
  const size_t need = GuidedWorkspaceBytes(d, h, w, cfg);
  PSD_REQUIRE(workspace_bytes >= need, WorkspaceTooSmall,
              "workspace too small: need " + std::to_string(need) + " bytes, got " +
                  std::to_string(workspace_bytes) + "; use psd_guided_workspace_size");
  Workspace ws(workspace, workspace_bytes);
  if (dt) {
    // DT reads the colour only through the SAD over the three channels, the same in RGB and BGR
    // order: it needs no bgr
    GuidedDtRun(d, h, w, cfg.dt, rgb, sparse, ws, out, s);
    return;
  }
  const GuidedPlan plan = PlanGuided(ws, h, w, cfg, d);
  const GuidedCoeffs k = GuidedCoefficients(cfg, false);
  if (d == Device::kCpu) {
    if (plan.generic) GuidedGeneric<Device::kCpu>(plan, k, rgb, bgr, sparse, out, s);
    else GuidedCpu(plan, k, rgb, bgr, sparse, out);
  } else {
    PSD_CUDA_CALL(GuidedGeneric<Device::kCuda>, plan, k, rgb, bgr, sparse, out, s);
  }
}

void GuidedFeaturesChecked(Device d, int64_t h, int64_t w, const GuidedConfig& cfg,
                           const uint8_t* rgb, bool bgr, float* out, Stream s) {
  ValidateGuided(h, w, cfg);
  PSD_REQUIRE_PTR(rgb);
  PSD_REQUIRE_PTR(out);
  const GuidedCoeffs k = GuidedCoefficients(cfg, true);
  if (d == Device::kCpu) GuidedFeatures<Device::kCpu>(k, rgb, bgr, h, w, out, s);
  else PSD_CUDA_CALL(GuidedFeatures<Device::kCuda>, k, rgb, bgr, h, w, out, s);
}

}  // namespace kernels
}  // namespace psd
