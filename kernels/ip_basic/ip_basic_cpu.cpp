// CPU instantiation of the IP-Basic fill (bodies in ip_basic_impl.h).
#include "ip_basic_impl.h"

namespace psd {
namespace kernels {
PSD_INSTANTIATE_IP_BASIC(Device::kCpu)
}  // namespace kernels
}  // namespace psd
