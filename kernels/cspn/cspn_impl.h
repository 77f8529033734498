// Kernel bodies of the CSPN family, written once for CPU and CUDA (see cspn.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "../resample/resample_impl.h"
#include "cspn.h"

namespace psd {
namespace kernels {

PSD_HOST_DEVICE PSD_INLINE float Dot(const float* a, const float* b, int64_t c) {
  float acc = 0.0f;
#if !defined(__CUDA_ARCH__)
#pragma omp simd reduction(+ : acc)
#endif
  for (int64_t k = 0; k < c; ++k) acc += a[k] * b[k];
  return acc;
}

// Compile-time channel counts let the CPU compiler unroll and vectorise the dot products.
template <int C>
PSD_HOST_DEVICE PSD_INLINE float DotN(const float* a, const float* b) {
  float acc = 0.0f;
#if !defined(__CUDA_ARCH__)
#pragma omp simd reduction(+ : acc)
#endif
  for (int k = 0; k < C; ++k) acc += a[k] * b[k];
  return acc;
}

PSD_HOST_DEVICE PSD_INLINE void NormalizeInPlace(float* v, int64_t c) {
  float ss = 0.0f;
  for (int64_t k = 0; k < c; ++k) ss = PSD_ADD_RN(ss, PSD_MUL_RN(v[k], v[k]));  // the kNN's cosines: unfused
  float nrm = sqrtf(ss);
  nrm = nrm > 1e-12f ? nrm : 1e-12f;
  for (int64_t k = 0; k < c; ++k) v[k] = v[k] / nrm;
}

template <Device D>
void NormalizeFeatures(const float* feat, int64_t c, int64_t n, float* unit, Stream s) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t p) {
    float* u = unit + p * c;
    for (int64_t k = 0; k < c; ++k) u[k] = feat[k * n + p];
    NormalizeInPlace(u, c);
  });
}

template <Device D>
void CompressNormalize(const float* mixed, int64_t c, int64_t hf, int64_t wf, int64_t h,
                       int64_t w, float* unit, Stream s) {
  ParallelFor<D>(h * w, s, [=] PSD_HOST_DEVICE(int64_t p) {
    const LinearTaps ty = ComputeLinearTaps(p / w, hf, h);
    const LinearTaps tx = ComputeLinearTaps(p % w, wf, w);
    const int64_t o00 = ty.i0 * wf + tx.i0, o01 = ty.i0 * wf + tx.i1;
    const int64_t o10 = ty.i1 * wf + tx.i0, o11 = ty.i1 * wf + tx.i1;
    const int64_t plane = hf * wf;
    float* u = unit + p * c;
    for (int64_t k = 0; k < c; ++k) {
      const float* m = mixed + k * plane;
      const float r0 = m[o00] * tx.w0 + m[o01] * tx.w1;
      const float r1 = m[o10] * tx.w0 + m[o11] * tx.w1;
      u[k] = r0 * ty.w0 + r1 * ty.w1;
    }
    NormalizeInPlace(u, c);
  });
}

template <int C>
PSD_HOST_DEVICE PSD_INLINE void AffinityAt(const float* unit, int64_t cc, int64_t h, int64_t w,
                                           int64_t p, float* weights) {
  const int64_t n = h * w, y = p / w, x = p % w;
  const float* up = unit + p * cc;
  float a[8];
  float sabs = 0.0f;
  int k = 0;
  for (int dy = -1; dy <= 1; ++dy)
    for (int dx = -1; dx <= 1; ++dx) {
      if (dy == 0 && dx == 0) continue;
      const int64_t yy = y + dy, xx = x + dx;
      float v = 0.0f;
      if (yy >= 0 && yy < h && xx >= 0 && xx < w) {
        const float* un = unit + (yy * w + xx) * cc;
        v = C > 0 ? DotN<(C > 0 ? C : 1)>(up, un) : Dot(up, un, cc);
      }
      a[k++] = v;
      sabs += fabsf(v);
    }
  if (sabs == 0.0f) {  // defined zero-sum case: weights 0, centre 1 => keeps its value
    for (int j = 0; j < 8; ++j) weights[j * n + p] = 0.0f;
    weights[8 * n + p] = 1.0f;
    return;
  }
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float wj = a[j] / sabs;
    weights[j * n + p] = wj;
    sum += wj;
  }
  weights[8 * n + p] = 1.0f - sum;
}

