"""The session in the CUDA library's configuration (``-DPSD_WITH_CUDA``: device buffers,
psd_session_enqueue, the ONNX Runtime CUDA provider on a user stream): the sources compile with
the exact host flags ``build.build_cuda`` uses (-Werror), and a one-arch CUDA library with the
session links and loads. No GPU exists here, so the CUDA path itself has never run."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from psdrt import build

NVCC = build.find_nvcc()


@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA headers) not found")
def test_session_sources_compile_with_cuda(tmp_path):
    sess = build.prepare_session(build.DEFAULT_BUILD_DIR, fetch=False)
    if sess.ort_include is None:
        pytest.skip("ONNX Runtime headers not fetched (run python build.py first)")
    cuda_home = build._cuda_home(NVCC)
    flags = (["g++"] + build._cpu_flags(False, False) + ["-DPSD_WITH_CUDA", f"-I{cuda_home / 'include'}"]
             + sess.flags(build.DEFAULT_BUILD_DIR) + ["-Werror"])
    for src in build._session_sources():
        proc = subprocess.run(flags + ["-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{src.name}:\n{proc.stderr[-3000:]}"
    assert {p.stem for p in tmp_path.glob("*.o")} >= {"session", "ort_backend", "trt_backend"}


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cuda_library_with_session_links_and_loads_without_driver(capi_lib, artifacts, middlebury, tmp_path):
    """One arch (sm_75) of the CUDA library with the session: it links (also with the installed
    soname), loads without a driver, serves CPU sessions, and reports a CUDA session's failure."""
    import ctypes as C

    from _frames import Frame, create, last_error

    from psdrt.runtime.session import session_library

    inc = build.find_ort_include(build.DEFAULT_BUILD_DIR, fetch=False)
    if inc is None:
        pytest.skip("ONNX Runtime headers not fetched (run python build.py first)")
    sess = build.prepare_session(tmp_path, ort_include=inc, fetch=False)
    path = build.build_cuda(tmp_path, NVCC, ("75",), session=sess)
    soname = build.build_cuda(tmp_path, NVCC, ("75",), session=sess, out=tmp_path / "libpsd.so.1",
                              soname=build.SONAME)
    assert soname.is_file()
    lib = session_library(path)
    flags = C.c_uint32()
    lib.psd_build_info.argtypes = [C.POINTER(C.c_uint32)]
    assert lib.psd_build_info(C.byref(flags)) == 0 and flags.value & 1  # PSD_BUILD_CUDA
    st, h, msg = create(lib, artifacts, device=1)
    n = C.c_int32()
    lib.psd_cuda_device_count.argtypes = [C.POINTER(C.c_int32), C.POINTER(C.c_int32)]
    lib.psd_cuda_device_count(C.byref(n), C.byref(C.c_int32()))
    if n.value == 0:
        assert st == 7 and "cudaSetDevice" in msg, msg  # PSD_E_CUDA without a driver/GPU
    else:
        assert st == 0, msg
        lib.psd_session_destroy(h)
    rgb, sparse, K, _ = middlebury
    st, h, msg = create(lib, artifacts)
    assert st == 0, msg
    f = Frame(rgb, sparse, K)
    assert f.run(lib, h) == 0 and np.isfinite(f.depth).all()
    assert lib.psd_session_enqueue(h, C.byref(f.fin), C.byref(f.fout), None) == 9
    assert "device = PSD_DEVICE_CUDA" in last_error(lib)
    lib.psd_session_destroy(h)
