// manifest.json of a deployable directory (build.py::build_artifacts), read and checked in C++
// with the same rules and the same fixes as psdrt.runtime.pipeline.Pipeline.from_artifacts.
#include <limits.h>
#include <stdlib.h>
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

// A file entry of the manifest as a path inside the directory, or an error: relative, no ".."
// component, and (symlinks resolved) still inside the directory.
std::string ContainedPath(const std::string& dir, const std::string& dir_real, const std::string& fname,
                          const std::string& mpath, const std::string& rebuild) {
  const std::string why = "psdrt reads only files inside the build directory";
  if (fname.empty() || fname[0] == '/')
    Throw(PSD_E_ARTIFACT, mpath + " lists the file '" + fname + "', which is " +
                              (fname.empty() ? "empty" : "an absolute path") + "; " + why + ": " + rebuild);
  size_t start = 0;
  while (start <= fname.size()) {
    const size_t end = fname.find('/', start);
    const std::string comp = fname.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (comp == "..")
      Throw(PSD_E_ARTIFACT, mpath + " lists the file '" + fname + "', which leaves the directory (..); " + why +
                                ": " + rebuild);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  const std::string path = Join(dir, fname);
  if (!IsFile(path)) Throw(PSD_E_ARTIFACT, path + " listed in " + mpath + " is missing; " + rebuild);
  char buf[PATH_MAX];
  if (!::realpath(path.c_str(), buf))
    Throw(PSD_E_ARTIFACT, path + " listed in " + mpath + " cannot be resolved; " + rebuild);
  const std::string real = buf;
  if (real.compare(0, dir_real.size() + 1, dir_real + "/") != 0)
    Throw(PSD_E_ARTIFACT, path + " listed in " + mpath + " is a link to " + real + ", outside " + dir + "; " + why +
                              " (copy the file in instead of linking it): " + rebuild);
  return path;
}

}  // namespace

