// SHA-256 (FIPS 180-4) of byte streams and files, for checking artefact hashes in C++ exactly as
// psdrt.runtime.manifest.sha256_file does in Python. Internal to the library (not in psd.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace psd {
namespace capi {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t n);
  // Finishes the digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t bytes_ = 0;
};

// Hex SHA-256 of a file's bytes; false (and `error` set) when it cannot be read.
bool Sha256File(const std::string& path, std::string* hex, std::string* error);

}  // namespace capi
}  // namespace psd
