// Kernel bodies of the IP-Basic fill (see ip_basic.h), written once for CPU and CUDA: every step
// is a per-pixel (or per-column) function below, run by ParallelFor on either device; the CPU runs
// the selection steps as row-vectorised loops instead ("CPU paths": same values by construction).
//
// Bit-exactness with OpenCV (measured on opencv-python 4.14, x86-64, tests/kernels/test_ip_basic.py):
//  * dilate / erode / the median select values: any evaluation order gives the same bits;
//  * GaussianBlur(5x5, sigma 0) on float32 is sepFilter2D with the fixed table k = [1 4 6 4 1]/16
//    (k0 = 0.375 centre, k1 = 0.25, k2 = 0.0625), rows first, border reflect-101; k1 and k2 are
//    powers of two (their products are exact), so only these roundings matter:
//      row pass:    fma(c, k0, (l1 + r1) * k1) + (l2 + r2) * k2   (OpenCV's FMA build), except the
//                   last column of an odd width, which its scalar tail computes unfused:
//                   (c * k0 + (l1 + r1) * k1) + (l2 + r2) * k2;
//      column pass: (c * k0 + (u1 + d1) * k1) + (u2 + d2) * k2     (unfused);
//    a single row skips the column pass and a single column the row pass (as OpenCV does).
//    PSD_FMA_RN / PSD_MUL_RN / PSD_ADD_RN keep nvcc from fusing anything else.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "ip_basic.h"

