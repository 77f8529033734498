// Resampling with PyTorch semantics, written once for CPU and CUDA:
//  * bicubic: Keys kernel a = -0.75, half-pixel centres (align_corners=False), no antialias,
//    tap indices clamped to the border, separable and accumulated row-by-row like ATen's CPU kernel;
//  * bilinear (align_corners=False): source index clamped at 0, second tap clamped at the border;
//  * channel compression = F.interpolate(x[:,None], (C', H', W'), 'trilinear', align_corners=False):
//    the channel axis is linear interpolation, so it is applied first as a 2-tap channel mix at the
//    source resolution, then a bilinear spatial resize (exact by separability, psd_method.md §7.2);
//  * 4x4 sparse average pooling: sum / (count(>0) + 1e-5) over non-overlapping cells;
//  * back-projection P = depth * ray(u, v), with the ray function a template parameter
//    (pinhole K^-1 [u v 1], equirectangular, unified/MEI camera).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "resample.h"

namespace psd {
namespace kernels {

// ---------------------------------------------------------------------------------- taps
struct CubicTaps {
  int64_t idx[4];
  float w[4];
};

PSD_HOST_DEVICE PSD_INLINE float CubicNear(float x) {  // |x| <= 1, a = -0.75
  const float a = -0.75f;
  return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
}
PSD_HOST_DEVICE PSD_INLINE float CubicFar(float x) {  // 1 < |x| < 2
  const float a = -0.75f;
  return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
}

// scale = in / out as float, as ATen computes it when an output size (not a factor) is given.
// The source coordinate scale * (o + 0.5) - 0.5 is rounded to float once, as ATen's CPU kernels
// (built with FMA contraction) and nvcc compute it: the double product of two floats is exact.
PSD_HOST_DEVICE PSD_INLINE float ResizeScale(int64_t in, int64_t out) {
  return static_cast<float>(in) / static_cast<float>(out);
}

PSD_HOST_DEVICE PSD_INLINE float SourceCoord(float scale, int64_t o) {
  return static_cast<float>(static_cast<double>(scale) *
                                static_cast<double>(static_cast<float>(o) + 0.5f) -
                            0.5);
}

PSD_HOST_DEVICE PSD_INLINE CubicTaps ComputeCubicTaps(int64_t o, int64_t in, float scale) {
  CubicTaps t;
  const float src = SourceCoord(scale, o);
  const float fl = floorf(src);
  const int64_t i0 = static_cast<int64_t>(fl);
  const float f = src - fl;
  t.w[0] = CubicFar(f + 1.0f);
  t.w[1] = CubicNear(f);
  t.w[2] = CubicNear(1.0f - f);
  t.w[3] = CubicFar(2.0f - f);
  for (int j = 0; j < 4; ++j) {
    int64_t i = i0 - 1 + j;
    t.idx[j] = i < 0 ? 0 : (i > in - 1 ? in - 1 : i);
  }
  return t;
}

struct LinearTaps {
  int64_t i0, i1;
  float w0, w1;
};

PSD_HOST_DEVICE PSD_INLINE LinearTaps ComputeLinearTaps(int64_t o, int64_t in, int64_t out) {
  LinearTaps t;
  if (in == out) {
    t.i0 = t.i1 = o;
    t.w0 = 1.0f;
    t.w1 = 0.0f;
    return t;
  }
  const float scale = ResizeScale(in, out);
  float src = SourceCoord(scale, o);
  if (src < 0.0f) src = 0.0f;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  if (i0 > in - 1) i0 = in - 1;
  float l1 = src - static_cast<float>(i0);
  l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  t.i0 = i0;
  t.i1 = i0 + (i0 < in - 1 ? 1 : 0);
  t.w1 = l1;
  t.w0 = 1.0f - l1;
  return t;
}

// Bicubic sample of output pixel (oy, ox) from `get(y, x)` (any functor: lets callers fuse a
// per-tap transform such as alignment + back-projection into the resize).
template <typename Get>
PSD_HOST_DEVICE PSD_INLINE float BicubicAt(int64_t oy, int64_t ox, int64_t hin, int64_t win,
                                           float sy, float sx, const Get& get) {
  const CubicTaps ty = ComputeCubicTaps(oy, hin, sy);
  const CubicTaps tx = ComputeCubicTaps(ox, win, sx);
  float out = 0.0f;
  for (int i = 0; i < 4; ++i) {
    float row = 0.0f;
    for (int j = 0; j < 4; ++j) row += get(ty.idx[i], tx.idx[j]) * tx.w[j];
    out += row * ty.w[i];
  }
  return out;
}

template <typename Get>
PSD_HOST_DEVICE PSD_INLINE float BilinearAt(int64_t oy, int64_t ox, int64_t hin, int64_t win,
                                            int64_t hout, int64_t wout, const Get& get) {
  const LinearTaps ty = ComputeLinearTaps(oy, hin, hout);
  const LinearTaps tx = ComputeLinearTaps(ox, win, wout);
  const float r0 = get(ty.i0, tx.i0) * tx.w0 + get(ty.i0, tx.i1) * tx.w1;
  const float r1 = get(ty.i1, tx.i0) * tx.w0 + get(ty.i1, tx.i1) * tx.w1;
  return r0 * ty.w0 + r1 * ty.w1;
}

// ---------------------------------------------------------------------------------- rays
// cam[9]: pinhole = K row-major (3x3); MEI = xi, k1, k2, p1, p2, gamma1, gamma2, u0, v0;
// equirect ignores it. Each functor maps the 0-based pixel (u = column, v = row) to the ray
// whose product with the depth is the 3D point.
struct PinholeRay {
  float kinv[9];
  PSD_HOST_DEVICE PSD_INLINE void operator()(float u, float v, float r[3]) const {
    r[0] = kinv[0] * u + kinv[1] * v + kinv[2];
    r[1] = kinv[3] * u + kinv[4] * v + kinv[5];
    r[2] = kinv[6] * u + kinv[7] * v + kinv[8];
  }
};

struct EquirectRay {
  float width, height;
  PSD_HOST_DEVICE PSD_INLINE void operator()(float u, float v, float r[3]) const {
    const float theta = 2.0f * 3.14159265358979f * u / width;
    const float phi = 3.14159265358979f * v / height;
    r[0] = sinf(phi) * cosf(theta);
    r[1] = sinf(phi) * sinf(theta);
    r[2] = cosf(phi);
  }
};

struct MeiRay {
  float xi, k1, k2, p1, p2, g1, g2, u0, v0;
  PSD_HOST_DEVICE PSD_INLINE void operator()(float u, float v, float r[3]) const {
    const float x = (u - u0) / g1, y = (v - v0) / g2;
    const float r2 = x * x + y * y, r4 = r2 * r2;
    const float dist = (1.0f + k1 * r2 + k2 * r4) / (1.0f + xi * r2) - xi;
    const float xu = x * dist + 2.0f * p1 * x * y + p2 * (r2 + 2.0f * x * x);
    const float yu = y * dist + 2.0f * p2 * x * y + p1 * (r2 + 2.0f * y * y);
    const float z = sqrtf(1.0f / (1.0f + xi * r2));
    r[0] = xu * z;
    r[1] = yu * z;
    r[2] = z;
  }
};

// ---------------------------------------------------------------------------------- launchers
// ---- CPU paths of the two resizes. Each thread takes a contiguous range of output rows (all
// channels flattened) and walks it per block of kResizeBlock output columns: the x taps of the
// block are tabulated once, and horizontally filtered input rows are kept in a small ring
// (4 slots bicubic, 2 bilinear; the rows one output row needs are consecutive after clamping,
// so they never share a slot), so an input row is filtered about once per block and thread.
// The vertical pass is a contiguous loop over the block that the compiler vectorises. Every
// output sees the same float operations in the same order as BicubicAt / BilinearAt
// (bit-identical results), without the per-pixel floorf, double product and int64 div/mod.
constexpr int64_t kResizeBlock = 256;
constexpr int64_t kResizeGrain = 8192;  // output values per thread, at least

inline void BicubicCpu(const float* in, int64_t c, int64_t hin, int64_t win, float* out,
                       int64_t hout, int64_t wout) {
  const float sy = ResizeScale(hin, hout), sx = ResizeScale(win, wout);
  const int64_t rows = c * hout;
  CpuParallelRanges(rows, rows * wout / kResizeGrain + 1, [&](int64_t r0, int64_t r1, int64_t) {
    int64_t xi[4][kResizeBlock];
    float xw[4][kResizeBlock];
    float ring[4][kResizeBlock];
    for (int64_t xb = 0; xb < wout; xb += kResizeBlock) {
      const int64_t nb = wout - xb < kResizeBlock ? wout - xb : kResizeBlock;
      for (int64_t j = 0; j < nb; ++j) {
        const CubicTaps t = ComputeCubicTaps(xb + j, win, sx);
        for (int k = 0; k < 4; ++k) {
          xi[k][j] = t.idx[k];
          xw[k][j] = t.w[k];
        }
      }
      int64_t tag[4] = {-1, -1, -1, -1};
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t ch = r / hout, oy = r % hout;
        const CubicTaps ty = ComputeCubicTaps(oy, hin, sy);
        const float* hr[4];
        for (int i = 0; i < 4; ++i) {
          const int64_t key = ch * hin + ty.idx[i];
          float* slot = ring[ty.idx[i] & 3];
          if (tag[ty.idx[i] & 3] != key) {
            const float* src = in + key * win;
            for (int64_t j = 0; j < nb; ++j) {
              float v = 0.0f;
              for (int k = 0; k < 4; ++k) v += src[xi[k][j]] * xw[k][j];
              slot[j] = v;
            }
            tag[ty.idx[i] & 3] = key;
          }
          hr[i] = slot;
        }
        const float w0 = ty.w[0], w1 = ty.w[1], w2 = ty.w[2], w3 = ty.w[3];
        const float *h0 = hr[0], *h1 = hr[1], *h2 = hr[2], *h3 = hr[3];
        float* o = out + r * wout + xb;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j)
          o[j] = (((0.0f + h0[j] * w0) + h1[j] * w1) + h2[j] * w2) + h3[j] * w3;
      }
    }
  });
}

