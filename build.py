"""Build the psdrt kernel libraries (stdlib only): ``python build.py`` or ``psdrt build``.

Outputs (git-ignored) in ``kernels/_build/`` unless ``--build-dir`` says otherwise:

* ``libpsd_kernels_cpu.so``       always: g++, OpenMP, portable x86-64/aarch64 baseline;
* ``libpsd_kernels_cpu_asan.so``  with ``--sanitize``: the CPU library under ASan + UBSan;
* ``libpsd_kernels_cuda.so``      when ``nvcc`` is found (or ``PSD_FORCE_CUDA=1``), unless
  ``--no-cuda``: fatbin sm_75/80/86/87/89/90 + compute_90 PTX, cudart linked statically, so it
  loads without a driver. On a Jetson (``/etc/nv_tegra_release``) the local nvcc builds for the
  Jetson GPUs instead (sm_72 + sm_87 with CUDA 11.x, sm_87 otherwise); ``PSD_CUDA_ARCHS=75,86``
  or ``--cuda-archs`` overrides.

Both libraries export the same C ABI (``runtime/capi/include/psd/psd.h``); the CUDA one also
contains the CPU kernels. ``psdrt.runtime._capi`` finds them (search order in its docstring).

Compile flags, and why: ``-O3 -fopenmp`` with the default portable ISA (no ``-march=native``,
which would make the binary crash on older CPUs of the same architecture). The hot loops are
written for auto-vectorisation (SSE2 on x86-64, NEON on aarch64), with ``#pragma omp simd`` where
a reduction must be allowed to reassociate; ``-ffast-math`` is never used (the kernels rely on
IEEE NaN/Inf semantics and on PyTorch-like rounding). ``--native`` opts into ``-march=native``
for a local, non-distributable build.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"
CAPI = ROOT / "runtime" / "capi"
DEFAULT_BUILD_DIR = KERNELS / "_build"

CPU_LIB = "libpsd_kernels_cpu.so"
CPU_ASAN_LIB = "libpsd_kernels_cpu_asan.so"
CUDA_LIB = "libpsd_kernels_cuda.so"

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


def _headers() -> list[Path]:
    return _sources("**/*.h") + [CAPI / "include" / "psd" / "psd.h"]


def _newest(paths) -> float:
    return max((p.stat().st_mtime for p in paths), default=0.0)


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build step failed ({proc.returncode}):\n{' '.join(map(str, cmd))}\n"
                           f"{proc.stdout}{proc.stderr}")


def _compile_all(jobs: list[tuple[Path, list[str]]], obj_dir: Path, n_jobs: int, verbose: bool,
                 force: bool) -> list[Path]:
    """Compile (source, command-prefix) pairs into obj_dir, skipping up-to-date objects."""
    obj_dir.mkdir(parents=True, exist_ok=True)
    header_time = _newest(_headers())
    objs, todo = [], []
    for src, prefix in jobs:
        obj = obj_dir / (src.parent.name + "__" + src.name + ".o")
        objs.append(obj)
        if force or not obj.exists() or obj.stat().st_mtime < max(src.stat().st_mtime, header_time):
            todo.append(prefix + ["-c", str(src), "-o", str(obj)])
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        for fut in [pool.submit(_run, cmd, verbose) for cmd in todo]:
            fut.result()
    return objs


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


def default_cuda_archs(nvcc: str) -> tuple[str, ...]:
    env = os.environ.get("PSD_CUDA_ARCHS")
    if env:
        return tuple(a.strip() for a in env.split(",") if a.strip())
    if Path("/etc/nv_tegra_release").exists():  # Jetson: build for the local GPU family
        return ("72", "87") if _nvcc_major(nvcc) < 12 else ("87",)
    return DEFAULT_CUDA_ARCHS


def _cpu_flags(sanitize: bool, native: bool) -> list[str]:
    flags = CXX_STD + WARN + ["-fPIC", "-fopenmp", "-fvisibility=hidden", "-DPSD_BUILDING_LIBRARY",
                              f"-I{CAPI / 'include'}"]
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
              verbose: bool = False, force: bool = False) -> Path:
    """Build the CPU library (or its ASan/UBSan variant) and return its path."""
    cxx = os.environ.get("CXX", "g++")
    flags = _cpu_flags(sanitize, native)
    srcs = _sources("*/*_cpu.cpp") + _host_sources()
    tag = "cpu_asan" if sanitize else ("cpu_native" if native else "cpu")
    objs = _compile_all([(s, [cxx] + flags) for s in srcs], build_dir / f"obj_{tag}", jobs, verbose,
                        force)
    out = build_dir / (CPU_ASAN_LIB if sanitize else CPU_LIB)
    link = [cxx, "-shared", "-fopenmp"] + (["-fsanitize=address,undefined"] if sanitize else [])
    _run(link + [str(o) for o in objs] + ["-o", str(out)], verbose)
    return out


def build_cuda(build_dir: Path, nvcc: str, archs=None, jobs: int = 2, verbose: bool = False,
               force: bool = False, out_name: str = CUDA_LIB) -> Path:
    """Build the CUDA library (CPU kernels included) and return its path."""
    archs = tuple(archs) if archs else default_cuda_archs(nvcc)
    cuda_home = _cuda_home(nvcc)
    cxx = os.environ.get("CXX", "g++")
    gencode = []
    for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    top = archs[-1]
    gencode += ["-gencode", f"arch=compute_{top},code=compute_{top}"]  # PTX for newer GPUs
    nv_flags = [nvcc] + CXX_STD + ["-O3", "--extended-lambda", "-DPSD_WITH_CUDA", "-DNDEBUG",
                                   "-DPSD_BUILDING_LIBRARY", f"-I{CAPI / 'include'}",
                                   "-Xcompiler", "-fPIC,-fvisibility=hidden,-fopenmp"] + gencode
    host = [cxx] + _cpu_flags(False, False) + ["-DPSD_WITH_CUDA", f"-I{cuda_home / 'include'}"]
    jobs_list = [(s, nv_flags) for s in _sources("*/*_cuda.cu")]
    jobs_list += [(s, host) for s in _sources("*/*_cpu.cpp") + _host_sources()]
    tag = "cuda_" + "_".join(archs)
    objs = _compile_all(jobs_list, build_dir / f"obj_{tag}", jobs, verbose, force)
    out = build_dir / out_name
    link = [nvcc, "-shared", "-cudart", "static", "-Xcompiler", "-fopenmp"] + gencode
    _run(link + [str(o) for o in objs] + ["-lgomp", "-o", str(out)], verbose)
    return out


def build_kernels(cuda: bool | None = None, sanitize: bool = False, build_dir=None,
                  cuda_archs=None, native: bool = False, jobs: int | None = None,
                  verbose: bool = False, force: bool = False) -> dict[str, Path]:
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

    Returns:
        dict[str, Path]: ``{"cpu": ..., "cpu_asan": ..., "cuda": ...}`` for what was built.

    Raises:
        RuntimeError: a compiler failed, or CUDA was forced and nvcc is missing.
    """
    build_dir = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    build_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or min(4, os.cpu_count() or 1)
    built = {"cpu": build_cpu(build_dir, False, native, jobs, verbose, force)}
    if sanitize:
        built["cpu_asan"] = build_cpu(build_dir, True, False, jobs, verbose, force)
    forced = os.environ.get("PSD_FORCE_CUDA", "") not in ("", "0")
    want = cuda if cuda is not None else None
    nvcc = find_nvcc()
    if want is True or (want is None and (nvcc or forced)):
        if not nvcc:
            raise RuntimeError("CUDA build requested (PSD_FORCE_CUDA=1 or --cuda) but nvcc was not "
                               "found; install the CUDA toolkit or set CUDA_HOME")
        built["cuda"] = build_cuda(build_dir, nvcc, cuda_archs, jobs, verbose, force)
    return built


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--cuda", action="store_true", help="require the CUDA library")
    g.add_argument("--no-cuda", action="store_true", help="skip the CUDA library")
    ap.add_argument("--sanitize", action="store_true", help="also build the ASan/UBSan CPU library")
    ap.add_argument("--build-dir", default=None, help=f"output folder (default {DEFAULT_BUILD_DIR})")
    ap.add_argument("--cuda-archs", default=None, help="comma list, e.g. 75,86 (default: fatbin)")
    ap.add_argument("--native", action="store_true", help="-march=native CPU build (not portable)")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--force", action="store_true", help="rebuild everything")
    a = ap.parse_args(argv)
    cuda = True if a.cuda else (False if a.no_cuda else None)
    archs = tuple(x for x in a.cuda_archs.split(",") if x) if a.cuda_archs else None
    try:
        built = build_kernels(cuda, a.sanitize, a.build_dir, archs, a.native, a.jobs, a.verbose,
                              a.force)
    except RuntimeError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