namespace psd {
namespace kernels {

// The work is switched off on the device (IpBasicWork::active).
PSD_HOST_DEVICE PSD_INLINE bool IpOff(const int32_t* active) { return active != nullptr && *active == 0; }

PSD_HOST_DEVICE PSD_INLINE float IpMax(float a, float b) { return a < b ? b : a; }
PSD_HOST_DEVICE PSD_INLINE float IpMin(float a, float b) { return b < a ? b : a; }

// Step 1: the inverted depth of one input value.
PSD_HOST_DEVICE PSD_INLINE float IpInvert(float v, float max_depth) {
  return v > kIpBasicEps ? max_depth - v : v;
}

// Step 2: dilation with the 5x5 diamond (|dy| + |dx| <= 2) of the inverted input at (y, x).
PSD_HOST_DEVICE PSD_INLINE float IpDiamondAt(const float* sparse, int64_t h, int64_t w, int64_t y,
                                             int64_t x, float max_depth) {
  float m = IpInvert(sparse[y * w + x], max_depth);
  for (int64_t dy = -2; dy <= 2; ++dy) {
    const int64_t yy = y + dy;
    if (yy < 0 || yy >= h) continue;
    const int64_t r = 2 - (dy < 0 ? -dy : dy);
    for (int64_t dx = -r; dx <= r; ++dx) {
      const int64_t xx = x + dx;
      if (xx >= 0 && xx < w) m = IpMax(m, IpInvert(sparse[yy * w + xx], max_depth));
    }
  }
  return m;
}

// Max (kMax) or min over in[y, x - r .. x + r] (step 1, elements along x) or in[y - r .. y + r, x]
// (step w), clipped to the image: OpenCV's morphology border ignores outside pixels.
template <bool kMax>
PSD_HOST_DEVICE PSD_INLINE float IpExtremum(const float* in, int64_t pos, int64_t len, int64_t at,
                                            int64_t step, int64_t r) {
  const int64_t lo = at - r < 0 ? 0 : at - r, hi = at + r > len - 1 ? len - 1 : at + r;
  const float* p = in + pos + (lo - at) * step;
  float m = *p;
  for (int64_t k = lo + 1; k <= hi; ++k) {
    p += step;
    m = kMax ? IpMax(m, *p) : IpMin(m, *p);
  }
  return m;
}

// OpenCV's borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba).
PSD_HOST_DEVICE PSD_INLINE int64_t IpReflect101(int64_t p, int64_t len) {
  if (len == 1) return 0;
  while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
  return p;
}

constexpr float kIpGaussK0 = 0.375f, kIpGaussK1 = 0.25f, kIpGaussK2 = 0.0625f;

// The Gaussian taps of one output: centre c, s1 = the sum of the two neighbours at distance 1,
// s2 = at distance 2; `fused` selects the row pass's FMA form (file comment).
PSD_HOST_DEVICE PSD_INLINE float IpGauss5(float c, float s1, float s2, bool fused) {
  const float near = fused ? PSD_FMA_RN(c, kIpGaussK0, PSD_MUL_RN(s1, kIpGaussK1))
                           : PSD_ADD_RN(PSD_MUL_RN(c, kIpGaussK0), PSD_MUL_RN(s1, kIpGaussK1));
  return PSD_ADD_RN(near, PSD_MUL_RN(s2, kIpGaussK2));
}

// One output of the separable Gaussian pass over in[at - 2 .. at + 2] (stride `step`, reflected
// at 0 and len - 1).
PSD_HOST_DEVICE PSD_INLINE float IpGaussAt(const float* in, int64_t pos, int64_t len, int64_t at,
                                           int64_t step, bool fused) {
  const float* base = in + pos - at * step;
  const float s1 = PSD_ADD_RN(base[IpReflect101(at - 1, len) * step], base[IpReflect101(at + 1, len) * step]);
  const float s2 = PSD_ADD_RN(base[IpReflect101(at - 2, len) * step], base[IpReflect101(at + 2, len) * step]);
  return IpGauss5(base[at * step], s1, s2, fused);
}

// The input check's verdict: the fill is 0 everywhere unless it passes.
PSD_HOST_DEVICE PSD_INLINE bool IpStatsValid(const IpBasicStats& st) {
  return st.any_valid && !st.non_finite && !st.negative;
}

// Step 9 from the median v and its Gaussian g: written back where the median is valid, re-inverted.
PSD_HOST_DEVICE PSD_INLINE float IpWriteBack(float v, float g, float max_depth) {
  const float d = v > kIpBasicEps ? g : v;
  return d > kIpBasicEps ? max_depth - d : d;
}

// Steps 8 (columns) and 9 at pixel i from the median m and the Gaussian rows t.
PSD_HOST_DEVICE PSD_INLINE float IpFinalAt(const float* m, const float* t, int64_t h, int64_t w,
                                           const IpBasicStats& st, int64_t i) {
  if (!IpStatsValid(st)) return 0.0f;
  const float g = h == 1 ? t[i] : IpGaussAt(t, i, h, i / w, w, false);
  return IpWriteBack(m[i], g, st.max_depth);
}

// The 5x5 median (rank 12 of 25) in place: v[12] holds it afterwards. A selection network of
// 103 compare-exchanges: Parberry's pairwise sorting network on 32 wires (the 25 values on wires
// 1..25, -inf on wire 0 and +inf on 26..31), with the comparators on constant wires resolved and
// those that do not feed wire 13 removed. tests/kernels/test_ip_basic.py checks it on all 2^25
// inputs of 0s and 1s, which proves it for every input (the 0-1 principle).
template <typename CS>
PSD_HOST_DEVICE PSD_FORCE_INLINE void IpMedian25Network(const CS& cs) {
  cs(1, 2); cs(3, 4); cs(5, 6); cs(7, 8); cs(9, 10); cs(11, 12); cs(13, 14); cs(15, 16);
  cs(17, 18); cs(19, 20); cs(21, 22); cs(23, 24); cs(0, 2); cs(3, 5); cs(4, 6); cs(7, 9);
  cs(8, 10); cs(11, 13); cs(12, 14); cs(15, 17); cs(16, 18); cs(19, 21); cs(20, 22); cs(0, 4);
  cs(1, 5); cs(2, 6); cs(7, 11); cs(8, 12); cs(9, 13); cs(10, 14); cs(15, 19); cs(16, 20);
  cs(17, 21); cs(18, 22); cs(0, 8); cs(1, 9); cs(2, 10); cs(3, 11); cs(4, 12); cs(5, 13);
  cs(6, 14); cs(15, 23); cs(16, 24); cs(0, 16); cs(1, 17); cs(2, 18); cs(3, 19); cs(4, 20);
  cs(5, 21); cs(6, 22); cs(7, 23); cs(8, 24); cs(7, 15); cs(8, 16); cs(9, 17); cs(10, 18);
  cs(11, 19); cs(12, 20); cs(13, 21); cs(3, 15); cs(4, 16); cs(5, 17); cs(6, 18); cs(11, 23);
  cs(12, 24); cs(4, 8); cs(5, 9); cs(6, 10); cs(11, 15); cs(12, 16); cs(13, 17); cs(19, 23);
  cs(20, 24); cs(1, 15); cs(2, 16); cs(5, 19); cs(6, 20); cs(9, 23); cs(10, 24); cs(2, 8);
  cs(6, 12); cs(9, 15); cs(10, 16); cs(13, 19); cs(17, 23); cs(2, 4); cs(6, 8); cs(10, 12);
  cs(13, 15); cs(17, 19); cs(21, 23); cs(0, 15); cs(2, 17); cs(4, 19); cs(6, 21); cs(8, 23);
  cs(6, 13); cs(8, 15); cs(10, 17); cs(12, 19); cs(10, 13); cs(12, 15); cs(12, 13);
}

// Step 7 at (y, x): median of the 5x5 window with replicated borders.
PSD_HOST_DEVICE PSD_INLINE float IpMedianAt(const float* in, int64_t h, int64_t w, int64_t y, int64_t x) {
  float v[25];
  for (int dy = 0; dy < 5; ++dy) {
    int64_t yy = y + dy - 2;
    yy = yy < 0 ? 0 : (yy > h - 1 ? h - 1 : yy);
    for (int dx = 0; dx < 5; ++dx) {
      int64_t xx = x + dx - 2;
      xx = xx < 0 ? 0 : (xx > w - 1 ? w - 1 : xx);
      v[dy * 5 + dx] = in[yy * w + xx];
    }
  }
  IpMedian25Network([&](int a, int b) {
    const float lo = IpMin(v[a], v[b]), hi = IpMax(v[a], v[b]);
    v[a] = lo;
    v[b] = hi;
  });
  return v[12];
}

// ---------------------------------------------------------------------------------- CPU paths
// The selections (dilations, erosions, the median) again, for the CPU (ip_basic_cpu.cpp): the
// same values as the per-pixel functions above, computed row-vectorised; see there for how.
// Steps 1-2; inv and h3 are scratch (h * w each).
void IpDiamondCpu(const float* sparse, int64_t h, int64_t w, float max_depth, float* inv, float* h3,
                  float* out);
// out[y, x] = max / min of in[y, x - r .. x + r] (clipped).
template <bool kMax>
void IpRowExtremumCpu(const float* in, int64_t h, int64_t w, int64_t r, float* out);
// m = max / min of in[y - r .. y + r, x] (clipped); out = m, or with `keep`: out = keep < eps ? m : keep.
// `in` is scratch: its contents are destroyed.
template <bool kMax>
void IpColExtremumCpu(float* in, int64_t h, int64_t w, int64_t r, const float* keep, float* out);
// Step 7: the 5x5 median (IpMedianAt) of every pixel.
void IpMedianCpu(const float* in, int64_t h, int64_t w, float* out);
// Steps 8-9 from the median m: the Gaussian rows into t, then the columns, the write-back and the
// re-inversion into out (0 everywhere for invalid input, as the per-pixel steps below).
void IpGaussianCpu(const float* m, int64_t h, int64_t w, const IpBasicStats& st, float* t, float* out);

// ---------------------------------------------------------------------------------- launchers
// ParallelFor whose items do nothing when the work is switched off on the device.
template <Device D, typename F>
void IpFor(int64_t n, const int32_t* on, Stream s, const F& f) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    if (!IpOff(on)) f(i);
  });
}

