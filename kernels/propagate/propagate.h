// Composed per-frame propagation (psd_method.md §3 + §4.4) and post-processing (§5.6).
//
// DualPropagation, batch 1, everything on one device and one stream, no host sync on CUDA:
//   r        = bicubic(rel_inv: fm_h x fm_w -> H x W)
//   dp       = align_inverse_ls(r, sparse)                       (depth_polyfit)
//   ipm      = align_median(ip, sparse), or dp when ip == null   (documented substitute)
//   P4       = bicubic(backproject(dp, camera), H/4 x W/4)
//   E4       = [P4 | compress(feat -> 9 x H/4 x W/4)]            (12 channels)
//   I4       = bicubic(ipm, H/4 x W/4);  S4 = sparse_pool(sparse)
//   G1       = compress(feat -> 16 x H x W), fused with the per-pixel normalisation
//   modes: 3D-2D  : cspn(sparse, up(cspn(S4, knn(I4), E4)), G1)
//          3D+2D  : (cspn(sparse, up(cspn(S4, I4, E4)), G1) + up(knn(I4))) / 2
//          2D-3D  : up(knn(down(cspn(sparse, up(cspn(S4, I4, E4)), G1))))
// with up/down = bicubic. An empty sparse map gives 0 everywhere (see align.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../align/align.h"
#include "../common/host_device.h"
#include "../common/workspace.h"
#include "../knn/knn.h"
#include "../resample/resample.h"

namespace psd {
namespace kernels {

enum class Mode : int32_t { k3D2D = 0, k3DPlus2D = 1, k2D3D = 2 };

struct PropagationShape {
  int64_t h, w;              // working resolution of sparse / ip / output
  int64_t fm_h, fm_w;        // relative inverse depth resolution
  int64_t feat_c, feat_h, feat_w;  // guidance features (path_feats[0])
};

struct PropagationConfig {
  Mode mode = Mode::k3D2D;
  Camera camera = Camera::kPinhole;
  CameraParams cam{};
  KnnParams knn;
  int32_t iters_quarter = 3;
  int32_t iters_full = 3;
  int64_t quarter_channels = 9;  // compressed FM channels next to xyz
  int64_t full_channels = 16;
};

struct PropagationBuffers {
  AlignWork align;
  KnnWork knn;
  float *r, *dp, *ipm, *points;       // full resolution (points: 3 planes)
  float *e4, *i4, *s4, *d4, *c4, *k4;  // quarter resolution (e4: 3 + cq planes)
  float *mixq, *mixf;                  // channel-mixed feature planes at feat_h x feat_w
  float *wq, *drawq, *bufq;            // quarter CSPN
  float *unitf, *wf, *draw, *buf, *d1, *tmp;  // full CSPN
};

PropagationBuffers PlanPropagation(Workspace& ws, const PropagationShape& s,
                                   const PropagationConfig& c, bool has_ip);
void ValidatePropagation(const PropagationShape& s, const PropagationConfig& c);

// rel_inv (fm_h, fm_w), sparse (h, w), ip (h, w) or null, feat (feat_c, feat_h, feat_w);
// out (h, w); depth_polyfit (h, w) optional output (null = not returned).
template <Device D>
void DualPropagation(const PropagationShape& s, const PropagationConfig& c,
                     const PropagationBuffers& b, const float* rel_inv, const float* sparse,
                     const float* ip, const float* feat, float* out, float* depth_polyfit,
                     Stream stream);

struct PostShape {
  int64_t h, w;
  int64_t feat_c, feat_h, feat_w;
  int64_t channels = 32;
};
struct PostBuffers {
  float *mix, *unit, *weights, *draw, *buf;
};
PostBuffers PlanPost(Workspace& ws, const PostShape& s, int32_t iterations);

// iterations < 0: out = dense; 0: out = sparse where sparse > 0 else dense; > 0: CSPN sweeps
// guided by compress(fd0 -> channels x h x w). out may alias dense.
template <Device D>
void PostProcess(const PostShape& s, int32_t iterations, const PostBuffers& b, const float* fd0,
                 const float* dense, const float* sparse, float* out, Stream stream);

}  // namespace kernels
}  // namespace psd
