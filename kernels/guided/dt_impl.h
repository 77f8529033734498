// Kernel bodies of the guided mode's default method (see dt.h). Included by dt_cpu.cpp and
// dt_cuda.cu; GuidedDt<D> is the one sequence of steps, the per-pixel and per-line bodies below
// are shared by both devices.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "../project/project_impl.h"
#include "dt.h"

namespace psd {
namespace kernels {

#define PSD_DT_FN PSD_HOST_DEVICE PSD_INLINE

PSD_DT_FN bool DtValid(float v) { return v > 0.0f && v <= 3.40282347e38f; }

// One pixel of a down (q = y - 1) or up (q = y + 1) pass: the best of itself and the 3 pixels of
// row q. sv (the SAD of the pair with the pixel above; cost 1 + lam * sad) and cl/cr (the costs
// of the diagonal pairs) are read from the row that pairs with row q: for a down pass row y's costs
// (to y - 1: same column, left, right); for an up pass row q's costs, where the pair
// (y, x) - (q, x - 1) is (q, x - 1)'s up-right pair and (y, x) - (q, x + 1) its up-left pair.
PSD_DT_FN void DtVPixel(float* dist, float* fill, const float* sv, const float* cl,
                        const float* cr, float lam, int64_t w, int64_t y, int64_t q, bool down,
                        int64_t x) {
  const int64_t p = y * w + x, b = q * w + x;
  const int64_t k = down ? p : b;  // row whose planes hold the pairs
  float best = dist[p], val = fill[p];
  float t = dist[b] + (1.0f + lam * sv[k]);
  if (t < best) {
    best = t;
    val = fill[b];
  }
  if (x > 0) {
    t = dist[b - 1] + (down ? cl[p] : cr[b - 1]);
    if (t < best) {
      best = t;
      val = fill[b - 1];
    }
  }
  if (x + 1 < w) {
    t = dist[b + 1] + (down ? cr[p] : cl[b + 1]);
    if (t < best) {
      best = t;
      val = fill[b + 1];
    }
  }
  dist[p] = best;
  fill[p] = val;
}

// DtVPixel for interior columns x0..x1 (within 1..w-2) of a row, without the bounds tests (the CPU path:
// branch-free selects that vectorise across columns; the same operations per pixel).
inline void DtVInterior(float* __restrict dist, float* __restrict fill, const float* sv,
                        const float* cl, const float* cr, float lam, int64_t w, int64_t y,
                        int64_t q, bool down, int64_t x0, int64_t x1) {
  float* __restrict d = dist + y * w;
  float* __restrict f = fill + y * w;
  const float* __restrict dq = dist + q * w;
  const float* __restrict fq = fill + q * w;
  const float* __restrict k0 = sv + (down ? y : q) * w;
  const float* __restrict kl = down ? cl + y * w : cr + q * w - 1;  // pair with (q, x - 1)
  const float* __restrict kr = down ? cr + y * w : cl + q * w + 1;  // pair with (q, x + 1)
  for (int64_t x = x0; x < x1; ++x) {
    // every load unconditional, so that the selects vectorise
    const float t0 = dq[x] + (1.0f + lam * k0[x]), t1 = dq[x - 1] + kl[x], t2 = dq[x + 1] + kr[x];
    const float f0 = fq[x], f1 = fq[x - 1], f2 = fq[x + 1];
    float best = d[x], val = f[x];
    bool m = t0 < best;
    best = m ? t0 : best;
    val = m ? f0 : val;
    m = t1 < best;
    best = m ? t1 : best;
    val = m ? f1 : val;
    m = t2 < best;
    best = m ? t2 : best;
    val = m ? f2 : val;
    d[x] = best;
    f[x] = val;
  }
}

// A whole down or up pass on the CPU: the threads split the columns and meet at a barrier after
// each row (row y reads only row q, complete by then).
inline void DtVPassCpu(float* dist, float* fill, const float* sv, const float* cl, const float* cr,
                       float lam, int64_t h, int64_t w, bool down) {
  auto rows = [=](int64_t x0, int64_t x1, bool sync) {
    const int64_t a = x0 > 1 ? x0 : 1, b = x1 < w - 1 ? x1 : w - 1;
    for (int64_t j = 1; j < h; ++j) {
      const int64_t y = down ? j : h - 1 - j, q = down ? y - 1 : y + 1;
      if (x0 == 0) DtVPixel(dist, fill, sv, cl, cr, lam, w, y, q, down, 0);
      DtVInterior(dist, fill, sv, cl, cr, lam, w, y, q, down, a, b);
      if (x1 == w && w > 1) DtVPixel(dist, fill, sv, cl, cr, lam, w, y, q, down, w - 1);
      if (sync) {
#if defined(_OPENMP)
#pragma omp barrier
#endif
      }
    }
  };
  int64_t parts = CpuThreads();
  parts = parts < w / 256 ? parts : w / 256;  // at least 256 columns per thread
  if (parts <= 1) {
    rows(0, w, false);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(static_cast<int>(parts))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    rows(w * t / nt, w * (t + 1) / nt, nt > 1);
  }
#endif
}

// The right then the left pass along rows y0..y1 (sh[p]: SAD of the pair (x - 1, x)). Rows are
// independent; the CPU hands a block of rows to one call so that the rows' dependency chains
// interleave (the same operations per row, in the same order).
PSD_DT_FN void DtHRows(float* dist, float* fill, const float* sh, float lam, int64_t w,
                       int64_t y0, int64_t y1) {
  for (int64_t x = 1; x < w; ++x)
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t p = y * w + x;
      const float t = dist[p - 1] + (1.0f + lam * sh[p]);
      if (t < dist[p]) {
        dist[p] = t;
        fill[p] = fill[p - 1];
      }
    }
  for (int64_t x = w - 2; x >= 0; --x)
    for (int64_t y = y0; y < y1; ++y) {
      const int64_t p = y * w + x;
      const float t = dist[p + 1] + (1.0f + lam * sh[p + 1]);
      if (t < dist[p]) {
        dist[p] = t;
        fill[p] = fill[p + 1];
      }
    }
}

// Recursive filter along rows y0..y1 (at most kDtRowBlock) on value and confidence: left to
// right, then right to left (wh[p]: weight of the pair (x, x + 1)); the rows' previous values
// are carried in registers so that their dependency chains interleave.
constexpr int64_t kDtRowBlock = 8;
PSD_DT_FN void DtFilterRows(float* v, float* c, const float* wh, int64_t w, int64_t y0,
                            int64_t y1) {
  float pv[kDtRowBlock], pc[kDtRowBlock];
  const int64_t nr = y1 - y0;
  for (int64_t r = 0; r < nr; ++r) {
    pv[r] = v[(y0 + r) * w];
    pc[r] = c[(y0 + r) * w];
  }
  for (int64_t x = 1; x < w; ++x)
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t p = (y0 + r) * w + x;
      const float k = wh[p - 1];
      const float a = v[p] + k * (pv[r] - v[p]), b = c[p] + k * (pc[r] - c[p]);
      v[p] = pv[r] = a;
      c[p] = pc[r] = b;
    }
  for (int64_t r = 0; r < nr; ++r) {
    pv[r] = v[(y0 + r) * w + w - 1];
    pc[r] = c[(y0 + r) * w + w - 1];
  }
  for (int64_t x = w - 2; x >= 0; --x)
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t p = (y0 + r) * w + x;
      const float k = wh[p];
      const float a = v[p] + k * (pv[r] - v[p]), b = c[p] + k * (pc[r] - c[p]);
      v[p] = pv[r] = a;
      c[p] = pc[r] = b;
    }
}