template <Device D>
void IpBasicStatsPass(const float* sparse, int64_t h, int64_t w, IpBasicWork work, Stream s) {
  const int64_t n = h * w;
  const int32_t* on = work.active;
  float* part = work.partials;
  IpBasicStats* st = work.stats;
  IpFor<D>(kChunks, on, s, [=] PSD_HOST_DEVICE(int64_t c) {
    float mx = 0.0f, any = 0.0f, nonfinite = 0.0f, negative = 0.0f;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) {
      const float v = sparse[i];
      if (!IsFinite(v)) {
        nonfinite = 1.0f;
        continue;
      }
      negative = v < 0.0f ? 1.0f : negative;
      any = v > kIpBasicEps ? 1.0f : any;
      mx = IpMax(mx, v);
    }
    part[4 * c] = mx;
    part[4 * c + 1] = any;
    part[4 * c + 2] = nonfinite;
    part[4 * c + 3] = negative;
  });
  IpFor<D>(1, on, s, [=] PSD_HOST_DEVICE(int64_t) {
    float mx = 0.0f, any = 0.0f, nonfinite = 0.0f, negative = 0.0f;
    for (int64_t c = 0; c < kChunks; ++c) {
      mx = IpMax(mx, part[4 * c]);
      any = IpMax(any, part[4 * c + 1]);
      nonfinite = IpMax(nonfinite, part[4 * c + 2]);
      negative = IpMax(negative, part[4 * c + 3]);
    }
    st->max_depth = mx;
    st->any_valid = any > 0.0f ? 1 : 0;
    st->non_finite = nonfinite > 0.0f ? 1 : 0;
    st->negative = negative > 0.0f ? 1 : 0;
  });
}

