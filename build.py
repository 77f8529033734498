"""Build the psdrt kernel libraries (stdlib only): ``python build.py`` or ``psdrt build``.

Outputs (git-ignored) in ``kernels/_build/`` unless ``--build-dir`` says otherwise:

* ``libpsd_kernels_cpu.so``       always: g++, OpenMP, portable x86-64/aarch64 baseline;
* ``libpsd_kernels_cpu_asan.so``  with ``--sanitize``: the CPU library under ASan + UBSan;
* ``libpsd_kernels_cuda.so``      when ``nvcc`` is found (or ``PSD_FORCE_CUDA=1``), unless
  ``--no-cuda``: fatbin sm_75/80/86/87/89/90 + compute_90 PTX, cudart linked statically, so it
  loads without a driver. On a Jetson (``/etc/nv_tegra_release``) the local nvcc builds for the
  Jetson GPUs instead (``JETSON_CUDA_ARCHS``: sm_72 + sm_87 with CUDA 11.x, sm_87 with CUDA 12,
  sm_87 + sm_110 (Thor) with CUDA 13); ``PSD_CUDA_ARCHS=75,86`` or ``--cuda-archs`` overrides
  (``native``: this machine's GPUs only);
* ``libpsd_kernels_cuda_emu.so``  with ``--cuda-emulation``: the CUDA library built by the host
  compiler against the emulated CUDA runtime (``kernels/common/cuda_emu``), whose CUDA paths run
  on the CPU; a test fixture (needs no CUDA toolkit), loaded only by name.

Both libraries export the same C ABI (``runtime/capi/include/psd/psd.h``); the CUDA one also
contains the CPU kernels. ``psdrt.runtime._capi`` finds them (search order in its docstring).

The session API (``psd_session_*``: the whole pipeline in C, ``runtime/capi/session.cpp`` and
friends) is compiled into the same libraries unless ``--no-session``. It loads ONNX Runtime with
dlopen at run time, so building it needs only ONNX Runtime's C headers (API version 21):
``--ort-include DIR`` / ``$ORT_INCLUDE_DIR``, else a cached or system copy, else Debian trixie's
``libonnxruntime-dev`` fetched with a private apt configuration (the system is not changed) into
``<build-dir>/third_party/onnxruntime``. Without headers the session is still built (guided mode
works) and the ONNX Runtime modes report how to fix it. The onnxruntime Python wheel's
``libonnxruntime.so`` found at build time is recorded as the library's default ONNX Runtime.
``--install PREFIX`` installs ``lib/libpsd.so``, ``include/psd/psd.h``, ``lib/pkgconfig/psd.pc``
and ``lib/cmake/psd/psdConfig.cmake`` (imported target ``psd::psd``).

Compile flags, and why: ``-O3 -fopenmp`` with the default portable ISA (no ``-march=native``,
which would make the binary crash on older CPUs of the same architecture). The hot loops are
written for auto-vectorisation (SSE2 on x86-64, NEON on aarch64), with ``#pragma omp simd`` where
a reduction must be allowed to reassociate; ``-ffast-math`` is never used (the kernels rely on
IEEE NaN/Inf semantics and on PyTorch-like rounding), and ``-ffp-contract=off`` keeps ``a * b + c``
unfused where the ISA has FMA (AArch64, the run-time chosen AVX2 variants), so that every CPU
computes the same values. ``--native`` opts into ``-march=native``
for a local, non-distributable build.

Deployable directories (``python build.py --checkpoint CKPT --size HxW --out DIR`` or
``psdrt build ...``): :func:`build_artifacts` goes from a checkpoint to a directory holding the ONNX
models of every requested precision, TensorRT engines where TensorRT imports, the kernel library
and ``manifest.json`` (checksums, gate results), which ``Pipeline.from_artifacts(DIR)`` opens.
Heavy dependencies (torch, onnx, onnxruntime, TensorRT) are imported only when that step runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"
CAPI = ROOT / "runtime" / "capi"
DEFAULT_BUILD_DIR = KERNELS / "_build"

CPU_LIB = "libpsd_kernels_cpu.so"
CPU_ASAN_LIB = "libpsd_kernels_cpu_asan.so"
CUDA_LIB = "libpsd_kernels_cuda.so"
CUDA_EMU_LIB = "libpsd_kernels_cuda_emu.so"
CUDA_EMU_DIR = KERNELS / "common" / "cuda_emu"

#: psd.h's PSD_ABI_VERSION: the major version of the installed libpsd.so (its soname)
ABI_MAJOR = 1
SONAME = f"libpsd.so.{ABI_MAJOR}"
#: ONNX Runtime C API version the session code is written against (headers of ORT 1.21)
ORT_API_VERSION = 21
#: generated in the build folder: the session's compile-time configuration
BUILD_CONFIG_H = "psd_build_config.h"

#: CI/desktop fatbin (CUDA 13 cannot target sm_72; JetPack builds locally, see module docstring)
DEFAULT_CUDA_ARCHS = ("75", "80", "86", "87", "89", "90")

CXX_STD = ["-std=c++17"]
WARN = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unknown-pragmas"]


def _sources(pattern: str) -> list[Path]:
    return sorted(KERNELS.glob(pattern))


def _host_sources() -> list[Path]:
    """Dispatch/validation .cpp files of every family plus the C ABI (host compiler, both libs)."""
    srcs = [p for p in _sources("*/*.cpp") if not p.name.endswith("_cpu.cpp")]
    return srcs + [CAPI / "psd_capi.cpp"]


def _session_sources() -> list[Path]:
    """The session API (runtime/capi/*.cpp other than psd_capi.cpp; host compiler, both libs)."""
    return sorted(p for p in CAPI.glob("*.cpp") if p.name != "psd_capi.cpp")


def _headers() -> list[Path]:
    kernels = [p for p in _sources("**/*.h") if "_build" not in p.relative_to(KERNELS).parts]
    return kernels + sorted(CAPI.glob("*.h")) + [CAPI / "include" / "psd" / "psd.h"]


def _newest(paths) -> float:
    return max((p.stat().st_mtime for p in paths), default=0.0)


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build step failed ({proc.returncode}):\n{' '.join(map(str, cmd))}\n"
                           f"{proc.stdout}{proc.stderr}")


def _compile_all(jobs: list[tuple], obj_dir: Path, n_jobs: int, verbose: bool, force: bool) -> list[Path]:
    """Compile (source, command-prefix[, extra dependencies]) jobs into obj_dir, skipping
    up-to-date objects (newer than the source, every header, and the job's extra dependencies, and
    compiled by the same command: recorded next to the object in ``<object>.cmd``)."""
    obj_dir.mkdir(parents=True, exist_ok=True)
    header_time = _newest(_headers())
    objs, todo = [], []
    for src, prefix, *deps in jobs:
        obj = obj_dir / (src.parent.name + "__" + src.name + ".o")
        objs.append(obj)
        cmd = prefix + ["-c", str(src), "-o", str(obj)]
        record = obj.with_name(obj.name + ".cmd")
        newest = max(src.stat().st_mtime, header_time, _newest([p for p in (deps[0] if deps else ()) if p.exists()]))
        same_cmd = record.exists() and record.read_text() == "\0".join(map(str, cmd))
        if force or not obj.exists() or obj.stat().st_mtime < newest or not same_cmd:
            todo.append(cmd)

    def compile_one(cmd):
        _run(cmd, verbose)
        Path(str(cmd[-1]) + ".cmd").write_text("\0".join(map(str, cmd)))

    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        for fut in [pool.submit(compile_one, cmd) for cmd in todo]:
            fut.result()
    return objs


