// Kernel bodies of the point-cloud projection (see project.h).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/parallel_for.h"
#include "project.h"

#if defined(__CUDA_ARCH__)
#define PSD_DMUL_RN(a, b) __dmul_rn((a), (b))
#define PSD_DADD_RN(a, b) __dadd_rn((a), (b))
#else
#define PSD_DMUL_RN(a, b) ((a) * (b))
#define PSD_DADD_RN(a, b) ((a) + (b))
#endif

namespace psd {
namespace kernels {

// +inf: above every finite depth, so the first point to hit a pixel always wins over it
constexpr uint32_t kEmptyBits = 0x7F800000u;

PSD_HOST_DEVICE PSD_INLINE uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint32_t>(__float_as_uint(f));
#else
  uint32_t b;
  __builtin_memcpy(&b, &f, sizeof b);
  return b;
#endif
}

PSD_HOST_DEVICE PSD_INLINE float BitsFloat(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  __builtin_memcpy(&f, &b, sizeof f);
  return f;
#endif
}

// *addr = min(*addr, v), atomically (the CUDA emulation runs device code as host code: the host
// branch, which is also correct for its worker threads).
PSD_HOST_DEVICE PSD_INLINE void AtomicMinU32(uint32_t* addr, uint32_t v) {
#if defined(__CUDA_ARCH__)
  atomicMin(reinterpret_cast<unsigned int*>(addr), static_cast<unsigned int>(v));
#else
  uint32_t cur = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(addr, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
#endif
}

// a0 x + a1 y + a2 z + a3, left to right, unfused
PSD_HOST_DEVICE PSD_INLINE double Row4(const double* a, double x, double y, double z) {
  return PSD_DADD_RN(PSD_DADD_RN(PSD_DADD_RN(PSD_DMUL_RN(a[0], x), PSD_DMUL_RN(a[1], y)), PSD_DMUL_RN(a[2], z)),
                     a[3]);
}

template <Device D>
void ZBufferClear(uint32_t* out, int64_t n, Stream s) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { out[i] = kEmptyBits; });
}

template <Device D>
void ProjectPoints(const float* points, int64_t n, int64_t stride, ProjectParams p, int64_t h,
                   int64_t w, uint32_t* out, Stream s) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const float* q = points + i * stride;
    const double x = q[0], y = q[1], z = q[2];
    if (!IsFinite(q[0]) || !IsFinite(q[1]) || !IsFinite(q[2])) return;
    const double cx = Row4(p.t, x, y, z), cy = Row4(p.t + 4, x, y, z), cz = Row4(p.t + 8, x, y, z);
    if (!(cz > p.min_depth && cz <= p.max_depth)) return;
    const double u = PSD_DADD_RN(PSD_DADD_RN(PSD_DMUL_RN(p.k[0], cx), PSD_DMUL_RN(p.k[1], cy)), PSD_DMUL_RN(p.k[2], cz)) / cz;
    const double v = PSD_DADD_RN(PSD_DMUL_RN(p.k[4], cy), PSD_DMUL_RN(p.k[5], cz)) / cz;
    const double fu = floor(PSD_DADD_RN(u, 0.5)), fv = floor(PSD_DADD_RN(v, 0.5));
    // compared as doubles first: a point far outside the view must not overflow the conversion
    if (!(fu >= 0.0 && fu < static_cast<double>(w) && fv >= 0.0 && fv < static_cast<double>(h))) return;
    const int64_t col = static_cast<int64_t>(fu), row = static_cast<int64_t>(fv);
    const float d = static_cast<float>(cz);
    if (!(d > 0.0f) || !IsFinite(d)) return;
    AtomicMinU32(out + row * w + col, FloatBits(d));
  });
}

template <Device D>
void ZBufferFinish(uint32_t* out, int64_t n, Stream s) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    if (out[i] == kEmptyBits) out[i] = 0u;  // +0.0f: no point
  });
}

PSD_HOST_DEVICE PSD_INLINE bool OcclValid(float v) { return v > 0.0f && v <= 3.40282347e38f; }

// The filter's value at pixel i (0 when dropped or missing); the guided mode runs it too.
PSD_HOST_DEVICE PSD_INLINE float OcclusionValue(const float* sparse, int64_t h, int64_t w,
                                                OcclusionParams p, int64_t i) {
  const float d = sparse[i];
  if (!OcclValid(d)) return 0.0f;
  const int64_t y = i / w, x = i % w;
  const float thr = d * p.keep;
  const int64_t x0 = x - p.rx < 0 ? 0 : x - p.rx, x1 = x + p.rx >= w ? w - 1 : x + p.rx;
  // the rows above first: most returns have no nearer return above them (the scene recedes
  // upwards), and then the rows below need no look
  bool above = false, below = false, left = false, right = false;
  for (int64_t k = 0; k < 2; ++k) {
    const int64_t first = k == 0 ? -1 : 1, step = k == 0 ? -1 : 1;
    for (int64_t dy = first; dy >= -p.ry && dy <= p.ry; dy += step) {
      const int64_t yy = y + dy;
      if (yy < 0 || yy >= h) break;
      const float* row = sparse + yy * w;
      // nearer returns at columns <= x and >= x of this row (q > 0 && q < thr is OcclValid(q)
      // && q < thr: thr is finite); branch-free, so the short loops vectorise
      bool l = false, r = false;
      for (int64_t xx = x0; xx <= x; ++xx) l |= (row[xx] > 0.0f) & (row[xx] < thr);
      for (int64_t xx = x; xx <= x1; ++xx) r |= (row[xx] > 0.0f) & (row[xx] < thr);
      left |= l;
      right |= r;
      if (k == 0) above |= l | r;
      else below |= l | r;
      if (above && below && left && right) return 0.0f;  // enclosed: no need to look further
    }
    if (!above) return d;
  }
  return d;
}

template <Device D, typename F>
void ForPixelsBalanced(int64_t h, int64_t w, Stream s, const F& f) {
  if constexpr (D == Device::kCpu) {
    const int64_t t = CpuThreads(), parts = t < h ? t : h;
    CpuParallelRanges(parts, parts, [&](int64_t b, int64_t e, int64_t) {
      for (int64_t part = b; part < e; ++part)
        for (int64_t y = part; y < h; y += parts)
          for (int64_t x = 0; x < w; ++x) f(y * w + x);
    });
  } else {
    ParallelFor<D>(h * w, s, f);
  }
}

template <Device D>
void OcclusionFilter(const float* sparse, int64_t h, int64_t w, OcclusionParams p, float* out,
                     Stream s) {
  ForPixelsBalanced<D>(h, w, s, [=] PSD_HOST_DEVICE(int64_t i) {
    out[i] = OcclusionValue(sparse, h, w, p, i);
  });
}

#define PSD_INSTANTIATE_PROJECT(D)                                                             \
  template void ZBufferClear<D>(uint32_t*, int64_t, Stream);                                   \
  template void ProjectPoints<D>(const float*, int64_t, int64_t, ProjectParams, int64_t, int64_t, \
                                 uint32_t*, Stream);                                           \
  template void ZBufferFinish<D>(uint32_t*, int64_t, Stream);                                  \
  template void OcclusionFilter<D>(const float*, int64_t, int64_t, OcclusionParams, float*, Stream);

}  // namespace kernels
}  // namespace psd
