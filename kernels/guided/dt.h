// The default method of the weight-free ``guided`` mode (psdrt.runtime.guided documents it and
// the measurements that chose it; psdrt.runtime.guided.reference_guided_dt is the NumPy oracle):
//
//   kind       valid = finite and > 0; n points, h of them with a valid left or right
//              neighbour, v with a valid upper or lower one; scan-line input (LiDAR) iff
//              20 h > 80 v + n (h / n > 4 v / n + 0.05), else scattered (random, SLAM, corners);
//              or forced by the caller;
//   parallax   scan input only: the occlusion filter of kernels/project (project.h);
//   range      lo, hi of the valid points that remain (the output is clamped to [lo, hi]);
//   geodesic   G = the depth of the geodesically nearest point; step cost between neighbours
//   fill       s + lambda * SAD with s = 1 (4-neighbours) or sqrt(2) (diagonal) and SAD the
//              sum of |dR| + |dG| + |dB| of the 8-bit colours; `rounds` rounds of four passes:
//              down and up (a pixel takes the best of itself and the 3 pixels of the previous
//              row, in the order same column, left, right), then right and left (the 1 pixel of
//              the previous column); strictly smaller cost wins;
//   scan base  scan input only: G = IP-Basic (kernels/ip_basic) of the unfiltered valid points,
//              pixels it leaves at or below 0.1 m set to hi (hi everywhere when no point exceeds
//              0.1 m); it replaces the geodesic fill as G below;
//   bandwidth  scattered input: sigma_s = min(sigma_s, 1.2 sqrt(H W / n)) (in double), so that the
//              filter's reach follows the points' mean spacing; scan input: sigma_s_scan;
//   edges      per neighbour pair, d = (1 + (sigma_s / sigma_r) * SAD) + beta * |dln G|;
//   filter     normalised convolution with the recursive domain-transform filter (Gastal and
//              Oliveira 2011): value v0 = depth at the points (scan input: depth - G, the
//              residual from the base), confidence c0 = 1 there (0 elsewhere); iteration i = 0..N-1 runs, on v and c, a left-to-right and a
//              right-to-left pass a[x] += w * (a[x -/+ 1] - a[x]) along every row, then the
//              same down and up every column, with w = exp(m0 * d) in iteration 0 and squared
//              in each later one (m0 = -sqrt(2) / sigma_0, sigma_i = sigma_s sqrt(3) 2^(N-i-1) /
//              sqrt(4^N - 1), so w_i = exp(-sqrt(2) d / sigma_i)); exp is DtExp (dt_impl.h),
//              a polynomial within 2e-7 of exp;
//   output     at the points (those the parallax filter kept) their own depth; elsewhere
//              clamp((v + eps G) / (c + eps), lo, hi) with eps = 1e-6 (far from every point
//              the geodesic fill takes over), for scan input clamp(G + v / (c + 0.1), lo, hi)
//              (the residual shrinks to 0 where the confidence is low); 0 everywhere when no
//              valid point remains.
//
// sigma_s depends on the kind (scattered / scan), so both are passed and the kernels pick one
// from the kind they find, on the device (no host sync). Every step is one ParallelFor except
// the down and up passes, which are one launch per row on the GPU (each row needs the previous
// one; about 4 H launches per frame, the cost to remove first on a GPU). The CPU instantiation
// splits those rows' columns over the threads with a barrier per row, runs the geodesic's and
// the filter's row passes on blocks of 16 rows transposed so that the rows are vector lanes
// (dt_cpu.cpp; GENERIC: the shared per-row bodies instead) and the column passes over column
// ranges; the arithmetic (unfused float32, the
// order written) is the same on both devices, so the CPU equals the NumPy reference up to the
// rounding of exp (DtExp vs NumPy's exp) and log (logf vs NumPy's log) (tested: 2e-5 relative).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/workspace.h"
#include "../ip_basic/ip_basic.h"
#include "../project/project.h"

