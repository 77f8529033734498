"""The session sources compile in the CUDA library's configuration (``-DPSD_WITH_CUDA``: device
buffers, psd_session_enqueue, the ONNX Runtime CUDA provider on a user stream), with the exact
host flags ``build.build_cuda`` uses. Compile only: the full CUDA library build is
tests/kernels/test_cuda_build.py's; no GPU exists here, so the CUDA path has never run."""

from __future__ import annotations

import subprocess

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
