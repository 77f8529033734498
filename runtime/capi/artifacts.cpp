// manifest.json of a deployable directory (build.py::build_artifacts), read and checked in C++
// with the same rules and the same fixes as psdrt.runtime.pipeline.Pipeline.from_artifacts.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <string>

#include "json.h"
#include "session_internal.h"
#include "sha256.h"

namespace psd {
namespace capi {
namespace {

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool ReadText(const std::string& path, std::string* out, std::string* err) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    *err = "cannot open";
    return false;
  }
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    out->append(buf, n);
    if (out->size() > (64u << 20)) {
      std::fclose(f);
      *err = "larger than 64 MiB";
      return false;
    }
  }
  const bool bad = std::ferror(f) != 0;
  std::fclose(f);
  if (bad) *err = "read error";
  return !bad;
}

// Python's str() of a JSON value, for messages that quote the manifest.
std::string Repr(const Json* v) {
  if (!v || v->is_null()) return "None";
  if (v->is_string()) return "'" + v->str() + "'";
  if (v->is_bool()) return v->boolean() ? "True" : "False";
  if (v->is_number()) {
    const double d = v->number();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15)
      return std::to_string(static_cast<long long>(d));
    return std::to_string(d);
  }
  return v->is_array() ? "[...]" : "{...}";
}

int64_t AsInt(const Json* v, const char* what) {
  // Python: int(x) of a number (truncates) or of a numeric string
  if (v && v->is_number() && std::isfinite(v->number())) return static_cast<int64_t>(v->number());
  if (v && v->is_string()) {
    char* end = nullptr;
    const long long x = std::strtoll(v->str().c_str(), &end, 10);
    if (end && *end == '\0' && !v->str().empty()) return x;
  }
  throw std::invalid_argument(std::string(what) + " is not an integer");
}

}  // namespace

