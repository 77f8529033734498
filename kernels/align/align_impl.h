// Kernel bodies of the alignment family, written once for CPU and CUDA (see align.h).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "align.h"

namespace psd {
namespace kernels {

PSD_HOST_DEVICE PSD_INLINE bool Interior(float v, float dmin, float dmax) {
  return v > dmin && v < dmax;
}

// Pass 1: masked min/max/count; pass 2: LS sums over the interior (double accumulation);
// then one thread solves the 2x2 normal equations.
template <Device D>
void AlignStatsPass(const float* rel_inv, const float* sparse, int64_t n, AlignWork w, Stream s) {
  double* part = w.partials;
  AlignStats* st = w.stats;
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    float lo = INFINITY, hi = -INFINITY;
    int64_t k = 0;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) {
      const float v = sparse[i];
      if (v > 0.0f) {
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        ++k;
      }
    }
    part[c * 5 + 0] = lo;
    part[c * 5 + 1] = hi;
    part[c * 5 + 2] = static_cast<double>(k);
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    double lo = INFINITY, hi = -INFINITY, k = 0;
    for (int64_t c = 0; c < kChunks; ++c) {
      lo = part[c * 5] < lo ? part[c * 5] : lo;
      hi = part[c * 5 + 1] > hi ? part[c * 5 + 1] : hi;
      k += part[c * 5 + 2];
    }
    st->dmin = static_cast<float>(lo);
    st->dmax = static_cast<float>(hi);
    st->n_valid = static_cast<int64_t>(k);
  });
  if (rel_inv == nullptr) return;  // median-only callers need just the range
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    const float dmin = st->dmin, dmax = st->dmax;
    double a00 = 0, a01 = 0, a11 = 0, b0 = 0, b1 = 0;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) {
      const float v = sparse[i];
      if (Interior(v, dmin, dmax)) {
        const float r = rel_inv[i], y = 1.0f / v;
        a00 += r * r;
        a01 += r;
        a11 += 1.0;
        b0 += r * y;
        b1 += y;
      }
    }
    double* p = part + c * 5;
    p[0] = a00;
    p[1] = a01;
    p[2] = a11;
    p[3] = b0;
    p[4] = b1;
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    double a00 = 0, a01 = 0, a11 = 0, b0 = 0, b1 = 0;
    for (int64_t c = 0; c < kChunks; ++c) {
      a00 += part[c * 5];
      a01 += part[c * 5 + 1];
      a11 += part[c * 5 + 2];
      b0 += part[c * 5 + 3];
      b1 += part[c * 5 + 4];
    }
    const double det = a00 * a11 - a01 * a01;
    // Relative guard: with every interior r equal (or < 2 points) det is 0 up to rounding; the
    // official float32 test `det > 0` then fits noise. Treat it as the degenerate case.
    if (det > 1e-9 * a00 * a11 && a11 >= 2.0) {
      st->s = static_cast<float>((a11 * b0 - a01 * b1) / det);
      st->t = static_cast<float>((-a01 * b0 + a00 * b1) / det);
    } else {
      st->s = 0.0f;
      st->t = 0.0f;
    }
    st->n_interior = static_cast<int64_t>(a11);
  });
}

PSD_HOST_DEVICE PSD_INLINE float ApplyInverseFit(float r, const AlignStats& st) {
  if (st.n_valid == 0) return 0.0f;
  float inv = st.s * r + st.t;
  const float lo = 1.0f / st.dmax, hi = 1.0f / st.dmin;
  inv = inv < lo ? lo : inv;
  inv = inv > hi ? hi : inv;
  return 1.0f / inv;
}

template <Device D>
void AlignApplyInverse(const float* rel_inv, int64_t n, AlignWork w, float* out, Stream s) {
  const AlignStats* st = w.stats;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { out[i] = ApplyInverseFit(rel_inv[i], *st); });
}

template <Device D>
void AlignMedianPass(const float* ip, const float* sparse, int64_t n, AlignWork w, Stream s) {
  AlignStats* st = w.stats;
  int64_t* idx = w.index;
  float* vs = w.values;
  float* vi = w.values + n;
  CompactIndices<D>(
      n,
      [=] PSD_HOST_DEVICE(int64_t i) {
        const float v = sparse[i];
        // empty interior => fall back to every valid point (defined; official gives NaN)
        return st->n_interior > 0 ? Interior(v, st->dmin, st->dmax) : v > 0.0f;
      },
      w.counts, idx, &st->n_median, s);
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    const int64_t m = st->n_median;
    if (m == 0) {
      st->scale = 0.0f;
      return;
    }
    for (int64_t j = 0; j < m; ++j) {
      vs[j] = sparse[idx[j]];
      vi[j] = ip[idx[j]];
    }
    const int64_t kth = (m - 1) / 2;  // lower median, as torch.median
    const float ms = SelectKth(vs, m, kth);
    const float mi = SelectKth(vi, m, kth);
    st->scale = ms / (mi + 1e-8f);
  });
}

PSD_HOST_DEVICE PSD_INLINE float ApplyMedian(float v, const AlignStats& st) {
  if (st.n_valid == 0) return 0.0f;
  float d = v * st.scale;
  d = d < st.dmin ? st.dmin : d;
  d = d > st.dmax ? st.dmax : d;
  return d;
}

template <Device D>
void AlignApplyMedian(const float* ip, int64_t n, AlignWork w, float* out, Stream s) {
  const AlignStats* st = w.stats;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { out[i] = ApplyMedian(ip[i], *st); });
}

#define PSD_INSTANTIATE_ALIGN(D)                                                           \
  template void AlignStatsPass<D>(const float*, const float*, int64_t, AlignWork, Stream); \
  template void AlignApplyInverse<D>(const float*, int64_t, AlignWork, float*, Stream);    \
  template void AlignMedianPass<D>(const float*, const float*, int64_t, AlignWork, Stream); \
  template void AlignApplyMedian<D>(const float*, int64_t, AlignWork, float*, Stream);

}  // namespace kernels
}  // namespace psd