inline void BilinearCpu(const float* in, int64_t c, int64_t hin, int64_t win, float* out,
                        int64_t hout, int64_t wout) {
  const int64_t rows = c * hout;
  CpuParallelRanges(rows, rows * wout / kResizeGrain + 1, [&](int64_t r0, int64_t r1, int64_t) {
    int64_t xi[2][kResizeBlock];
    float xw[2][kResizeBlock];
    float ring[2][kResizeBlock];
    for (int64_t xb = 0; xb < wout; xb += kResizeBlock) {
      const int64_t nb = wout - xb < kResizeBlock ? wout - xb : kResizeBlock;
      for (int64_t j = 0; j < nb; ++j) {
        const LinearTaps t = ComputeLinearTaps(xb + j, win, wout);
        xi[0][j] = t.i0;
        xi[1][j] = t.i1;
        xw[0][j] = t.w0;
        xw[1][j] = t.w1;
      }
      int64_t tag[2] = {-1, -1};
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t ch = r / hout, oy = r % hout;
        const LinearTaps ty = ComputeLinearTaps(oy, hin, hout);
        const int64_t iy[2] = {ty.i0, ty.i1};
        const float* hr[2];
        for (int i = 0; i < 2; ++i) {
          const int64_t key = ch * hin + iy[i];
          float* slot = ring[iy[i] & 1];
          if (tag[iy[i] & 1] != key) {
            const float* src = in + key * win;
            for (int64_t j = 0; j < nb; ++j)
              slot[j] = src[xi[0][j]] * xw[0][j] + src[xi[1][j]] * xw[1][j];
            tag[iy[i] & 1] = key;
          }
          hr[i] = slot;
        }
        const float w0 = ty.w0, w1 = ty.w1;
        const float *h0 = hr[0], *h1 = hr[1];
        float* o = out + r * wout + xb;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) o[j] = h0[j] * w0 + h1[j] * w1;
      }
    }
  });
}