template <Device D>
void IpBasicFill(const float* sparse, int64_t h, int64_t w, IpBasicWork work, float* out, Stream s) {
  const int64_t n = h * w;
  const int32_t* on = work.active;
  const IpBasicStats* st = work.stats;
  float *a = out, *b = work.b, *t = work.t;
  const float eps = kIpBasicEps;
  if constexpr (D == Device::kCpu) {
    IpDiamondCpu(sparse, h, w, st->max_depth, t, b, a);   // 1-2.
    IpRowExtremumCpu<true>(a, h, w, 2, t);                 // 3. closing 5x5
    IpColExtremumCpu<true>(t, h, w, 2, nullptr, b);
    IpRowExtremumCpu<false>(b, h, w, 2, t);
    IpColExtremumCpu<false>(t, h, w, 2, nullptr, a);
    IpRowExtremumCpu<true>(a, h, w, 3, t);                 // 4. 7x7 fill
    IpColExtremumCpu<true>(t, h, w, 3, a, b);
  } else {
    // 1-2. diamond dilation of the inverted input
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) {
      a[i] = IpDiamondAt(sparse, h, w, i / w, i % w, st->max_depth);
    });
    // 3. closing 5x5 = dilation then erosion, each separable (rows into t, then columns)
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { t[i] = IpExtremum<true>(a, i, w, i % w, 1, 2); });
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { b[i] = IpExtremum<true>(t, i, h, i / w, w, 2); });
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { t[i] = IpExtremum<false>(b, i, w, i % w, 1, 2); });
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { a[i] = IpExtremum<false>(t, i, h, i / w, w, 2); });
    // 4. empty pixels from the 7x7 dilation
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { t[i] = IpExtremum<true>(a, i, w, i % w, 1, 3); });
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) {
      b[i] = a[i] < eps ? IpExtremum<true>(t, i, h, i / w, w, 3) : a[i];
    });
  }
  // 5. extend each column's topmost value (> eps) up to row 0
  IpFor<D>(w, on, s, [=] PSD_HOST_DEVICE(int64_t x) {
    int64_t top = 0;
    while (top < h && !(b[top * w + x] > eps)) ++top;
    if (top == h) return;  // no value: argmax 0 upstream, nothing above row 0
    const float v = b[top * w + x];
    for (int64_t y = 0; y < top; ++y) b[y * w + x] = v;
  });
  if constexpr (D == Device::kCpu) {
    IpRowExtremumCpu<true>(b, h, w, 15, t);  // 6. 31x31 fill
    IpColExtremumCpu<true>(t, h, w, 15, b, a);
    IpMedianCpu(a, h, w, b);                 // 7.
  } else {
    // 6. empty pixels from the 31x31 dilation
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { t[i] = IpExtremum<true>(b, i, w, i % w, 1, 15); });
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) {
      a[i] = b[i] < eps ? IpExtremum<true>(t, i, h, i / w, w, 15) : b[i];
    });
    // 7. median 5x5
    IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { b[i] = IpMedianAt(a, h, w, i / w, i % w); });
  }
  if constexpr (D == Device::kCpu) {
    IpGaussianCpu(b, h, w, *st, t, a);  // 8-9.
    return;
  }
  // 8. Gaussian rows (fused but for the last column of an odd width; none for one column)
  IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t x = i % w;
    t[i] = w == 1 ? b[i] : IpGaussAt(b, i, w, x, 1, !(x == w - 1 && (w & 1)));
  });
  // 8-9. Gaussian columns, written back to valid pixels, re-inverted; 0 for invalid input
  IpFor<D>(n, on, s, [=] PSD_HOST_DEVICE(int64_t i) { a[i] = IpFinalAt(b, t, h, w, *st, i); });
}

#define PSD_INSTANTIATE_IP_BASIC(D)                                                        \
  template void IpBasicStatsPass<D>(const float*, int64_t, int64_t, IpBasicWork, Stream); \
  template void IpBasicFill<D>(const float*, int64_t, int64_t, IpBasicWork, float*, Stream);

}  // namespace kernels
}  // namespace psd
