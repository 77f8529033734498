// Kernel bodies of the guided mode (see guided.h), written once for CPU and CUDA.
//
// The per-pixel arithmetic (colour, cosine, cube root, CSPN coefficients, sweep) is templated on
// the value type T: float (host and device) or the 8-float vector V8 (CPU fast path only, GCC
// vector extensions). Both instantiations perform the same IEEE operations in the same order, so
// the CPU fast path (guided_cpu.cpp) and GuidedGeneric<kCpu> agree bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "../resample/resample_impl.h"
#include "guided.h"

#if !defined(__CUDACC__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

// Every helper is force-inlined: the CPU fast path inlines them into functions compiled for
// more than one instruction set (guided_cpu.cpp), where an out-of-line copy would run the
// baseline code.
#if defined(__CUDACC__)
#define PSD_GUIDED_FN __host__ __device__ __forceinline__
#else
#define PSD_GUIDED_FN inline __attribute__((always_inline))
#endif

namespace psd {
namespace kernels {

// ---------------------------------------------------------------------------------- scalars
PSD_GUIDED_FN uint32_t GAsU(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
PSD_GUIDED_FN float GUAsF(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
PSD_GUIDED_FN float GSel(bool m, float a, float b) { return m ? a : b; }
PSD_GUIDED_FN float GAbs(float x) { return GUAsF(GAsU(x) & 0x7fffffffu); }
PSD_GUIDED_FN float GMax(float a, float b) { return a > b ? a : b; }
PSD_GUIDED_FN float GSqrt(float x) { return sqrtf(x); }
PSD_GUIDED_FN int32_t GTrunc(float x) { return static_cast<int32_t>(x); }
PSD_GUIDED_FN float GToF(int32_t i) { return static_cast<float>(i); }
PSD_GUIDED_FN int32_t GAsI(float f) { return static_cast<int32_t>(GAsU(f)); }
PSD_GUIDED_FN float GIAsF(int32_t i) { return GUAsF(static_cast<uint32_t>(i)); }
PSD_GUIDED_FN float GXorSign(float x, float t) {  // x * (-1)^(low mantissa bit of t)
  return GUAsF(GAsU(x) ^ (GAsU(t) << 31));
}

// ---------------------------------------------------------------------------------- vectors
#if !defined(__CUDACC__)
// Passed by value between inline functions only; the baseline ISA passes 32-byte vectors in
// memory, which GCC reports as an ABI note.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
typedef uint32_t V8u __attribute__((vector_size(32)));

// Selects are bitwise (m: all-ones / all-zeros lanes, as comparisons return): GCC lowers them
// well at any vector width, unlike the vector ?: operator.
PSD_GUIDED_FN V8 GSel(V8i m, V8 a, V8 b) {
  return (V8)(((V8u)m & (V8u)a) | (~(V8u)m & (V8u)b));
}
PSD_GUIDED_FN V8 GSel(V8i m, V8 a, float b) { return GSel(m, a, V8{} + b); }
PSD_GUIDED_FN V8 GSel(V8i m, float a, V8 b) { return GSel(m, V8{} + a, b); }
PSD_GUIDED_FN V8 GAbs(V8 x) { return (V8)((V8u)x & 0x7fffffffu); }
PSD_GUIDED_FN V8 GMax(V8 a, V8 b) { return GSel(a > b, a, b); }
PSD_GUIDED_FN V8 GMax(V8 a, float b) { return GMax(a, V8{} + b); }
PSD_GUIDED_FN V8i GTrunc(V8 x) { return __builtin_convertvector(x, V8i); }
PSD_GUIDED_FN V8 GToF(V8i i) { return __builtin_convertvector(i, V8); }
PSD_GUIDED_FN V8i GAsI(V8 f) { return (V8i)f; }
PSD_GUIDED_FN V8 GIAsF(V8i i) { return (V8)i; }
PSD_GUIDED_FN V8 GXorSign(V8 x, V8 t) { return (V8)((V8u)x ^ ((V8u)t << 31)); }
PSD_GUIDED_FN V8 GSqrt(V8 x) {  // correctly rounded per lane, like sqrtf
#if defined(__SSE2__)
  __m128 lo, hi;
  memcpy(&lo, &x, sizeof lo);
  memcpy(&hi, reinterpret_cast<const char*>(&x) + sizeof lo, sizeof hi);
  lo = _mm_sqrt_ps(lo);
  hi = _mm_sqrt_ps(hi);
  V8 r;
  memcpy(&r, &lo, sizeof lo);
  memcpy(reinterpret_cast<char*>(&r) + sizeof lo, &hi, sizeof hi);
  return r;
#else
  V8 r;
  for (int i = 0; i < 8; ++i) r[i] = sqrtf(x[i]);
  return r;
#endif
}
#endif

// ---------------------------------------------------------------------------------- colour
// sRGB (OpenCV's D65 matrix) with the rows divided by the white point (0.950456, 1, 1.088754).
constexpr float kLabM00 = static_cast<float>(0.412453 / 0.950456);
constexpr float kLabM01 = static_cast<float>(0.357580 / 0.950456);
constexpr float kLabM02 = static_cast<float>(0.180423 / 0.950456);
constexpr float kLabM10 = 0.212671f;
constexpr float kLabM11 = 0.715160f;
constexpr float kLabM12 = 0.072169f;
constexpr float kLabM20 = static_cast<float>(0.019334 / 1.088754);
constexpr float kLabM21 = static_cast<float>(0.119193 / 1.088754);
constexpr float kLabM22 = static_cast<float>(0.950227 / 1.088754);
constexpr float kLabEps = static_cast<float>(216.0 / 24389.0);   // (6/29)^3
constexpr float kLabSlope = static_cast<float>(24389.0 / 3132.0);  // 1 / (3 (6/29)^2)
constexpr float kLabBias = static_cast<float>(4.0 / 29.0);

// 8-bit sRGB -> linear, evaluated in double and rounded once (the CPU table and the per-pixel
// evaluation give the same float).
PSD_GUIDED_FN float SrgbLinear(int32_t v) {
  const double c = v / 255.0;
  return static_cast<float>(c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4));
}

// Cube root of x in [kLabEps, ~1.1]: bit-level first guess, three Newton steps (float rounding).
template <typename T>
PSD_GUIDED_FN T GCbrt(T x) {
  T y = GIAsF(GTrunc(GToF(GAsI(x)) * (1.0f / 3.0f)) + 709921077);
  for (int i = 0; i < 3; ++i) y = ((y + y) + x / (y * y)) * (1.0f / 3.0f);
  return y;
}

template <typename T>
PSD_GUIDED_FN T GLabF(T t) {
  return GSel(t > kLabEps, GCbrt(GMax(t, kLabEps)), t * kLabSlope + kLabBias);
}

// Linear RGB -> (Lc, a, b) with Lc = L * 2.55 - 127.5 (OpenCV 8-bit L, centred).
template <typename T>
PSD_GUIDED_FN void GLab(const T& r, const T& g, const T& b, T& lc, T& la, T& lb) {
  const T x = (r * kLabM00 + g * kLabM01) + b * kLabM02;
  const T y = (r * kLabM10 + g * kLabM11) + b * kLabM12;
  const T z = (r * kLabM20 + g * kLabM21) + b * kLabM22;
  const T fx = GLabF(x), fy = GLabF(y), fz = GLabF(z);
  lc = (fy * 116.0f - 16.0f) * 2.55f - 127.5f;
  la = (fx - fy) * 500.0f;
  lb = (fy - fz) * 200.0f;
}

// cos(pi t) for |t| < 2^21: t = n + r with n = rint(t) (|r| <= 1/2 exactly), then a degree-8
// even minimax polynomial in pi r on [-pi/2, pi/2] (max error 1.6e-7 in float, Estrin's scheme),
// sign (-1)^n. The phase is computed in half-turns so that the reduction is one subtraction.
template <typename T>
PSD_GUIDED_FN T GCosPi(T t) {
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const T m = t + kMagic;
  const T r = (t - (m - kMagic)) * 3.14159265358979f;
  const T s = r * r;
  const T s2 = s * s;
  const T p01 = s * -0.4999990463256836f + 0.9999999403953552f;
  const T p23 = s * -0.0013853703858330846f + 0.04166358336806297f;
  const T p24 = s2 * 2.3153930669650435e-05f + p23;
  const T p = s2 * p24 + p01;
  return GXorSign(p, m);
}

template <typename T>
PSD_GUIDED_FN T GPhase(const GuidedCoeffs& k, int32_t c, T lc, T la, T lb) {  // half-turns
  return ((lc * k.k0[c] + la * k.k1[c]) + lb * k.k2[c]) + k.ph[c];
}

// ---------------------------------------------------------------------------------- CSPN math
// Coefficients of one pixel from its 8 affinities n0..n7 (neighbours (-1,-1) (-1,0) (-1,1)
// (0,-1) (0,1) (1,-1) (1,0) (1,1)), its level sparse value and validity and its initial value.
template <typename T, typename M>
PSD_GUIDED_FN void GCoefficients(T n0, T n1, T n2, T n3, T n4, T n5, T n6, T n7, T sv, M valid,
                                 T d0, T& inv, T& inve, T& cdr, T& cde, T& draw) {
  const T sabs = ((((((GAbs(n0) + GAbs(n1)) + GAbs(n2)) + GAbs(n3)) + GAbs(n4)) + GAbs(n5)) +
                  GAbs(n6)) + GAbs(n7);
  const T sum = ((((((n0 + n1) + n2) + n3) + n4) + n5) + n6) + n7;
  const auto nz = sabs != 0.0f;
  inv = GSel(nz, 1.0f / GSel(nz, sabs, 1.0f), 0.0f);  // sum|a| = 0: weights 0, centre 1
  const T centre = 1.0f - sum * inv;
  draw = GSel(valid, sv, d0);
  cdr = centre * draw;
  cde = GSel(valid, sv, cdr);
  inve = GSel(valid, 0.0f, inv);
}

// One Jacobi update: inv * sum_j a_j d_j + centre * draw (pairwise sum: a short dependency chain).
template <typename T>
PSD_GUIDED_FN T GSweep(T a0, T a1, T a2, T a3, T a4, T a5, T a6, T a7, T s0, T s1, T s2, T s3,
                       T s4, T s5, T s6, T s7, T inv, T cd) {
  const T acc = ((a0 * s0 + a1 * s1) + (a2 * s2 + a3 * s3)) +
                ((a4 * s4 + a5 * s5) + (a6 * s6 + a7 * s7));
  return inv * acc + cd;
}

PSD_GUIDED_FN bool GValid(float v) { return v > 0.0f && v <= 3.40282347e38f; }

// ---------------------------------------------------------------------------------- nearest fill
// scipy.ndimage's exact feature transform (Maurer et al. 2003) for a 2-D mask of valid pixels.
// Column pass: nearest valid row of the column, the upper one on a tie (scipy keeps the earlier
// site when the distances are equal).
PSD_GUIDED_FN int32_t GNearestOf(int32_t y, int32_t up, int32_t dn) {
  return up < 0 ? dn : (dn < 0 ? up : ((y - up) <= (dn - y) ? up : dn));
}

// Writes col (nearest valid row, -1 if the column has none) and colval (its depth, 0 if none).
PSD_GUIDED_FN void NearestColumn(const float* sparse, int64_t h, int64_t w, int64_t x,
                                 int32_t* col, float* colval) {
  int32_t up = -1;
  for (int64_t y = 0; y < h; ++y) {
    if (GValid(sparse[y * w + x])) up = static_cast<int32_t>(y);
    col[y * w + x] = up;
  }
  int32_t dn = -1;
  for (int64_t y = h - 1; y >= 0; --y) {
    if (GValid(sparse[y * w + x])) dn = static_cast<int32_t>(y);
    const int32_t r = GNearestOf(static_cast<int32_t>(y), col[y * w + x], dn);
    col[y * w + x] = r;
    colval[y * w + x] = r < 0 ? 0.0f : sparse[r * w + x];
  }
}

// Row pass of row y: sites are the columns with a column-pass result; scipy's _VoronoiFT with
// the same removal test (c vR - b uR - a wR - a b c <= 0 keeps the site) and the same forward
// walk (a tie keeps the earlier site), in exact integer arithmetic (scipy's doubles hold these
// integers exactly). Writes the fill of row y (0 where the frame has no valid pixel at all).
PSD_GUIDED_FN void NearestRow(const int32_t* colrow, const float* valrow, int64_t y, int64_t w,
                              int32_t* g, float* fillrow) {
  int64_t l = -1;
  for (int64_t i = 0; i < w; ++i) {
    if (colrow[i] < 0) continue;
    const int64_t dw = colrow[i] - y;
    const int64_t wr = dw * dw;
    while (l >= 1) {
      const int64_t i1 = g[l], i2 = g[l - 1];
      const int64_t a = i1 - i2, b = i - i1, c = a + b;
      const int64_t du = colrow[i2] - y, dv = colrow[i1] - y;
      if (c * (dv * dv) - b * (du * du) - a * wr - a * b * c <= 0) break;
      --l;
    }
    g[++l] = static_cast<int32_t>(i);
  }
  if (l < 0) {
    for (int64_t i = 0; i < w; ++i) fillrow[i] = 0.0f;
    return;
  }
  const int64_t maxl = l;
  l = 0;
  for (int64_t i = 0; i < w; ++i) {
    int64_t dy = colrow[g[l]] - y, dx = g[l] - i;
    int64_t d1 = dy * dy + dx * dx;
    while (l < maxl) {
      dy = colrow[g[l + 1]] - y;
      dx = g[l + 1] - i;
      const int64_t d2 = dy * dy + dx * dx;
      if (d1 <= d2) break;
      d1 = d2;
      ++l;
    }
    fillrow[i] = valrow[g[l]];
  }
}

// ---------------------------------------------------------------------------------- level pieces
// Level sparse value (f = 2^l: sum of valid / (count + 1e-5) over the f x f block) and validity.
PSD_GUIDED_FN float LevelSparse(const float* sparse, int64_t w, int64_t f, int64_t y,
                                             int64_t x, bool* valid) {
  if (f == 1) {
    const float v = sparse[y * w + x];
    *valid = GValid(v);
    return v;
  }
  float tot = 0.0f;
  int32_t cnt = 0;
  for (int64_t i = 0; i < f; ++i)
    for (int64_t j = 0; j < f; ++j) {
      const float v = sparse[(y * f + i) * w + x * f + j];
      if (GValid(v)) {
        tot += v;
        ++cnt;
      }
    }
  *valid = cnt > 0;
  return tot / (static_cast<float>(cnt) + 1e-5f);
}

PSD_GUIDED_FN float BlockMean(const float* x, int64_t w, int64_t f, int64_t y,
                                           int64_t xx) {
  if (f == 1) return x[y * w + xx];
  float acc = 0.0f;
  for (int64_t i = 0; i < f; ++i)
    for (int64_t j = 0; j < f; ++j) acc += x[(y * f + i) * w + xx * f + j];
  return acc / static_cast<float>(f * f);
}

PSD_GUIDED_FN float* LevelResult(const GuidedLevel& L, int32_t iterations) {
  return (iterations % 2 == 1) ? L.b : L.a;
}

// Coefficients and initial iterate of padded position q of level lev (writes zeros outside the
// frame). prev: the coarser level (ignored for the coarsest, which starts from the fill).
PSD_GUIDED_FN void InitPosition(const GuidedLevel& L, const GuidedLevel& prev,
                                             bool coarsest, int64_t f, int32_t iterations,
                                             const float* sparse, const float* fill, int64_t w0,
                                             int64_t q) {
  const int64_t p = L.p;
  const int64_t y = q / p - 1, x = q % p - kGuidedCol0;
  if (y < 0 || y >= L.h || x < 0 || x >= L.w) {
    L.inv[q] = L.inve[q] = L.cdr[q] = L.cde[q] = L.a[q] = L.b[q] = 0.0f;
    return;
  }
  bool valid;
  const float sv = LevelSparse(sparse, w0, f, y, x, &valid);
  float d0;
  if (coarsest) {
    d0 = BlockMean(fill, w0, f, y, x);
  } else {
    const float* src = LevelResult(prev, iterations);
    const int64_t pp = prev.p;
    d0 = BilinearAt(y, x, prev.h, prev.w, L.h, L.w,
                    [=](int64_t yy, int64_t xx) { return src[(yy + 1) * pp + xx + kGuidedCol0]; });
  }
  float inv, inve, cdr, cde, draw;
  GCoefficients(L.ase[q - p - 1], L.as[q - p], L.asw[q - p + 1], L.ae[q - 1], L.ae[q], L.asw[q],
                L.as[q], L.ase[q], sv, valid, d0, inv, inve, cdr, cde, draw);
  L.inv[q] = inv;
  L.inve[q] = inve;
  L.cdr[q] = cdr;
  L.cde[q] = cde;
  L.a[q] = draw;
  L.b[q] = 0.0f;
}

PSD_GUIDED_FN float SweepPosition(const GuidedLevel& L, const float* src,
                                               const float* inv, const float* cd, int64_t q) {
  const int64_t p = L.p;
  return GSweep(L.ase[q - p - 1], L.as[q - p], L.asw[q - p + 1], L.ae[q - 1], L.ae[q], L.asw[q],
                L.as[q], L.ase[q], src[q - p - 1], src[q - p], src[q - p + 1], src[q - 1],
                src[q + 1], src[q + p - 1], src[q + p], src[q + p + 1], inv[q], cd[q]);
}

// ---------------------------------------------------------------------------------- generic
// lo, hi, any of the valid sparse values -> stats[0..2]; deterministic chunked reduction.
template <Device D>
void GuidedStats(const float* sparse, int64_t n, float* stats, Stream s) {
  ValidRange<D>(sparse, n, stats + 3, stats, s);
}

template <Device D>
void GuidedFinal(const GuidedLevel& L0, int32_t iterations, const float* stats, int64_t h,
                 int64_t w, float* out, Stream s) {
  const float* res = LevelResult(L0, iterations);
  const int64_t p = L0.p;
  ParallelFor<D>(h * w, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const float lo = stats[0], hi = stats[1];
    const float v = res[(i / w + 1) * p + i % w + kGuidedCol0];
    out[i] = stats[2] > 0.0f ? (v < lo ? lo : (v > hi ? hi : v)) : 0.0f;
  });
}

// Raw features amp * cos(z) of pixel i, all channels, into out[c * n + i].
PSD_GUIDED_FN void FeaturePixel(const GuidedCoeffs& k, const uint8_t* rgb, bool bgr,
                                             const float* lut, int64_t n, int64_t i, float* out) {
  const uint8_t* px = rgb + 3 * i;
  const int32_t ri = px[bgr ? 2 : 0], gi = px[1], bi = px[bgr ? 0 : 2];
  const float r = lut ? lut[ri] : SrgbLinear(ri);
  const float g = lut ? lut[gi] : SrgbLinear(gi);
  const float b = lut ? lut[bi] : SrgbLinear(bi);
  float lc, la, lb;
  GLab(r, g, b, lc, la, lb);
  for (int32_t c = 0; c < k.c; ++c) out[c * n + i] = GCosPi(GPhase(k, c, lc, la, lb)) * k.amp;
}

template <Device D>
void GuidedFeatures(const GuidedCoeffs& k, const uint8_t* rgb, bool bgr, int64_t h, int64_t w,
                    float* out, Stream s) {
  const int64_t n = h * w;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    FeaturePixel(k, rgb, bgr, nullptr, n, i, out);
  });
}

