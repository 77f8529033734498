// CPU instantiation of the guided mode's default method (bodies in dt_impl.h) and its CPU-only
// row pass of the filter (DtFilterRowsCpu).
#include "../common/cpu_isa.h"
#include "dt_impl.h"

namespace psd {
namespace kernels {

namespace {

// Passed by value between inline functions only (see guided_impl.h).
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float DtV4 __attribute__((vector_size(16)));
typedef float DtV4u __attribute__((vector_size(16), aligned(4)));  // any alignment
typedef int32_t DtI4 __attribute__((vector_size(16)));
typedef float DtV8 __attribute__((vector_size(32)));
typedef float DtV8u __attribute__((vector_size(32), aligned(4)));

#define PSD_DT_CPU inline __attribute__((always_inline))

// Rows of a block kept together: 16 rows = 4 vectors of 4 floats per plane, enough independent
// chains (value and confidence of 4 row groups) to hide the latency of a - k (a - p).
constexpr int64_t kDtCpuRows = 16;

// 4 x 4 transpose: a..d rows in, columns out.
PSD_DT_CPU void DtTranspose4(DtV4& a, DtV4& b, DtV4& c, DtV4& d) {
  const DtV4 t0 = __builtin_shuffle(a, b, DtI4{0, 4, 1, 5}), t1 = __builtin_shuffle(a, b, DtI4{2, 6, 3, 7});
  const DtV4 t2 = __builtin_shuffle(c, d, DtI4{0, 4, 1, 5}), t3 = __builtin_shuffle(c, d, DtI4{2, 6, 3, 7});
  a = __builtin_shuffle(t0, t2, DtI4{0, 1, 4, 5});
  b = __builtin_shuffle(t0, t2, DtI4{2, 3, 6, 7});
  c = __builtin_shuffle(t1, t3, DtI4{0, 1, 4, 5});
  d = __builtin_shuffle(t1, t3, DtI4{2, 3, 6, 7});
}

// kDtCpuRows rows of w floats <-> the block layout t[x * R + r] (x-major, the rows of one column
// contiguous). Moves only: the values are not touched. src[r] / dst[r]: row r's first pixel; dst
// rows past the block's last row are null (not written back).
PSD_DT_CPU void DtToBlock(const float* const* src, int64_t w, float* t) {
  constexpr int64_t R = kDtCpuRows;
  int64_t x = 0;
  for (; x + 4 <= w; x += 4)
    for (int64_t g = 0; g < R; g += 4) {
      DtV4 a = *reinterpret_cast<const DtV4u*>(src[g] + x);
      DtV4 b = *reinterpret_cast<const DtV4u*>(src[g + 1] + x);
      DtV4 c = *reinterpret_cast<const DtV4u*>(src[g + 2] + x);
      DtV4 d = *reinterpret_cast<const DtV4u*>(src[g + 3] + x);
      DtTranspose4(a, b, c, d);
      *reinterpret_cast<DtV4u*>(t + x * R + g) = a;
      *reinterpret_cast<DtV4u*>(t + (x + 1) * R + g) = b;
      *reinterpret_cast<DtV4u*>(t + (x + 2) * R + g) = c;
      *reinterpret_cast<DtV4u*>(t + (x + 3) * R + g) = d;
    }
  for (; x < w; ++x)
    for (int64_t r = 0; r < R; ++r) t[x * R + r] = src[r][x];
}

PSD_DT_CPU void DtFromBlock(const float* t, int64_t w, float* const* dst, int64_t nr) {
  constexpr int64_t R = kDtCpuRows;
  if (nr < R) {  // the frame's last rows
    for (int64_t x = 0; x < w; ++x)
      for (int64_t r = 0; r < nr; ++r) dst[r][x] = t[x * R + r];
    return;
  }
  int64_t x = 0;
  for (; x + 4 <= w; x += 4)
    for (int64_t g = 0; g < R; g += 4) {
      DtV4 a = *reinterpret_cast<const DtV4u*>(t + x * R + g);
      DtV4 b = *reinterpret_cast<const DtV4u*>(t + (x + 1) * R + g);
      DtV4 c = *reinterpret_cast<const DtV4u*>(t + (x + 2) * R + g);
      DtV4 d = *reinterpret_cast<const DtV4u*>(t + (x + 3) * R + g);
      DtTranspose4(a, b, c, d);
      *reinterpret_cast<DtV4u*>(dst[g] + x) = a;
      *reinterpret_cast<DtV4u*>(dst[g + 1] + x) = b;
      *reinterpret_cast<DtV4u*>(dst[g + 2] + x) = c;
      *reinterpret_cast<DtV4u*>(dst[g + 3] + x) = d;
    }
  for (; x < w; ++x)
    for (int64_t r = 0; r < R; ++r) dst[r][x] = t[x * R + r];
}

// DtFilterRows on one block in the block layout, the rows' recurrences as vector lanes: per
// element the same a + k * (p - a), in the same order (float32, unfused), so the same bits.
template <typename V, typename Vu>
PSD_DT_CPU void DtFilterBlock(float* tv, float* tc, const float* tw, int64_t w) {
  constexpr int64_t R = kDtCpuRows, L = sizeof(V) / sizeof(float), G = R / L;
  V pv[G], pc[G];
  for (int64_t g = 0; g < G; ++g) {
    pv[g] = *reinterpret_cast<const Vu*>(tv + g * L);
    pc[g] = *reinterpret_cast<const Vu*>(tc + g * L);
  }
  for (int64_t x = 1; x < w; ++x)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t p = x * R + g * L;
      const V k = *reinterpret_cast<const Vu*>(tw + p - R);
      const V a0 = *reinterpret_cast<const Vu*>(tv + p), b0 = *reinterpret_cast<const Vu*>(tc + p);
      const V a = a0 + k * (pv[g] - a0), b = b0 + k * (pc[g] - b0);
      *reinterpret_cast<Vu*>(tv + p) = pv[g] = a;
      *reinterpret_cast<Vu*>(tc + p) = pc[g] = b;
    }
  for (int64_t g = 0; g < G; ++g) {
    pv[g] = *reinterpret_cast<const Vu*>(tv + (w - 1) * R + g * L);
    pc[g] = *reinterpret_cast<const Vu*>(tc + (w - 1) * R + g * L);
  }
  for (int64_t x = w - 2; x >= 0; --x)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t p = x * R + g * L;
      const V k = *reinterpret_cast<const Vu*>(tw + p);
      const V a0 = *reinterpret_cast<const Vu*>(tv + p), b0 = *reinterpret_cast<const Vu*>(tc + p);
      const V a = a0 + k * (pv[g] - a0), b = b0 + k * (pc[g] - b0);
      *reinterpret_cast<Vu*>(tv + p) = pv[g] = a;
      *reinterpret_cast<Vu*>(tc + p) = pc[g] = b;
    }
}

// DtHRows on one block in the block layout (td, tf: dist and fill, read and written; ts: sh): the
// same cost dist[x -/+ 1] + (1 + lam * sh), strict < and selects per lane as DtHRows per pixel.
template <typename V, typename Vu>
PSD_DT_CPU void DtGeodesicBlock(float* td, float* tf, const float* ts, float lam, int64_t w) {
  constexpr int64_t R = kDtCpuRows, L = sizeof(V) / sizeof(float), G = R / L;
  typedef int32_t Vi __attribute__((vector_size(sizeof(V))));
  V pd[G], pf[G];
  auto step = [&](int64_t p, int64_t q, int64_t g) {  // pixel p from its neighbour's pd, pf; q: sh of the pair
    const V cost = 1.0f + lam * *reinterpret_cast<const Vu*>(ts + q);
    const V t = pd[g] + cost, d0 = *reinterpret_cast<const Vu*>(td + p);
    const V f0 = *reinterpret_cast<const Vu*>(tf + p);
    const Vi m = t < d0;  // all-ones lanes where the neighbour's path is strictly cheaper
    const V d = (V)((m & (Vi)t) | (~m & (Vi)d0)), f = (V)((m & (Vi)pf[g]) | (~m & (Vi)f0));
    *reinterpret_cast<Vu*>(td + p) = pd[g] = d;
    *reinterpret_cast<Vu*>(tf + p) = pf[g] = f;
  };
  for (int64_t g = 0; g < G; ++g) {
    pd[g] = *reinterpret_cast<const Vu*>(td + g * L);
    pf[g] = *reinterpret_cast<const Vu*>(tf + g * L);
  }
  for (int64_t x = 1; x < w; ++x)
    for (int64_t g = 0; g < G; ++g) step(x * R + g * L, x * R + g * L, g);
  for (int64_t g = 0; g < G; ++g) {
    pd[g] = *reinterpret_cast<const Vu*>(td + (w - 1) * R + g * L);
    pf[g] = *reinterpret_cast<const Vu*>(tf + (w - 1) * R + g * L);
  }
  for (int64_t x = w - 2; x >= 0; --x)
    for (int64_t g = 0; g < G; ++g) step(x * R + g * L, (x + 1) * R + g * L, g);
}

enum DtBlockOp { kDtBlockFilter, kDtBlockGeodesic };

// Rows y0..min(y0 + R, h) of the planes a, b (read and written) and k (read) through the block
// buffers ta, tb, tk (kDtCpuRows * w floats each): the filter (a, b, k = v, c, wh) or the
// geodesic's row passes (dist, fill, sh; lam). A last block of fewer rows fills its lanes with
// copies of its first row, computed and dropped.
template <int Op, typename V, typename Vu>
PSD_DT_CPU void DtRowBlockBody(float* a, float* b, const float* k, float lam, int64_t h,
                               int64_t w, int64_t y0, float* ta, float* tb, float* tk) {
  constexpr int64_t R = kDtCpuRows;
  const int64_t nr = h - y0 < R ? h - y0 : R;
  float *ra[R], *rb[R];
  const float* rk[R];
  for (int64_t r = 0; r < R; ++r) {
    const int64_t o = (y0 + (r < nr ? r : 0)) * w;
    ra[r] = a + o;
    rb[r] = b + o;
    rk[r] = k + o;
  }
  DtToBlock(ra, w, ta);
  DtToBlock(rb, w, tb);
  DtToBlock(rk, w, tk);
  if constexpr (Op == kDtBlockFilter) DtFilterBlock<V, Vu>(ta, tb, tk, w);
  else DtGeodesicBlock<V, Vu>(ta, tb, tk, lam, w);
  DtFromBlock(ta, w, ra, nr);
  DtFromBlock(tb, w, rb, nr);
}

typedef void (*DtRowBlockFn)(float*, float*, const float*, float, int64_t, int64_t, int64_t,
                             float*, float*, float*);

// The bodies compiled for the baseline ISA and (x86-64) for AVX2 without FMA: the same IEEE
// operations on wider registers, hence the same results. Chosen per call (guided_cpu.cpp's rule).
#define PSD_DT_ROW_BLOCK(NAME, OP, ATTR, V, VU)                                                 \
  ATTR void NAME(float* a, float* b, const float* k, float lam, int64_t h, int64_t w,          \
                 int64_t y0, float* ta, float* tb, float* tk) {                                \
    DtRowBlockBody<OP, V, VU>(a, b, k, lam, h, w, y0, ta, tb, tk);                             \
  }
PSD_DT_ROW_BLOCK(DtFilterRowBlockBase, kDtBlockFilter, , DtV4, DtV4u)
PSD_DT_ROW_BLOCK(DtGeodesicRowBlockBase, kDtBlockGeodesic, , DtV4, DtV4u)
#if defined(__x86_64__) && defined(__GNUC__)
PSD_DT_ROW_BLOCK(DtFilterRowBlockAvx2, kDtBlockFilter, __attribute__((target("avx2"))), DtV8, DtV8u)
PSD_DT_ROW_BLOCK(DtGeodesicRowBlockAvx2, kDtBlockGeodesic, __attribute__((target("avx2"))), DtV8, DtV8u)
#endif

bool DtUseAvx2(bool baseline_isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  return !baseline_isa && MaxCpuIsa() != CpuIsa::kBaseline;  // PSD_MAX_CPU_ISA caps it
#else
  return false;
#endif
}

// Runs `block` over the blocks of rows: the threads take contiguous ranges of blocks; part t
// reuses its buffers at t * R * w, which stay in its cache (t < parts <= h / R, so that they fit
// in the n floats of each plane; the caller handles h < R).
void DtRowBlocksCpu(DtRowBlockFn block, float* a, float* b, const float* k, float lam, int64_t h,
                    int64_t w, float* ta, float* tb, float* tk) {
  const int64_t R = kDtCpuRows, blocks = (h + R - 1) / R;
  CpuParallelRanges(blocks, h / R, [=](int64_t b0, int64_t b1, int64_t t) {
    for (int64_t i = b0; i < b1; ++i)
      block(a, b, k, lam, h, w, i * R, ta + t * R * w, tb + t * R * w, tk + t * R * w);
  });
}

}  // namespace

