// Launch-error reporting of ParallelFor<kCuda> (parallel_for.h): one definition for every
// kernel family.
#include <cstring>
#include <string>

#include "parallel_for.h"

namespace psd {

namespace {
// Errors a launch itself produces (its configuration, its image, its stream); anything else
// that cudaGetLastError returns right after a launch is a sticky fault of asynchronous work.
bool IsLaunchError(int e) {
  switch (e) {
    case 1:    // cudaErrorInvalidValue (shared memory, arguments)
    case 9:    // cudaErrorInvalidConfiguration (block or grid size)
    case 98:   // cudaErrorInvalidDeviceFunction
    case 200:  // cudaErrorInvalidKernelImage
    case 209:  // cudaErrorNoKernelImageForDevice (the library lacks this GPU's architecture)
    case 218:  // cudaErrorInvalidPtx
    case 400:  // cudaErrorInvalidResourceHandle (a stream of another device, a destroyed stream)
    case 701:  // cudaErrorLaunchOutOfResources
      return true;
    default:
      return false;
  }
}
}  // namespace

void ThrowLaunchError(cudaError_t e, const LaunchSite& site) {
  const char* slash = site.file ? std::strrchr(site.file, '/') : nullptr;
  const std::string where = std::string(site.function ? site.function : "?") + " (" +
                            (slash ? slash + 1 : (site.file ? site.file : "?")) + ":" +
                            std::to_string(site.line) + ")";
  const std::string what = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  if (IsLaunchError(static_cast<int>(e))) {
    std::string fix;
    if (static_cast<int>(e) == 209 || static_cast<int>(e) == 98)
      fix = "; rebuild the library for this GPU (`python build.py --cuda-archs native`)";
    if (static_cast<int>(e) == 400)
      fix = "; the stream belongs to another device or was destroyed: call on the device that created it";
    throw CudaError("CUDA kernel launch in " + where + " failed: " + what + fix, static_cast<int>(e));
  }
  // Checked right after the launch: the faulting work may be this kernel (a tiny grid can run and
  // fault before the check) or anything enqueued before it, so the message blames neither.
  throw CudaError("CUDA reported a sticky device fault of asynchronous work (" + what +
                      ") at the launch of the kernel in " + where +
                      ": it comes from this kernel or from work enqueued before it (compute-sanitizer "
                      "--tool memcheck names the faulting kernel). A sticky fault leaves the CUDA context "
                      "unusable: restart the process",
                  static_cast<int>(e));
}

}  // namespace psd