def _link(cmd: list, out: Path, objs: list[Path], verbose: bool, force: bool = False,
          stamp_dir: Optional[Path] = None) -> Path:
    """Link ``objs`` into ``out`` with ``cmd`` (everything but ``-o OUT``), atomically.

    With ``stamp_dir`` (the build folder), skipped when ``out`` is newer than every object and
    was linked by the same command (recorded in ``stamp_dir/<name>.linkcmd``), so an unchanged
    build never touches a library another process may be loading. Otherwise the library is
    written to a temporary file and renamed over ``out``: a process that loads it meanwhile sees
    the old or the new file, never a partial one.
    """
    out = Path(out)
    text = "\0".join(str(c) for c in cmd)
    stamp = Path(stamp_dir) / (out.name + ".linkcmd") if stamp_dir else None
    if (stamp and not force and out.is_file() and stamp.is_file() and stamp.read_text() == text
            and out.stat().st_mtime >= _newest(objs)):
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _run(list(cmd) + ["-o", str(tmp)], verbose)
        os.chmod(tmp, 0o755)
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if stamp:
        stamp.write_text(text)
    return out


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME/bin, PATH, or /usr/local/cuda/bin."""
    cands = []
    if os.environ.get("CUDA_HOME"):
        cands.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        cands.append(Path(found))
    cands.append(Path("/usr/local/cuda/bin/nvcc"))
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def _cuda_home(nvcc: str) -> Path:
    """Toolkit root holding include/cuda_runtime_api.h (nvcc may be a wrapper script)."""
    cands = [Path(os.environ["CUDA_HOME"])] if os.environ.get("CUDA_HOME") else []
    cands += [Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")]
    for c in cands:
        if (c / "include" / "cuda_runtime_api.h").is_file():
            return c
    raise RuntimeError(f"cannot find the CUDA headers next to {nvcc}; set CUDA_HOME")


def _nvcc_major(nvcc: str) -> int:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    for tok in out.replace(",", " ").split():
        if tok.startswith("V") and tok[1:2].isdigit():
            return int(tok[1:].split(".")[0])
    return 0


#: Jetson GPUs a JetPack's nvcc builds for, by nvcc major version: JetPack 5 (CUDA 11.4): Xavier
#: sm_72 and Orin sm_87; JetPack 6 (CUDA 12): Orin; JetPack 7 (CUDA 13): Orin and Thor, which is
#: sm_110 (CUDA 13 has no sm_72)
JETSON_CUDA_ARCHS = {11: ("72", "87"), 12: ("87",), 13: ("87", "110")}


def jetson_cuda_archs(nvcc_major: int) -> tuple[str, ...]:
    """The Jetson architectures for an nvcc major version (newer toolkits: as the newest known)."""
    if nvcc_major <= min(JETSON_CUDA_ARCHS):
        return JETSON_CUDA_ARCHS[min(JETSON_CUDA_ARCHS)]
    return JETSON_CUDA_ARCHS.get(nvcc_major, JETSON_CUDA_ARCHS[max(JETSON_CUDA_ARCHS)])


def default_cuda_archs(nvcc: str) -> tuple[str, ...]:
    env = os.environ.get("PSD_CUDA_ARCHS")
    if env:
        return tuple(a.strip() for a in env.split(",") if a.strip())
    if Path("/etc/nv_tegra_release").exists():  # Jetson: build for the local GPU family
        return jetson_cuda_archs(_nvcc_major(nvcc))
    return DEFAULT_CUDA_ARCHS


def cuda_gencode(archs: Sequence[str]) -> list[str]:
    """nvcc code-generation flags: SASS for every arch plus PTX of the newest; ``("native",)``
    builds for the GPUs of this machine only (``-arch=native``, nvcc >= 11.5, needs a GPU)."""
    if tuple(archs) == ("native",):
        return ["-arch=native"]
    gencode = []
    for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    top = max(archs, key=lambda a: int(a))
    return gencode + ["-gencode", f"arch=compute_{top},code=compute_{top}"]  # PTX for newer GPUs


# ------------------------------------------------------------------------------------------------
# The session API: ONNX Runtime C headers (fetched once when missing) and the build configuration


def _say_build(msg: str) -> None:
    print(f"[build.py] {msg}", file=sys.stderr, flush=True)


def _ort_header_version(include_dir: Path) -> int:
    """ORT_API_VERSION of ``include_dir/onnxruntime_c_api.h`` (0 when absent or unreadable)."""
    h = Path(include_dir) / "onnxruntime_c_api.h"
    try:
        for line in h.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "#define" and parts[1] == "ORT_API_VERSION":
                return int(parts[2])
    except (OSError, ValueError):
        pass
    return 0


def _apt_debian_source() -> Optional[tuple[str, Optional[str]]]:
    """(URI, Signed-By keyring or None) of the system's main Debian archive, from its apt config.

    The mirror is never named here: it is whatever the machine already uses.
    """
    deb822 = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for f in deb822:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.strip().startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            uris = fields.get("uris", "").split()
            types = fields.get("types", "deb").split()
            for uri in uris:
                if "deb" in types and uri.rstrip("/").endswith("/debian"):
                    return uri, fields.get("signed-by") or None
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            tok = line.split("#", 1)[0].split()
            if len(tok) >= 3 and tok[0] == "deb":
                rest = tok[1:]
                keyring = None
                if rest[0].startswith("["):
                    while rest and not rest[0].endswith("]"):
                        if "signed-by=" in rest[0]:
                            keyring = rest[0].split("signed-by=", 1)[1].strip("[]")
                        rest = rest[1:]
                    if rest and "signed-by=" in rest[0]:
                        keyring = rest[0].split("signed-by=", 1)[1].strip("[]")
                    rest = rest[1:]
                if rest and rest[0].rstrip("/").endswith("/debian"):
                    return rest[0], keyring
    return None


ORT_HEADERS_FIX = (
    "to build the ONNX Runtime part of the session API, give build.py ONNX Runtime's C headers "
    f"(API version >= {ORT_API_VERSION}, i.e. ONNX Runtime >= 1.21): `python build.py --ort-include DIR` or "
    "ORT_INCLUDE_DIR=DIR, where DIR holds onnxruntime_c_api.h (e.g. include/ of an onnxruntime release "
    "archive from GitHub, or /usr/include/onnxruntime of Debian trixie's libonnxruntime-dev); "
    "`--no-session` skips the session API"
)


def fetch_ort_headers(dest: Path, verbose: bool = False, timeout: float = 300.0) -> Path:
    """Debian trixie's ``libonnxruntime-dev`` extracted into ``dest``; returns its include folder.

    Uses a private apt configuration (a temporary sources file derived from the system's Debian
    source with the suite replaced by ``trixie``, and temporary lists/cache folders), so the
    system's apt state is not changed. Raises RuntimeError with the reason on any failure.
    """
    import tempfile

    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise RuntimeError("apt-get/dpkg-deb not found (not a Debian-like system)")
    src = _apt_debian_source()
    if src is None:
        raise RuntimeError("no Debian archive in /etc/apt/sources.list(.d) to derive a trixie source from")
    uri, keyring = src
    with tempfile.TemporaryDirectory(prefix="psd_ort_apt_") as tmp:
        t = Path(tmp)
        for d in ("lists/partial", "cache/archives/partial", "etc", "deb"):
            (t / d).mkdir(parents=True, exist_ok=True)
        lines = ["Types: deb", f"URIs: {uri}", "Suites: trixie", "Components: main"]
        if keyring:
            lines.append(f"Signed-By: {keyring}")
        (t / "etc" / "trixie.sources").write_text("\n".join(lines) + "\n")
        opts = ["-o", f"Dir::Etc::SourceList={t / 'etc' / 'trixie.sources'}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={t / 'lists'}", "-o", f"Dir::Cache={t / 'cache'}", "-q"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            opts += ["-o", "APT::Sandbox::User=root"]
        for args in (["update"], ["download", "libonnxruntime-dev"]):
            if verbose:
                print("apt-get " + " ".join(opts + args), flush=True)
            try:
                p = subprocess.run(["apt-get", *opts, *args], cwd=t / "deb", capture_output=True, text=True,
                                   timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"apt-get {args[0]} timed out after {timeout:.0f} s") from None
            if p.returncode != 0:
                tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"apt-get {args[0]} failed ({p.returncode}): " + " | ".join(tail))
        debs = sorted((t / "deb").glob("libonnxruntime-dev_*.deb"))
        if not debs:
            raise RuntimeError("apt-get download libonnxruntime-dev produced no .deb")
        tmp_dest = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp_dest, ignore_errors=True)
        tmp_dest.mkdir(parents=True)
        p = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp_dest)], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x failed: {p.stderr.strip()}")
        (tmp_dest / "SOURCE").write_text(f"{debs[0].name} from the Debian trixie archive (apt-get download)\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp_dest.replace(dest)
    inc = dest / "usr" / "include" / "onnxruntime"
    if _ort_header_version(inc) < ORT_API_VERSION:
        raise RuntimeError(f"the fetched package has no onnxruntime_c_api.h of API version >= {ORT_API_VERSION}")
    return inc


def find_ort_include(build_dir: Path, explicit=None, fetch: bool = True, verbose: bool = False) -> Optional[Path]:
    """Folder holding ``onnxruntime_c_api.h`` (API >= 21), or None (a message says why and how to fix).

    Order: ``explicit`` (``--ort-include``) or ``$ORT_INCLUDE_DIR``; the copy fetched earlier into
    ``<build_dir>/third_party/onnxruntime``; ``/usr/include/onnxruntime`` and
    ``/usr/local/include/onnxruntime``; then a fetch of Debian trixie's ``libonnxruntime-dev``.
    """
    given = explicit or os.environ.get("ORT_INCLUDE_DIR")
    if given:
        d = Path(given)
        v = _ort_header_version(d)
        if v < ORT_API_VERSION:
            raise RuntimeError(f"--ort-include/ORT_INCLUDE_DIR {d}: "
                               + ("no onnxruntime_c_api.h there" if v == 0 else f"ORT_API_VERSION {v} < {ORT_API_VERSION}")
                               + f"; {ORT_HEADERS_FIX}")
        return d
    cache = Path(build_dir) / "third_party" / "onnxruntime"
    for d in (cache / "usr" / "include" / "onnxruntime", Path("/usr/include/onnxruntime"),
              Path("/usr/local/include/onnxruntime")):
        if _ort_header_version(d) >= ORT_API_VERSION:
            return d
    if not fetch:
        return None
    _say_build("ONNX Runtime C headers not found: fetching Debian trixie's libonnxruntime-dev "
               f"(private apt configuration, system unchanged) into {cache}")
    try:
        inc = fetch_ort_headers(cache, verbose)
    except Exception as exc:  # noqa: BLE001 - any failure: build without, say how to fix
        _say_build(f"could not fetch the ONNX Runtime headers ({exc}). Building the kernels and the "
                   f"session API without ONNX Runtime (guided mode only). Fix: {ORT_HEADERS_FIX}")
        return None
    _say_build(f"ONNX Runtime headers (API {_ort_header_version(inc)}) cached in {inc}")
    return inc


def find_ort_library() -> Optional[str]:
    """``libonnxruntime.so*`` of the installed onnxruntime(-gpu) wheel, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        libs = sorted(Path(loc, "capi").glob("libonnxruntime.so*"), key=lambda p: len(p.name), reverse=True)
        for lib in libs:  # the versioned file (libonnxruntime.so.1.x.y) first
            if lib.is_file() and "providers" not in lib.name:
                return str(lib.resolve())
    return None


