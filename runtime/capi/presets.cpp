// The dataset presets of psdrt.runtime.presets, for C callers (psd_preset_get) and sessions.
// tests/capi/test_session_api.py checks this table against the Python one entry by entry.
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
constexpr int32_t PIN = PSD_CAMERA_PINHOLE, EQ = PSD_CAMERA_EQUIRECT, MEI = PSD_CAMERA_MEI;

// name, min_depth, max_depth, k, rate, candidates, mode, post_iters, camera (presets.py PRESETS)
constexpr Row kRows[] = {
    {"NYUv2", 0.1, 10.0, 1, 1.0, 0, M32, 0, PIN},
    {"KITTI", 0.5, 90.0, 1, 1.0, 0, M32, 0, PIN},
    {"HYPERSIM", 0.1, 10.0, 1, 1.0, 0, M32, 0, PIN},
    {"DIODEi", 0.1, 100.0, 1, 1.0, 0, M32, 0, PIN},
    {"DIODEo", 1.0, 250.0, 1, 1.0, 0, M32, 0, PIN},
    {"SCANNET", 0.1, 10.0, 1, 1.0, 0, M32, 0, PIN},
    {"MIDDLEBURY", 0.1, 20.0, 1, 1.0, 0, M32, 0, PIN},
    {"ETH3D", 0.5, 10.0, 1, 1.0, 0, M32, 0, PIN},
    {"VOID1500", 0.1, 10.0, 1, 1.0, 0, M32, 1, PIN},
    {"SUNRGBD", 0.1, 40.0, 1, 1.0, 0, M32, 6, PIN},
    {"DrivingStereo", 1.0, 130.0, 1, 1.0, 0, M32, 6, PIN},
    {"ARGOVERSE", 1.0, 200.0, 1, 0.3, 8000, M32, 0, PIN},
    {"VKITTI2", 0.5, 120.0, 3, 1.0, 0, MP, 8, PIN},
    {"DIMLi", 0.5, 8.0, 3, 0.5, 0, M32, 6, PIN},
    {"Cityscape", 1.0, 250.0, 3, 0.5, 0, M32, 6, PIN},
    {"TOFDC", 0.1, 6.0, 3, 0.5, 0, M32, 1, PIN},
    {"HAMMER", 0.1, 10.0, 3, 0.5, 0, M32, 6, PIN},
    {"Stanford", 0.1, 10.0, 3, 0.5, 0, M32, -1, EQ},
    {"KITTI360", 0.1, 80.0, 3, 0.5, 0, M32, -1, MEI},
    {"NK", 0.1, 90.0, 1, 1.0, 0, M32, -1, PIN},
};
// DEFAULT_PRESET: what the official code does for an unknown dataset
constexpr Row kDefault = {"default", 0.1, 10.0, 3, 0.5, 0, M32, -1, PIN};

struct Alias {
  const char* alias;
  const char* name;
};
constexpr Alias kAliases[] = {
    {"nyu", "NYUv2"}, {"nyuv2", "NYUv2"}, {"kitti", "KITTI"}, {"kitti_dc", "KITTI"},
    {"middlebury", "MIDDLEBURY"}, {"void", "VOID1500"}, {"hypersim", "HYPERSIM"},
    {"diode_in", "DIODEi"}, {"diode-in", "DIODEi"}, {"diode_out", "DIODEo"}, {"diode-out", "DIODEo"},
    {"sunrgbd", "SUNRGBD"}, {"sun_rgbd", "SUNRGBD"}, {"scannet", "SCANNET"}, {"eth3d", "ETH3D"},
    {"drivingstereo", "DrivingStereo"}, {"argoverse", "ARGOVERSE"}, {"vkitti2", "VKITTI2"},
    {"diml", "DIMLi"}, {"cityscapes", "Cityscape"}, {"tofdc", "TOFDC"}, {"stanford", "Stanford"},
    {"kitti360", "KITTI360"}, {"kitti-360", "KITTI360"},
};

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