ArtifactSelection ReadArtifacts(const std::string& dir, const ArtifactRequest& req) {
  ArtifactSelection sel;
  sel.root = dir;
  const std::string mpath = Join(dir, "manifest.json");
  std::string rebuild = "rebuild it with `psdrt build --checkpoint CKPT --out " + dir + "`";
  if (!IsFile(mpath))
    Throw(PSD_E_ARTIFACT, dir + " has no manifest.json (not a psdrt build directory); " + rebuild);
  char rbuf[PATH_MAX];
  if (!::realpath(dir.c_str(), rbuf)) Throw(PSD_E_ARTIFACT, dir + " cannot be resolved; " + rebuild);
  const std::string dir_real = rbuf;
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
    if (!size || !size->is_array() || size->items().size() != 2)
      throw std::invalid_argument("'size' is missing or not [H, W]");
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
    if (preset && !preset->is_string()) throw std::invalid_argument("'preset' is not a string");
    sel.preset = preset ? preset->str() : "NYUv2";
    const Json* pre = m.Get("preprocess");
    if (!pre)
      Throw(PSD_E_ARTIFACT, mpath + " records no preprocessing: it was built by psdrt 0.1 with the bicubic input, "
                                "which this psdrt no longer assumes; rebuild it with `psdrt build --checkpoint CKPT --out " +
                                dir + " --force` (add --preprocess bicubic to keep the old input)");
    if (!pre->is_string() || (pre->str() != "official" && pre->str() != "bicubic"))
      Throw(PSD_E_ARTIFACT, mpath + " has preprocessing " + Repr(pre) + ", this psdrt knows 'official' and "
                                "'bicubic'; " + rebuild);
    sel.preprocess = pre->str();
  } catch (const std::invalid_argument& e) {
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (" + e.what() + "); " + rebuild);
  }
  // the same size rule as every frame of this mode (psd_check_frame_size)
  const int32_t size_mode = sel.mode == "psd" ? PSD_SESSION_MODE_PSD : PSD_SESSION_MODE_PROPAGATE;
  if (psd_check_frame_size(size_mode, sel.height, sel.width) != PSD_OK)
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (working size: " + psd_last_error() + "); " + rebuild);
  if (sel.fm_lower < 1 || sel.fm_lower > 4096)
    Throw(PSD_E_ARTIFACT, mpath + " is corrupt (fm_lower " + std::to_string(sel.fm_lower) +
                              " is outside 1..4096); " + rebuild);
  // a psd directory runs in mode propagate (the encoder alone); nothing else can be asked of it
  if (!req.mode_override.empty() && req.mode_override != sel.mode && req.mode_override != "guided" &&
      !(req.mode_override == "propagate" && sel.mode == "psd"))
    Throw(PSD_E_ARTIFACT, "mode " + req.mode_override + ": " + dir + " was built for mode " + sel.mode +
                              " (its manifest); drop the mode to use it, or build a directory from a checkpoint "
                              "that has the parts of mode " + req.mode_override +
                              " (psd needs a PSD checkpoint with the correction head)");
  if (!req.mode_override.empty()) sel.mode = req.mode_override;
  const std::string precision = req.encoder_precision == req.head_precision || sel.mode != "psd"
                                    ? req.encoder_precision
                                    : req.encoder_precision + "+" + req.head_precision;
  rebuild = "rebuild it with `psdrt build --checkpoint CKPT --size " + std::to_string(sel.height) +
            "x" + std::to_string(sel.width) + " --precision " + precision + " --out " + dir +
            " --force`";
  const char* parts[] = {"encoder", "head"};
  const int nparts = sel.mode == "psd" ? 2 : sel.mode == "guided" ? 0 : 1;  // guided: no network
  for (int pi = 0; pi < nparts; ++pi) {
    const std::string part = parts[pi];
    const std::string& want_precision = pi == 0 ? req.encoder_precision : req.head_precision;
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
      if (!found && pr && pr->is_string() && pr->str() == want_precision && b == req.backend) found = &a;
    }
    if (!found) {
      std::string list;
      for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
      Throw(PSD_E_ARTIFACT, dir + " has no " + want_precision + " " + part +
                                (req.backend != "onnxruntime" ? " for " + req.backend : "") +
                                " (built: " + (list.empty() ? "none" : list) + "); " + rebuild);
    }
    const Json* gate = found->Get("gate");
    const Json* passed = gate ? gate->Get("passed") : nullptr;
    const Json* usable = found->Get("usable");
    const Json* name = found->Get("name");
    const std::string nm = name && name->is_string() ? name->str() : Repr(name);
    const Json* file = found->Get("file");
    if (!(passed && passed->Truthy()) || (usable && !usable->Truthy())) {
      const Json* why = gate ? gate->Get("why") : nullptr;
      const std::string w = why && why->Truthy() ? (why->is_string() ? why->str() : Repr(why))
                                                 : "no gate result";
      // an artefact that failed to build has no file at all: never usable, not even for latency
      if (!req.allow_ungated || !(file && file->is_string()))
        Throw(PSD_E_ARTIFACT, nm + " failed the correctness gate (" + w +
                                  ") and must not be deployed; use another precision or " + rebuild +
                                  (req.allow_ungated ? "" : " (or time it without deploying: a latency-only run)"));
      sel.gate_approved = false;
      sel.gate_failures += (sel.gate_failures.empty() ? "" : "; ") + nm + ": " + w;
    }
    if (!(file && file->is_string()))
      Throw(PSD_E_ARTIFACT, mpath + " is corrupt (" + nm + " has no file name); " + rebuild);
    const std::string path = ContainedPath(dir, dir_real, file->str(), mpath, rebuild);
    if (req.check_files) {
      std::string digest, herr;
      if (!Sha256File(path, &digest, &herr)) Throw(PSD_E_ARTIFACT, herr + "; " + rebuild);
      const Json* want = found->Get("sha256");
      const std::string w = want && want->is_string() ? want->str() : Repr(want);
      if (digest != w)
        Throw(PSD_E_ARTIFACT, path + ": SHA-256 " + digest.substr(0, 16) + "... differs from the manifest's " +
                                  w.substr(0, 16) + "... (modified or truncated copy); " + rebuild);
    }
    (pi == 0 ? sel.encoder_path : sel.head_path) = path;
    (pi == 0 ? sel.encoder_precision : sel.head_precision) = want_precision;
  }
  return sel;
}

}  // namespace capi
}  // namespace psd
