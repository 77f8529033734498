// CUDA instantiation of the composed propagation (body in propagate_impl.h).
#include "propagate_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_PROPAGATE(Device::kCuda)
}  // namespace kernels
}  // namespace psd
