// CPU instantiation of the IP-Basic fill (bodies in ip_basic_impl.h) and its CPU paths: the
// selections (dilations, erosions, the median) as row-vectorised loops instead of ParallelFor's
// per-pixel functor. Each output is the max / min / median of the same input pixels as the
// per-pixel functions, so the values are identical (tests/kernels/test_ip_basic.py compares
// them bit for bit with OpenCV):
//  * max and min of finite values select one of them, so any grouping gives the same value; the
//    wide dilations therefore combine windows by doubling (van Herk-like: M_j+1[x] = op(M_j[x],
//    M_j[x + 2^j]), then two overlapping windows of 2^k per output), 2 log2(r) + 1 operations per
//    pixel instead of 2r, with the clipped border columns / rows computed directly;
//  * the median runs the same compare-exchange network (IpMedian25Network) on 25 vectors of
//    neighbouring output columns held in registers, compiled for the baseline ISA (4 lanes:
//    SSE2, NEON) and on x86-64 also for AVX2 (8) and AVX-512 (16), chosen once at run time
//    (common/cpu_isa.h; min and max select, so the wider units give the same values);
//  * the Gaussian's row pass vectorises its fmaf where the ISA has FMA (the AVX2 variant), and its
//    column pass is unfused in every variant (the operations of IpGaussAt, in its order).
#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/cpu_isa.h"
#include "ip_basic_impl.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors passed between inline functions only

namespace psd {
namespace kernels {

PSD_INSTANTIATE_IP_BASIC(Device::kCpu)

namespace {

// o[x] = op(o[x], in[x + dx]) wherever 0 <= x + dx < w (the clipped border of the morphology).
template <bool kMax>
inline void FoldShifted(float* o, const float* in, int64_t w, int64_t dx) {
  const int64_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? w - dx : w;
#pragma omp simd
  for (int64_t x = x0; x < x1; ++x) o[x] = kMax ? IpMax(o[x], in[x + dx]) : IpMin(o[x], in[x + dx]);
}

template <bool kMax>
inline float Op(float a, float b) {
  return kMax ? IpMax(a, b) : IpMin(a, b);
}

// The doubling order of a window of 2r + 1: the largest k with 2^k <= 2r + 1.
inline int DoublingOrder(int64_t r) {
  int k = 0;
  while ((int64_t{2} << k) <= 2 * r + 1) ++k;
  return k;
}

// Windows this wide and wider are combined by doubling; narrower ones fold directly (measured:
// the closing's 5-wide windows fold faster than they double).
constexpr int64_t kDoublingRadius = 3;

}  // namespace

// The diamond as rows of windows 5 (row y), 3 (rows y -/+ 1) and 1 (rows y -/+ 2): per row the
// inverted input (into inv), its 3-wide (into h3) and 5-wide (into out) maxima, then the rows combined.
void IpDiamondCpu(const float* sparse, int64_t h, int64_t w, float max_depth, float* inv, float* h3,
                  float* out) {
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t y = y0; y < y1; ++y) {
      const float* src = sparse + y * w;
      float* d = inv + y * w;
      float* m3 = h3 + y * w;
      float* m5 = out + y * w;
#pragma omp simd
      for (int64_t x = 0; x < w; ++x) d[x] = IpInvert(src[x], max_depth);
      if (w == 1) {
        m3[0] = m5[0] = d[0];
        continue;
      }
      m3[0] = IpMax(d[0], d[1]);
      m3[w - 1] = IpMax(d[w - 2], d[w - 1]);
#pragma omp simd
      for (int64_t x = 1; x < w - 1; ++x) m3[x] = IpMax(IpMax(d[x - 1], d[x]), d[x + 1]);
      // [x - 2, x + 2] = [x - 1 - 1, x - 1 + 1] u [x + 1 - 1, x + 1 + 1], clipped
      m5[0] = IpMax(m3[0], m3[1]);
      m5[w - 1] = IpMax(m3[w - 2], m3[w - 1]);
#pragma omp simd
      for (int64_t x = 1; x < w - 1; ++x) m5[x] = IpMax(m3[x - 1], m3[x + 1]);
    }
  });
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t y = y0; y < y1; ++y) {
      float* o = out + y * w;
      if (y >= 1) FoldShifted<true>(o, h3 + (y - 1) * w, w, 0);
      if (y + 1 < h) FoldShifted<true>(o, h3 + (y + 1) * w, w, 0);
      if (y >= 2) FoldShifted<true>(o, inv + (y - 2) * w, w, 0);
      if (y + 2 < h) FoldShifted<true>(o, inv + (y + 2) * w, w, 0);
    }
  });
}

