// The vector ISA the CPU paths may use: the widest the CPU supports (x86-64: AVX-512F, AVX2 with
// FMA, or the baseline SSE2; other targets: the baseline, e.g. NEON), capped by the environment variable
// PSD_MAX_CPU_ISA = baseline | avx2 | avx512 (read once per process; like oneDNN's
// ONEDNN_MAX_CPU_ISA: for testing every variant on one machine, or to avoid AVX-512's clock
// penalty next to other work). Kernels with ISA variants compute the same values in every one.
#pragma once

#include <cstdlib>
#include <cstring>

namespace psd {
namespace kernels {

enum class CpuIsa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline CpuIsa DetectCpuIsa() {
  CpuIsa isa = CpuIsa::kBaseline;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx512f")) isa = CpuIsa::kAvx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = CpuIsa::kAvx2;
#endif
  CpuIsa cap = CpuIsa::kAvx512;
  if (const char* e = std::getenv("PSD_MAX_CPU_ISA")) {
    if (std::strcmp(e, "baseline") == 0) cap = CpuIsa::kBaseline;
    else if (std::strcmp(e, "avx2") == 0) cap = CpuIsa::kAvx2;
  }
  return static_cast<int>(isa) < static_cast<int>(cap) ? isa : cap;
}

// DetectCpuIsa, once per process.
inline CpuIsa MaxCpuIsa() {
  static const CpuIsa isa = DetectCpuIsa();
  return isa;
}

}  // namespace kernels
}  // namespace psd
