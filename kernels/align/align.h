// Metric alignment (psd_method.md §3) on one frame (batch 1).
//  AlignInverseLs: depth_polyfit = 1 / clamp(s*r + t, 1/dmax, 1/dmin), with (s, t) the least-squares
//    fit of r to 1/sparse over the strict interior mask dmin < sparse < dmax (§3.1). Official
//    degenerate case: fewer than 2 distinct interior fits (det <= eps) => s = t = 0 => constant dmax.
//  AlignMedian: ip_median = clamp(ip * median(sparse[m]) / (median(ip[m]) + 1e-8), dmin, dmax)
//    with lower medians (torch.median) (§3.2). Defined fallback (the official code gives NaN):
//    an empty interior mask uses every valid sparse point instead.
//  No valid sparse point at all: both outputs are 0 everywhere (0 = invalid depth); no status,
//  because the GPU path would need a host sync to report it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

// Per-frame scalars shared by the alignment steps; lives in the workspace (device memory).
struct AlignStats {
  float dmin, dmax;
  int64_t n_valid;     // sparse > 0
  int64_t n_interior;  // dmin < sparse < dmax
  float s, t;          // inverse-depth fit
  float scale;         // median scale of ip
  int64_t n_median;    // samples used for the medians
};

// Workspace (device memory) of the alignment for n = h * w pixels.
struct AlignWork {
  AlignStats* stats;
  double* partials;  // kChunks * 5
  int64_t* counts;   // kChunks + 1
  int64_t* index;    // n
  float* values;     // 2 * n
};

template <Device D>
void AlignStatsPass(const float* rel_inv, const float* sparse, int64_t n, AlignWork w, Stream s);
template <Device D>
void AlignApplyInverse(const float* rel_inv, int64_t n, AlignWork w, float* out, Stream s);
template <Device D>
void AlignMedianPass(const float* ip, const float* sparse, int64_t n, AlignWork w, Stream s);
// ip_median(i) = clamp(ip(i) * scale, dmin, dmax); 0 where the frame has no sparse point.
template <Device D>
void AlignApplyMedian(const float* ip, int64_t n, AlignWork w, float* out, Stream s);

AlignWork PlanAlign(Workspace& ws, int64_t n);
size_t AlignWorkspaceBytes(int64_t h, int64_t w);
// median = false: out = depth_polyfit from data = rel_inv (already at h x w);
// median = true:  out = ip_median from data = ip.
void AlignChecked(Device d, bool median, const float* data, const float* sparse, int64_t h,
                  int64_t w, void* workspace, size_t bytes, float* out, Stream s);

}  // namespace kernels
}  // namespace psd