def _find_tensorrt() -> Optional[tuple[Path, Path]]:
    """(include dir holding NvInfer.h, lib dir holding libnvinfer.so) or None."""
    roots = [Path(os.environ["TENSORRT_HOME"])] if os.environ.get("TENSORRT_HOME") else []
    arch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "")
    incs = [r / "include" for r in roots] + [Path("/usr/include") / arch, Path("/usr/include"),
                                             Path("/usr/local/tensorrt/include")]
    libs = [r / "lib" for r in roots] + [Path("/usr/lib") / arch, Path("/usr/lib"), Path("/usr/local/tensorrt/lib")]
    inc = next((d for d in incs if (d / "NvInfer.h").is_file()), None)
    lib = next((d for d in libs if any(d.glob("libnvinfer.so*"))), None)
    return (inc, lib) if inc and lib else None


@dataclass
class SessionBuild:
    """How the session API is compiled into the libraries (``prepare_session``)."""

    enabled: bool = True
    ort_include: Optional[Path] = None
    ort_library: Optional[str] = None
    config_header: Optional[Path] = None

    def flags(self, build_dir: Path) -> list[str]:
        out = [f"-I{build_dir}"]
        if self.ort_include:
            out += ["-isystem", str(self.ort_include)]
        return out


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare_session(build_dir: Path, enabled: bool = True, ort_include=None, fetch: bool = True,
                    verbose: bool = False) -> SessionBuild:
    """Find the ONNX Runtime headers and library and write ``<build_dir>/psd_build_config.h``.

    The header is rewritten only when its content changes, so unchanged builds stay up to date.
    """
    if not enabled:
        return SessionBuild(enabled=False)
    inc = find_ort_include(build_dir, ort_include, fetch, verbose)
    lib = find_ort_library()
    lines = ["// generated by build.py: the session API's build configuration (do not edit)", "#pragma once",
             f"#define PSD_HAVE_ORT {1 if inc else 0}",
             f"#define PSD_ORT_DEFAULT_LIB {_c_string(lib or '')}"]
    cfg = Path(build_dir) / BUILD_CONFIG_H
    text = "\n".join(lines) + "\n"
    if not cfg.is_file() or cfg.read_text() != text:
        cfg.write_text(text)
    if not lib:
        _say_build("no onnxruntime Python wheel found: the library will look for ONNX Runtime through "
                   "$PSD_ONNXRUNTIME_LIB and dlopen('libonnxruntime.so') at run time")
    return SessionBuild(True, inc, lib, cfg)


def _cpu_flags(sanitize: bool, native: bool) -> list[str]:
    # -ffp-contract=off: a * b + c stays two roundings wherever the ISA has FMA (AArch64, the AVX2
    # variants, --native); the kernels spell out the one fused operation they mean (PSD_FMA_RN)
    flags = CXX_STD + WARN + ["-fPIC", "-fopenmp", "-fvisibility=hidden", "-DPSD_BUILDING_LIBRARY",
                              "-ffp-contract=off", f"-I{CAPI / 'include'}"]
    if sanitize:
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=undefined", "-DPSD_SANITIZE"]
    else:
        # -fno-math-errno: lets sqrtf vectorise (sqrtps); it changes no value, only errno
        flags += ["-O3", "-DNDEBUG", "-fno-math-errno"]
        if native:
            flags.append("-march=native")
    return flags


def build_cpu(build_dir: Path, sanitize: bool = False, native: bool = False, jobs: int = 2,
              verbose: bool = False, force: bool = False, session: Optional[SessionBuild] = None,
              out: Optional[Path] = None, soname: Optional[str] = None) -> Path:
    """Build the CPU library (or its ASan/UBSan variant) and return its path.

    ``out``/``soname``: link to another file with a soname (``install``); the build-tree
    libraries have none, so that programs can link them by path.
    """
    cxx = os.environ.get("CXX", "g++")
    flags = _cpu_flags(sanitize, native)
    srcs = _sources("*/*_cpu.cpp") + _host_sources()
    jobs_list = [(s, [cxx] + flags) for s in srcs]
    if session and session.enabled:  # only the session objects depend on the generated config
        jobs_list += [(s, [cxx] + flags + session.flags(build_dir), [session.config_header])
                      for s in _session_sources()]
    tag = "cpu_asan" if sanitize else ("cpu_native" if native else "cpu")
    objs = _compile_all(jobs_list, build_dir / f"obj_{tag}", jobs, verbose, force)
    out = Path(out) if out else build_dir / (CPU_ASAN_LIB if sanitize else CPU_LIB)
    link = [cxx, "-shared", "-fopenmp"] + ([f"-Wl,-soname,{soname}"] if soname else [])
    link += ["-fsanitize=address,undefined"] if sanitize else []
    return _link(link + [str(o) for o in objs] + ["-ldl", "-lpthread"], out, objs, verbose, force,
                 None if soname else build_dir)