// exp(x) for x <= 0: 2^n * e^r with n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its degree-6
// Taylor polynomial (relative error < 2e-7); 0 once n < -126 (x below about -87.3, where 2^n
// would not be a normal float). No library call and no float select, so loops vectorise.
PSD_DT_FN float DtExp(float x) {
  const float t = x * 1.44269504f;
  int32_t ni = static_cast<int32_t>(t - 0.5f);  // t <= 0: truncation rounds to nearest
  ni = ni < -127 ? -127 : ni;                   // 2^-127 -> bits 0 -> a zero scale
  const float n = static_cast<float>(ni);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (ni + 127) << 23;
#if defined(__CUDA_ARCH__)
  const float scale = __int_as_float(bits);
#else
  const float scale = __builtin_bit_cast(float, bits);  // vectorises (a memcpy does not)
#endif
  return p * scale;
}

// The same down then up columns x0..x1 (wv[p]: weight of the pair (y, y + 1)); row-major order
// within a pass so that the CPU vectorises across columns.
PSD_DT_FN void DtFilterColumns(float* v, float* c, const float* wv, int64_t h, int64_t w,
                               int64_t x0, int64_t x1) {
  for (int64_t y = 1; y < h; ++y) {
    float* a = v + y * w;
    float* b = c + y * w;
    const float* k = wv + (y - 1) * w;
    for (int64_t x = x0; x < x1; ++x) {
      a[x] = a[x] + k[x] * (a[x - w] - a[x]);
      b[x] = b[x] + k[x] * (b[x - w] - b[x]);
    }
  }
  for (int64_t y = h - 2; y >= 0; --y) {
    float* a = v + y * w;
    float* b = c + y * w;
    const float* k = wv + y * w;
    for (int64_t x = x0; x < x1; ++x) {
      a[x] = a[x] + k[x] * (a[x + w] - a[x]);
      b[x] = b[x] + k[x] * (b[x + w] - b[x]);
    }
  }
}