template <bool kMax>
void IpRowExtremumCpu(const float* in, int64_t h, int64_t w, int64_t r, float* out) {
  const bool doubling = r >= kDoublingRadius && w > 2 * r;
  const int k = DoublingOrder(r);
  const int64_t span = int64_t{1} << k;
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
    std::vector<float> scratch(doubling ? 2 * static_cast<size_t>(w) : 0);
    for (int64_t y = y0; y < y1; ++y) {
      float* o = out + y * w;
      const float* src = in + y * w;
      if (!doubling) {
        for (int64_t x = 0; x < w; ++x) o[x] = src[x];
        for (int64_t dx = -r; dx <= r; ++dx)
          if (dx != 0) FoldShifted<kMax>(o, src, w, dx);
        continue;
      }
      // m[x] = op of src[x .. x + 2^j - 1] for x <= w - 2^j, j = 1..k
      const float* m = src;
      for (int j = 0; j < k; ++j) {
        float* d = scratch.data() + (j & 1) * w;
        const int64_t step = int64_t{1} << j, n = w - 2 * step + 1;
#pragma omp simd
        for (int64_t x = 0; x < n; ++x) d[x] = Op<kMax>(m[x], m[x + step]);
        m = d;
      }
      // interior: [x - r, x + r] = [x - r, x - r + 2^k) u (x + r - 2^k, x + r]
#pragma omp simd
      for (int64_t x = r; x < w - r; ++x) o[x] = Op<kMax>(m[x - r], m[x + r - span + 1]);
      // the clipped columns: [0, x + r] and [x - r, w - 1] grow by one pixel per column
      float v = src[0];
      for (int64_t q = 1; q <= r; ++q) v = Op<kMax>(v, src[q]);
      for (int64_t x = 0; x < r; ++x) {
        o[x] = v;
        v = Op<kMax>(v, src[x + r + 1]);
      }
      v = src[w - 1];
      for (int64_t q = w - 2; q >= w - 1 - r; --q) v = Op<kMax>(v, src[q]);
      for (int64_t x = w - 1; x >= w - r; --x) {
        o[x] = v;
        v = Op<kMax>(v, src[x - r - 1]);
      }
    }
  });
}

template <bool kMax>
void IpColExtremumCpu(float* in, int64_t h, int64_t w, int64_t r, const float* keep, float* out) {
  const bool doubling = r >= kDoublingRadius && h > 2 * r;
  auto finish = [&](int64_t y, int64_t x0, int64_t x1) {  // out = keep < eps ? m : keep
    if (!keep) return;
    float* o = out + y * w;
    const float* kp = keep + y * w;
#pragma omp simd
    for (int64_t x = x0; x < x1; ++x) o[x] = kp[x] < kIpBasicEps ? o[x] : kp[x];
  };
  auto direct = [&](int64_t y, int64_t x0, int64_t x1) {
    float* o = out + y * w;
    const int64_t lo = y - r < 0 ? 0 : y - r, hi = y + r > h - 1 ? h - 1 : y + r;
    const float* first = in + lo * w;
    for (int64_t x = x0; x < x1; ++x) o[x] = first[x];
    for (int64_t yy = lo + 1; yy <= hi; ++yy) {
      const float* s = in + yy * w;
#pragma omp simd
      for (int64_t x = x0; x < x1; ++x) o[x] = Op<kMax>(o[x], s[x]);
    }
    finish(y, x0, x1);
  };
  if (!doubling) {
    CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
      for (int64_t y = y0; y < y1; ++y) direct(y, 0, w);
    });
    return;
  }
  // threads own column strips: the doubling runs in place down each strip (row y reads row
  // y + 2^j, not yet overwritten), after the clipped top and bottom rows read the input directly
  const int k = DoublingOrder(r);
  const int64_t span = int64_t{1} << k;
  auto fold_row = [&](float* o, const float* a, const float* b, int64_t x0, int64_t x1) {
#pragma omp simd
    for (int64_t x = x0; x < x1; ++x) o[x] = Op<kMax>(a[x], b[x]);
  };
  CpuParallelRanges(w, w / 64 + 1, [&](int64_t x0, int64_t x1, int64_t) {
    // the clipped rows: [0, y + r] and [y - r, h - 1] grow by one row per row (out holds the
    // running extremum until every clipped row is done, then `keep` applies)
    std::memcpy(out + x0, in + x0, sizeof(float) * static_cast<size_t>(x1 - x0));
    for (int64_t q = 1; q <= r; ++q) fold_row(out, out, in + q * w, x0, x1);
    for (int64_t y = 1; y < r; ++y) fold_row(out + y * w, out + (y - 1) * w, in + (y + r) * w, x0, x1);
    float* last = out + (h - 1) * w;
    std::memcpy(last + x0, in + (h - 1) * w + x0, sizeof(float) * static_cast<size_t>(x1 - x0));
    for (int64_t q = h - 2; q >= h - 1 - r; --q) fold_row(last, last, in + q * w, x0, x1);
    for (int64_t y = h - 2; y >= h - r; --y) fold_row(out + y * w, out + (y + 1) * w, in + (y - r) * w, x0, x1);
    for (int64_t y = 0; y < r; ++y) finish(y, x0, x1);
    for (int64_t y = h - r; y < h; ++y) finish(y, x0, x1);
    for (int j = 0; j < k; ++j) {
      const int64_t step = int64_t{1} << j, n = h - 2 * step + 1;
      for (int64_t y = 0; y < n; ++y) {
        float* d = in + y * w;
        const float* s = in + (y + step) * w;
#pragma omp simd
        for (int64_t x = x0; x < x1; ++x) d[x] = Op<kMax>(d[x], s[x]);
      }
    }
    for (int64_t y = r; y < h - r; ++y) {
      float* o = out + y * w;
      const float* a = in + (y - r) * w;
      const float* b = in + (y + r - span + 1) * w;
#pragma omp simd
      for (int64_t x = x0; x < x1; ++x) o[x] = Op<kMax>(a[x], b[x]);
      finish(y, x0, x1);
    }
  });
}