template <Device D, int C>
void AffinityFixed(const float* unit, int64_t c, int64_t h, int64_t w, float* weights, Stream s) {
  ParallelFor<D>(h * w, s, [=] PSD_HOST_DEVICE(int64_t p) { AffinityAt<C>(unit, c, h, w, p, weights); });
}

template <Device D>
void Affinity(const float* unit, int64_t c, int64_t h, int64_t w, float* weights, Stream s) {
  switch (c) {
    case 12: AffinityFixed<D, 12>(unit, c, h, w, weights, s); break;
    case 16: AffinityFixed<D, 16>(unit, c, h, w, weights, s); break;
    case 32: AffinityFixed<D, 32>(unit, c, h, w, weights, s); break;
    default: AffinityFixed<D, 0>(unit, c, h, w, weights, s); break;
  }
}

// ---- CPU fused compression + normalisation + affinity (full resolution, and post-processing).
// Each thread owns a band of output rows and keeps, in `unit` used as scratch, only the
// normalised features of the current and next row (planar per row: c x w), the two
// horizontally filtered source rows they interpolate, and the affinities of the current and
// previous row. Each cosine is computed once and used by both pixels (a(p, p+o) = a(p+o, p)):
// per row the E, S, SE and SW cosines; the W, N, NW and NE ones are the previous row's or
// pixel's. Everything runs as contiguous x loops that the compiler vectorises.
// Bit-identical to CompressNormalize + Affinity: the same float operations per output, and
// DotLanes reproduces the association of the vectorised DotN (four interleaved partial sums,
// lane k % 4 accumulating in k order, folded as ((l0 + l1) + l2) + l3).
constexpr int64_t kDotBlock = 64;

// out[x] = dot over k of a[k * stride + x] and b[k * stride + x], x in [0, n).
inline void DotLanes(const float* a, const float* b, int64_t c, int64_t stride, int64_t n,
                     float* out) {
  for (int64_t x0 = 0; x0 < n; x0 += kDotBlock) {
    const int64_t nb = n - x0 < kDotBlock ? n - x0 : kDotBlock;
    float l[4][kDotBlock];
    for (int64_t j = 0; j < 4; ++j) {  // lane j starts as 0 + its first product (or 0)
      const float* aj = a + j * stride + x0;
      const float* bj = b + j * stride + x0;
      float* lj = l[j];
      if (j < c) {
#pragma omp simd
        for (int64_t x = 0; x < nb; ++x) lj[x] = 0.0f + aj[x] * bj[x];
      } else {
        for (int64_t x = 0; x < nb; ++x) lj[x] = 0.0f;
      }
    }
    for (int64_t k = 4; k < c; ++k) {
      const float* ak = a + k * stride + x0;
      const float* bk = b + k * stride + x0;
      float* lk = l[k & 3];
#pragma omp simd
      for (int64_t x = 0; x < nb; ++x) lk[x] += ak[x] * bk[x];
    }
#pragma omp simd
    for (int64_t x = 0; x < nb; ++x) out[x0 + x] = ((l[0][x] + 0.0f) + l[1][x] + l[2][x]) + l[3][x];
  }
}

// Floats of `unit` the fused CPU kernel needs: shared x taps, then per band its rows.
PSD_HOST_DEVICE PSD_INLINE int64_t CompressAffinityBandFloats(int64_t c, int64_t w) {
  return 4 * c * w + w + 7 * (w + 2);
}

