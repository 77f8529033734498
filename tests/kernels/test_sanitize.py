"""The kernel tests again, against the ASan/UBSan build of the CPU library (``build.py --sanitize``).

Runs the other tests/kernels/test_*.py in a subprocess with LD_PRELOAD="libasan libstdc++" (Python
itself is not instrumented) and PSD_KERNEL_LIB pointing at libpsd_kernels_cpu_asan.so. Leak checking is off:
CPython and libgomp keep allocations alive until exit by design.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from psdrt import build

HERE = Path(__file__).resolve().parent


def _gcc_lib(name: str) -> str | None:
    out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if out and os.path.isabs(out) and os.path.exists(out) else None


@pytest.mark.slow
def test_kernel_tests_pass_under_asan_ubsan(tmp_path):
    # libstdc++ is preloaded too: CPython does not link it, and ASan's __cxa_throw interceptor
    # must find the real symbol when the library throws (every non-OK status path does)
    asan, cxx = _gcc_lib("libasan.so"), _gcc_lib("libstdc++.so")
    if asan is None or cxx is None:
        pytest.skip("libasan not found for g++")
    lib = build.build_kernels(cuda=False, sanitize=True)["cpu_asan"]
    tests = sorted(str(p) for p in HERE.glob("test_*.py") if p.name not in {"test_sanitize.py", "test_cuda_build.py"})
    env = dict(os.environ, LD_PRELOAD=f"{asan} {cxx}", PSD_KERNEL_LIB=str(lib), OMP_NUM_THREADS="2",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=HERE.parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "runtime error" not in proc.stderr  # UBSan reports