// Calls f(y0, y1) over row blocks: one row per GPU thread, kDtRowBlock rows per CPU call.
template <Device D, typename F>
void DtRowBlocks(int64_t h, Stream s, const F& f) {
  const int64_t rb = D == Device::kCpu ? kDtRowBlock : 1;
  ParallelFor<D>((h + rb - 1) / rb, s, [=] PSD_HOST_DEVICE(int64_t b) {
    const int64_t y0 = b * rb, y1 = y0 + rb < h ? y0 + rb : h;
    f(y0, y1);
  });
}

PSD_DT_FN float DtSadPlanar(const float* r, const float* g, const float* b, int64_t i,
                            int64_t j) {
  return (fabsf(r[i] - r[j]) + fabsf(g[i] - g[j])) + fabsf(b[i] - b[j]);
}

// Filter weight of a pair with colour SAD `sad` and log fills l1, l0.
PSD_DT_FN float DtWeight(float m0, float kc, float beta, float sad, float l1, float l0) {
  return DtExp(m0 * ((1.0f + kc * sad) + beta * fabsf(l1 - l0)));
}

// Calls f(y, x0, x1) over the columns x0..x1 of row y for every row: whole rows on the CPU
// (one call per row, inner loops over x), one pixel per call on the GPU.
template <Device D, typename F>
void DtRows(int64_t h, int64_t w, Stream s, const F& f) {
  if constexpr (D == Device::kCpu) {
    ParallelFor<D>(h, s, [=](int64_t y) { f(y, int64_t{0}, w); });
  } else {
    ParallelFor<D>(h * w, s, [=] PSD_HOST_DEVICE(int64_t i) { f(i / w, i % w, i % w + 1); });
  }
}

// The row pass of the filter (DtFilterRows) over all h rows on the CPU (dt_cpu.cpp): blocks of
// rows transposed into tv, tc, tw (n floats each, planes free while the filter runs) so that the
// rows' recurrences run as vector lanes (AVX2 where the CPU has it, unless `baseline_isa`); the
// same operations per element in the same order, hence the same bits.
void DtFilterRowsCpu(float* v, float* c, const float* wh, int64_t h, int64_t w, float* tv,
                     float* tc, float* tw, bool baseline_isa);