ArtifactSelection ReadArtifacts(const std::string& dir, const std::string& precision,
                                const std::string& backend, const std::string& mode_override,
                                bool check_files) {
  ArtifactSelection sel;
  sel.root = dir;
  const std::string mpath = Join(dir, "manifest.json");
  std::string rebuild = "rebuild it with `psdrt build --checkpoint CKPT --out " + dir + "`";
  if (!IsFile(mpath))
    Throw(PSD_E_ARTIFACT, dir + " has no manifest.json (not a psdrt build directory); " + rebuild);
  std::string text, err;
  if (!ReadText(mpath, &text, &err))
    Throw(PSD_E_ARTIFACT, mpath + " cannot be read (" + err + "); " + rebuild);
  Json m;
  if (!Json::Parse(text, &m, &err))
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (JSON: " + err + "); " + rebuild);
  const Json* arts = nullptr;
  try {
    if (!m.is_object()) throw std::invalid_argument("the document is not an object");
    const Json* size = m.Get("size");
    if (!size || !(size->is_array() || size->is_string()) ||
        (size->is_array() && size->items().size() < 2))
      throw std::invalid_argument("'size' is missing or not [H, W]");
    if (size->is_string()) throw std::invalid_argument("'size' is not [H, W]");
    sel.height = AsInt(&size->items()[0], "size[0]");
    sel.width = AsInt(&size->items()[1], "size[1]");
    const Json* model = m.Get("model");
    const Json* mode = model ? model->Get("mode") : nullptr;
    if (!mode) throw std::invalid_argument("'model.mode' is missing");
    arts = m.Get("artifacts");
    if (!arts || !arts->is_array()) throw std::invalid_argument("'artifacts' is missing or not a list");
    if (const Json* fl = m.Get("fm_lower")) sel.fm_lower = AsInt(fl, "fm_lower");
    const Json* format = m.Get("format");
    if (!(format && format->is_number() && format->number() == 1.0))
      Throw(PSD_E_ARTIFACT, mpath + " has format " + Repr(format) + ", this psdrt reads 1; " + rebuild);
    if (!mode->is_string() || (mode->str() != "psd" && mode->str() != "propagate"))
      Throw(PSD_E_ARTIFACT, mpath + " has model mode " + Repr(mode) +
                                ", this psdrt runs 'psd' and 'propagate'; " + rebuild);
    sel.mode = mode->str();
    const Json* preset = m.Get("preset");
    sel.preset = preset && preset->is_string() ? preset->str() : "NYUv2";
  } catch (const std::invalid_argument& e) {
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (" + e.what() + "); " + rebuild);
  }
  if (sel.height < 1 || sel.width < 1 || sel.height > (1 << 16) || sel.width > (1 << 16))
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (size " + std::to_string(sel.height) + "x" +
                              std::to_string(sel.width) + " out of range); " + rebuild);
  if (sel.fm_lower < 1 || sel.fm_lower > (1 << 16))
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (fm_lower " + std::to_string(sel.fm_lower) +
                              " out of range); " + rebuild);
  if (!mode_override.empty()) sel.mode = mode_override;
  rebuild = "rebuild it with `psdrt build --checkpoint CKPT --size " + std::to_string(sel.height) +
            "x" + std::to_string(sel.width) + " --precision " + precision + " --out " + dir +
            " --force`";
  const char* parts[] = {"encoder", "head"};
  const int nparts = sel.mode == "psd" ? 2 : sel.mode == "guided" ? 0 : 1;  // guided: no network
  for (int pi = 0; pi < nparts; ++pi) {
    const std::string part = parts[pi];
    const Json* found = nullptr;
    std::set<std::string> have;
    for (const Json& a : arts->items()) {
      if (!a.is_object()) continue;
      const Json* p = a.Get("part");
      if (!(p && p->is_string() && p->str() == part)) continue;
      const Json* pr = a.Get("precision");
      have.insert(pr && pr->is_string() ? pr->str() : Repr(pr));
      const Json* be = a.Get("backend");
      const std::string b = be ? (be->is_string() ? be->str() : Repr(be)) : "onnxruntime";
      if (!found && pr && pr->is_string() && pr->str() == precision && b == backend) found = &a;
    }
    if (!found) {
      std::string list;
      for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
      Throw(PSD_E_ARTIFACT, dir + " has no " + precision + " " + part +
                                (backend != "onnxruntime" ? " for " + backend : "") +
                                " (built: " + (list.empty() ? "none" : list) + "); " + rebuild);
    }
    const Json* gate = found->Get("gate");
    const Json* passed = gate ? gate->Get("passed") : nullptr;
    const Json* usable = found->Get("usable");
    if (!(passed && passed->Truthy()) || (usable && !usable->Truthy())) {
      const Json* why = gate ? gate->Get("why") : nullptr;
      const std::string w = why && why->Truthy() ? (why->is_string() ? why->str() : Repr(why))
                                                 : "no gate result";
      const Json* name = found->Get("name");
      Throw(PSD_E_ARTIFACT, (name && name->is_string() ? name->str() : Repr(name)) +
                                " failed the correctness gate (" +
                                w + ") and must not be deployed; use another precision or " + rebuild);
    }
    const Json* file = found->Get("file");
    const std::string fname = file && file->is_string() ? file->str() : Repr(file);
    const std::string path = Join(dir, fname);
    if (!IsFile(path)) Throw(PSD_E_ARTIFACT, path + " listed in " + mpath + " is missing; " + rebuild);
    if (check_files) {
      std::string digest, herr;
      if (!Sha256File(path, &digest, &herr)) Throw(PSD_E_ARTIFACT, herr + "; " + rebuild);
      const Json* want = found->Get("sha256");
      const std::string w = want && want->is_string() ? want->str() : Repr(want);
      if (digest != w)
        Throw(PSD_E_ARTIFACT, path + ": SHA-256 " + digest.substr(0, 16) + "... differs from the manifest's " +
                                  w.substr(0, 16) + "... (modified or truncated copy); " + rebuild);
    }
    (pi == 0 ? sel.encoder_path : sel.head_path) = path;
  }
  return sel;
}

}  // namespace capi
}  // namespace psd
