// Composition of the kernel families into one per-frame call (see propagate.h). It only
// sequences launchers of the other families (declared in their headers, instantiated in their
// own *_cpu.cpp / *_cuda.cu) plus two element-wise steps of its own.
#pragma once

#include "../align/align.h"
#include "../common/parallel_for.h"
#include "../cspn/cspn.h"
#include "../knn/knn.h"
#include "../resample/resample.h"
#include "propagate.h"

namespace psd {
namespace kernels {

template <Device D>
void DualPropagation(const PropagationShape& s, const PropagationConfig& c,
                     const PropagationBuffers& b, const float* rel_inv, const float* sparse,
                     const float* ip, const float* feat, float* out, float* depth_polyfit,
                     Stream st) {
  const int64_t H = s.h, W = s.w, N = H * W, h = H / 4, w = W / 4, L = h * w;
  const int64_t cq = c.quarter_channels, ce = 3 + cq, cf = c.full_channels;
  const int64_t nf = s.feat_h * s.feat_w;
  float* dp = depth_polyfit ? depth_polyfit : b.dp;

  // alignment (§3)
  Bicubic<D>(rel_inv, 1, s.fm_h, s.fm_w, b.r, H, W, st);
  AlignStatsPass<D>(b.r, sparse, N, b.align, st);
  AlignApplyInverse<D>(b.r, N, b.align, dp, st);
  const float* ipm = dp;
  if (ip) {
    AlignMedianPass<D>(ip, sparse, N, b.align, st);
    AlignApplyMedian<D>(ip, N, b.align, b.ipm, st);
    ipm = b.ipm;
  }

  // shared preprocessing (§4.1)
  Backproject<D>(dp, H, W, c.camera, c.cam, b.points, st);
  Bicubic<D>(b.points, 3, H, W, b.e4, h, w, st);  // P4 = first 3 planes of E4
  ChannelMix<D>(feat, s.feat_c, nf, b.mixq, cq, st);
  Bilinear<D>(b.mixq, cq, s.feat_h, s.feat_w, b.e4 + 3 * L, h, w, st);
  Bicubic<D>(ipm, 1, H, W, b.i4, h, w, st);
  SparsePool<D>(sparse, H, W, 4, b.s4, st);
  ChannelMix<D>(feat, s.feat_c, nf, b.mixf, cf, st);
  CompressAffinity<D>(b.mixf, cf, s.feat_h, s.feat_w, H, W, b.unitf, b.wf, st);

  // quarter-resolution affinities use the normalised E4 that the kNN leaves in b.knn.unit,
  // so they are computed after the kNN (or normalise first where CSPN runs before the kNN)
  auto affinity_quarter = [&] { Affinity<D>(b.knn.unit, ce, h, w, b.wq, st); };
  const float* pts = b.e4;
  auto knn = [&](const float* init, float* dst) {
    KnnPropagate<D>(b.e4, ce, pts, init, b.s4, h, w, c.knn, b.knn, dst, st);
  };
  auto cspn_quarter = [&](const float* dense, float* dst) {
    CspnSweeps<D>(b.wq, b.s4, dense, h, w, c.iters_quarter, b.drawq, b.bufq, dst, st);
  };
  auto cspn_full = [&](const float* dense, float* dst) {
    CspnSweeps<D>(b.wf, sparse, dense, H, W, c.iters_full, b.draw, b.buf, dst, st);
  };

  if (c.mode == Mode::k3D2D) {
    knn(b.i4, b.d4);
    affinity_quarter();
    cspn_quarter(b.d4, b.c4);
    Bicubic<D>(b.c4, 1, h, w, b.d1, H, W, st);
    cspn_full(b.d1, out);
  } else if (c.mode == Mode::k3DPlus2D) {
    knn(b.i4, b.d4);
    affinity_quarter();
    cspn_quarter(b.i4, b.c4);
    Bicubic<D>(b.c4, 1, h, w, b.d1, H, W, st);
    cspn_full(b.d1, out);
    Bicubic<D>(b.d4, 1, h, w, b.tmp, H, W, st);
    float* o = out;
    const float* t = b.tmp;
    ParallelFor<D>(N, st, [=] PSD_HOST_DEVICE(int64_t i) { o[i] = (o[i] + t[i]) / 2.0f; });
  } else {
    NormalizeFeatures<D>(b.e4, ce, L, b.knn.unit, st);
    affinity_quarter();
    cspn_quarter(b.i4, b.c4);
    Bicubic<D>(b.c4, 1, h, w, b.d1, H, W, st);
    cspn_full(b.d1, b.tmp);
    Bicubic<D>(b.tmp, 1, H, W, b.d4, h, w, st);
    knn(b.d4, b.k4);
    Bicubic<D>(b.k4, 1, h, w, out, H, W, st);
  }
}

template <Device D>
void PostProcess(const PostShape& s, int32_t iterations, const PostBuffers& b, const float* fd0,
                 const float* dense, const float* sparse, float* out, Stream st) {
  const int64_t N = s.h * s.w;
  if (iterations < 0) {
    if (out != dense) CopyFloats<D>(out, dense, N, st);
    return;
  }
  if (iterations == 0) {
    ParallelFor<D>(N, st, [=] PSD_HOST_DEVICE(int64_t i) {
      const float v = sparse[i];
      out[i] = v > 0.0f ? v : dense[i];
    });
    return;
  }
  ChannelMix<D>(fd0, s.feat_c, s.feat_h * s.feat_w, b.mix, s.channels, st);
  CompressAffinity<D>(b.mix, s.channels, s.feat_h, s.feat_w, s.h, s.w, b.unit, b.weights, st);
  CspnSweeps<D>(b.weights, sparse, dense, s.h, s.w, iterations, b.draw, b.buf, out, st);
}

#define PSD_INSTANTIATE_PROPAGATE(D)                                                       \
  template void DualPropagation<D>(const PropagationShape&, const PropagationConfig&,      \
                                   const PropagationBuffers&, const float*, const float*,  \
                                   const float*, const float*, float*, float*, Stream);    \
  template void PostProcess<D>(const PostShape&, int32_t, const PostBuffers&, const float*, \
                               const float*, const float*, float*, Stream);

}  // namespace kernels
}  // namespace psd