namespace psd {
namespace kernels {

enum GuidedKind : int32_t { kGuidedKindAuto = 0, kGuidedKindScattered = 1, kGuidedKindScan = 2 };

constexpr float kGuidedDtEps = 1e-6f;
constexpr float kGuidedDtScanEps = 0.1f;  // psdrt.runtime.guided.SCAN_RESIDUAL_EPS
// scattered input: sigma_s = min(sigma_s, kGuidedDtSpacing * sqrt(H W / n)), the bandwidth follows
// the points' mean spacing (psdrt.runtime.guided.SCATTERED_SPACING)
constexpr double kGuidedDtSpacing = 1.2;

struct GuidedDtConfig {
  int32_t kind = kGuidedKindAuto;
  float lambda = 0.1f;
  float sigma_s = 20.0f;       // scattered input
  float sigma_s_scan = 5.0f;   // scan-line input
  float sigma_r = 100.0f;
  float beta = 10.0f;
  int32_t iterations = 3;
  int32_t rounds = 2;
  int32_t occl_rx = 4, occl_ry = 8;
  float occl_rel = 0.1f;
  bool generic = false;       // CPU: the shared per-line bodies (what the CUDA build runs per row)
                              // instead of the CPU's vectorised ones; same results; for tests
  bool baseline_isa = false;  // CPU: no AVX2 variant even where the CPU has it (same results)
};

// Passed by value to the kernels: index 0 = scattered, 1 = scan.
struct GuidedDtArgs {
  int32_t kind;
  float lambda, beta;
  float kc[2];  // sigma_s / sigma_r
  float m0[2];  // -sqrt(2) / sigma_0
  int32_t iterations, rounds;
  OcclusionParams occl;
  double sigma_s, sigma_r;  // scattered input's bound and the colour bandwidth (kc[0], m0[0] on the device)
  bool generic, baseline_isa;  // GuidedDtConfig's (CPU only)
};

struct GuidedDtPlan {
  int64_t h = 0, w = 0;
  int64_t* counts = nullptr;  // per chunk n, h, v (3 * kChunks)
  int32_t* scan = nullptr;    // 1: scan-line input (found or forced)
  float* range = nullptr;     // lo, hi, any + per-chunk partials (3 * kChunks)
  float* band = nullptr;      // scattered input's kc and m0, from the point count (device)
  float *sp, *dist, *fill;    // filtered sparse, geodesic cost, geodesic fill
  float *sv, *sh;             // SAD of the pair with the pixel above / to the left
  float *cl, *cr;             // step costs of the pairs with the pixels up-left / up-right
  float *wh, *wv;             // filter weights of the pairs (x, x + 1) and (y, y + 1)
  float *v, *c;               // value and confidence
  float *ipraw, *base;        // scan input: the unfiltered valid points, their IP-Basic fill
  IpBasicWork ip;             // IP-Basic's scratch
};

void ValidateGuidedDt(int64_t h, int64_t w, const GuidedDtConfig& cfg);
GuidedDtArgs GuidedDtArguments(const GuidedDtConfig& cfg);
GuidedDtPlan PlanGuidedDt(Workspace& ws, int64_t h, int64_t w);

template <Device D>
void GuidedDt(const GuidedDtPlan& plan, const GuidedDtArgs& a, const uint8_t* rgb,
              const float* sparse, float* out, Stream s);

size_t GuidedDtWorkspaceBytes(int64_t h, int64_t w, const GuidedDtConfig& cfg);
// Plans the DT method in `ws` and runs it. The caller (GuidedChecked, the one entry of psd_guided)
// has validated every argument and the workspace size.
void GuidedDtRun(Device d, int64_t h, int64_t w, const GuidedDtConfig& cfg, const uint8_t* rgb,
                 const float* sparse, Workspace& ws, float* out, Stream s);

}  // namespace kernels
}  // namespace psd
