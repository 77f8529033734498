// CPU instantiation of the guided mode's default method (bodies in dt_impl.h).
#include "dt_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_GUIDED_DT(Device::kCpu)
}  // namespace kernels
}  // namespace psd
