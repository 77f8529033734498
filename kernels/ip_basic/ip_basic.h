// IP-Basic fill (Ku et al., CRV 2018; ``fill_in_fast`` as PSD calls it, psd_method.md §1.4) of one
// sparse depth map (h, w), 0 = missing: the kernel form of psdrt.runtime.classical.ip_basic_fill,
// bit-identical to it (OpenCV 4 on x86-64 with its FMA build). With eps = 0.1 m and
// max = max(sparse):
//   1. inv  = sparse > eps ? max - sparse : sparse
//   2. A    = dilate(inv, 5x5 diamond)
//   3. A    = erode(dilate(A, 5x5), 5x5)                              (closing)
//   4. A    = A < eps ? dilate(A, 7x7) : A
//   5. per column: above the first row with A > eps, A = that row's value (none: untouched)
//   6. A    = A < eps ? dilate(A, 31x31) : A
//   7. M    = median(A, 5x5), border replicate
//   8. G    = gaussian(M, [1 4 6 4 1] / 16 separable), border reflect-101
//   9. D    = M > eps ? G : M;  out = D > eps ? max - D : D
// Dilations/erosions ignore pixels outside the image (OpenCV's default border). The upstream
// quirks stay (docstring of ip_basic_fill): values within eps of max come out ~0, depths in
// (0, eps] take part in the dilations uninverted, columns without a value are left to step 6.
// Invalid input (a NaN/Inf or negative value, or no value > eps): the CPU path throws
// InvalidArgument before writing; the CUDA path cannot report without a host sync and writes 0
// everywhere instead (never NaN).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/host_device.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

// IP-Basic's validity threshold in metres (psd.h PSD_IP_BASIC_MIN_M; classical.IP_BASIC_EPS).
constexpr float kIpBasicEps = 0.1f;

// Per-frame scalars (device memory): the maximum of the map and what the input check found.
struct IpBasicStats {
  float max_depth;
  int32_t any_valid;  // some value > eps
  int32_t non_finite;
  int32_t negative;
};

// Workspace (device memory) of the fill of an h x w map; `out` serves as the third plane.
struct IpBasicWork {
  IpBasicStats* stats;
  float* partials;  // kChunks * 4
  float* b;         // h * w
  float* t;         // h * w (the row pass of every separable filter)
  // Optional device flag: where set and 0 when the work runs, every step returns at once (a
  // caller that decides on the device whether it needs the fill, without a host sync). The CPU
  // paths of the selections do not read it: a CPU caller decides on the host.
  const int32_t* active = nullptr;
};

// Step 0: the reduction into w.stats (chunked, deterministic; max and flags are order-free).
template <Device D>
void IpBasicStatsPass(const float* sparse, int64_t h, int64_t w, IpBasicWork work, Stream s);
// Steps 1-9 from w.stats (which must be valid on the CPU: IpBasicChecked checks it first).
template <Device D>
void IpBasicFill(const float* sparse, int64_t h, int64_t w, IpBasicWork work, float* out, Stream s);

IpBasicWork PlanIpBasic(Workspace& ws, int64_t h, int64_t w);
size_t IpBasicWorkspaceBytes(int64_t h, int64_t w);
// out must not alias sparse (it is scratch until the last step).
void IpBasicChecked(Device d, const float* sparse, int64_t h, int64_t w, void* workspace,
                    size_t bytes, float* out, Stream s);

}  // namespace kernels
}  // namespace psd
