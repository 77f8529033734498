// Kernel bodies of the kNN family (see knn.h). The per-query pieces (candidate insertion,
// cosine re-ranking, blending, seeded subsets) are host-device functions shared by both
// devices. The search strategy differs on purpose: the CPU walks a uniform grid (serial build,
// parallel queries), the GPU brute-forces; both return the exact same neighbour sets.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/parallel_for.h"
#include "../common/reduce.h"
#include "../cspn/cspn.h"
#include "knn.h"

namespace psd {
namespace kernels {

// ------------------------------------------------------------------ seeded subset selection
PSD_HOST_DEVICE PSD_INLINE uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Moves a uniformly random subset of `keep` entries to the front of a[0..m), in place.
// stream_id separates the candidate and query draws of one seed.
PSD_HOST_DEVICE inline void PartialShuffle(int64_t* a, int64_t m, int64_t keep, uint64_t seed,
                                           uint64_t stream_id) {
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (stream_id + 1));
  for (int64_t i = 0; i < keep && i < m - 1; ++i) {
    const int64_t j = i + static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(m - i));
    const int64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

// ------------------------------------------------------------------ per-query pieces
struct Nearest {
  float d2[2 * kKnnMaxK];
  int64_t id[2 * kKnnMaxK];
  int cnt;
  int cap;
};

PSD_HOST_DEVICE PSD_INLINE bool Before(float da, int64_t ia, float db, int64_t ib) {
  return da < db || (da == db && ia < ib);
}

PSD_HOST_DEVICE PSD_INLINE void Insert(Nearest& nb, float d2, int64_t id) {
  if (nb.cnt == nb.cap) {
    if (!Before(d2, id, nb.d2[nb.cap - 1], nb.id[nb.cap - 1])) return;
    --nb.cnt;
  }
  int j = nb.cnt;
  while (j > 0 && Before(d2, id, nb.d2[j - 1], nb.id[j - 1])) {
    nb.d2[j] = nb.d2[j - 1];
    nb.id[j] = nb.id[j - 1];
    --j;
  }
  nb.d2[j] = d2;
  nb.id[j] = id;
  ++nb.cnt;
}

PSD_HOST_DEVICE PSD_INLINE float Dist2(const float* pts, int64_t n, int64_t a, int64_t b) {
  // ((dx dx + dy dy) + dz dz), unfused: the reference's arithmetic (export/reference/propagation.py)
  const float dx = pts[a] - pts[b], dy = pts[n + a] - pts[n + b], dz = pts[2 * n + a] - pts[2 * n + b];
  return PSD_ADD_RN(PSD_ADD_RN(PSD_MUL_RN(dx, dx), PSD_MUL_RN(dy, dy)), PSD_MUL_RN(dz, dz));
}

// Re-ranking + blending of one query's nearest set (step 2 and 3 of knn.h).
PSD_HOST_DEVICE inline float KnnBlend(const Nearest& nb, const float* unit, int64_t c, int64_t q,
                                      int32_t k, const float* sparse4, float init) {
  if (nb.cnt == 0) return init;
  float a[2 * kKnnMaxK];
  int64_t id[2 * kKnnMaxK];
  const float* uq = unit + q * c;
  for (int j = 0; j < nb.cnt; ++j) {
    const float* uc = unit + nb.id[j] * c;
    float acc = 0.0f;
    for (int64_t t = 0; t < c; ++t) acc = PSD_ADD_RN(acc, PSD_MUL_RN(uq[t], uc[t]));
    a[j] = acc;
    id[j] = nb.id[j];
  }
  const int keep = k < nb.cnt ? k : nb.cnt;
  for (int i = 0; i < keep; ++i) {  // partial selection sort: ascending (a, cell index)
    int best = i;
    for (int j = i + 1; j < nb.cnt; ++j)
      if (Before(a[j], id[j], a[best], id[best])) best = j;
    const float ta = a[i];
    a[i] = a[best];
    a[best] = ta;
    const int64_t ti = id[i];
    id[i] = id[best];
    id[best] = ti;
  }
  float sum = 0.0f;
  for (int i = 0; i < keep; ++i) sum += a[i];
  bool finite = sum != 0.0f;
  for (int i = 0; i < keep && finite; ++i) finite = IsFinite(a[i] / sum);
  float v = 0.0f;
  if (!finite) {  // defined fallback (official: 0/0): equal weights
    const float wu = 1.0f / static_cast<float>(keep);
    for (int i = 0; i < keep; ++i) v += sparse4[id[i]] * wu;
    return v;
  }
  for (int i = 0; i < keep; ++i) v += sparse4[id[i]] * (a[i] / sum);
  return v;
}

// ------------------------------------------------------------------ CPU grid search
struct Grid {
  float lo[3];
  float inv[3];   // 1 / cell size
  float cs[3];    // cell size
  float eps;      // absolute slack for float rounding of cell assignment
  int64_t dim[3];
};

inline int64_t GridCoord(const Grid& g, int a, float v) {
  float f = (v - g.lo[a]) * g.inv[a];
  if (!(f >= 0.0f)) f = 0.0f;  // also catches NaN
  const float top = static_cast<float>(g.dim[a] - 1);
  if (f > top) f = top;
  return static_cast<int64_t>(f);
}

inline Grid BuildGrid(const float* pts, int64_t n, const int64_t* cand, int64_t m,
                      int64_t max_cells) {
  Grid g;
  float hi[3];
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = INFINITY;
    hi[a] = -INFINITY;
  }
  for (int64_t j = 0; j < m; ++j)
    for (int a = 0; a < 3; ++a) {
      const float v = pts[a * n + cand[j]];
      if (std::isfinite(v)) {
        g.lo[a] = v < g.lo[a] ? v : g.lo[a];
        hi[a] = v > hi[a] ? v : hi[a];
      }
    }
  double ext[3], vol = 1.0;
  int live = 0;
  for (int a = 0; a < 3; ++a) {
    if (!(g.lo[a] <= hi[a])) g.lo[a] = hi[a] = 0.0f;
    ext[a] = static_cast<double>(hi[a]) - g.lo[a];
    if (ext[a] > 0) {
      vol *= ext[a];
      ++live;
    }
  }
  // About one candidate per cell: cell edge = (volume / m)^(1 / live axes).
  double cell = live ? std::pow(vol / static_cast<double>(m > 0 ? m : 1), 1.0 / live) : 1.0;
  for (;;) {
    double total = 1.0;
    for (int a = 0; a < 3; ++a) {
      const double d = ext[a] > 0 ? std::floor(ext[a] / cell) + 1.0 : 1.0;
      g.dim[a] = static_cast<int64_t>(d);
      total *= d;
    }
    if (total <= static_cast<double>(max_cells)) break;
    cell *= 1.5;
  }
  double mag = cell;
  for (int a = 0; a < 3; ++a) {
    g.cs[a] = static_cast<float>(cell);
    g.inv[a] = static_cast<float>(1.0 / cell);
    mag += std::fabs(static_cast<double>(g.lo[a])) + ext[a];
  }
  g.eps = static_cast<float>(1e-5 * mag);
  return g;
}

inline void GridQuery(const Grid& g, const float* pts, int64_t n, int64_t q,
                      const int64_t* cell_start, const int64_t* cell_items, int64_t m,
                      Nearest& nb) {
  const float qp[3] = {pts[q], pts[n + q], pts[2 * n + q]};
  int64_t c[3];
  for (int a = 0; a < 3; ++a) c[a] = GridCoord(g, a, qp[a]);
  const int64_t rmax = g.dim[0] > g.dim[1] ? (g.dim[0] > g.dim[2] ? g.dim[0] : g.dim[2])
                                           : (g.dim[1] > g.dim[2] ? g.dim[1] : g.dim[2]);
  int64_t seen = 0;
  for (int64_t r = 0; r <= rmax; ++r) {
    // the shell of the (2r+1)^3 box around the query cell, clipped to the grid: a ring costs
    // what it visits, not (2r+1)^2, so elongated grids stay cheap
    const int64_t z0 = c[2] - r > 0 ? c[2] - r : 0, z1 = c[2] + r < g.dim[2] - 1 ? c[2] + r : g.dim[2] - 1;
    const int64_t y0 = c[1] - r > 0 ? c[1] - r : 0, y1 = c[1] + r < g.dim[1] - 1 ? c[1] + r : g.dim[1] - 1;
    const int64_t x0 = c[0] - r > 0 ? c[0] - r : 0, x1 = c[0] + r < g.dim[0] - 1 ? c[0] + r : g.dim[0] - 1;
    for (int64_t z = z0; z <= z1; ++z) {
      for (int64_t y = y0; y <= y1; ++y) {
        const bool shell = (z == c[2] - r || z == c[2] + r || y == c[1] - r || y == c[1] + r);
        for (int64_t x = shell ? x0 : c[0] - r; x <= (shell ? x1 : c[0] + r);
             x += shell ? 1 : (r > 0 ? 2 * r : 1)) {
          if (x < 0 || x >= g.dim[0]) continue;
          const int64_t cell = (z * g.dim[1] + y) * g.dim[0] + x;
          for (int64_t t = cell_start[cell]; t < cell_start[cell + 1]; ++t) {
            const int64_t id = cell_items[t];
            Insert(nb, Dist2(pts, n, q, id), id);
            ++seen;
          }
        }
      }
    }
    if (seen >= m) return;
    if (nb.cnt < nb.cap) continue;
    // Lower bound of the distance to any cell outside the visited box.
    float bound = INFINITY;
    for (int a = 0; a < 3; ++a) {
      if (c[a] - r > 0) {
        const float face = g.lo[a] + static_cast<float>(c[a] - r) * g.cs[a];
        const float d = qp[a] - face;
        bound = d < bound ? d : bound;
      }
      if (c[a] + r < g.dim[a] - 1) {
        const float face = g.lo[a] + static_cast<float>(c[a] + r + 1) * g.cs[a];
        const float d = face - qp[a];
        bound = d < bound ? d : bound;
      }
    }
    bound -= g.eps;
    if (bound < 0.0f) bound = 0.0f;
    // Margin covers float rounding of the face positions and of the distances.
    if (nb.d2[nb.cap - 1] < bound * bound * 0.9999f) return;
  }
}

// ------------------------------------------------------------------ launcher
template <Device D>
void KnnPropagate(const float* feat, int64_t c, const float* points, const float* init,
                  const float* sparse4, int64_t h, int64_t w, const KnnParams& p, KnnWork wk,
                  float* out, Stream s) {
  const int64_t n = h * w;
  NormalizeFeatures<D>(feat, c, n, wk.unit, s);
  int64_t* sc = wk.scalars;
  CompactIndices<D>(n, [=] PSD_HOST_DEVICE(int64_t i) { return sparse4[i] > 1e-4f; }, wk.counts,
                    wk.cand, sc + 0, s);
  CompactIndices<D>(n, [=] PSD_HOST_DEVICE(int64_t i) { return sparse4[i] > 1e-6f; }, wk.counts,
                    wk.query, sc + 2, s);  // only the count is used
  CompactIndices<D>(n, [=] PSD_HOST_DEVICE(int64_t i) { return sparse4[i] <= 0.0f; }, wk.counts,
                    wk.query, sc + 1, s);
  const int64_t cap = p.candidates;
  const double rate = p.rate;
  const uint64_t seed = p.seed;
  int64_t* cand = wk.cand;
  int64_t* query = wk.query;
  if (cap > 0 || rate < 1.0) {
    ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
      if (cap > 0 && cap < sc[0]) {
        PartialShuffle(cand, sc[0], cap, seed, 0);
        sc[0] = cap;
      }
      if (rate < 1.0) {
        int64_t nq = static_cast<int64_t>(static_cast<double>(n - sc[2]) * rate);
        nq = nq < sc[1] ? nq : sc[1];
        nq = nq > 0 ? nq : 0;
        PartialShuffle(query, sc[1], nq, seed, 1);
        sc[1] = nq;
      }
    });
  }
  CopyFloats<D>(out, init, n, s);
  const int32_t k = p.k;
  const float* unit = wk.unit;
  if constexpr (D == Device::kCpu) {
    const int64_t m = sc[0], nq = sc[1];
    // The grid's early exit needs finite squared distances: with a coordinate that is not finite
    // or beyond 1e18 (squares overflow float), every query would walk the whole grid. Such
    // frames (a degenerate K through the C API, say) take the brute-force search, which finds
    // the same neighbours in a bounded time.
    bool conditioned = true;
    for (int64_t i = 0; i < 3 * n && conditioned; ++i) conditioned = std::fabs(points[i]) <= 1e18f;
    if (p.brute_force || m == 0 || !conditioned) {
      ParallelFor<D>(nq, s, [=](int64_t t) {
        const int64_t q = query[t];
        Nearest nb;
        nb.cnt = 0;
        nb.cap = static_cast<int>(2 * k < m ? 2 * k : m);
        for (int64_t j = 0; j < m; ++j) Insert(nb, Dist2(points, n, q, cand[j]), cand[j]);
        out[q] = KnnBlend(nb, unit, c, q, k, sparse4, init[q]);
      });
      return;
    }
    const Grid g = BuildGrid(points, n, cand, m, KnnGridCells(n));
    const int64_t cells = g.dim[0] * g.dim[1] * g.dim[2];
    int64_t* start = wk.cell_start;
    for (int64_t i = 0; i <= cells; ++i) start[i] = 0;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t id = cand[j];
      const int64_t cell = (GridCoord(g, 2, points[2 * n + id]) * g.dim[1] +
                            GridCoord(g, 1, points[n + id])) * g.dim[0] +
                           GridCoord(g, 0, points[id]);
      wk.cell_of[j] = cell;
      ++start[cell + 1];
    }
    for (int64_t i = 0; i < cells; ++i) start[i + 1] += start[i];
    for (int64_t j = 0; j < m; ++j) wk.cell_items[start[wk.cell_of[j]]++] = cand[j];
    for (int64_t i = cells; i > 0; --i) start[i] = start[i - 1];  // undo the scatter advance
    start[0] = 0;
    const int64_t* items = wk.cell_items;
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t t = 0; t < nq; ++t) {
      const int64_t q = query[t];
      Nearest nb;
      nb.cnt = 0;
      nb.cap = static_cast<int>(2 * k < m ? 2 * k : m);
      GridQuery(g, points, n, q, start, items, m, nb);
      out[q] = KnnBlend(nb, unit, c, q, k, sparse4, init[q]);
    }
  } else {
    // Counts stay on the device: one thread per potential query, idle past n_query.
    ParallelFor<D>(n, s, [=] PSD_HOST_DEVICE(int64_t t) {
      if (t >= sc[1]) return;
      const int64_t m = sc[0];
      const int64_t q = query[t];
      Nearest nb;
      nb.cnt = 0;
      nb.cap = static_cast<int>(2 * k < m ? 2 * k : m);
      for (int64_t j = 0; j < m; ++j) Insert(nb, Dist2(points, n, q, cand[j]), cand[j]);
      out[q] = KnnBlend(nb, unit, c, q, k, sparse4, init[q]);
    });
  }
}

#define PSD_INSTANTIATE_KNN(D)                                                             \
  template void KnnPropagate<D>(const float*, int64_t, const float*, const float*,         \
                                const float*, int64_t, int64_t, const KnnParams&, KnnWork, \
                                float*, Stream);

}  // namespace kernels
}  // namespace psd
