// CPU instantiation of the guided kernels (bodies in guided_impl.h) and the CPU fast path.
//
// GuidedCpu runs the arithmetic of GuidedGeneric<kCpu> with a different schedule:
//  * features are streamed: each thread owns a band of rows (aligned to the coarsest pyramid
//    block) and computes colour -> cosine features + inverse norms one row at a time into row
//    buffers, accumulating the coarser levels' block sums on the way; the four affinity planes
//    of every level are written from two consecutive rows and no feature map is ever stored;
//  * rows are processed 8 pixels at a time with GCC vector extensions (V8), which lower to
//    SSE2 (baseline x86-64) or NEON (aarch64); on x86-64 the same bodies are also compiled for
//    AVX2 (without FMA, so the same IEEE operations) and chosen at run time
//    (common/cpu_isa.h: PSD_MAX_CPU_ISA caps it);
//  * the CSPN sweeps of a level run in one parallel region, temporally blocked (passes of up
//    to 8 sweeps, SweepBandBody), two barriers per pass;
//  * frames under kGuidedParallelPixels stay on the calling thread.
// Every value goes through the same templated expressions as the generic path, so the results
// are bit-identical (tests/kernels/test_guided.py checks it).
#include <algorithm>
#include <cstring>

#include "../common/cpu_isa.h"
#include "guided_impl.h"