def build_cuda(build_dir: Path, nvcc: str, archs=None, jobs: int = 2, verbose: bool = False,
               force: bool = False, out_name: str = CUDA_LIB, session: Optional[SessionBuild] = None,
               out: Optional[Path] = None, soname: Optional[str] = None) -> Path:
    """Build the CUDA library (CPU kernels included) and return its path."""
    archs = tuple(archs) if archs else default_cuda_archs(nvcc)
    cuda_home = _cuda_home(nvcc)
    cxx = os.environ.get("CXX", "g++")
    gencode = cuda_gencode(archs)
    nv_flags = [nvcc] + CXX_STD + ["-O3", "--extended-lambda", "-DPSD_WITH_CUDA", "-DNDEBUG",
                                   "-DPSD_BUILDING_LIBRARY", f"-I{CAPI / 'include'}",
                                   "-Xcompiler", "-fPIC,-fvisibility=hidden,-fopenmp"] + gencode
    host = [cxx] + _cpu_flags(False, False) + ["-DPSD_WITH_CUDA", f"-I{cuda_home / 'include'}"]
    jobs_list = [(s, nv_flags) for s in _sources("*/*_cuda.cu")]
    jobs_list += [(s, host) for s in _sources("*/*_cpu.cpp") + _host_sources()]
    extra_libs = []
    if session and session.enabled:
        sflags = host + session.flags(build_dir)
        trt = _find_tensorrt()
        if trt:  # the TensorRT backend of the session (trt_backend.cpp)
            sflags += ["-DPSD_HAVE_TENSORRT=1", "-isystem", str(trt[0])]
            extra_libs += [f"-L{trt[1]}", "-lnvinfer"]
        jobs_list += [(s, sflags, [session.config_header]) for s in _session_sources()]
    tag = "cuda_" + "_".join(archs)
    objs = _compile_all(jobs_list, build_dir / f"obj_{tag}", jobs, verbose, force)
    out = Path(out) if out else build_dir / out_name
    link = [nvcc, "-shared", "-cudart", "static", "-Xcompiler", "-fopenmp"] + gencode
    link += ["-Xlinker", f"-soname={soname}"] if soname else []
    return _link(link + [str(o) for o in objs] + ["-lgomp", "-ldl", "-lpthread"] + extra_libs, out, objs, verbose,
                 force, None if soname else build_dir)


def emulation_flags() -> tuple[list[str], list[str]]:
    """(host, device) compiler commands of the emulated CUDA build: host C++ sees the emulated
    ``cuda_runtime_api.h``; ``.cu`` sources are compiled as C++ with ``__CUDACC__`` defined and
    the emulation header force-included (what nvcc's implicit ``cuda_runtime.h`` is to them).
    The CPU library's flags otherwise, so the arithmetic is the CPU library's."""
    cxx = os.environ.get("CXX", "g++")
    host = [cxx] + _cpu_flags(False, False) + ["-DPSD_WITH_CUDA", f"-I{CUDA_EMU_DIR}"]
    device = host + ["-x", "c++", "-D__CUDACC__", "-include", str(CUDA_EMU_DIR / "psd_cuda_emu.h")]
    return host, device


def build_cuda_emulation(build_dir: Path, jobs: int = 2, verbose: bool = False, force: bool = False,
                         session: Optional[SessionBuild] = None, out: Optional[Path] = None) -> Path:
    """Build the CUDA library against the emulated CUDA runtime and return its path.

    Every ``kernels/*/*_cuda.cu`` is compiled as C++ by the host compiler (``-x c++
    -D__CUDACC__``, ``kernels/common/cuda_emu/psd_cuda_emu.h`` force-included, that folder on
    the include path instead of the CUDA toolkit's), with the CPU library's flags, and linked
    with the CPU kernels, the C ABI, the session (in its CUDA configuration, ``-DPSD_WITH_CUDA``)
    and the emulator (``cuda_emu.cpp``). The result exports the same C ABI as the CUDA library;
    its CUDA paths run on the host (see psd_cuda_emu.h). Needs no CUDA toolkit. A test fixture:
    ``runtime._capi.load("cuda-emulation")`` loads it by name, never automatically.
    """
    base, device = emulation_flags()
    cxx = base[0]
    jobs_list = [(s, device) for s in _sources("*/*_cuda.cu")]
    jobs_list += [(s, base) for s in _sources("*/*_cpu.cpp") + _host_sources() + [CUDA_EMU_DIR / "cuda_emu.cpp"]]
    if session and session.enabled:
        jobs_list += [(s, base + session.flags(build_dir), [session.config_header]) for s in _session_sources()]
    objs = _compile_all(jobs_list, build_dir / "obj_cuda_emu", jobs, verbose, force)
    out = Path(out) if out else build_dir / CUDA_EMU_LIB
    link = [cxx, "-shared", "-fopenmp"] + [str(o) for o in objs] + ["-ldl", "-lpthread"]
    return _link(link, out, objs, verbose, force, build_dir)


def build_kernels(cuda: bool | None = None, sanitize: bool = False, build_dir=None,
                  cuda_archs=None, native: bool = False, jobs: int | None = None,
                  verbose: bool = False, force: bool = False, session: bool = True,
                  ort_include=None, cuda_emulation: bool = False) -> dict[str, Path]:
    """Build the kernel libraries.

    Args:
        cuda (bool | None): True forces the CUDA library (error without nvcc), False skips it,
            None builds it when nvcc is found or ``PSD_FORCE_CUDA=1``. Defaults to None.
        sanitize (bool): also build the ASan/UBSan CPU library. Defaults to False.
        build_dir (path | None): output folder. Defaults to ``kernels/_build``.
        cuda_archs (sequence | None): e.g. ("75", "86"). Defaults to the fatbin list (or the
            Jetson list on a Jetson, or ``PSD_CUDA_ARCHS``).
        native (bool): ``-march=native`` CPU build (not portable). Defaults to False.
        jobs (int | None): parallel compile jobs. Defaults to the CPU count (at most 4).
        verbose (bool): print the commands. Defaults to False.
        force (bool): rebuild every object. Defaults to False.
        session (bool): compile the session API (``psd_session_*``) in. Defaults to True.
        ort_include (path | None): ONNX Runtime C headers for the session; None searches and
            fetches them (``find_ort_include``). Defaults to None.
        cuda_emulation (bool): also build the CUDA library against the emulated CUDA runtime
            (``build_cuda_emulation``; no toolkit needed). Defaults to False.

    Returns:
        dict[str, Path]: ``{"cpu": ..., "cpu_asan": ..., "cuda": ..., "cuda_emu": ...}`` for what
        was built.

    Raises:
        RuntimeError: a compiler failed, or CUDA was forced and nvcc is missing.
    """
    build_dir = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    build_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or min(4, os.cpu_count() or 1)
    sess = prepare_session(build_dir, session, ort_include, verbose=verbose)
    _LAST_BUILD.clear()
    _LAST_BUILD.update(build_dir=build_dir, native=native, jobs=jobs, session=sess, cuda_archs=cuda_archs)
    built = {"cpu": build_cpu(build_dir, False, native, jobs, verbose, force, sess)}
    if sanitize:
        built["cpu_asan"] = build_cpu(build_dir, True, False, jobs, verbose, force, sess)
    if cuda_emulation:
        built["cuda_emu"] = build_cuda_emulation(build_dir, jobs, verbose, force, sess)
    forced = os.environ.get("PSD_FORCE_CUDA", "") not in ("", "0")
    want = cuda if cuda is not None else None
    nvcc = find_nvcc()
    if want is True or (want is None and (nvcc or forced)):
        if not nvcc:
            raise RuntimeError("CUDA build requested (PSD_FORCE_CUDA=1 or --cuda) but nvcc was not "
                               "found; install the CUDA toolkit or set CUDA_HOME")
        built["cuda"] = build_cuda(build_dir, nvcc, cuda_archs, jobs, verbose, force, session=sess)
        _LAST_BUILD["nvcc"] = nvcc
    return built


#: settings of the last build_kernels call (install relinks its objects with a soname)
_LAST_BUILD: dict = {}


# ------------------------------------------------------------------------------------------------
# Installation for C/C++ embedders: libpsd.so + psd.h + pkg-config + CMake package

