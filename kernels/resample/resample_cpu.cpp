// CPU instantiation of the resampling kernels (bodies in resample_impl.h).
#include "resample_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_RESAMPLE(Device::kCpu)
}  // namespace kernels
}  // namespace psd
