// Validation, workspace plan and device switch for the IP-Basic fill.
#include "ip_basic.h"

#include "../common/check.h"
#include "../common/reduce.h"
#include "../common/workspace.h"

namespace psd {
namespace kernels {

IpBasicWork PlanIpBasic(Workspace& ws, int64_t h, int64_t w) {
  IpBasicWork k;
  k.stats = ws.Take<IpBasicStats>(1);
  k.partials = ws.Take<float>(kChunks * 4);
  k.b = ws.Take<float>(h * w);
  k.t = ws.Take<float>(h * w);
  return k;
}

size_t IpBasicWorkspaceBytes(int64_t h, int64_t w) {
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "IP-Basic needs H, W > 0");
  Workspace ws(nullptr, 0);
  PlanIpBasic(ws, h, w);
  return ws.used();
}

void IpBasicChecked(Device d, const float* sparse, int64_t h, int64_t w, void* workspace,
                    size_t bytes, float* out, Stream s) {
  PSD_REQUIRE_PTR(sparse);
  PSD_REQUIRE_PTR(out);
  PSD_REQUIRE(workspace != nullptr, NullPointer, "null pointer: workspace");
  PSD_REQUIRE(h > 0 && w > 0, ShapeMismatch, "IP-Basic needs H, W > 0");
  PSD_REQUIRE(out != sparse, InvalidArgument, "out must not alias sparse (IP-Basic uses it as scratch)");
  Workspace ws(workspace, bytes);
  const IpBasicWork k = PlanIpBasic(ws, h, w);
  if (d == Device::kCpu) {
    IpBasicStatsPass<Device::kCpu>(sparse, h, w, k, s);
    const IpBasicStats& st = *k.stats;  // host memory: the input rule is checked here, before any write
    PSD_REQUIRE(!st.non_finite, InvalidArgument,
                "sparse depth contains NaN/Inf; mark missing pixels with 0 instead");
    PSD_REQUIRE(!st.negative, InvalidArgument,
                "sparse depth has negative values; mark missing pixels with 0 instead");
    PSD_REQUIRE(st.any_valid, InvalidArgument,
                "IP-Basic needs at least one sparse depth > 0.1 m; check the sparse input (units are "
                "metres: divide millimetres by 1000)");
    IpBasicFill<Device::kCpu>(sparse, h, w, k, out, s);
  } else {
    PSD_CUDA_CALL(IpBasicStatsPass<Device::kCuda>, sparse, h, w, k, s);
    PSD_CUDA_CALL(IpBasicFill<Device::kCuda>, sparse, h, w, k, out, s);
  }
}

}  // namespace kernels
}  // namespace psd