// Bit-level select: GCC will not if-convert `cond ? x : y` around float arithmetic under the
// default -ftrapping-math, which keeps such loops scalar; masks vectorise (andps / orps).
inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Normalised weights of one row from its eight affinity rows, neighbour order (-1,-1) (-1,0)
// (-1,1) (0,-1) (0,1) (1,-1) (1,0) (1,1): the arithmetic of AffinityAt, branch-free. In the
// zero-sum case the divisor becomes 1 and the quotients are masked to +0, so the centre
// weight 1 - sum is exactly 1, as AffinityAt writes.
inline void WeightsRow(const float* a0, const float* a1, const float* a2, const float* a3,
                       const float* a4, const float* a5, const float* a6, const float* a7,
                       int64_t w, int64_t n, float* wr) {
#pragma omp simd
  for (int64_t x = 0; x < w; ++x) {
    const float sabs = (((((((0.0f + fabsf(a0[x])) + fabsf(a1[x])) + fabsf(a2[x])) +
                           fabsf(a3[x])) + fabsf(a4[x])) + fabsf(a5[x])) + fabsf(a6[x])) +
                       fabsf(a7[x]);
    const uint32_t keep = 0u - static_cast<uint32_t>(sabs != 0.0f);  // 0 in the zero-sum case
    const float den = BitsFloat((FloatBits(sabs) & keep) | (FloatBits(1.0f) & ~keep));
    const float w0 = BitsFloat(FloatBits(a0[x] / den) & keep);
    const float w1 = BitsFloat(FloatBits(a1[x] / den) & keep);
    const float w2 = BitsFloat(FloatBits(a2[x] / den) & keep);
    const float w3 = BitsFloat(FloatBits(a3[x] / den) & keep);
    const float w4 = BitsFloat(FloatBits(a4[x] / den) & keep);
    const float w5 = BitsFloat(FloatBits(a5[x] / den) & keep);
    const float w6 = BitsFloat(FloatBits(a6[x] / den) & keep);
    const float w7 = BitsFloat(FloatBits(a7[x] / den) & keep);
    wr[x] = w0;
    wr[n + x] = w1;
    wr[2 * n + x] = w2;
    wr[3 * n + x] = w3;
    wr[4 * n + x] = w4;
    wr[5 * n + x] = w5;
    wr[6 * n + x] = w6;
    wr[7 * n + x] = w7;
    wr[8 * n + x] = 1.0f - ((((((((0.0f + w0) + w1) + w2) + w3) + w4) + w5) + w6) + w7);
  }
}

inline void CompressAffinityCpu(const float* mixed, int64_t c, int64_t hf, int64_t wf, int64_t h,
                                int64_t w, float* unit, float* weights, int64_t bands) {
  const int64_t n = h * w, plane = hf * wf;
  // shared x taps (int32 indices: feature widths are far below 2^31)
  int32_t* xi0 = reinterpret_cast<int32_t*>(unit);
  int32_t* xi1 = xi0 + w;
  float* xw0 = unit + 2 * w;
  float* xw1 = unit + 3 * w;
  for (int64_t x = 0; x < w; ++x) {
    const LinearTaps t = ComputeLinearTaps(x, wf, w);
    xi0[x] = static_cast<int32_t>(t.i0);
    xi1[x] = static_cast<int32_t>(t.i1);
    xw0[x] = t.w0;
    xw1[x] = t.w1;
  }
  float* band_base = unit + 4 * w;
  const int64_t band_floats = CompressAffinityBandFloats(c, w);
  CpuParallelRanges(h, bands, [&](int64_t y0, int64_t y1, int64_t part) {
    float* sc = band_base + part * band_floats;
    float* src_rows[2] = {sc, sc + c * w};  // horizontally filtered source rows (c x w)
    float* frow[2] = {sc + 2 * c * w, sc + 3 * c * w};  // unit features of rows y, y + 1
    float* nrm = sc + 4 * c * w;
    float* arow[7];  // (w + 2) each, indices -1 and w stay 0
    for (int j = 0; j < 7; ++j) {
      float* r = nrm + w + j * (w + 2);
      for (int64_t x = 0; x < w + 2; ++x) r[x] = 0.0f;
      arow[j] = r + 1;
    }
    float *aE = arow[0], *aS = arow[1], *aSE = arow[2], *aSW = arow[3];
    float *pS = arow[4], *pSE = arow[5], *pSW = arow[6];
    int64_t tag[2] = {-1, -1};

    auto make_row = [&](int64_t y, float* f) {  // CompressNormalize of output row y
      const LinearTaps ty = ComputeLinearTaps(y, hf, h);
      const int64_t iy[2] = {ty.i0, ty.i1};
      for (int i = 0; i < 2; ++i) {
        if (tag[iy[i] & 1] == iy[i]) continue;
        float* dst = src_rows[iy[i] & 1];
        for (int64_t k = 0; k < c; ++k) {
          const float* m = mixed + k * plane + iy[i] * wf;
          float* d = dst + k * w;
          for (int64_t x = 0; x < w; ++x) d[x] = m[xi0[x]] * xw0[x] + m[xi1[x]] * xw1[x];
        }
        tag[iy[i] & 1] = iy[i];
      }
      const float* r0 = src_rows[ty.i0 & 1];
      const float* r1 = src_rows[ty.i1 & 1];
      const float w0 = ty.w0, w1 = ty.w1;
      for (int64_t x = 0; x < w; ++x) nrm[x] = 0.0f;
      for (int64_t k = 0; k < c; ++k) {
        const float* a = r0 + k * w;
        const float* b = r1 + k * w;
        float* fk = f + k * w;
#pragma omp simd
        for (int64_t x = 0; x < w; ++x) {
          const float v = a[x] * w0 + b[x] * w1;
          fk[x] = v;
          nrm[x] += v * v;
        }
      }
      for (int64_t x = 0; x < w; ++x) {
        const float v = sqrtf(nrm[x]);
        nrm[x] = v > 1e-12f ? v : 1e-12f;
      }
      for (int64_t k = 0; k < c; ++k) {
        float* fk = f + k * w;
#pragma omp simd
        for (int64_t x = 0; x < w; ++x) fk[x] = fk[x] / nrm[x];
      }
    };
    // cosines of row y (features fc) with its E neighbour, and with row y + 1 (fn, or none)
    auto down_cosines = [&](const float* fc, const float* fn, float* s, float* se, float* sw) {
      if (!fn) {
        for (int64_t x = 0; x < w; ++x) s[x] = se[x] = sw[x] = 0.0f;
        return;
      }
      DotLanes(fc, fn, c, w, w, s);
      DotLanes(fc, fn + 1, c, w, w - 1, se);
      se[w - 1] = 0.0f;
      DotLanes(fc + 1, fn, c, w, w - 1, sw + 1);
      sw[0] = 0.0f;
    };

    float* fc = frow[0];
    float* fn = frow[1];
    if (y0 > 0) {  // the band's first row needs the previous row's downward cosines
      make_row(y0 - 1, fn);
      make_row(y0, fc);
      down_cosines(fn, fc, pS, pSE, pSW);
    } else {
      make_row(y0, fc);
    }
    for (int64_t y = y0; y < y1; ++y) {
      const bool next = y + 1 < h;
      if (next) make_row(y + 1, fn);
      DotLanes(fc, fc + 1, c, w, w - 1, aE);
      aE[w - 1] = 0.0f;
      down_cosines(fc, next ? fn : nullptr, aS, aSE, aSW);
      WeightsRow(pSE - 1, pS, pSW + 1, aE - 1, aE, aSW, aS, aSE, w, n, weights + y * w);
      float* t = fc;
      fc = fn;
      fn = t;
      t = pS, pS = aS, aS = t;
      t = pSE, pSE = aSE, aSE = t;
      t = pSW, pSW = aSW, aSW = t;
    }
  });
}

