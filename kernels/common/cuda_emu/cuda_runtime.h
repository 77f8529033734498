// The emulated CUDA runtime (psd_cuda_emu.h): what `#include <cuda_runtime.h>` finds in an
// emulated build, where kernels/common/cuda_emu is on the include path instead of the toolkit.
#pragma once

#if defined(__CUDACC__)
#include "psd_cuda_emu.h"
#else
#include "cuda_runtime_api.h"
#endif
