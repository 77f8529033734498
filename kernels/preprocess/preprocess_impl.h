// Kernel body of the FM preprocessing, written once for CPU and CUDA (see preprocess.h).
#pragma once

#include <cmath>

#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "../resample/resample_impl.h"
#include "preprocess.h"

namespace psd {
namespace kernels {

template <Device D>
void PreprocessRgb(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                   int64_t out_w, Stream s) {
  const float sy = ResizeScale(h, out_h), sx = ResizeScale(w, out_w);
  const int64_t plane = out_h * out_w;
  ParallelFor<D>(3 * plane, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / plane, p = i % plane;
    const int64_t src_ch = bgr ? 2 - ch : ch;
    const float v = BicubicAt(p / out_w, p % out_w, h, w, sy, sx, [=](int64_t y, int64_t x) {
      return static_cast<float>(rgb[(y * w + x) * 3 + src_ch]) * (1.0f / 255.0f);
    });
    const float mean = ch == 0 ? 0.485f : (ch == 1 ? 0.456f : 0.406f);
    const float inv_std = ch == 0 ? 1.0f / 0.229f : (ch == 1 ? 1.0f / 0.224f : 1.0f / 0.225f);
    out[i] = (v - mean) * inv_std;
  });
}

// ------------------------------------------------------------------ official: cubic B-spline
// The pole and the constants are scipy's (ni_splines.c), so the double arithmetic is the same.
constexpr double kSplinePole = -0.267949192431122706472553658494127633;

// scipy's map_coordinate for NI_EXTEND_MIRROR: a coordinate outside [0, n - 1] mirrored in.
PSD_HOST_DEVICE PSD_INLINE double MirrorCoordinate(double c, int64_t n) {
  if (n <= 1) return 0.0;
  const double sz2 = static_cast<double>(2 * n - 2);
  if (c < 0) {
    c = sz2 * static_cast<double>(static_cast<int64_t>(-c / sz2)) + c;
    c = c <= static_cast<double>(1 - n) ? c + sz2 : -c;
  } else if (c > static_cast<double>(n - 1)) {
    c -= sz2 * static_cast<double>(static_cast<int64_t>(c / sz2));
    if (c >= static_cast<double>(n)) c = sz2 - c;
  }
  return c;
}

// A tap index mirrored into [0, n) (whole-sample symmetric: c[-1] = c[1]).
PSD_HOST_DEVICE PSD_INLINE int64_t MirrorIndex(int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;  // almost every tap
  if (n <= 1) return 0;
  const int64_t p = 2 * n - 2;
  i %= p;
  if (i < 0) i += p;
  return i < n ? i : p - i;
}

// Output index o of an axis of n_in samples resized to n_out: the first tap and 4 weights.
PSD_HOST_DEVICE PSD_INLINE int64_t SplineTaps(int64_t o, int64_t n_in, int64_t n_out, double* wt) {
  const double zoom = static_cast<double>(n_in) / static_cast<double>(n_out);
  double c = static_cast<double>(o);
  c += 0.5;
  c *= zoom;
  c -= 0.5;
  c = MirrorCoordinate(c, n_in);
  const double fl = floor(c);
  const double x = c - fl, y = x, z = 1.0 - x;
  wt[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
  wt[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
  wt[0] = z * z * z / 6.0;
  wt[3] = 1.0 - wt[0] - wt[1] - wt[2];
  return static_cast<int64_t>(fl) - 1;
}

// skimage's anti-aliasing before a down-scale by f = in / out > 1: a Gaussian of sigma (f - 1) / 2
// along that axis (scipy.ndimage.gaussian_filter1d: radius int(4 sigma + 0.5), weights
// exp(-x^2 / (2 sigma^2)) normalised by their sum, mirror boundary, the symmetric correlation's
// order of additions). kMaxGaussRadius (preprocess.h) bounds the down-scale.
// w[0..2r] (r = GaussRadius(sigma)); the sum is numpy's pairwise one (sequential below 8 terms).
PSD_HOST_DEVICE inline void GaussWeights(double sigma, double* w) {
  const int r = GaussRadius(sigma), n = 2 * r + 1;
  const double k = -0.5 / (sigma * sigma);
  for (int i = 0; i < n; ++i) {
    const double x = static_cast<double>(i - r);
    w[i] = exp(k * (x * x));
  }
  double sum = 0.0;
  if (n < 8) {
    for (int i = 0; i < n; ++i) sum += w[i];
  } else {
    double acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = w[j];
    int i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += w[i + j];
    sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) sum += w[i];
  }
  for (int i = 0; i < n; ++i) w[i] /= sum;
}

// out[i] of one line (n values `stride` apart in `in`): scipy's symmetric correlation.
PSD_HOST_DEVICE PSD_INLINE double GaussAt(const double* in, int64_t n, int64_t stride, int64_t i, const double* w,
                                           int r) {
  const double* fw = w + r;
  double v = in[i * stride] * fw[0];
  for (int j = -r; j < 0; ++j) {
    const int64_t a = i + j, b = i - j;
    const int64_t ia = a >= 0 ? a : (n > 1 ? MirrorIndex(a, n) : 0);
    const int64_t ib = b < n ? b : (n > 1 ? MirrorIndex(b, n) : 0);
    v += (in[ia * stride] + in[ib * stride]) * fw[j];
  }
  return v;
}

// The prefilter of one line of n values, `stride` apart (scipy's apply_filter for the mirror modes).
PSD_HOST_DEVICE inline void SplinePrefilterLine(double* c, int64_t n, int64_t stride) {
  if (n < 2) return;
  const double z = kSplinePole;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  for (int64_t i = 0; i < n; ++i) c[i * stride] *= gain;
  // causal initialiser (whole-sample symmetric extension, summed over the whole line)
  double zi = z;
  const double zn1 = pow(z, static_cast<double>(n - 1));
  double c0 = c[0] + zn1 * c[(n - 1) * stride];
  for (int64_t i = 1; i < n - 1; ++i) {
    c0 += zi * (c[i * stride] + zn1 * c[(n - 1 - i) * stride]);
    zi *= z;
  }
  c[0] = c0 / (1.0 - zn1 * zn1);
  for (int64_t i = 1; i < n; ++i) c[i * stride] += z * c[(i - 1) * stride];
  c[(n - 1) * stride] = (z * c[(n - 2) * stride] + c[(n - 1) * stride]) * z / (z * z - 1.0);
  for (int64_t i = n - 2; i >= 0; --i) c[i * stride] = z * (c[(i + 1) * stride] - c[i * stride]);
}

// Workspace (PreprocessOfficialDoubles): coefficients (3, h, w), rows evaluated (3, out_h, w),
// the image's min/max, the per-chunk min/max of the reduction (kChunks pairs), the tap tables
// of both axes (8 doubles per output index: 4 mirrored indices, 4 weights), the Gaussian weights
// and the anti-aliasing buffer (3, h, w).
template <Device D>
void CopyDoubles(double* dst, const double* src, int64_t n, Stream s) {
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { dst[i] = src[i]; });
}

template <Device D>
void PreprocessOfficial(const uint8_t* rgb, int64_t h, int64_t w, bool bgr, float* out, int64_t out_h,
                        int64_t out_w, double* work, Stream s) {
  double* coef = work;
  double* rows = coef + 3 * h * w;
  double* range = rows + 3 * out_h * w;  // [min, max] of x = u8 / 255 over the whole image
  double* part = range + 2;
  double* tab_y = part + 2 * kChunks;  // out_h x 8
  double* tab_x = tab_y + 8 * out_h;   // out_w x 8
  double* gw_y = tab_x + 8 * out_w;    // Gaussian weights, 2 kMaxGaussRadius + 1 each
  double* gw_x = gw_y + 2 * kMaxGaussRadius + 1;
  double* blur = gw_x + 2 * kMaxGaussRadius + 1;  // (3, h, w): the anti-aliasing pass
  const int64_t plane = h * w, n = 3 * plane;
  ParallelFor<D>(out_h + out_w, s, [=] PSD_HOST_DEVICE(int64_t o) {
    const bool along_y = o < out_h;
    const int64_t k = along_y ? o : o - out_h, n_in = along_y ? h : w, n_out = along_y ? out_h : out_w;
    double* t = (along_y ? tab_y : tab_x) + 8 * k;
    const int64_t first = SplineTaps(k, n_in, n_out, t + 4);
    for (int j = 0; j < 4; ++j) t[j] = static_cast<double>(MirrorIndex(first + j, n_in));
  });
  // x = u8 / 255 in double, planar by channel (RGB order)
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / plane, p = i % plane;
    coef[i] = static_cast<double>(rgb[p * 3 + (bgr ? 2 - ch : ch)]) / 255.0;
  });
  // the clip range of skimage (clip=True): min and max of the input image, all channels
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    double lo = 1.0, hi = 0.0;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) {
      lo = coef[i] < lo ? coef[i] : lo;
      hi = coef[i] > hi ? coef[i] : hi;
    }
    part[2 * c] = lo;
    part[2 * c + 1] = hi;
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    double lo = 1.0, hi = 0.0;
    for (int64_t c = 0; c < kChunks; ++c) {
      lo = part[2 * c] < lo ? part[2 * c] : lo;
      hi = part[2 * c + 1] > hi ? part[2 * c + 1] : hi;
    }
    range[0] = lo;
    range[1] = hi;
  });
  // anti-aliasing of the down-scaled axes (skimage: gaussian_filter on the float image, y then x)
  const double sig_y = AntiAliasSigma(h, out_h), sig_x = AntiAliasSigma(w, out_w);
  const int rad_y = GaussRadius(sig_y), rad_x = GaussRadius(sig_x);
  if (sig_y > 1e-15 || sig_x > 1e-15) {
    ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
      if (sig_y > 1e-15) GaussWeights(sig_y, gw_y);
      if (sig_x > 1e-15) GaussWeights(sig_x, gw_x);
    });
  }
  if (sig_y > 1e-15) {
    ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const int64_t ch = i / plane, p = i % plane, y = p / w, x = p % w;
      blur[i] = GaussAt(coef + ch * plane + x, h, w, y, gw_y, rad_y);
    });
    CopyDoubles<D>(coef, blur, n, s);
  }
  if (sig_x > 1e-15) {
    ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const int64_t row = i / w, x = i % w;
      blur[i] = GaussAt(coef + row * w, w, 1, x, gw_x, rad_x);
    });
    CopyDoubles<D>(coef, blur, n, s);
  }
  // prefilter along y (one column per thread), then along x (one row per thread): scipy's order
  ParallelFor<D>(3 * w, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / w, x = i % w;
    SplinePrefilterLine(coef + ch * plane + x, h, w);
  });
  ParallelFor<D>(3 * h, s, [=] PSD_HOST_DEVICE(int64_t i) {
    SplinePrefilterLine(coef + i * w, w, 1);
  });
  // evaluate along y: rows (3, out_h, w)
  ParallelFor<D>(3 * out_h * w, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / (out_h * w), r = i % (out_h * w), oy = r / w, x = r % w;
    const double* t = tab_y + 8 * oy;
    const double* c = coef + ch * plane + x;
    double v = 0.0;
    for (int j = 0; j < 4; ++j) v += c[static_cast<int64_t>(t[j]) * w] * t[4 + j];
    rows[i] = v;
  });
  // evaluate along x, clip, normalise in double, cast: out (3, out_h, out_w)
  const int64_t oplane = out_h * out_w;
  ParallelFor<D>(3 * oplane, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const int64_t ch = i / oplane, r = i % oplane, oy = r / out_w, ox = r % out_w;
    const double* t = tab_x + 8 * ox;
    const double* row = rows + (ch * out_h + oy) * w;
    double v = 0.0;
    for (int j = 0; j < 4; ++j) v += row[static_cast<int64_t>(t[j])] * t[4 + j];
    v = v < range[0] ? range[0] : (v > range[1] ? range[1] : v);
    const double mean = ch == 0 ? 0.485 : (ch == 1 ? 0.456 : 0.406);
    const double std = ch == 0 ? 0.229 : (ch == 1 ? 0.224 : 0.225);
    out[i] = static_cast<float>((v - mean) / std);
  });
}

#define PSD_INSTANTIATE_PREPROCESS(D)                                                   \
  template void PreprocessRgb<D>(const uint8_t*, int64_t, int64_t, bool, float*, int64_t, \
                                 int64_t, Stream);                                        \
  template void PreprocessOfficial<D>(const uint8_t*, int64_t, int64_t, bool, float*, int64_t, int64_t, \
                                      double*, Stream);

}  // namespace kernels
}  // namespace psd
