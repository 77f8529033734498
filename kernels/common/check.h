// Error types thrown inside the kernels library; runtime/capi/psd_capi.cpp maps each one to a
// psd_status_t (see PSD_CAPI_GUARD there). Kernels never print.
#pragma once

#include <stdexcept>
#include <string>

namespace psd {

struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct NullPointer : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct ShapeMismatch : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct WorkspaceTooSmall : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct NotBuiltWithCuda : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct CudaError : std::runtime_error {
  CudaError(const std::string& what, int code) : std::runtime_error(what), code(code) {}
  int code;
};

}  // namespace psd

#define PSD_REQUIRE(cond, Type, msg)                  \
  do {                                                \
    if (!(cond)) throw ::psd::Type(std::string(msg)); \
  } while (0)

#define PSD_REQUIRE_PTR(p) PSD_REQUIRE((p) != nullptr, NullPointer, "null pointer: " #p)

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

// Dispatch helper for the *.cpp files (compiled by g++ in both libraries): in a CPU-only build a
// CUDA request throws NotBuiltWithCuda instead of needing an #ifdef at every call site.
#if defined(PSD_WITH_CUDA)
#define PSD_CUDA_CALL(fn, ...) fn(__VA_ARGS__)
#else
#define PSD_CUDA_CALL(fn, ...)                                                             \
  throw ::psd::NotBuiltWithCuda(                                                           \
      "this library was built without CUDA; rebuild with nvcc present or PSD_FORCE_CUDA=1")
#endif