// All planar (C, H, W) float maps, contiguous.
template <Device D>
void Bicubic(const float* in, int64_t c, int64_t hin, int64_t win, float* out, int64_t hout,
             int64_t wout, Stream s) {
  if constexpr (D == Device::kCpu) {
    BicubicCpu(in, c, hin, win, out, hout, wout);
  } else {
    const float sy = ResizeScale(hin, hout), sx = ResizeScale(win, wout);
    ParallelFor<D>(c * hout * wout, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const int64_t ox = i % wout, oy = (i / wout) % hout, ch = i / (wout * hout);
      const float* plane = in + ch * hin * win;
      out[i] = BicubicAt(oy, ox, hin, win, sy, sx,
                         [=](int64_t y, int64_t x) { return plane[y * win + x]; });
    });
  }
}

template <Device D>
void Bilinear(const float* in, int64_t c, int64_t hin, int64_t win, float* out, int64_t hout,
              int64_t wout, Stream s) {
  if constexpr (D == Device::kCpu) {
    BilinearCpu(in, c, hin, win, out, hout, wout);
  } else {
    ParallelFor<D>(c * hout * wout, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const int64_t ox = i % wout, oy = (i / wout) % hout, ch = i / (wout * hout);
      const float* plane = in + ch * hin * win;
      out[i] = BilinearAt(oy, ox, hin, win, hout, wout,
                          [=](int64_t y, int64_t x) { return plane[y * win + x]; });
    });
  }
}

