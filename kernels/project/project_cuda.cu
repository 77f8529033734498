// CUDA instantiation of the point-cloud projection (bodies in project_impl.h).
#include "project_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_PROJECT(Device::kCuda)
}  // namespace kernels
}  // namespace psd
