// CUDA instantiation of the guided mode's default method (bodies in dt_impl.h), all on the
// caller's stream.
#include "dt_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_GUIDED_DT(Device::kCuda)
}  // namespace kernels
}  // namespace psd