_CMAKE_CONFIG = """# psdConfig.cmake: generated by psdrt's build.py --install. Relocatable: paths are relative to
# this file. Defines the imported target psd::psd (libpsd + psd.h).
get_filename_component(_psd_prefix "${{CMAKE_CURRENT_LIST_DIR}}/../../.." ABSOLUTE)
if(NOT TARGET psd::psd)
  add_library(psd::psd SHARED IMPORTED)
  set_target_properties(psd::psd PROPERTIES
    IMPORTED_LOCATION "${{_psd_prefix}}/lib/{soname}"
    IMPORTED_SONAME "{soname}"
    INTERFACE_INCLUDE_DIRECTORIES "${{_psd_prefix}}/include")
endif()
set(psd_VERSION "{version}")
set(psd_FOUND TRUE)
unset(_psd_prefix)
"""

_CMAKE_VERSION = """# psdConfigVersion.cmake: generated by psdrt's build.py --install (same major version = compatible).
set(PACKAGE_VERSION "{version}")
if(PACKAGE_FIND_VERSION_MAJOR STREQUAL "" OR PACKAGE_FIND_VERSION_MAJOR EQUAL "{major}")
  if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  else()
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
      set(PACKAGE_VERSION_EXACT TRUE)
    endif()
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
"""


def install(prefix, built: dict, verbose: bool = False) -> dict[str, Path]:
    """Install the library of the last ``build_kernels`` call for C/C++ embedders under ``prefix``.

    ``lib/libpsd.so.1`` (the CUDA library when it was built, else the CPU one; relinked from the
    same objects with the soname ``libpsd.so.1``) with the ``lib/libpsd.so`` link,
    ``include/psd/psd.h``, ``lib/pkgconfig/psd.pc`` (with an rpath to ``lib/``, so
    ``pkg-config --cflags --libs psd`` is all a build needs) and ``lib/cmake/psd/psdConfig.cmake``
    (``find_package(psd)`` -> ``psd::psd``). Returns the installed paths by kind.
    """
    if not _LAST_BUILD:
        raise RuntimeError("install() needs a build_kernels() call first in this process")
    prefix = Path(prefix).expanduser().resolve()
    libdir, incdir = prefix / "lib", prefix / "include" / "psd"
    pcdir, cmakedir = libdir / "pkgconfig", libdir / "cmake" / "psd"
    for d in (libdir, incdir, pcdir, cmakedir):
        d.mkdir(parents=True, exist_ok=True)
    real = libdir / SONAME
    b = _LAST_BUILD
    # relinked with the soname; _link writes a temporary file and renames it (atomic: a running
    # program keeps its mapped copy)
    if "cuda" in built:
        build_cuda(b["build_dir"], b["nvcc"], b["cuda_archs"], b["jobs"], verbose, session=b["session"], out=real,
                   soname=SONAME)
    else:
        build_cpu(b["build_dir"], False, b["native"], b["jobs"], verbose, session=b["session"], out=real,
                  soname=SONAME)
    dev = libdir / "libpsd.so"
    if dev.is_symlink() or dev.exists():
        dev.unlink()
    dev.symlink_to(SONAME)
    header = incdir / "psd.h"
    shutil.copyfile(CAPI / "include" / "psd" / "psd.h", header)
    version = _psdrt_version()
    pc = pcdir / "psd.pc"
    pc.write_text(
        f"prefix={prefix}\nlibdir=${{prefix}}/lib\nincludedir=${{prefix}}/include\n\n"
        "Name: psd\nDescription: psdrt: PSD depth completion (RGB + sparse depth + K -> dense metric depth), C API\n"
        f"Version: {version}\n"
        "Libs: -L${libdir} -Wl,-rpath,${libdir} -lpsd\nCflags: -I${includedir}\n")
    cfg = cmakedir / "psdConfig.cmake"
    cfg.write_text(_CMAKE_CONFIG.format(soname=SONAME, version=version))
    cver = cmakedir / "psdConfigVersion.cmake"
    cver.write_text(_CMAKE_VERSION.format(version=version, major=version.split(".")[0]))
    paths = {"library": real, "link": dev, "header": header, "pkgconfig": pc, "cmake": cfg}
    if verbose:
        for k, v in paths.items():
            print(f"installed {k}: {v}")
    return paths


# ------------------------------------------------------------------------------------------------
# Deployable directories: checkpoint -> ONNX (+ FP16 / INT8) -> engines -> kernels -> gate -> manifest

ARTIFACTS_MANIFEST = "manifest.json"
ARTIFACTS_FORMAT = 1
#: target -> (default precisions, whether TensorRT engines are built)
TARGETS = {
    "cpu": (("fp32",), False),
    "desktop-gpu": (("fp32", "fp16"), True),
    "orin": (("fp16", "int8"), True),
}


