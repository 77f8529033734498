"""The session API under AddressSanitizer + UndefinedBehaviorSanitizer (``build.py --sanitize``).

* ``fuzz_session.c``, compiled here with ``-fsanitize=address,undefined`` against
  ``libpsd_kernels_cpu_asan.so``: a seeded, bounded stream of malformed calls (sizes, strides,
  pointers, struct sizes, K, NaN/empty sparse depth, corrupted manifests, random options) plus
  well-formed runs; leak checking on.
* ``test_session_api.py`` again in a child pytest with the ASan library preloaded (as
  tests/kernels/test_sanitize.py does for the kernels), reusing this session's artefacts
  (``$PSD_CAPI_ARTIFACTS``) so the child neither rebuilds them nor imports torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psdrt import build

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAN_ENV = {"ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "OMP_NUM_THREADS": "2"}


def _gcc_lib(name: str) -> str | None:
    out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if out and os.path.isabs(out) and os.path.exists(out) else None


@pytest.fixture(scope="module")
def asan_lib():
    if _gcc_lib("libasan.so") is None or shutil.which("gcc") is None:
        pytest.skip("libasan not found for gcc")
    return build.build_kernels(cuda=False, sanitize=True)["cpu_asan"]


@pytest.mark.slow
def test_fuzz_session_under_asan_ubsan(asan_lib, artifacts, tmp_path):
    exe = tmp_path / "fuzz_session"
    cc = ["gcc", "-std=c99", "-D_DEFAULT_SOURCE", "-O1", "-g", "-fno-omit-frame-pointer",
          "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-Wall", "-Wextra", "-Werror",
          f"-I{ROOT / 'runtime' / 'capi' / 'include'}", str(HERE / "fuzz_session.c"), str(asan_lib),
          f"-Wl,-rpath,{asan_lib.parent}", "-lm", "-o", str(exe)]
    proc = subprocess.run(cc, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, **SAN_ENV)
    env.pop("PSD_ONNXRUNTIME_LIB", None)
    proc = subprocess.run([str(exe), str(artifacts), str(scratch), "150", "7"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "runtime error" not in proc.stderr and "Sanitizer" not in proc.stderr, proc.stderr[-6000:]
    summary = proc.stdout.strip().splitlines()[-1]
    counts = dict(kv.split("=") for kv in summary.split("statuses:")[1].split())
    runs_ok = int(summary.split("runs ok ")[1].split(";")[0])
    # the stream reached the pipeline and every kind of refusal
    assert runs_ok >= 10, summary
    for name in ("PSD_E_INVALID_ARGUMENT", "PSD_E_NULL_POINTER", "PSD_E_SHAPE_MISMATCH", "PSD_E_ARTIFACT"):
        assert int(counts.get(name, 0)) >= 3, summary


@pytest.mark.slow
def test_session_api_tests_under_asan_ubsan(asan_lib, artifacts):
    asan, cxx = _gcc_lib("libasan.so"), _gcc_lib("libstdc++.so")
    if cxx is None:
        pytest.skip("libstdc++ not found for g++")
    # libstdc++ is preloaded too: ASan's __cxa_throw interceptor must find the real symbol
    env = dict(os.environ, LD_PRELOAD=f"{asan} {cxx}", PSD_KERNEL_LIB=str(asan_lib), PSD_CAPI_ARTIFACTS=str(artifacts),
               **SAN_ENV)
    env["ASAN_OPTIONS"] = "abort_on_error=1:detect_leaks=0"  # CPython keeps allocations until exit
    env.pop("PSD_ONNXRUNTIME_LIB", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           str(HERE / "test_session_api.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "runtime error" not in proc.stderr
    assert " passed" in proc.stdout
