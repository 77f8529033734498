// CPU instantiation of the CSPN kernels (bodies in cspn_impl.h).
#include "cspn_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_CSPN(Device::kCpu)
}  // namespace kernels
}  // namespace psd
