// Dtype dispatch. Only float32 is shipped: the propagation is specified in fp32 (psd_method.md
// §7.2: "keep the propagation in fp32"), so one instantiation keeps binaries and compile times
// small. Extend here (half) if a kernel ever needs it.
#pragma once

#include "check.h"

namespace psd {
enum class DType : int32_t { kFloat32 = 0 };
}  // namespace psd

#define PSD_DISPATCH_FLOAT(dtype, ...)                                          \
  do {                                                                          \
    if ((dtype) == ::psd::DType::kFloat32) {                                    \
      using scalar_t = float;                                                   \
      __VA_ARGS__();                                                            \
    } else {                                                                    \
      throw ::psd::InvalidArgument("unsupported dtype: only float32 is built"); \
    }                                                                           \
  } while (0)