def _say(msg: str) -> None:
    """One progress line on stderr."""
    print(f"[psdrt build] {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    # one implementation of file hashing: the manifests' (imported here, not at module level, so
    # that `python build.py` for the kernels alone needs nothing but the standard library)
    from psdrt.runtime.manifest import sha256_file

    return sha256_file(path)


def _version(module: str) -> Optional[str]:
    """Installed version of a distribution/module without importing it (None when absent)."""
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _psdrt_version() -> str:
    return _version("psdrt") or "0+unknown"


def _fingerprint(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_size(text: str) -> tuple[int, int]:
    """``"228x304"`` -> (228, 304): the ``psdrt`` command's one size rule
    (:func:`psdrt.runtime.cli.common.parse_size`; imported here, as torch is, only when artefacts
    are built, so that ``python build.py`` alone needs nothing installed)."""
    from psdrt.runtime.cli.common import parse_size as _parse

    return _parse(text, "--size")


@dataclass
class BuildResult:
    """What :func:`build_artifacts` did: the directory, its manifest, and one summary row per step."""

    out_dir: Path
    manifest: dict
    rows: list = field(default_factory=list)

    def summary(self) -> str:
        """The summary table (artefact, precision, status, gate max error, time)."""
        head = ("artefact", "precision", "status", "gate max-rel", "time s")
        rows = [head] + [(r["artefact"], r.get("precision", "-"), r["status"],
                          "-" if r.get("gate_max_rel") is None else f"{r['gate_max_rel']:.3g}",
                          f"{r.get('time_s', 0.0):.1f}") for r in self.rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"  {r['artefact']}: {r['why']}" for r in self.rows if r.get("why")]
        return "\n".join(lines + (["", "why:"] + notes if notes else [])) + "\n"


class _Lazy:
    """The model, golden inputs and reference, built only when some artefact must be (re)built."""

    def __init__(self, checkpoint: Path, size, hm, preset, fm_lower, golden_shared, preprocess):
        self.checkpoint, self.size, self.hm = checkpoint, size, hm
        self.preset, self.fm_lower, self.golden_shared = preset, fm_lower, golden_shared
        self.preprocess = preprocess
        self._model = self._info = None
        self._golden = {}

    def model(self):
        if self._model is None:
            from psdrt.export.checkpoints import load_model

            _say(f"loading checkpoint {self.checkpoint}")
            self._model, self._info = load_model(self.checkpoint)
        return self._model

    def info(self):
        if self._info is None:
            from psdrt.export.checkpoints import inspect_checkpoint

            self._info = inspect_checkpoint(self.checkpoint)
        return self._info

    def golden(self, part: str):
        if part not in self._golden:
            from psdrt.export import gate as G

            _say(f"golden inputs for the {part} (FP32 reference)")
            frames = G.golden_frames(shared=self.golden_shared, max_shared=2)
            shape = self.hm if part == "encoder" else self.size
            self._golden[part] = G.make_golden_inputs(self.model(), part, shape, frames=frames,
                                                      fm_lower=None if part == "encoder" else self.fm_lower,
                                                      preprocess=self.preprocess)
        return self._golden[part]

    def reference(self):
        from psdrt.export.reference.pipeline import ReferencePipeline

        mode = "psd" if self.info().kind == "psd" else "propagate"
        return ReferencePipeline(mode, self.model(), preset=self.preset, fm_lower=self.fm_lower,
                                 preprocess=self.preprocess)


def _check_size_for_mode(h: int, w: int, mode: str) -> None:
    """The kernel library's frame-size rule for ``mode`` (psd_check_frame_size), before anything
    is exported; builds the CPU library first when it is missing. Raises ValueError."""
    from psdrt.runtime import _capi
    from psdrt.runtime.errors import BackendUnavailable, InputError

    try:
        lib = _capi.load()
    except BackendUnavailable:
        build_kernels(cuda=False)
        lib = _capi.load()
    try:
        lib.check_frame_size(h, w, mode)
    except InputError as exc:
        raise ValueError(f"--size {h}x{w}: {exc}") from None


def _export_fp32(lazy: _Lazy, part: str, dst: Path, opset: int) -> None:
    from psdrt.export.onnx_export import encoder_feat_sizes, export_encoder, export_head

    model = lazy.model()
    fm = model.foundation if hasattr(model, "foundation") else model
    if part == "encoder":
        export_encoder(fm, dst, size=lazy.hm, opset=opset)
    else:
        export_head(model, dst, size=lazy.size, feat_sizes=encoder_feat_sizes(lazy.hm), opset=opset)


def _convert_fp16(part: str, src: Path, dst: Path) -> None:
    from psdrt.export.fp16 import ENCODER_KEEP_FP32, HEAD_KEEP_FP32, convert_fp16

    convert_fp16(src, dst, keep_fp32=ENCODER_KEEP_FP32 if part == "encoder" else HEAD_KEEP_FP32)


def _calibrate_int8(lazy: _Lazy, part: str, src: Path, dst: Path, calibration: str, work: Path) -> None:
    from psdrt.calibration import calibrate as C
    from psdrt.calibration import sources as S

    if part == "encoder":
        feeds = S.EncoderFeeds(S.frame_source(calibration, None, 8), size=lazy.hm, preprocess=lazy.preprocess)
    else:
        feeds = S.HeadFeeds(S.frame_source(calibration, lazy.size, 8), lazy.reference())
    res = C.calibrate(src, feeds, work, name=f"{part}", formats=("ort",), progress=False)
    if res.int8_ort is None:
        raise RuntimeError(f"calibration wrote no INT8 model for the {part}: {res.notes}")
    shutil.copyfile(res.int8_ort, dst)


def _gate(lazy: _Lazy, part: str, path: Path, precision: str, backend=None) -> dict:
    """Run the correctness gate on one artefact; a plain-JSON summary (passed, max errors, why)."""
    from psdrt.export.gate import pipeline_depth_fn
    from psdrt.runtime.gate_check import check_backend

    golden = lazy.golden(part)
    if backend is None:
        from psdrt.runtime.backends.ort import OrtBackend

        backend = OrtBackend(path, providers=["cpu"])
    depth_fn = pipeline_depth_fn(lazy.model(), golden, backend)
    rep = check_backend(backend, golden, precision, depth_fn=depth_fn, artifact=path.name, raise_on_fail=False)
    bad = [f"{r.case}/{r.tensor}: {r.reason}" for r in rep.tensors if not r.ok]
    bad += [f"{r.case}/depth: {r.reason}" for r in rep.depth if not r.ok]
    finite = [r.max_rel for r in rep.tensors if r.max_rel == r.max_rel]
    return {
        "passed": bool(rep.passed),
        "max_rel": max(finite) if finite else None,
        "max_abs": max((r.max_abs for r in rep.tensors), default=None),
        "depth_rmse_mm": max((r.rmse_mm for r in rep.depth), default=None),
        "why": "; ".join(bad[:3]) if bad else "",
        "golden_sha256": rep.golden_sha256,
    }


def _read_old_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return {a["name"]: a for a in data.get("artifacts", []) if isinstance(a, dict) and "name" in a}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def build_artifacts(
    checkpoint,
    out_dir,
    size: Sequence[int] = (228, 304),
    precisions: Optional[Sequence[str]] = ("fp32",),
    target: str = "cpu",
    calibration: Optional[str] = None,
    preset: str = "NYUv2",
    force: bool = False,
    *,
    fm_lower: int = 392,
    opset: Optional[int] = None,
    workspace: Optional[int] = None,
    timing_cache=None,
    dla_core: Optional[int] = None,
    kernels: bool = True,
    golden_shared: Optional[bool] = None,
    preprocess: str = "official",
) -> BuildResult:
    """One command from a checkpoint to a deployable directory (``manifest.json`` + artefacts).

    Steps: load the checkpoint (PSD: encoder + head; DA-V2: encoder only, mode ``propagate``) ->
    FP32 ONNX at the working size (encoder at ``fm_input_size(H, W)``) -> FP16 / INT8 ONNX as
    requested -> TensorRT engines where TensorRT imports (targets ``desktop-gpu``/``orin``) ->
    kernel library -> correctness gate on every artefact -> ``manifest.json``. Each artefact is
    keyed by a fingerprint of its inputs; an unchanged one is reused ("up to date").

    Args:
        checkpoint (path): PSD or Depth Anything V2 checkpoint (``export.checkpoints.load_model``).
        out_dir (path): the deployable directory (created).
        size (tuple[int, int]): working resolution (H, W) of the frames. Defaults to (228, 304).
        precisions (Sequence[str], optional): any of fp32, fp16, int8, or ENC+HEAD (``int8+fp32``:
            an INT8 encoder with the FP32 head, built as just those parts). None: the target's preset
            (cpu: fp32; desktop-gpu: fp32, fp16; orin: fp16, int8). Defaults to ("fp32",).
        target (str): ``cpu``, ``desktop-gpu`` or ``orin``. Defaults to "cpu".
        calibration (str, optional): INT8 calibration frames, a folder or ``"middlebury"``.
            Defaults to None: Middlebury (generated frames), said on stderr.
        preset (str): propagation preset recorded for the pipeline. Defaults to "NYUv2".
        force (bool): rebuild every artefact. Defaults to False.
        fm_lower (int): encoder input lower bound (PSD: 392). Defaults to 392.
        opset (int, optional): ONNX opset. Defaults to the exporter's (17).
        workspace, timing_cache, dla_core: TensorRT ``BuildConfig`` fields (engines only).
        kernels (bool): build and copy the kernel library. Defaults to True.
        golden_shared (bool, optional): gate also on the shared KITTI/NYU frames. Defaults to None
            (when present; at most 2 per dataset).
        preprocess (str): the encoder input's preprocessing the directory is built and gated for,
            recorded in the manifest: ``"official"`` (scikit-image resize order=3, the official
            loaders') or ``"bicubic"`` (an exported graph's Resize). Defaults to "official".

    Returns:
        BuildResult: directory, manifest (as written) and summary rows.

    Raises:
        ValueError: an unknown target or precision, or a bad size.
    """
    t_start = time.perf_counter()
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    precisions = tuple(p.lower() for p in (precisions or TARGETS[target][0]))
    from psdrt.runtime.manifest import PRECISIONS, precision_parts  # the one spelling of precisions

    specs = [precision_parts(p) for p in precisions]  # InputError (a ValueError) for an unknown one
    h, w = (int(size[0]), int(size[1]))
    from psdrt.export.onnx_export import DEFAULT_OPSET
    from psdrt.runtime.preprocess import fm_input_size

    from psdrt.runtime.preprocess import PREPROCESS_METHODS

    if preprocess not in PREPROCESS_METHODS:
        raise ValueError(f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESS_METHODS)}")
    opset = int(opset or DEFAULT_OPSET)
    hm = fm_input_size(h, w, lower=fm_lower)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise ValueError(f"checkpoint {ckpt} does not exist")
    _say(f"checkpoint {ckpt}: sha256")
    ckpt_sha = _sha256(ckpt)
    lazy = _Lazy(ckpt, (h, w), hm, preset, fm_lower, golden_shared, preprocess)
    info = lazy.info()
    parts = ("encoder", "head") if info.kind == "psd" else ("encoder",)
    mode = "psd" if info.kind == "psd" else "propagate"
    _check_size_for_mode(h, w, mode)
    _say(f"{info.kind} checkpoint, encoder {info.encoder}, mode {mode}; working size {h}x{w}, "
         f"encoder input {hm[0]}x{hm[1]}; precisions {', '.join(precisions)}; target {target}")
    requested = {(part, sp[part]) for sp in specs for part in parts}  # (part, precision) to build
    if any(q == "int8" for _, q in requested) and calibration is None:
        calibration = "middlebury"
        _say("INT8: no calibration data given; calibrating on Middlebury (generated frames). "
             "Pass --calib-data DIR for frames of your camera")
    old = {} if force else _read_old_manifest(out / ARTIFACTS_MANIFEST)
    tools = {"psdrt": _psdrt_version(), "torch": _version("torch"), "onnx": _version("onnx"),
             "onnxslim": _version("onnxslim"), "onnxruntime": _version("onnxruntime")}
    base = {"checkpoint_sha256": ckpt_sha, "size": [h, w], "fm_size": list(hm), "fm_lower": fm_lower,
            "opset": opset, "tools": tools, "format": ARTIFACTS_FORMAT, "preprocess": preprocess}
    entries, rows = [], []
    # FP32 ONNX is the source of the other precisions, so it is always built; otherwise each part
    # is built at the precisions some requested spec gives it
    wanted = ("fp32",) + tuple(p for p in PRECISIONS if p != "fp32" and any(q == p for _, q in requested))
    for precision in wanted:
        for part in parts:
            if precision != "fp32" and (part, precision) not in requested:
                continue
            name = f"{part}.{precision}.onnx"
            path = out / name
            extra = {}
            if precision == "fp16":
                extra = {"onnxconverter_common": _version("onnxconverter-common")}
            elif precision == "int8":
                extra = {"calibration": str(calibration), "method": "minmax"}
            fp = _fingerprint({**base, "part": part, "precision": precision, **extra})
            t0 = time.perf_counter()
            prev = old.get(name)
            row = {"artefact": name, "precision": precision}
            if (prev and prev.get("fingerprint") == fp and path.is_file() and prev.get("gate")
                    and _sha256(path) == prev.get("sha256")):
                entry = dict(prev)
                row.update(status="up to date", gate_max_rel=(prev["gate"] or {}).get("max_rel"))
                _say(f"{name}: up to date")
            else:
                entry = {"name": name, "file": name, "part": part, "precision": precision, "backend": "onnxruntime",
                         "fingerprint": fp, "requested": (part, precision) in requested}
                try:
                    _say(f"{name}: {'exporting' if precision == 'fp32' else 'converting' if precision == 'fp16' else 'calibrating'}")
                    tmp = out / f".{name}.tmp.onnx"
                    src = out / f"{part}.fp32.onnx"
                    if precision == "fp32":
                        _export_fp32(lazy, part, tmp, opset)
                    elif precision == "fp16":
                        _convert_fp16(part, src, tmp)
                    else:
                        _calibrate_int8(lazy, part, src, tmp, calibration, out / "_calibration")
                    tmp.replace(path)
                    entry["sha256"] = _sha256(path)
                    _say(f"{name}: correctness gate")
                    entry["gate"] = _gate(lazy, part, path, precision)
                    row.update(status="built" if entry["gate"]["passed"] else "FAILED gate",
                               gate_max_rel=entry["gate"]["max_rel"], why=entry["gate"]["why"])
                except Exception as exc:  # one failing artefact must not stop the others
                    entry.update(sha256=None, gate={"passed": False, "why": f"build failed: {exc}"})
                    row.update(status="FAILED", why=f"{type(exc).__name__}: {exc}".splitlines()[0])
                    _say(f"{name}: FAILED ({row['why']})")
            entry["usable"] = bool(entry.get("sha256")) and bool((entry.get("gate") or {}).get("passed"))
            entry["requested"] = (part, precision) in requested
            row["time_s"] = time.perf_counter() - t0
            entries.append(entry)
            rows.append(row)
    # TensorRT engines
    if TARGETS[target][1]:
        rows += _build_engines(lazy, out, entries, sorted(requested), force, workspace, timing_cache, dla_core)
    else:
        _say("TensorRT engines: not built for target cpu (use --target desktop-gpu or orin)")
    # kernel library
    kernel = None
    if kernels:
        t0 = time.perf_counter()
        _say("kernel libraries")
        try:
            built = build_kernels(cuda=False if target == "cpu" else None)
            lib_dir = out / "lib"
            lib_dir.mkdir(exist_ok=True)
            kernel, copied = {}, False
            for kind, src in built.items():
                if kind == "cpu_asan":
                    continue
                dst = lib_dir / src.name
                if not dst.is_file() or _sha256(dst) != _sha256(src):
                    shutil.copyfile(src, dst)
                    copied = True
                kernel[kind] = {"file": f"lib/{src.name}", "sha256": _sha256(dst)}
            rows.append({"artefact": "kernels (" + ", ".join(kernel) + ")",
                         "status": "built" if copied else "up to date",
                         "time_s": time.perf_counter() - t0})
        except Exception as exc:
            rows.append({"artefact": "kernels", "status": "FAILED", "why": str(exc).splitlines()[0],
                         "time_s": time.perf_counter() - t0})
            _say(f"kernel libraries: FAILED ({exc})")
    manifest = {
        "format": ARTIFACTS_FORMAT,
        "psdrt_version": _psdrt_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"kind": info.kind, "mode": mode, "encoder": info.encoder, "licence": info.licence,
                  "checkpoint": ckpt.name, "checkpoint_sha256": ckpt_sha},
        "size": [h, w],
        "fm_size": list(hm),
        "fm_lower": fm_lower,
        "preprocess": preprocess,
        "preset": preset,
        "target": target,
        "precisions": list(precisions),
        "opset": opset,
        "tools": tools,
        "artifacts": entries,
        "kernels": kernel,
    }
    tmp = out / (ARTIFACTS_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / ARTIFACTS_MANIFEST)
    _say(f"wrote {out / ARTIFACTS_MANIFEST} ({time.perf_counter() - t_start:.1f} s)")
    return BuildResult(out, manifest, rows)


