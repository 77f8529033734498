// CUDA instantiation of the guided kernels (bodies in guided_impl.h): the per-pixel
// GuidedGeneric path, one ParallelFor per step, all on the caller's stream.
#include "guided_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_GUIDED(Device::kCuda)
}  // namespace kernels
}  // namespace psd
