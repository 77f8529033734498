// CUDA instantiation of the alignment kernels (bodies in align_impl.h).
#include "align_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_ALIGN(Device::kCuda)
}  // namespace kernels
}  // namespace psd