template void IpRowExtremumCpu<true>(const float*, int64_t, int64_t, int64_t, float*);
template void IpRowExtremumCpu<false>(const float*, int64_t, int64_t, int64_t, float*);
template void IpColExtremumCpu<true>(float*, int64_t, int64_t, int64_t, const float*, float*);
template void IpColExtremumCpu<false>(float*, int64_t, int64_t, int64_t, const float*, float*);

// ------------------------------------------------------------------------------------ median
namespace {

// Rows [y0, y1) of the median with kLanes output columns per step. Columns 0, 1 and w - 2,
// w - 1 (whose windows are clipped) and frames narrower than kLanes + 4 take IpMedianAt; the
// last vector step of a row overlaps the previous one (the same values written twice).
template <int kLanes>
inline __attribute__((always_inline)) void MedianRowsBody(const float* in, int64_t h, int64_t w, int64_t y0, int64_t y1, float* out) {
  typedef float V __attribute__((vector_size(4 * kLanes)));
  for (int64_t y = y0; y < y1; ++y) {
    float* o = out + y * w;
    if (w < kLanes + 4) {
      for (int64_t x = 0; x < w; ++x) o[x] = IpMedianAt(in, h, w, y, x);
      continue;
    }
    const float* rows[5];
    for (int dy = 0; dy < 5; ++dy) {
      int64_t yy = y + dy - 2;
      yy = yy < 0 ? 0 : (yy > h - 1 ? h - 1 : yy);
      rows[dy] = in + yy * w;
    }
    for (int64_t x : {int64_t{0}, int64_t{1}, w - 2, w - 1}) o[x] = IpMedianAt(in, h, w, y, x);
    for (int64_t x0 = 2;; x0 += kLanes) {
      x0 = x0 + kLanes > w - 2 ? w - 2 - kLanes : x0;
      V v[25];
      for (int dy = 0; dy < 5; ++dy)
        for (int dx = 0; dx < 5; ++dx) std::memcpy(&v[dy * 5 + dx], rows[dy] + x0 + dx - 2, sizeof(V));
      IpMedian25Network([&](int a, int b) __attribute__((always_inline)) {
        const V lo = v[b] < v[a] ? v[b] : v[a];  // IpMin(v[a], v[b])
        const V hi = v[a] < v[b] ? v[b] : v[a];  // IpMax(v[a], v[b])
        v[a] = lo;
        v[b] = hi;
      });
      std::memcpy(o + x0, &v[12], sizeof(V));
      if (x0 + kLanes >= w - 2) break;
    }
  }
}

void MedianRows4(const float* in, int64_t h, int64_t w, int64_t y0, int64_t y1, float* out) {
  MedianRowsBody<4>(in, h, w, y0, y1, out);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) void MedianRows8(const float* in, int64_t h, int64_t w, int64_t y0,
                                                 int64_t y1, float* out) {
  MedianRowsBody<8>(in, h, w, y0, y1, out);
}
__attribute__((target("avx512f"))) void MedianRows16(const float* in, int64_t h, int64_t w, int64_t y0,
                                                     int64_t y1, float* out) {
  MedianRowsBody<16>(in, h, w, y0, y1, out);
}
#endif

using MedianRowsFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, float*);
MedianRowsFn SelectMedianRows() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (MaxCpuIsa() == CpuIsa::kAvx512) return MedianRows16;
  if (MaxCpuIsa() == CpuIsa::kAvx2) return MedianRows8;
