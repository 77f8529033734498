// Bump allocator over a caller-provided workspace. The same plan runs twice: once with
// base == nullptr to compute the size (psd_*_workspace_size), once for real. No allocation
// ever happens inside a kernel call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "check.h"

namespace psd {

class Workspace {
 public:
  // The base is aligned up to 256 bytes here, so the size query reserves 256 bytes of slack.
  Workspace(void* base, size_t bytes) {
    if (base) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(base);
      const uintptr_t pad = (256 - (a % 256)) % 256;
      base_ = static_cast<char*>(base) + pad;
      cap_ = bytes > pad ? bytes - pad : 0;
    }
  }

  template <typename T>
  T* Take(int64_t count) {
    const size_t align = 256;
    used_ = (used_ + align - 1) / align * align;
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += sizeof(T) * static_cast<size_t>(count > 0 ? count : 0);
    if (base_ && used_ > cap_)
      throw WorkspaceTooSmall("workspace too small: need at least " + std::to_string(used_) +
                              " bytes, got " + std::to_string(cap_) +
                              "; size it with the matching *_workspace_size call");
    return p;
  }
  size_t used() const { return used_ + 256; }  // + slack for the caller's base alignment
  bool dry() const { return base_ == nullptr; }

 private:
  char* base_ = nullptr;
  size_t cap_ = 0;
  size_t used_ = 0;
};

}  // namespace psd
