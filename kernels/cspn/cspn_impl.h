// Kernel bodies of the CSPN family, written once for CPU and CUDA (see cspn.h).
#pragma once

#include <cmath>
#include <cstdint>

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
  for (int64_t k = 0; k < c; ++k) ss += v[k] * v[k];
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

template <Device D>
void CspnSweeps(const float* weights, const float* sparse, const float* dense, int64_t h,
                int64_t w, int32_t iterations, float* draw, float* buf, float* out, Stream s) {
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
  template void CspnSweeps<D>(const float*, const float*, const float*, int64_t, int64_t,    \
                              int32_t, float*, float*, float*, Stream);

}  // namespace kernels
}  // namespace psd
