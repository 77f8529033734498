// Deterministic chunked reductions and stream compaction, identical on CPU and CUDA.
// The index range is cut into kChunks fixed chunks; each chunk is reduced serially (one thread
// per chunk), then one thread folds the chunk results. No atomics, so the result and the order
// of compacted indices never depend on scheduling; all of it stays on the device (no host sync).
#pragma once

#include <cstdint>

#include "host_device.h"
#include "parallel_for.h"

namespace psd {

constexpr int64_t kChunks = 256;

PSD_HOST_DEVICE PSD_INLINE int64_t ChunkBegin(int64_t n, int64_t c) { return n * c / kChunks; }

// Writes, in increasing index order, every i in [0, n) with pred(i) to out[0 .. *total).
// counts: kChunks + 1 int64 of workspace. pred must be a [=] PSD_HOST_DEVICE callable.
template <Device D, typename Pred>
void CompactIndices(int64_t n, const Pred& pred, int64_t* counts, int64_t* out, int64_t* total,
                    Stream s) {
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    int64_t k = 0;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) k += pred(i) ? 1 : 0;
    counts[c] = k;
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    int64_t acc = 0;
    for (int64_t c = 0; c < kChunks; ++c) {
      const int64_t k = counts[c];
      counts[c] = acc;
      acc += k;
    }
    counts[kChunks] = acc;
    *total = acc;
  });
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    int64_t o = counts[c];
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i)
      if (pred(i)) out[o++] = i;
  });
}

// lo, hi and any (1 or 0) of the valid values of v[0 .. n) (finite and > 0: depth present) ->
// out[0..2], with per-chunk partials in part (3 * kChunks floats). No valid value: lo = FLT_MAX,
// hi = 0, any = 0.
template <Device D>
void ValidRange(const float* v, int64_t n, float* part, float* out, Stream s) {
  ParallelFor<D>(kChunks, s, [=] PSD_HOST_DEVICE(int64_t c) {
    float lo = 3.40282347e38f, hi = 0.0f, any = 0.0f;
    for (int64_t i = ChunkBegin(n, c), e = ChunkBegin(n, c + 1); i < e; ++i) {
      const float x = v[i];
      if (x > 0.0f && x <= 3.40282347e38f) {
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        any = 1.0f;
      }
    }
    part[3 * c] = lo;
    part[3 * c + 1] = hi;
    part[3 * c + 2] = any;
  });
  ParallelFor<D>(1, s, [=] PSD_HOST_DEVICE(int64_t) {
    float lo = 3.40282347e38f, hi = 0.0f, any = 0.0f;
    for (int64_t c = 0; c < kChunks; ++c) {
      lo = part[3 * c] < lo ? part[3 * c] : lo;
      hi = part[3 * c + 1] > hi ? part[3 * c + 1] : hi;
      any = part[3 * c + 2] > any ? part[3 * c + 2] : any;
    }
    out[0] = lo;
    out[1] = hi;
    out[2] = any;
  });
}

// In-place selection: after the call a[kth] is the value a sorted copy would hold there.
// Serial (one thread on the GPU); used only for medians of sparse samples.
PSD_HOST_DEVICE inline float SelectKth(float* a, int64_t n, int64_t kth) {
  int64_t lo = 0, hi = n - 1;
  while (hi > lo) {
    const int64_t mid = lo + (hi - lo) / 2;
    // median of three as the pivot
    float x = a[lo], y = a[mid], z = a[hi];
    float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) ++i;
      while (a[j] > pivot) --j;
      if (i <= j) {
        const float t = a[i];
        a[i] = a[j];
        a[j] = t;
        ++i;
        --j;
      }
    }
    if (kth <= j) hi = j;
    else if (kth >= i) lo = i;
    else break;
  }
  return a[kth];
}

}  // namespace psd