void DtFilterRowsCpu(float* v, float* c, const float* wh, int64_t h, int64_t w, float* tv,
                     float* tc, float* tw, bool baseline_isa) {
  if (h < kDtCpuRows) {  // a frame of fewer rows than a block: the shared body (R * w floats exceed n)
    for (int64_t y = 0; y < h; y += kDtRowBlock)
      DtFilterRows(v, c, wh, w, y, y + kDtRowBlock < h ? y + kDtRowBlock : h);
    return;
  }
  DtRowBlocksCpu(DtUseAvx2(baseline_isa) ? DtFilterRowBlockAvx2 : DtFilterRowBlockBase, v, c, wh,
                 0.0f, h, w, tv, tc, tw);
}

void DtHRowsCpu(float* dist, float* fill, const float* sh, float lam, int64_t h, int64_t w,
                float* td, float* tf, float* ts, bool baseline_isa) {
  if (h < kDtCpuRows) {
    for (int64_t y = 0; y < h; y += kDtRowBlock)
      DtHRows(dist, fill, sh, lam, w, y, y + kDtRowBlock < h ? y + kDtRowBlock : h);
    return;
  }
  DtRowBlocksCpu(DtUseAvx2(baseline_isa) ? DtGeodesicRowBlockAvx2 : DtGeodesicRowBlockBase, dist,
                 fill, sh, lam, h, w, td, tf, ts);
}

PSD_INSTANTIATE_GUIDED_DT(Device::kCpu)
}  // namespace kernels
}  // namespace psd
