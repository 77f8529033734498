// 2D-space propagation (psd_method.md §4.3): CSPN with fixed cosine affinities, one frame.
//  * features are L2-normalised per pixel (x / max(|x|, 1e-12), as F.normalize) and stored
//    pixel-major (H*W, C) so that each cosine is a contiguous C-long dot product;
//  * weights (9, H*W): for the 8 neighbours in the order (-1,-1) (-1,0) (-1,1) (0,-1) (0,1)
//    (1,-1) (1,0) (1,1) (dy, dx), w = a / sum|a| (no epsilon, out-of-image a = 0), and the centre
//    term c = 1 - sum w in plane 8;
//  * defined zero-sum case (the official code divides 0 by 0 and returns NaN): where sum|a| = 0
//    the weights are 0 and the centre weight is 1, so the pixel keeps its injected initial value
//    (which is also its current value: nothing else ever changes it). Same rule as the
//    reference's cspn(..., safe=True);
//  * T Jacobi sweeps with sparse re-injection before each sweep, the last iterate not re-injected.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace psd {
namespace kernels {

// planar (C, n) -> unit pixel-major (n, C)
template <Device D>
void NormalizeFeatures(const float* feat, int64_t c, int64_t n, float* unit, Stream s);
// Fused channel compression + normalisation: `mixed` holds the channel-mixed planes
// (C, hf, wf) (ChannelMix); each output pixel takes the bilinear (align_corners=False) sample of
// every plane and normalises the C-vector -> unit pixel-major (h*w, C).
template <Device D>
void CompressNormalize(const float* mixed, int64_t c, int64_t hf, int64_t wf, int64_t h,
                       int64_t w, float* unit, Stream s);
template <Device D>
void Affinity(const float* unit, int64_t c, int64_t h, int64_t w, float* weights, Stream s);
// CompressNormalize followed by Affinity. `unit` (c*h*w floats) is workspace: on CUDA it holds
// the unit features afterwards; the CPU fuses both steps row by row (see CompressAffinityCpu)
// and uses it as scratch only.
template <Device D>
void CompressAffinity(const float* mixed, int64_t c, int64_t hf, int64_t wf, int64_t h,
                      int64_t w, float* unit, float* weights, Stream s);
// draw, buf: h*w floats of workspace. out may alias dense, not sparse.
template <Device D>
void CspnSweeps(const float* weights, const float* sparse, const float* dense, int64_t h,
                int64_t w, int32_t iterations, float* draw, float* buf, float* out, Stream s);

// Validated single-call CSPN on planar features (C, h, w): the ABI's psd_cspn.
// Workspace need: CspnWorkspaceFloats(c, h, w) floats.
int64_t CspnWorkspaceFloats(int64_t c, int64_t h, int64_t w);
void CspnChecked(Device d, const float* sparse, const float* dense, const float* feat, int64_t c,
                 int64_t h, int64_t w, int32_t iterations, float* work, int64_t work_floats,
                 float* out, Stream s);

}  // namespace kernels
}  // namespace psd