template <Device D>
void CompressAffinity(const float* mixed, int64_t c, int64_t hf, int64_t wf, int64_t h, int64_t w,
                      float* unit, float* weights, Stream s) {
  if constexpr (D == Device::kCpu) {
    // bands: one per thread, as many as the scratch (unit: c*h*w floats) holds; >= 4 rows each
    const int64_t bands = (c * h * w - 4 * w) / CompressAffinityBandFloats(c, w);
    const int64_t max_bands = h / 4 > 1 ? h / 4 : 1;
    if (bands >= 1) {
      CompressAffinityCpu(mixed, c, hf, wf, h, w, unit, weights,
                          bands < max_bands ? bands : max_bands);
      return;
    }
  }
  CompressNormalize<D>(mixed, c, hf, wf, h, w, unit, s);
  Affinity<D>(unit, c, h, w, weights, s);
}

PSD_HOST_DEVICE PSD_INLINE float CspnStepAt(const float* weights, const float* src,
                                            const float* draw, int64_t h, int64_t w, int64_t p) {
  const int64_t n = h * w, y = p / w, x = p % w;
  const float c = weights[8 * n + p];
  float acc = 0.0f;
  if (y > 0 && y < h - 1 && x > 0 && x < w - 1) {
    acc = weights[0 * n + p] * src[p - w - 1] + weights[1 * n + p] * src[p - w] +
          weights[2 * n + p] * src[p - w + 1] + weights[3 * n + p] * src[p - 1] +
          weights[4 * n + p] * src[p + 1] + weights[5 * n + p] * src[p + w - 1] +
          weights[6 * n + p] * src[p + w] + weights[7 * n + p] * src[p + w + 1];
  } else {
    int k = 0;
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        if (dy == 0 && dx == 0) continue;
        const int64_t yy = y + dy, xx = x + dx;
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) acc += weights[k * n + p] * src[yy * w + xx];
        ++k;
      }
  }
  return acc + c * draw[p];
}

