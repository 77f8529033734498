// The dataset presets of psdrt.runtime.presets, for C callers (psd_preset_get) and sessions. The
// rows are generated from the Python table (presets_table.h, psdrt.runtime.presets.c_table()).
#include <cctype>
#include <cstring>
#include <string>

#include "session_internal.h"

namespace psd {
namespace capi {
namespace {

struct Row {
  const char* name;
  double lo, hi;
  int32_t k;
  double rate;
  int64_t candidates;
  int32_t mode;  // psd_mode_t
  int32_t post_iters;
  int32_t camera;  // psd_camera_t
};

constexpr int32_t M32 = PSD_MODE_3D_2D, MP = PSD_MODE_3D_PLUS_2D;
[[maybe_unused]] constexpr int32_t M23 = PSD_MODE_2D_3D;  // no official preset uses it today
constexpr int32_t PIN = PSD_CAMERA_PINHOLE, EQ = PSD_CAMERA_EQUIRECT, MEI = PSD_CAMERA_MEI;

struct Alias {
  const char* alias;
  const char* name;
};

// kRows, kDefault, kAliases: generated from psdrt.runtime.presets (the one definition)
#include "presets_table.h"

void Fill(const Row& r, psd_preset* out) {
  out->mode = r.mode;
  out->camera = r.camera;
  out->k = r.k;
  out->rate = r.rate;
  out->candidates = r.candidates;
  out->post_iters = r.post_iters;
  out->iters_quarter = 3;
  out->iters_full = 3;
  out->reserved = 0;
  out->min_depth = r.lo;
  out->max_depth = r.hi;
  std::memset(out->name, 0, sizeof(out->name));
  std::strncpy(out->name, r.name, sizeof(out->name) - 1);
}

std::string Lower(const std::string& s) {
  std::string o(s);
  for (char& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

}  // namespace

bool LookupPreset(const std::string& name, psd_preset* out) {
  for (const Row& r : kRows)
    if (name == r.name) return Fill(r, out), true;
  const std::string low = Lower(name);
  for (const Alias& a : kAliases)
    if (low == a.alias)
      for (const Row& r : kRows)
        if (std::strcmp(r.name, a.name) == 0) return Fill(r, out), true;
  if (low == "default") return Fill(kDefault, out), true;
  return false;
}

std::string KnownPresets() {
  std::string s;
  for (const Row& r : kRows) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s + ", or 'default'";
}

}  // namespace capi
}  // namespace psd