#endif
  return MedianRows4;
}

}  // namespace

void IpMedianCpu(const float* in, int64_t h, int64_t w, float* out) {
  static const MedianRowsFn rows = SelectMedianRows();
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) { rows(in, h, w, y0, y1, out); });
}

// ---------------------------------------------------------------------------------- Gaussian
namespace {

// The row pass of rows [y0, y1): the border columns (reflected, and the last one of an odd width
// unfused) by IpGaussAt, the interior by IpGauss5 in a loop whose fmaf vectorises where the ISA
// has FMA (AVX2 variant, AArch64) and calls libm's exact fmaf otherwise.
inline __attribute__((always_inline)) void GaussRowsBody(const float* m, int64_t w, int64_t y0, int64_t y1,
                                                         float* t) {
  for (int64_t y = y0; y < y1; ++y) {
    const float* c = m + y * w;
    float* o = t + y * w;
    if (w == 1) {
      o[0] = c[0];
      continue;
    }
    auto border = [&](int64_t x) { o[x] = IpGaussAt(m, y * w + x, w, x, 1, !(x == w - 1 && (w & 1))); };
    if (w < 5) {
      for (int64_t x = 0; x < w; ++x) border(x);
      continue;
    }
    for (int64_t x : {int64_t{0}, int64_t{1}, w - 2, w - 1}) border(x);
#pragma omp simd
    for (int64_t x = 2; x < w - 2; ++x) {
      o[x] = IpGauss5(c[x], c[x - 1] + c[x + 1], c[x - 2] + c[x + 2], true);
    }
  }
}

void GaussRowsBase(const float* m, int64_t w, int64_t y0, int64_t y1, float* t) { GaussRowsBody(m, w, y0, y1, t); }
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void GaussRowsFma(const float* m, int64_t w, int64_t y0, int64_t y1,
                                                      float* t) {
  GaussRowsBody(m, w, y0, y1, t);
}
#endif

}  // namespace

void IpGaussianCpu(const float* m, int64_t h, int64_t w, const IpBasicStats& st, float* t, float* out) {
  if (!IpStatsValid(st)) {
    std::fill(out, out + h * w, 0.0f);
    return;
  }
  static const auto rows_fn =
#if defined(__x86_64__) && defined(__GNUC__)
      MaxCpuIsa() != CpuIsa::kBaseline ? GaussRowsFma :
#endif
                                       GaussRowsBase;
  const float mx = st.max_depth;
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
    rows_fn(m, w, y0, y1, t);
  });
  // columns (unfused), the write-back and the re-inversion (IpFinalAt, row-vectorised)
  CpuParallelRanges(h, h, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t y = y0; y < y1; ++y) {
      const float* mv = m + y * w;
      float* o = out + y * w;
      const float* c = t + y * w;
      const float* u1 = t + IpReflect101(y - 1, h) * w;
      const float* d1 = t + IpReflect101(y + 1, h) * w;
      const float* u2 = t + IpReflect101(y - 2, h) * w;
      const float* d2 = t + IpReflect101(y + 2, h) * w;
      const bool one = h == 1;
#pragma omp simd
      for (int64_t x = 0; x < w; ++x) {
        const float g = one ? c[x] : IpGauss5(c[x], u1[x] + d1[x], u2[x] + d2[x], false);
        o[x] = IpWriteBack(mv[x], g, mx);
      }
    }
  });
}

}  // namespace kernels
}  // namespace psd