namespace psd {
namespace kernels {

PSD_INSTANTIATE_GUIDED(Device::kCpu)

namespace {

#define PSD_GI inline __attribute__((always_inline))

constexpr int64_t kGuidedParallelPixels = 32768;

PSD_GI V8 Ld(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PSD_GI void St(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }

// ------------------------------------------------------------------------------ nearest fill
void NearestFillCpu(const GuidedPlan& P, const float* sparse, int64_t threads) {
  const int64_t h = P.h, w = P.w;
  int32_t* col = P.col;
  float* colval = P.colval;
  // column pass as two row sweeps (vectorisable across columns): the nearest valid row above
  // with its depth, then the one below, the upper one on a tie (NearestColumn's result)
  int32_t* next = P.next;
  float* nextval = P.fill;  // a row of scratch: the fill itself is written by the row pass
  CpuParallelRanges(w, threads, [&](int64_t x0, int64_t x1, int64_t) {
    for (int64_t y = 0; y < h; ++y) {
      const float* sr = sparse + y * w;
      int32_t* cr = col + y * w;
      float* vr = colval + y * w;
      const int32_t* pr = col + (y - 1) * w;
      const float* pv = colval + (y - 1) * w;
      const int32_t yy = static_cast<int32_t>(y);
      for (int64_t x = x0; x < x1; ++x) {
        const bool ok = GValid(sr[x]);
        cr[x] = ok ? yy : (y > 0 ? pr[x] : -1);
        vr[x] = ok ? sr[x] : (y > 0 ? pv[x] : 0.0f);
      }
    }
    for (int64_t x = x0; x < x1; ++x) {
      next[x] = -1;
      nextval[x] = 0.0f;
    }
    for (int64_t y = h - 1; y >= 0; --y) {
      const float* sr = sparse + y * w;
      int32_t* cr = col + y * w;
      float* vr = colval + y * w;
      const int32_t yy = static_cast<int32_t>(y);
      for (int64_t x = x0; x < x1; ++x) {
        if (GValid(sr[x])) {
          next[x] = yy;
          nextval[x] = sr[x];
        }
        const int32_t r = GNearestOf(yy, cr[x], next[x]);
        vr[x] = r == cr[x] ? vr[x] : nextval[x];
        cr[x] = r;
      }
    }
  });
  CpuParallelRanges(h, threads, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t y = y0; y < y1; ++y)
      NearestRow(col + y * w, colval + y * w, y, w, P.stack + y * w, P.fill + y * w);
  });
}

// ------------------------------------------------------------------------------ feature rows
// Row buffers: channel c of a row at buf + c * rs + kGuidedPad, zero on both sides.
PSD_GI void LabRow(const uint8_t* px, bool bgr, int64_t w, const float* lut, float* l, float* a,
                   float* b) {
  const int ro = bgr ? 2 : 0, bo = bgr ? 0 : 2;
  for (int64_t x = 0; x < w; ++x) {
    l[x] = lut[px[3 * x + ro]];
    a[x] = lut[px[3 * x + 1]];
    b[x] = lut[px[3 * x + bo]];
  }
  const int64_t wv = GuidedUp8(w);
  for (int64_t x = w; x < wv; ++x) l[x] = a[x] = b[x] = 0.0f;
  for (int64_t x = 0; x < wv; x += 8) {
    V8 lc, la, lb;
    GLab(Ld(l + x), Ld(a + x), Ld(b + x), lc, la, lb);
    St(l + x, lc);
    St(a + x, la);
    St(b + x, lb);
  }
}

// Raw features of one row (channels 0..C-1) and their inverse norms 1 / max(|f|, 1e-12) (slot C).
PSD_GI void InvNormOf(V8 n2, float* dst) { St(dst, 1.0f / GMax(GSqrt(n2), 1e-12f)); }

PSD_GI void FeatureRow(const GuidedCoeffs& k, const float* l, const float* a, const float* b,
                       int64_t w, int64_t rs, float* u) {
  const int64_t wv = GuidedUp8(w);
  for (int64_t x = 0; x < wv; x += 8) {
    const V8 lc = Ld(l + x), la = Ld(a + x), lb = Ld(b + x);
    V8 n2 = V8{};
    for (int32_t c = 0; c < k.c; ++c) {
      const V8 f = GCosPi(GPhase(k, c, lc, la, lb));
      St(u + c * rs + kGuidedPad + x, f);
      n2 = n2 + f * f;
    }
    InvNormOf(n2, u + k.c * rs + kGuidedPad + x);
  }
  for (int32_t c = 0; c < k.c; ++c)  // lanes past the frame: features 0 (their norms stay finite)
    for (int64_t x = w; x < wv; ++x) u[c * rs + kGuidedPad + x] = 0.0f;
}

// s (level row, rsl) += the level-l block columns of the full-resolution row f (rs0).
PSD_GI void AccumulateRow(const float* f, int64_t rs0, float* s, int64_t rsl, int32_t channels,
                          int64_t wl, int64_t fac) {
  const int64_t wv = GuidedUp8(wl);
  for (int32_t c = 0; c < channels; ++c) {
    const float* fc = f + c * rs0 + kGuidedPad;
    float* sc = s + c * rsl + kGuidedPad;
    if (fac == 2) {
      for (int64_t x = 0; x < wv; x += 8) {
        const V8 lo = Ld(fc + 2 * x), hi = Ld(fc + 2 * x + 8);
        const V8 ev = __builtin_shuffle(lo, hi, V8i{0, 2, 4, 6, 8, 10, 12, 14});
        const V8 od = __builtin_shuffle(lo, hi, V8i{1, 3, 5, 7, 9, 11, 13, 15});
        V8 acc = Ld(sc + x);
        acc = acc + ev;
        acc = acc + od;
        St(sc + x, acc);
      }
    } else {
      for (int64_t x = 0; x < wl; ++x) {
        float acc = sc[x];
        for (int64_t j = 0; j < fac; ++j) acc = acc + fc[x * fac + j];
        sc[x] = acc;
      }
    }
  }
}

// Block sums -> block means (tail lanes zeroed) and their inverse norms (slot C).
PSD_GI void FinishLevelRow(float* s, int64_t rsl, int32_t channels, int64_t wl, int64_t fac) {
  const int64_t wv = GuidedUp8(wl);
  const float div = static_cast<float>(fac * fac);
  for (int32_t c = 0; c < channels; ++c) {
    float* sc = s + c * rsl + kGuidedPad;
    for (int64_t x = 0; x < wv; x += 8) St(sc + x, Ld(sc + x) / div);
    for (int64_t x = wl; x < wv; ++x) sc[x] = 0.0f;
  }
  for (int64_t x = 0; x < wv; x += 8) {
    V8 n2 = V8{};
    for (int32_t c = 0; c < channels; ++c) {
      const V8 v = Ld(s + c * rsl + kGuidedPad + x);
      n2 = n2 + v * v;
    }
    InvNormOf(n2, s + channels * rsl + kGuidedPad + x);
  }
}

// Cosines (dot of the raw features times both inverse norms): with kDown, of row `up` with row
// `cur` (S, SE, SW planes of the upper row); with kEast, of row `cur` with itself shifted by
// one (E plane). Plane pointers at column 0; inverse norms in channel slot `channels`.
template <bool kDown, bool kEast>
PSD_GI void DotsRow(const float* up, const float* cur, int32_t channels, int64_t rs, int64_t wv,
                    float* s, float* se, float* sw, float* e) {
  const float* ic = cur + channels * rs + kGuidedPad;
  const float* iu = kDown ? up + channels * rs + kGuidedPad : nullptr;
  for (int64_t x = 0; x < wv; x += 8) {
    V8 as = V8{}, ase = V8{}, asw = V8{}, ae = V8{};
    for (int32_t c = 0; c < channels; ++c) {
      const float* pc = cur + c * rs + kGuidedPad + x;
      const V8 cv = Ld(pc), c1 = Ld(pc + 1);
      if (kDown) {
        const V8 pv = Ld(up + c * rs + kGuidedPad + x), cm = Ld(pc - 1);
        as = as + pv * cv;
        ase = ase + pv * c1;
        asw = asw + pv * cm;
      }
      if (kEast) ae = ae + cv * c1;
    }
    const V8 i0 = Ld(ic + x), i1 = Ld(ic + x + 1);
    if (kDown) {
      const V8 iup = Ld(iu + x);
      St(s + x, (as * iup) * i0);
      St(se + x, (ase * iup) * i1);
      St(sw + x, (asw * iup) * Ld(ic + x - 1));
    }
    if (kEast) St(e + x, (ae * i0) * i1);
  }
}

PSD_GI void ZeroRowPadding(float* row, int64_t wv, int64_t p) {  // row: padded row start
  for (int64_t x = 0; x < kGuidedCol0; ++x) row[x] = 0.0f;
  for (int64_t x = kGuidedCol0 + wv; x < p; ++x) row[x] = 0.0f;
}

// Affinity rows of level row y: E of y (if y is owned, y < y1) and S/SE/SW of y - 1 (if up).
PSD_GI void AffinityRows(const GuidedLevel& L, int64_t y, int64_t y1, const float* up,
                         const float* cur, int32_t channels, int64_t rs) {
  const int64_t p = L.p, wv = GuidedUp8(L.w);
  const bool east = y < y1;
  float* er = L.ae + (y + 1) * p;
  float* sr = L.as + y * p;  // padded row of y - 1
  float* ser = L.ase + y * p;
  float* swr = L.asw + y * p;
  const int64_t c0 = kGuidedCol0;
  if (up && east)
    DotsRow<true, true>(up, cur, channels, rs, wv, sr + c0, ser + c0, swr + c0, er + c0);
  else if (up)
    DotsRow<true, false>(up, cur, channels, rs, wv, sr + c0, ser + c0, swr + c0, nullptr);
  else if (east)
    DotsRow<false, true>(nullptr, cur, channels, rs, wv, nullptr, nullptr, nullptr, er + c0);
  if (up) {
    ZeroRowPadding(sr, wv, p);
    ZeroRowPadding(ser, wv, p);
    ZeroRowPadding(swr, wv, p);
  }
  if (!east) return;
  ZeroRowPadding(er, wv, p);
  if (y == 0)
    for (float* pl : {L.ae, L.as, L.ase, L.asw}) std::fill(pl, pl + p, 0.0f);
  if (y == L.h - 1) {  // no row below: S/SE/SW of y are 0, and the bottom padding row
    for (float* pl : {L.as, L.ase, L.asw}) std::fill(pl + (y + 1) * p, pl + (y + 2) * p, 0.0f);
    for (float* pl : {L.ae, L.as, L.ase, L.asw})
      std::fill(pl + (y + 2) * p, pl + (y + 3) * p, 0.0f);
  }
}

// One band of full-resolution rows [b0 * block, b1 * block): features, coarser block sums and
// the affinity rows the band owns (see guided.h for the ownership of halo rows).
PSD_GI void FeaturesBandBody(const GuidedPlan& P, const GuidedCoeffs& k, const uint8_t* rgb,
                             bool bgr, int64_t b0, int64_t b1, int64_t part) {
  const int64_t h = P.h, w = P.w;
  const int32_t C = P.c, levels = P.levels;
  const int64_t block = int64_t{1} << (levels - 1);
  float* sc = P.scratch + part * P.band_floats;
  std::memset(sc, 0, sizeof(float) * static_cast<size_t>(P.band_floats));
  const int64_t rs0 = GuidedRowStride(w);
  float* lab = sc;
  // row buffers hold C feature rows and one row of inverse norms
  float* u0[2] = {lab + 3 * rs0, lab + 3 * rs0 + (C + 1) * rs0};  // previous, current
  float* ul[kGuidedMaxLevels][2] = {};                            // accumulating, previous
  int64_t rsl[kGuidedMaxLevels] = {}, y0l[kGuidedMaxLevels] = {}, y1l[kGuidedMaxLevels] = {},
          endl[kGuidedMaxLevels] = {};
  float* ptr = u0[1] + (C + 1) * rs0;
  const int64_t r0 = b0 * block, r1 = std::min(b1 * block, h);
  int64_t yend = r0;
  for (int32_t l = 0; l < levels; ++l) {
    if (l > 0) {
      rsl[l] = GuidedRowStride(P.lv[l].w);
      ul[l][0] = ptr;
      ul[l][1] = ptr + (C + 1) * rsl[l];
      ptr += 2 * (C + 1) * rsl[l];
    }
    y0l[l] = r0 >> l;
    y1l[l] = r1 >> l;
    endl[l] = y0l[l] < y1l[l] ? std::min(y1l[l] + 1, P.lv[l].h) << l : 0;
    yend = std::max(yend, endl[l]);
  }
  float *la = lab + rs0, *lb = lab + 2 * rs0;
  for (int64_t y = r0; y < yend; ++y) {
    LabRow(rgb + 3 * y * w, bgr, w, P.lut, lab, la, lb);
    FeatureRow(k, lab, la, lb, w, rs0, u0[1]);
    for (int32_t l = 1; l < levels; ++l) {
      if (y >= endl[l]) continue;
      const int64_t fac = int64_t{1} << l;
      const GuidedLevel& L = P.lv[l];
      AccumulateRow(u0[1], rs0, ul[l][0], rsl[l], C, L.w, fac);
      if (((y + 1) & (fac - 1)) != 0) continue;
      const int64_t Y = y >> l;
      FinishLevelRow(ul[l][0], rsl[l], C, L.w, fac);
      AffinityRows(L, Y, y1l[l], Y > y0l[l] ? ul[l][1] : nullptr, ul[l][0], C, rsl[l]);
      std::swap(ul[l][0], ul[l][1]);
      std::memset(ul[l][0], 0, sizeof(float) * static_cast<size_t>((C + 1) * rsl[l]));
    }
    if (y < endl[0]) {
      AffinityRows(P.lv[0], y, y1l[0], y > r0 ? u0[0] : nullptr, u0[1], C, rs0);
      std::swap(u0[0], u0[1]);
    }
  }
}

// ------------------------------------------------------------------------------ CSPN
// Padded rows [y0, y1) of level l: coefficients and the initial iterate (InitPosition's
// arithmetic, 8 pixels at a time). tmp: 7 rows of GuidedUp8(L.w) floats.
PSD_GI void InitRowsBody(const GuidedPlan& P, int32_t l, const float* sparse, int64_t y0,
                         int64_t y1, float* tmp) {
  const GuidedLevel& L = P.lv[l];
  const GuidedLevel& prev = P.lv[l + 1 < P.levels ? l + 1 : l];
  const bool coarsest = l == P.levels - 1;
  const int64_t f = int64_t{1} << l, p = L.p, w = L.w, wv = GuidedUp8(w);
  float* sv = tmp;
  int32_t* valid = reinterpret_cast<int32_t*>(tmp + wv);
  float* d0 = tmp + 2 * wv;
  int32_t* xi0 = reinterpret_cast<int32_t*>(tmp + 3 * wv);
  int32_t* xi1 = reinterpret_cast<int32_t*>(tmp + 4 * wv);
  float* xw0 = tmp + 5 * wv;
  float* xw1 = tmp + 6 * wv;
  if (!coarsest)
    for (int64_t x = 0; x < w; ++x) {
      const LinearTaps t = ComputeLinearTaps(x, prev.w, w);
      xi0[x] = static_cast<int32_t>(t.i0);
      xi1[x] = static_cast<int32_t>(t.i1);
      xw0[x] = t.w0;
      xw1[x] = t.w1;
    }
  for (int64_t x = w; x < wv; ++x) {
    sv[x] = d0[x] = 0.0f;
    valid[x] = 0;
  }
  const float* src = LevelResult(prev, P.iterations);
  for (int64_t yp = y0; yp < y1; ++yp) {
    float* rows[6] = {L.inv + yp * p, L.inve + yp * p, L.cdr + yp * p,
                      L.cde + yp * p, L.a + yp * p,    L.b + yp * p};
    if (yp == 0 || yp == L.h + 1) {
      for (float* r : rows) std::fill(r, r + p, 0.0f);
      continue;
    }
    const int64_t y = yp - 1;
    for (int64_t x = 0; x < w; ++x) {
      bool ok;
      sv[x] = LevelSparse(sparse, P.w, f, y, x, &ok);
      valid[x] = ok ? -1 : 0;
    }
    if (coarsest) {
      for (int64_t x = 0; x < w; ++x) d0[x] = BlockMean(P.fill, P.w, f, y, x);
    } else {
      const LinearTaps ty = ComputeLinearTaps(y, prev.h, L.h);
      const float* s0 = src + (ty.i0 + 1) * prev.p + kGuidedCol0;
      const float* s1 = src + (ty.i1 + 1) * prev.p + kGuidedCol0;
      for (int64_t x = 0; x < w; ++x) {  // BilinearAt's order of operations
        const float r0 = s0[xi0[x]] * xw0[x] + s0[xi1[x]] * xw1[x];
        const float r1 = s1[xi0[x]] * xw0[x] + s1[xi1[x]] * xw1[x];
        d0[x] = r0 * ty.w0 + r1 * ty.w1;
      }
    }
    for (int64_t x = 0; x < wv; x += 8) {
      const int64_t q = yp * p + kGuidedCol0 + x;
      V8i m;
      std::memcpy(&m, valid + x, sizeof m);
      V8 inv, inve, cdr, cde, draw;
      GCoefficients(Ld(L.ase + q - p - 1), Ld(L.as + q - p), Ld(L.asw + q - p + 1),
                    Ld(L.ae + q - 1), Ld(L.ae + q), Ld(L.asw + q), Ld(L.as + q), Ld(L.ase + q),
                    Ld(sv + x), m, Ld(d0 + x), inv, inve, cdr, cde, draw);
      St(L.inv + q, inv);
      St(L.inve + q, inve);
      St(L.cdr + q, cdr);
      St(L.cde + q, cde);
      St(L.a + q, draw);
      St(L.b + q, V8{});
    }
    for (float* r : rows) ZeroRowPadding(r, wv, p);
  }
}

// One sweep of one row: dst = GSweep of the three source rows (padded row starts) with the
// coefficient planes of interior row y.
PSD_GI void SweepRow(const GuidedLevel& L, int64_t y, const float* sn, const float* sc,
                     const float* ss, const float* inv, const float* cd, float* dst) {
  const int64_t p = L.p, wv = GuidedUp8(L.w), r = (y + 1) * p, u = y * p;
  for (int64_t x = kGuidedCol0; x < kGuidedCol0 + wv; x += 8) {
    St(dst + x, GSweep(Ld(L.ase + u + x - 1), Ld(L.as + u + x), Ld(L.asw + u + x + 1),
                       Ld(L.ae + r + x - 1), Ld(L.ae + r + x), Ld(L.asw + r + x),
                       Ld(L.as + r + x), Ld(L.ase + r + x), Ld(sn + x - 1), Ld(sn + x),
                       Ld(sn + x + 1), Ld(sc + x - 1), Ld(sc + x + 1), Ld(ss + x - 1),
                       Ld(ss + x), Ld(ss + x + 1), Ld(inv + r + x), Ld(cd + r + x)));
  }
}

// All sweeps of a level for the band of interior rows [y0, y1), inside a parallel region.
// Temporal blocking: the sweeps run in passes of k <= kmax; within a pass a wavefront computes
// sweep t0 + j on row r - j (j = 0..k-1) at step r, so each coefficient row is read once per
// pass while it is in cache. Sweep t reads buffer t % 2 (a) and writes the other one; the
// wavefront may overwrite a row in place because every reader of its old value has run by then
// (sweep t0 + j - 1 on rows y - 1..y + 1 finishes at steps <= r). Each band computes the rows up
// to k - 1 beyond its edges itself (overlapped tiling) in private halo rows (halo: 4 kmax rows of
// L.p floats), so bands synchronise only twice per pass: before copying the neighbours' source
// rows into the halo, and after. Same values as one sweep at a time.
PSD_GI void SweepBandBody(const GuidedLevel& L, int32_t iterations, int64_t y0, int64_t y1,
                          float* halo, int64_t kmax) {
  const int64_t p = L.p, h = L.h;
  float* planes[2] = {L.a, L.b};
  float* priv[2][2] = {{halo, halo + kmax * p}, {halo + 2 * kmax * p, halo + 3 * kmax * p}};
  for (int32_t t0 = 0; t0 < iterations; t0 += static_cast<int32_t>(kmax)) {
    const int64_t k = std::min<int64_t>(kmax, iterations - t0);
    // padded row start of interior row y (-1 and h: the zero padding rows) in buffer `par`
    auto row = [&](int par, int64_t y) -> float* {
      if (y < 0 || y >= h || (y >= y0 && y < y1)) return planes[par] + (y + 1) * p;
      return y < y0 ? priv[par][0] + (y - (y0 - k)) * p : priv[par][1] + (y - y1) * p;
    };
    const int sp = t0 % 2;
#pragma omp barrier
    for (int64_t y = std::max<int64_t>(0, y0 - k); y < y0; ++y)
      std::memcpy(row(sp, y), planes[sp] + (y + 1) * p, sizeof(float) * static_cast<size_t>(p));
    for (int64_t y = y1; y < std::min(h, y1 + k); ++y)
      std::memcpy(row(sp, y), planes[sp] + (y + 1) * p, sizeof(float) * static_cast<size_t>(p));
#pragma omp barrier
    const int64_t r0 = std::max<int64_t>(0, y0 - (k - 1)), r1 = std::min(h, y1 + (k - 1)) + (k - 1);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t y = r - j;
        if (y < std::max<int64_t>(0, y0 - (k - 1 - j)) || y >= std::min(h, y1 + (k - 1 - j)))
          continue;
        const int32_t t = t0 + static_cast<int32_t>(j);
        const bool last = t == iterations - 1;
        const int src = t % 2;
        SweepRow(L, y, row(src, y - 1), row(src, y), row(src, y + 1), last ? L.inv : L.inve,
                 last ? L.cdr : L.cde, row(1 - src, y));
      }
    }
  }
}

