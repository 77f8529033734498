// 3D-space propagation (psd_method.md §4.2) at 1/4 resolution, one frame.
//
// Cells: n = h*w. candidates = cells with sparse4 > 1e-4; queries = cells with sparse4 <= 0.
// Optional seeded subsets (official: torch.randperm, not reproducible; here a partial
// Fisher-Yates driven by splitmix64(seed), identical on CPU and CUDA):
//   * candidates > 0 and fewer than the candidate count: keep that many random candidates;
//   * rate < 1: keep int((n - count(sparse4 > 1e-6)) * rate) random queries (official formula).
// For every kept query q:
//   1. N2 = the min(2k, m) candidates nearest to q by Euclidean distance of `points` (3, n);
//      ties: smaller cell index first. With m < 2k all m candidates are used (the official code
//      crashes in torch.topk there); with m = 0 the query keeps its init value.
//   2. a_j = cos(feat[q], feat[c_j]) over the C-channel `feat` (F.normalize semantics);
//      keep the min(k, |N2|) LEAST similar (official re-ranking), ties: smaller cell index.
//   3. out[q] = sum_j (a_j / sum a) * sparse4[c_j], summed in ascending-a order. Defined
//      fallback where sum a == 0 or a weight is not finite (official: 0/0 = NaN): equal weights.
// Every other cell keeps init. Search: CPU = uniform 3D grid over the candidates (exact, same
// choices as brute force); CUDA = brute force, one thread per query.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

constexpr int32_t kKnnMaxK = 16;

struct KnnParams {
  int32_t k = 1;
  double rate = 1.0;
  int64_t candidates = 0;  // 0 = all
  uint64_t seed = 0;
  bool brute_force = false;  // CPU: skip the grid (tests compare both)
};

struct KnnWork {
  float* unit;         // n * c   normalised features, pixel-major
  int64_t* counts;     // kChunks + 1
  int64_t* scalars;    // 8: [0] n_cand, [1] n_query, [2] n_valid6
  int64_t* cand;       // n
  int64_t* query;      // n
  int64_t* cell_of;    // n          (CPU grid)
  int64_t* cell_start; // GridCells(n) + 1
  int64_t* cell_items; // n
};

// Upper bound of the grid size used by the CPU search for n cells.
PSD_HOST_DEVICE PSD_INLINE int64_t KnnGridCells(int64_t n) { return 8 * n + 64; }

template <Device D>
void KnnPropagate(const float* feat, int64_t c, const float* points, const float* init,
                  const float* sparse4, int64_t h, int64_t w, const KnnParams& p, KnnWork work,
                  float* out, Stream s);

KnnWork PlanKnn(Workspace& ws, int64_t c, int64_t n);
void ValidateKnnParams(const KnnParams& p);
size_t KnnWorkspaceBytes(int64_t c, int64_t h, int64_t w);
// init may alias out (the copy happens first).
void KnnChecked(Device d, const float* feat, int64_t c, const float* points, const float* init,
                const float* sparse4, int64_t h, int64_t w, const KnnParams& p, void* workspace,
                size_t bytes, float* out, Stream s);

}  // namespace kernels
}  // namespace psd