def _build_engines(lazy, out, entries, requested, force, workspace, timing_cache, dla_core) -> list:
    """TensorRT engines of the usable ONNX artefacts, or one 'skipped' row without TensorRT."""
    from psdrt.runtime.errors import BackendUnavailable

    try:
        from psdrt.runtime.backends import _trt_compat as compat

        compat.import_trt()
    except BackendUnavailable as exc:
        _say(f"TensorRT engines: skipped: TensorRT not available ({exc})")
        return [{"artefact": "TensorRT engines", "status": "skipped: TensorRT not available"}]
    from psdrt.export.trt_build import BuildConfig, build_engine

    rows = []
    by_name = {e["name"]: e for e in entries}
    for part, precision in requested:
        src = by_name.get(f"{part}.{precision}.onnx")
        name = f"{part}.{precision}.engine"
        t0 = time.perf_counter()
        row = {"artefact": name, "precision": precision}
        if not src or not src.get("usable"):
            rows.append({**row, "status": "skipped", "why": f"its ONNX {part}.{precision}.onnx is not usable"})
            continue
        _say(f"{name}: TensorRT build")
        cfg = BuildConfig(precision=precision, workspace=workspace, timing_cache=timing_cache,
                          dla_core=dla_core if part == "encoder" else None)
        try:
            path, m = build_engine(out / src["file"], out / "engines", cfg, stem=part,
                                   golden=lazy.golden(part), force=force)
            gate = dict(m.gate or {})
            entries.append({"name": name, "file": str(path.relative_to(out)), "part": part,
                            "precision": precision, "backend": "tensorrt", "fingerprint": m.fingerprint,
                            "sha256": m.engine_sha256, "trt_version": m.trt_version, "gpu": m.gpu_name,
                            "gate": {"passed": bool(gate.get("passed")), "why": ""}, "requested": True,
                            "usable": bool(gate.get("passed"))})
            rows.append({**row, "status": "built", "time_s": time.perf_counter() - t0})
        except Exception as exc:
            entries.append({"name": name, "file": None, "part": part, "precision": precision,
                            "backend": "tensorrt", "gate": {"passed": False, "why": str(exc)[:500]},
                            "usable": False, "requested": True})
            rows.append({**row, "status": "FAILED", "why": str(exc).splitlines()[0],
                         "time_s": time.perf_counter() - t0})
    return rows


