// CPU instantiation of the kNN propagation (body in knn_impl.h; the CPU search uses a grid).
#include "knn_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_KNN(Device::kCpu)
}  // namespace kernels
}  // namespace psd
