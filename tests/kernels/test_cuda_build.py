"""CI proof that the CUDA sources build with nvcc (skipped without nvcc)."""

import numpy as np
import pytest

from psdrt import build
from psdrt.runtime import _capi

NVCC = build.find_nvcc()


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cuda_library_builds_and_loads_without_driver(tmp_path):
    # one real arch + PTX keeps CI lean; `python build.py` builds the full sm_75..90 fatbin
    path = build.build_cuda(tmp_path, NVCC, ("75",))
    lib = _capi.KernelLibrary(path)
    assert lib.has_cuda
    n, err = lib.cuda_device_count()
    assert (n == 0 and err in (35, 100)) or (n > 0 and err == 0)
    # the CUDA library also carries the CPU kernels
    s = np.zeros((8, 8), np.float32)
    s[1, 1] = 2.0
    np.testing.assert_allclose(lib.sparse_pool(s)[0, 0], 2.0 / (1 + 1e-5), rtol=1e-6)

# The CUDA kernels' results (formerly GPU-only tests here) are checked in tests/cuda against the
# emulated CUDA build on every machine, and against a real GPU by benchmarks/gpu_check.py.


def test_jetson_arch_table_and_gencode():
    assert build.jetson_cuda_archs(11) == ("72", "87")  # JetPack 5: Xavier + Orin
    assert build.jetson_cuda_archs(12) == ("87",)  # JetPack 6: Orin
    assert build.jetson_cuda_archs(13) == ("87", "110")  # JetPack 7: Orin + Thor (sm_110, not compute_87 PTX)
    assert build.jetson_cuda_archs(14) == ("87", "110")
    assert build.cuda_gencode(("87", "110")) == ["-gencode", "arch=compute_87,code=sm_87", "-gencode",
                                                 "arch=compute_110,code=sm_110", "-gencode",
                                                 "arch=compute_110,code=compute_110"]
    assert build.cuda_gencode(("native",)) == ["-arch=native"]


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_this_nvcc_compiles_for_its_jetson_archs(tmp_path):
    """The Jetson table's architectures for this nvcc exist in it (Thor's sm_110 with CUDA 13)."""
    import subprocess

    archs = build.jetson_cuda_archs(build._nvcc_major(NVCC))
    cmd = ([NVCC, "-std=c++17", "--extended-lambda", "-DPSD_WITH_CUDA", f"-I{build.CAPI / 'include'}"]
           + build.cuda_gencode(archs) + ["-c", str(build.KERNELS / "common" / "launch_cuda.cu"),
                                          "-o", str(tmp_path / "launch.o")])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
