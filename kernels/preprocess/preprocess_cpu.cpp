// CPU instantiation of the FM preprocessing (body in preprocess_impl.h).
#include "preprocess_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_PREPROCESS(Device::kCpu)
}  // namespace kernels
}  // namespace psd
