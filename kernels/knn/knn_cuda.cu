// CUDA instantiation of the kNN propagation (body in knn_impl.h; the GPU search is brute force).
#include "knn_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_KNN(Device::kCuda)
}  // namespace kernels
}  // namespace psd