def _artifacts_main(a) -> int:
    try:
        size = parse_size(a.size)
        precisions = tuple(p.strip() for p in a.precision.split(",") if p.strip()) if a.precision else None
        res = build_artifacts(a.checkpoint, a.out, size=size, precisions=precisions, target=a.target,
                              calibration=a.calib_data, preset=a.preset, force=a.force,
                              workspace=a.workspace, timing_cache=a.timing_cache, dla_core=a.dla_core,
                              preprocess=a.preprocess)
    except ValueError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 2
    print(res.summary(), end="")
    failed = [r for r in res.rows if str(r["status"]).startswith("FAILED")]
    print(f"{res.out_dir}: {'usable' if not failed else f'{len(failed)} step(s) failed'}; "
          f"open it with Pipeline.from_artifacts({str(res.out_dir)!r})")
    return 1 if failed else 0


def _triton_main(a, artifact_dir) -> int:
    """``--triton REPO``: the model repository of ``artifact_dir`` (None: guided at ``--size``)."""
    from psdrt.runtime.errors import PsdError
    from psdrt.runtime.triton import write_model_repository

    precision = a.triton_precision or (a.precision.split(",")[0].strip() if a.precision else "fp32")
    try:
        size = parse_size(a.size) if artifact_dir is None else None
        res = write_model_repository(artifact_dir, a.triton, variant=a.triton_variant, mode=a.triton_mode,
                                     precision=precision, backend=a.triton_backend, kind=a.triton_kind,
                                     max_batch_size=a.triton_max_batch, name=a.triton_name, size=size,
                                     instances=a.triton_instances)
    except PsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # parse_size
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res.summary(), end="")
    print(f"serve it: tritonserver --model-repository={Path(a.triton).resolve()} (README: Triton Inference Server)")
    return 0


def main(argv=None, prog: str = "build.py") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--cuda", action="store_true", help="require the CUDA library")
    g.add_argument("--no-cuda", action="store_true", help="skip the CUDA library")
    ap.add_argument("--sanitize", action="store_true", help="also build the ASan/UBSan CPU library")
    ap.add_argument("--cuda-emulation", action="store_true",
                    help=f"also build {CUDA_EMU_LIB}: the CUDA library against the emulated CUDA runtime "
                         "(kernels/common/cuda_emu), whose CUDA paths run on the CPU; for tests, no toolkit needed")
    ap.add_argument("--build-dir", default=None, help=f"output folder (default {DEFAULT_BUILD_DIR})")
    ap.add_argument("--cuda-archs", default=None,
                    help="comma list, e.g. 75,86, or 'native' for this machine's GPUs (default: the fatbin "
                         "sm_75..90 + PTX; on a Jetson its GPU family)")
    ap.add_argument("--native", action="store_true", help="-march=native CPU build (not portable)")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--force", action="store_true", help="rebuild everything")
    ap.add_argument("--no-session", action="store_true",
                    help="leave the session API (psd_session_*, the whole pipeline in C) out of the libraries")
    ap.add_argument("--ort-include", default=None, metavar="DIR",
                    help="ONNX Runtime C headers for the session API (default: $ORT_INCLUDE_DIR, a cached or "
                         "system copy, else Debian trixie's libonnxruntime-dev is fetched)")
    ap.add_argument("--install", "--prefix", dest="install", default=None, metavar="PREFIX",
                    help="install lib/libpsd.so, include/psd/psd.h, lib/pkgconfig/psd.pc and "
                         "lib/cmake/psd/psdConfig.cmake under PREFIX")
    d = ap.add_argument_group("deployable directory (with --checkpoint): checkpoint -> ONNX/engines + manifest.json")
    d.add_argument("--checkpoint", default=None, help="PSD or Depth Anything V2 checkpoint")
    d.add_argument("--size", default="228x304", help="working size HxW of the frames (default 228x304)")
    d.add_argument("--precision", default=None,
                   help="comma list of fp32, fp16, int8, or ENC+HEAD such as int8+fp32 (an INT8 encoder with the FP32 "
                        "head: what to deploy where the INT8 head fails its gate) (default: the --target preset)")
    d.add_argument("--target", default="cpu", choices=tuple(TARGETS),
                   help="cpu: fp32, no TensorRT; desktop-gpu: fp32+fp16 + engines; orin: fp16+int8 + engines "
                        "(default cpu)")
    d.add_argument("--calib-data", default=None, metavar="DIR|middlebury",
                   help="INT8 calibration frames (default: middlebury, generated)")
    d.add_argument("--preset", default="NYUv2", help="propagation preset recorded in the manifest (default NYUv2)")
    d.add_argument("--preprocess", default="official", choices=("official", "bicubic"),
                   help="the encoder input's preprocessing: official = scikit-image resize(order=3), what the "
                        "official loaders and the released checkpoints' evaluation use (default); bicubic = PyTorch "
                        "bicubic, an exported graph's Resize")
    d.add_argument("--out", default="psdrt_artifacts", help="output directory (default psdrt_artifacts)")
    d.add_argument("--workspace", type=int, default=None, help="TensorRT workspace bytes (default 1 GiB)")
    d.add_argument("--timing-cache", default=None, help="TensorRT timing cache file")
    d.add_argument("--dla-core", type=int, default=None, help="TensorRT DLA core for the encoder (Orin)")
    t = ap.add_argument_group("Triton Inference Server model repository (psdrt.runtime.triton): of the directory "
                              "built with --checkpoint, of an existing one (--from DIR), or of the guided mode "
                              "at --size (neither)")
    t.add_argument("--triton", default=None, metavar="REPO", help="write the model repository into REPO")
    t.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="an existing `psdrt build` directory to write the repository of (without --checkpoint)")
    t.add_argument("--triton-variant", default="production", choices=("production", "python"),
                   help="production: the networks on Triton's onnxruntime / tensorrt backend (default); python: "
                        "every model on the python backend (ONNX Runtime in the stub; for python-only servers)")
    t.add_argument("--triton-kind", default="gpu", choices=("gpu", "cpu"),
                   help="instance groups of the networks: KIND_GPU (one per GPU, default) or KIND_CPU")
    t.add_argument("--triton-backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="production networks: onnxruntime_onnx (the ONNX files, default) or tensorrt_plan (the "
                        "directory's engines, for the TensorRT version and GPU they were built with)")
    t.add_argument("--triton-mode", default=None, choices=("psd", "propagate", "guided"),
                   help="default: the directory's mode (guided without a directory)")
    t.add_argument("--triton-precision", default=None,
                   help="precision of the networks (fp32, fp16, int8, ENC+HEAD; default: the first of --precision, "
                        "else fp32)")
    t.add_argument("--triton-max-batch", type=int, default=8,
                   help="max_batch_size of the models that batch (guided; networks with a batch dimension; "
                        "default 8, 0 = no batching)")
    t.add_argument("--triton-instances", type=int, default=1, help="instances per group (per GPU; default 1)")
    t.add_argument("--triton-name", default="psd", help="the entry model's name (default psd)")
    a = ap.parse_args(argv)
    if a.from_dir and a.checkpoint:
        ap.error("--from DIR writes the repository of an existing directory; drop it or --checkpoint")
    if a.from_dir and not a.triton:
        ap.error("--from DIR needs --triton REPO")
    if a.checkpoint:
        rc = _artifacts_main(a)
        return _triton_main(a, a.out) if a.triton and rc == 0 else rc
    if a.triton:
        return _triton_main(a, a.from_dir)
    cuda = True if a.cuda else (False if a.no_cuda else None)
    archs = tuple(x for x in a.cuda_archs.split(",") if x) if a.cuda_archs else None
    try:
        built = build_kernels(cuda, a.sanitize, a.build_dir, archs, a.native, a.jobs, a.verbose,
                              a.force, session=not a.no_session, ort_include=a.ort_include,
                              cuda_emulation=a.cuda_emulation)
    except RuntimeError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    if a.install:
        paths = install(a.install, built)
        for k, v in paths.items():
            print(f"installed {k}: {v}")
        print(f"compile against it: cc app.c $(PKG_CONFIG_PATH={paths['pkgconfig'].parent} pkg-config --cflags "
              f"--libs psd), or in CMake: find_package(psd) with CMAKE_PREFIX_PATH={Path(a.install).expanduser().resolve()}"
              f" and target_link_libraries(app psd::psd)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