// CPU CSPN: one parallel region for the injection and all sweeps (a barrier between sweeps
// instead of a fork/join each), each thread on a fixed band of rows. Border rows and columns
// go through CspnStepAt; the interior of a row is a contiguous loop over x with the same
// left-to-right sum as CspnStepAt's interior branch (bit-identical), which vectorises.
inline void CspnSweepsCpu(const float* weights, const float* sparse, const float* dense,
                          int64_t h, int64_t w, int32_t iterations, float* draw, float* buf,
                          float* out) {
  const int64_t n = h * w;
  CpuParallelRanges(h, n / 16384 + 1, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t p = y0 * w; p < y1 * w; ++p) {
      const float sv = sparse[p];
      draw[p] = sv > 0.0f ? sv : dense[p];
    }
    if (iterations <= 0) {
      for (int64_t p = y0 * w; p < y1 * w; ++p) out[p] = draw[p];
      return;
    }
    const float* src = draw;
    for (int32_t t = 0; t < iterations; ++t) {
#pragma omp barrier
      const bool last = t == iterations - 1;
      float* dst = ((iterations - 1 - t) % 2 == 0) ? out : buf;
      for (int64_t y = y0; y < y1; ++y) {
        const int64_t r = y * w;
        if (y == 0 || y == h - 1 || w < 3) {
          for (int64_t x = 0; x < w; ++x) {
            const float v = CspnStepAt(weights, src, draw, h, w, r + x);
            dst[r + x] = (!last && sparse[r + x] > 0.0f) ? sparse[r + x] : v;
          }
          continue;
        }
        for (int64_t x : {int64_t{0}, w - 1}) {
          const float v = CspnStepAt(weights, src, draw, h, w, r + x);
          dst[r + x] = (!last && sparse[r + x] > 0.0f) ? sparse[r + x] : v;
        }
        const float *w0 = weights + r, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n, *w4 = w3 + n;
        const float *w5 = w4 + n, *w6 = w5 + n, *w7 = w6 + n, *wc = w7 + n;
        const float *sn = src + r - w, *sc = src + r, *ss = src + r + w;
        const float* dr = draw + r;
        const float* sp = sparse + r;
        float* d = dst + r;
#pragma omp simd
        for (int64_t x = 1; x < w - 1; ++x) {
          const float acc = w0[x] * sn[x - 1] + w1[x] * sn[x] + w2[x] * sn[x + 1] +
                            w3[x] * sc[x - 1] + w4[x] * sc[x + 1] + w5[x] * ss[x - 1] +
                            w6[x] * ss[x] + w7[x] * ss[x + 1];
          const float v = acc + wc[x] * dr[x];
          const float sv = sp[x];
          d[x] = (!last && sv > 0.0f) ? sv : v;  // re-inject before the next sweep
        }
      }
      src = dst;
    }
  });
}

template <Device D>
void CspnSweeps(const float* weights, const float* sparse, const float* dense, int64_t h,
                int64_t w, int32_t iterations, float* draw, float* buf, float* out, Stream s) {
  if constexpr (D == Device::kCpu) {
    CspnSweepsCpu(weights, sparse, dense, h, w, iterations, draw, buf, out);
    return;
  }
  const int64_t n = h * w;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t p) {
    const float sv = sparse[p];
    draw[p] = sv > 0.0f ? sv : dense[p];
  });
  if (iterations <= 0) {
    CopyFloats<D>(out, draw, n, s);
    return;
  }
  const float* src = draw;
  for (int32_t t = 0; t < iterations; ++t) {
    const bool last = t == iterations - 1;
    float* dst = ((iterations - 1 - t) % 2 == 0) ? out : buf;
    const float* cur = src;
    const float* dr = draw;
    ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t p) {
      const float v = CspnStepAt(weights, cur, dr, h, w, p);
      const float sv = sparse[p];
      dst[p] = (!last && sv > 0.0f) ? sv : v;  // re-inject before the next sweep
    });
    src = dst;
  }
}

#define PSD_INSTANTIATE_CSPN(D)                                                              \
  template void NormalizeFeatures<D>(const float*, int64_t, int64_t, float*, Stream);        \
  template void CompressNormalize<D>(const float*, int64_t, int64_t, int64_t, int64_t,       \
                                     int64_t, float*, Stream);                               \
  template void Affinity<D>(const float*, int64_t, int64_t, int64_t, float*, Stream);        \
  template void CompressAffinity<D>(const float*, int64_t, int64_t, int64_t, int64_t,        \
                                    int64_t, float*, float*, Stream);                        \
  template void CspnSweeps<D>(const float*, const float*, const float*, int64_t, int64_t,    \
                              int32_t, float*, float*, float*, Stream);

}  // namespace kernels
}  // namespace psd