// Cosine of pixels i and j (i before j in raster order): (dot of the raw features * inv_i) * inv_j.
PSD_GUIDED_FN float GCosine(const float* f, const float* inv, int64_t c, int64_t n, int64_t i,
                            int64_t j) {
  float acc = 0.0f;
  for (int64_t k = 0; k < c; ++k) acc = acc + f[k * n + i] * f[k * n + j];
  return (acc * inv[i]) * inv[j];
}

template <Device D>
void GuidedGeneric(const GuidedPlan& P, const GuidedCoeffs& k, const uint8_t* rgb, bool bgr,
                   const float* sparse, float* out, Stream s) {
  const int64_t h = P.h, w = P.w, n = h * w;
  const int32_t C = P.c, levels = P.levels, T = P.iterations;
  float* lut = P.lut;
  float* stats = P.stats;
  int32_t* col = P.col;
  int32_t* stack = P.stack;
  float* fill = P.fill;
  ParallelFor<D>(256, s, [=] PSD_HOST_DEVICE(int64_t i) {
    lut[i] = SrgbLinear(static_cast<int32_t>(i));
  });
  GuidedStats<D>(sparse, n, stats, s);
  float* colval = P.colval;
  ParallelFor<D>(w, s, [=] PSD_HOST_DEVICE(int64_t x) {
    NearestColumn(sparse, h, w, x, col, colval);
  });
  ParallelFor<D>(h, s, [=] PSD_HOST_DEVICE(int64_t y) {
    NearestRow(col + y * w, colval + y * w, y, w, stack + y * w, fill + y * w);
  });
  // features: level 0 raw, coarser levels block means of it, then all normalised
  float* f0 = P.lv[0].feat;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    FeaturePixel(k, rgb, bgr, lut, n, i, f0);
  });
  for (int32_t l = 1; l < levels; ++l) {
    const GuidedLevel L = P.lv[l];
    const int64_t f = int64_t{1} << l, nl = L.h * L.w, wl = L.w;
    float* fl = L.feat;
    ParallelFor<D>(C * nl, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const int64_t c = i / nl, yx = i % nl;
      fl[i] = BlockMean(f0 + c * n, w, f, yx / wl, yx % wl);
    });
  }
  for (int32_t l = 0; l < levels; ++l) {
    const GuidedLevel L = P.lv[l];
    const int64_t nl = L.h * L.w;
    const float* fl = L.feat;
    float* il = L.feat + C * nl;  // inverse norms 1 / max(|f|, 1e-12)
    ParallelFor<D>(nl, s, [=] PSD_HOST_DEVICE(int64_t i) {
      float n2 = 0.0f;
      for (int32_t c = 0; c < C; ++c) n2 = n2 + fl[c * nl + i] * fl[c * nl + i];
      il[i] = 1.0f / GMax(GSqrt(n2), 1e-12f);
    });
    ParallelFor<D>((L.h + 2) * L.p, s, [=] PSD_HOST_DEVICE(int64_t q) {
      const int64_t y = q / L.p - 1, x = q % L.p - kGuidedCol0;
      float e = 0.0f, so = 0.0f, se = 0.0f, sw = 0.0f;
      if (y >= 0 && y < L.h && x >= 0 && x < L.w) {
        const int64_t i = y * L.w + x;
        if (x + 1 < L.w) e = GCosine(fl, il, C, nl, i, i + 1);
        if (y + 1 < L.h) {
          so = GCosine(fl, il, C, nl, i, i + L.w);
          if (x + 1 < L.w) se = GCosine(fl, il, C, nl, i, i + L.w + 1);
          if (x >= 1) sw = GCosine(fl, il, C, nl, i, i + L.w - 1);
        }
      }
      L.ae[q] = e;
      L.as[q] = so;
      L.ase[q] = se;
      L.asw[q] = sw;
    });
  }
  // coarse to fine
  for (int32_t l = levels - 1; l >= 0; --l) {
    const GuidedLevel L = P.lv[l];
    const GuidedLevel prev = P.lv[l + 1 < levels ? l + 1 : l];
    const bool coarsest = l == levels - 1;
    const int64_t f = int64_t{1} << l;
    ParallelFor<D>((L.h + 2) * L.p, s, [=] PSD_HOST_DEVICE(int64_t q) {
      InitPosition(L, prev, coarsest, f, T, sparse, fill, w, q);
    });
    for (int32_t t = 0; t < T; ++t) {
      const bool last = t == T - 1;
      const float* inv = last ? L.inv : L.inve;
      const float* cd = last ? L.cdr : L.cde;
      const float* src = (t % 2 == 0) ? L.a : L.b;
      float* dst = (t % 2 == 0) ? L.b : L.a;
      ParallelFor<D>(L.h * L.w, s, [=] PSD_HOST_DEVICE(int64_t i) {
        const int64_t q = (i / L.w + 1) * L.p + i % L.w + kGuidedCol0;
        dst[q] = SweepPosition(L, src, inv, cd, q);
      });
    }
  }
  GuidedFinal<D>(P.lv[0], T, stats, h, w, out, s);
}

#define PSD_INSTANTIATE_GUIDED(D)                                                                \
  template void GuidedFeatures<D>(const GuidedCoeffs&, const uint8_t*, bool, int64_t, int64_t,   \
                                  float*, Stream);                                               \
  template void GuidedGeneric<D>(const GuidedPlan&, const GuidedCoeffs&, const uint8_t*, bool,   \
                                 const float*, float*, Stream);                                  \
  template void GuidedStats<D>(const float*, int64_t, float*, Stream);                           \
  template void GuidedFinal<D>(const GuidedLevel&, int32_t, const float*, int64_t, int64_t,      \
                               float*, Stream);

}  // namespace kernels
}  // namespace psd