// The geodesic's right and left passes (DtHRows) over all h rows on the CPU, the same way
// (dt_cpu.cpp; td, tf, ts: n floats each, free planes).
void DtHRowsCpu(float* dist, float* fill, const float* sh, float lam, int64_t h, int64_t w,
                float* td, float* tf, float* ts, bool baseline_isa);

template <Device D>
void GuidedDt(const GuidedDtPlan& P, const GuidedDtArgs& a, const uint8_t* rgb,
              const float* sparse, float* out, Stream s) {
  const int64_t h = P.h, w = P.w, n = h * w;
  int64_t* counts = P.counts;
  int32_t* scan = P.scan;
  float* range = P.range;
  float* band = P.band;
  float *sp = P.sp, *dist = P.dist, *fill = P.fill;
  float *sv = P.sv, *sh = P.sh, *cl = P.cl, *cr = P.cr, *wh = P.wh, *wv = P.wv;
  float *v = P.v, *c = P.c, *ipraw = P.ipraw, *base = P.base;
  const GuidedDtArgs A = a;

  // kind: points with a horizontal / vertical neighbour (chunked, deterministic)
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t k) {
    int64_t cn = 0, chz = 0, cvt = 0;
    for (int64_t i = ChunkBegin(n, k), e = ChunkBegin(n, k + 1); i < e; ++i) {
      if (!DtValid(sparse[i])) continue;
      const int64_t y = i / w, x = i % w;
      ++cn;
      if ((x > 0 && DtValid(sparse[i - 1])) || (x + 1 < w && DtValid(sparse[i + 1]))) ++chz;
      if ((y > 0 && DtValid(sparse[i - w])) || (y + 1 < h && DtValid(sparse[i + w]))) ++cvt;
    }
    counts[3 * k] = cn;
    counts[3 * k + 1] = chz;
    counts[3 * k + 2] = cvt;
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    int64_t cn = 0, chz = 0, cvt = 0;
    for (int64_t k = 0; k < kChunks; ++k) {
      cn += counts[3 * k];
      chz += counts[3 * k + 1];
      cvt += counts[3 * k + 2];
    }
    *scan = A.kind == kGuidedKindScan ||
            (A.kind == kGuidedKindAuto && 20 * chz > 80 * cvt + cn);
    // scattered input: the bandwidth bound by the points' mean spacing (dt.h), kc and m0 as
    // GuidedDtArguments computes them
    double ss = A.sigma_s;
    if (cn > 0) {
      const double bound = kGuidedDtSpacing * sqrt(static_cast<double>(n) / static_cast<double>(cn));
      if (bound < ss) ss = bound;
    }
    const int32_t N = A.iterations;
    const double s0 = ss * sqrt(3.0) * pow(2.0, N - 1) / sqrt(pow(4.0, N) - 1.0);
    band[0] = static_cast<float>(ss / A.sigma_r);
    band[1] = static_cast<float>(-sqrt(2.0) / s0);
  });
  // parallax (scan input), missing pixels to 0
  ForPixelsBalanced<D>(h, w, s, [=] PSD_HOST_DEVICE(int64_t i) {
    const float d = sparse[i];
    sp[i] = *scan ? OcclusionValue(sparse, h, w, A.occl, i) : (DtValid(d) ? d : 0.0f);
  });
  // range of the points that remain
  ValidRange<D>(sp, n, range + 3, range, s);
  // step costs and the fill's start, from the colour as three float planes (staged in v, c, wh,
  // which the filter fills later): |a - b| and their sums are exact, so the SADs are the
  // integers DtSad gives
  float *pr = v, *pg = c, *pb = wh;
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    pr[i] = static_cast<float>(rgb[3 * i]);
    pg[i] = static_cast<float>(rgb[3 * i + 1]);
    pb[i] = static_cast<float>(rgb[3 * i + 2]);
  });
  const float lam = A.lambda, sq2 = 1.41421356f;
  // the diagonal costs cl, cr feed the geodesic passes only, which the CPU skips on scan input
  // (the kind is known on the host there); the GPU computes them (the kind stays on the device)
  bool diag = true;
  if constexpr (D == Device::kCpu) diag = *scan == 0;
  DtRows<D>(h, w, s, [=] PSD_HOST_DEVICE(int64_t y, int64_t x0, int64_t x1) {
    for (int64_t x = x0; x < x1; ++x) {
      const int64_t i = y * w + x;
      const bool valid = sp[i] > 0.0f;
      dist[i] = valid ? 0.0f : INFINITY;
      fill[i] = valid ? sp[i] : 0.0f;
      sh[i] = x > 0 ? DtSadPlanar(pr, pg, pb, i, i - 1) : 0.0f;
    }
    if (y == 0) {
      for (int64_t x = x0; x < x1; ++x) sv[x] = cl[x] = cr[x] = 0.0f;
      return;
    }
    const int64_t o = y * w;
    for (int64_t x = x0; x < x1; ++x) sv[o + x] = DtSadPlanar(pr, pg, pb, o + x, o + x - w);
    if (!diag) return;
    // diagonal pairs: the interior without bounds tests, the two edge columns apart
    const int64_t a = x0 > 1 ? x0 : 1, b = x1 < w - 1 ? x1 : w - 1;
    for (int64_t x = a; x < b; ++x) {
      cl[o + x] = sq2 + lam * DtSadPlanar(pr, pg, pb, o + x, o + x - w - 1);
      cr[o + x] = sq2 + lam * DtSadPlanar(pr, pg, pb, o + x, o + x - w + 1);
    }
    for (int32_t edge = 0; edge < 2; ++edge) {
      const int64_t x = edge ? w - 1 : 0;
      if (x < x0 || x >= x1) continue;
      cl[o + x] = x > 0 ? sq2 + lam * DtSadPlanar(pr, pg, pb, o + x, o + x - w - 1) : 0.0f;
      cr[o + x] = x + 1 < w ? sq2 + lam * DtSadPlanar(pr, pg, pb, o + x, o + x - w + 1) : 0.0f;
    }
  });
  // the base: scan input, IP-Basic of the unfiltered valid points; scattered input, the geodesic
  // fill. The CPU reads the kind and runs one of them; the GPU launches both (the kind stays on
  // the device: no host sync) and each does nothing on the other kind's input (IP-Basic's steps
  // return at once where the device flag `scan` is 0, the geodesic passes where it is 1).
  bool run_ip = true, run_geodesic = true;
  if constexpr (D == Device::kCpu) {
    run_ip = *scan != 0;
    run_geodesic = !run_ip;
  }
  if (run_ip) {
    ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
      const float d = sparse[i];
      if (*scan) ipraw[i] = DtValid(d) ? d : 0.0f;
    });
    IpBasicWork ip = P.ip;
    ip.active = scan;
    IpBasicStatsPass<D>(ipraw, h, w, ip, s);
    IpBasicFill<D>(ipraw, h, w, ip, base, s);
  }
  for (int32_t r = 0; run_geodesic && r < A.rounds; ++r) {
    for (int32_t dir = 0; dir < 2; ++dir) {
      const bool down = dir == 0;
      if constexpr (D == Device::kCpu) {
        DtVPassCpu(dist, fill, sv, cl, cr, lam, h, w, down);
      } else {
        for (int64_t j = 1; j < h; ++j) {
          const int64_t y = down ? j : h - 1 - j, q = down ? y - 1 : y + 1;
          ParallelFor<D>(w, s, [=] PSD_HOST_DEVICE(int64_t x) {
            if (!*scan) DtVPixel(dist, fill, sv, cl, cr, lam, w, y, q, down, x);
          });
        }
      }
    }
    if constexpr (D == Device::kCpu) {
      if (A.generic) {
        DtRowBlocks<D>(h, s, [=](int64_t y0, int64_t y1) { DtHRows(dist, fill, sh, lam, w, y0, y1); });
      } else {  // through the colour's staging planes (no longer read) and wv (not yet written)
        DtHRowsCpu(dist, fill, sh, lam, h, w, v, c, wv, A.baseline_isa);
      }
    } else {
      DtRowBlocks<D>(h, s, [=] PSD_HOST_DEVICE(int64_t y0, int64_t y1) {
        if (!*scan) DtHRows(dist, fill, sh, lam, w, y0, y1);
      });
    }
  }
  // scan input: the base replaces the fill (pixels IP-Basic leaves empty take hi)
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    if (*scan) fill[i] = base[i] > kIpBasicEps ? base[i] : range[1];
  });
  // edge weights of iteration 0 (ln fill staged in c), then value and confidence
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { c[i] = logf(fill[i]); });
  DtRows<D>(h, w, s, [=] PSD_HOST_DEVICE(int64_t y, int64_t x0, int64_t x1) {
    const int32_t kd = *scan ? 1 : 0;
    const float kc = kd ? A.kc[1] : band[0], m0 = kd ? A.m0[1] : band[1], beta = A.beta;
    const int64_t o = y * w;
    const int64_t e = x1 < w - 1 ? x1 : w - 1;  // pairs (x, x + 1) exist for x < w - 1
    for (int64_t x = x0; x < e; ++x)
      wh[o + x] = DtWeight(m0, kc, beta, sh[o + x + 1], c[o + x + 1], c[o + x]);
    if (x1 == w) wh[o + w - 1] = 0.0f;
    if (y + 1 < h) {
      for (int64_t x = x0; x < x1; ++x)
        wv[o + x] = DtWeight(m0, kc, beta, sv[o + x + w], c[o + x + w], c[o + x]);
    } else {
      for (int64_t x = x0; x < x1; ++x) wv[o + x] = 0.0f;
    }
    // scan input filters the points' residuals from the base
    for (int64_t x = x0; x < x1; ++x)
      v[o + x] = sp[o + x] > 0.0f ? (kd ? sp[o + x] - fill[o + x] : sp[o + x]) : 0.0f;
  });
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) { c[i] = sp[i] > 0.0f ? 1.0f : 0.0f; });
  for (int32_t it = 0; it < A.iterations; ++it) {
    if (it > 0)
      ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
        wh[i] = wh[i] * wh[i];
        wv[i] = wv[i] * wv[i];
      });
    if constexpr (D == Device::kCpu) {
      if (A.generic) {
        DtRowBlocks<D>(h, s, [=](int64_t y0, int64_t y1) { DtFilterRows(v, c, wh, w, y0, y1); });
      } else {  // through the geodesic's planes, no longer read
        DtFilterRowsCpu(v, c, wh, h, w, dist, cl, cr, A.baseline_isa);
      }
      CpuParallelRanges(w, 64, [=](int64_t x0, int64_t x1, int64_t) {
        DtFilterColumns(v, c, wv, h, w, x0, x1);
      });
    } else {
      DtRowBlocks<D>(h, s, [=] PSD_HOST_DEVICE(int64_t y0, int64_t y1) { DtFilterRows(v, c, wh, w, y0, y1); });
      ParallelFor<D>(w, s, [=] PSD_HOST_DEVICE(int64_t x) { DtFilterColumns(v, c, wv, h, w, x, x + 1); });
    }
  }
  ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t i) {
    if (!(range[2] > 0.0f)) {
      out[i] = 0.0f;
      return;
    }
    if (sp[i] > 0.0f) {  // a point (after the parallax filter) keeps its depth
      out[i] = sp[i];
      return;
    }
    const float r = *scan ? fill[i] + v[i] / (c[i] + kGuidedDtScanEps)
                          : (v[i] + kGuidedDtEps * fill[i]) / (c[i] + kGuidedDtEps);
    const float lo = range[0], hi = range[1];
    out[i] = r < lo ? lo : (r > hi ? hi : r);
  });
}

#define PSD_INSTANTIATE_GUIDED_DT(D)                                                            \
  template void GuidedDt<D>(const GuidedDtPlan&, const GuidedDtArgs&, const uint8_t*,          \
                            const float*, float*, Stream);

}  // namespace kernels
}  // namespace psd