// ------------------------------------------------------------------------------ ISA variants
// The bodies above, compiled for the baseline ISA and (x86-64) for AVX2 without FMA: the same
// IEEE operations on wider registers, hence the same results. Chosen once per process.
struct Kernels {
  void (*features)(const GuidedPlan&, const GuidedCoeffs&, const uint8_t*, bool, int64_t, int64_t,
                   int64_t);
  void (*init)(const GuidedPlan&, int32_t, const float*, int64_t, int64_t, float*);
  void (*sweeps)(const GuidedLevel&, int32_t, int64_t, int64_t, float*, int64_t);
};

#define PSD_GUIDED_VARIANT(SUFFIX, ATTR)                                                       \
  ATTR void FeaturesBand##SUFFIX(const GuidedPlan& P, const GuidedCoeffs& k,                   \
                                 const uint8_t* rgb, bool bgr, int64_t b0, int64_t b1,         \
                                 int64_t part) {                                               \
    FeaturesBandBody(P, k, rgb, bgr, b0, b1, part);                                            \
  }                                                                                            \
  ATTR void InitRows##SUFFIX(const GuidedPlan& P, int32_t l, const float* sparse, int64_t y0,  \
                             int64_t y1, float* tmp) {                                         \
    InitRowsBody(P, l, sparse, y0, y1, tmp);                                                   \
  }                                                                                            \
  ATTR void SweepBand##SUFFIX(const GuidedLevel& L, int32_t iterations, int64_t y0,            \
                              int64_t y1, float* halo, int64_t kmax) {                         \
    SweepBandBody(L, iterations, y0, y1, halo, kmax);                                          \
  }