// Channel mix of the trilinear compression at the source resolution: (cin, n) -> (cout, n).
template <Device D>
void ChannelMix(const float* in, int64_t cin, int64_t n, float* out, int64_t cout, Stream s) {
  ParallelFor<D>(cout * n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t p = i % n, j = i / n;
    const LinearTaps t = ComputeLinearTaps(j, cin, cout);
    out[i] = in[t.i0 * n + p] * t.w0 + in[t.i1 * n + p] * t.w1;
  });
}

// 4x4 (scale x scale) sparse average pool, no padding: out is (h / scale) x (w / scale).
template <Device D>
void SparsePool(const float* sparse, int64_t h, int64_t w, int64_t scale, float* out, Stream s) {
  const int64_t ho = h / scale, wo = w / scale;
  ParallelFor<D>(ho * wo, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ox = i % wo, oy = i / wo;
    float sum = 0.0f, cnt = 0.0f;
    for (int64_t y = 0; y < scale; ++y)
      for (int64_t x = 0; x < scale; ++x) {
        const float v = sparse[(oy * scale + y) * w + ox * scale + x];
        sum += v;
        cnt += v > 0.0f ? 1.0f : 0.0f;
      }
    out[i] = sum / (cnt + 1e-5f);
  });
}

// Calls fn(ray) with the functor for `cam`. params: pinhole = K^-1 row-major (inverted on the
// host by InvertIntrinsics), MEI = its 9 parameters, equirect = unused.
template <typename Fn>
PSD_HOST_DEVICE PSD_INLINE void WithRay(Camera cam, const CameraParams& p, int64_t h, int64_t w,
                                        const Fn& fn) {
  if (cam == Camera::kPinhole) {
    PinholeRay r;
    for (int k = 0; k < 9; ++k) r.kinv[k] = p.v[k];
    fn(r);
  } else if (cam == Camera::kEquirect) {
    fn(EquirectRay{static_cast<float>(w), static_cast<float>(h)});
  } else {
    fn(MeiRay{p.v[0], p.v[1], p.v[2], p.v[3], p.v[4], p.v[5], p.v[6], p.v[7], p.v[8]});
  }
}

template <Device D>
void Backproject(const float* depth, int64_t h, int64_t w, Camera cam, CameraParams p,
                 float* out, Stream s) {
  const int64_t n = h * w;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    float r[3] = {0.0f, 0.0f, 0.0f};
    WithRay(cam, p, h, w, [&](const auto& ray) {
      ray(static_cast<float>(i % w), static_cast<float>(i / w), r);
    });
    const float d = depth[i];
    out[i] = r[0] * d;
    out[n + i] = r[1] * d;
    out[2 * n + i] = r[2] * d;
  });
}

#define PSD_INSTANTIATE_RESAMPLE(D)                                                        \
  template void Bicubic<D>(const float*, int64_t, int64_t, int64_t, float*, int64_t, int64_t, \
                           Stream);                                                        \
  template void Bilinear<D>(const float*, int64_t, int64_t, int64_t, float*, int64_t,       \
                            int64_t, Stream);                                              \
  template void ChannelMix<D>(const float*, int64_t, int64_t, float*, int64_t, Stream);     \
  template void SparsePool<D>(const float*, int64_t, int64_t, int64_t, float*, Stream);     \
  template void Backproject<D>(const float*, int64_t, int64_t, Camera, CameraParams, float*, \
                               Stream);

}  // namespace kernels
}  // namespace psd