PSD_GUIDED_VARIANT(Base, )
#if defined(__x86_64__) && defined(__GNUC__)
PSD_GUIDED_VARIANT(Avx2, __attribute__((target("avx2"))))
#endif

Kernels SelectKernels(bool baseline) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!baseline && MaxCpuIsa() != CpuIsa::kBaseline)
    return {FeaturesBandAvx2, InitRowsAvx2, SweepBandAvx2};
#endif
  return {FeaturesBandBase, InitRowsBase, SweepBandBase};
}

}  // namespace

void GuidedCpu(const GuidedPlan& P, const GuidedCoeffs& k, const uint8_t* rgb, bool bgr,
               const float* sparse, float* out) {
  const Kernels K = SelectKernels(P.baseline_isa);
  // small frames run on the calling thread: waking the team costs more than it saves
  const int64_t threads = P.h * P.w >= kGuidedParallelPixels ? CpuThreads() : 1;
  const int64_t bands = std::min(threads, P.bands);
  for (int32_t i = 0; i < 256; ++i) P.lut[i] = SrgbLinear(i);
  float part[3 * 64];  // lo, hi, any per part (CpuParallelRanges: at most `parts` of them)
  const int64_t parts = std::min<int64_t>(threads, 64), n = P.h * P.w;
  for (int64_t t = 0; t < parts; ++t) {
    part[3 * t] = 3.40282347e38f;
    part[3 * t + 1] = part[3 * t + 2] = 0.0f;
  }
  CpuParallelRanges(n, parts, [&](int64_t i0, int64_t i1, int64_t t) {
    float lo = 3.40282347e38f, hi = 0.0f, any = 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
      const float v = sparse[i];
      const bool ok = GValid(v);
      lo = ok && v < lo ? v : lo;
      hi = ok && v > hi ? v : hi;
      any = ok ? 1.0f : any;
    }
    part[3 * t] = lo;
    part[3 * t + 1] = hi;
    part[3 * t + 2] = any;
  });
  float lo = 3.40282347e38f, hi = 0.0f;
  bool any = false;
  for (int64_t t = 0; t < parts; ++t) {
    lo = std::min(lo, part[3 * t]);
    hi = std::max(hi, part[3 * t + 1]);
    any = any || part[3 * t + 2] > 0.0f;
  }
  if (!any) {
    std::fill(out, out + P.h * P.w, 0.0f);
    return;
  }
  NearestFillCpu(P, sparse, threads);
  const int64_t block = int64_t{1} << (P.levels - 1);
  CpuParallelRanges((P.h + block - 1) / block, bands, [&](int64_t b0, int64_t b1, int64_t part) {
    K.features(P, k, rgb, bgr, b0, b1, part);
  });
  for (int32_t l = P.levels - 1; l >= 0; --l) {
    const GuidedLevel& L = P.lv[l];
    CpuParallelRanges(L.h + 2, bands, [&](int64_t y0, int64_t y1, int64_t part) {
      K.init(P, l, sparse, y0, y1, P.scratch + part * P.band_floats);
    });
    // sweeps fused per pass: as many as 4 halo rows per sweep fit in a band's scratch, <= 8
    const int64_t kmax = std::max<int64_t>(1, std::min<int64_t>(8, P.band_floats / (4 * L.p)));
    const int64_t sweep_parts = std::min(bands, L.h * L.w / 16384 + 1);
    CpuParallelRanges(L.h, sweep_parts, [&](int64_t y0, int64_t y1, int64_t part) {
      K.sweeps(L, P.iterations, y0, y1, P.scratch + part * P.band_floats, kmax);
    });
  }
  const float* res = LevelResult(P.lv[0], P.iterations);
  CpuParallelRanges(P.h, threads, [&](int64_t y0, int64_t y1, int64_t) {
    for (int64_t y = y0; y < y1; ++y) {  // GuidedFinal's clamp, row by row
      const float* r = res + (y + 1) * P.lv[0].p + kGuidedCol0;
      float* o = out + y * P.w;
      for (int64_t x = 0; x < P.w; ++x) o[x] = r[x] < lo ? lo : (r[x] > hi ? hi : r[x]);
    }
  });
}

}  // namespace kernels
}  // namespace psd
