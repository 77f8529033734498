"""build.py's session part: finding/fetching the ONNX Runtime headers, and what the library does
when they could not be had (kernels and guided mode still build; the ONNX Runtime modes say how to
fix it) or when the session is left out (``--no-session``).

The library variants are built in temporary folders from copies of the up-to-date kernel objects,
so only the session sources compile."""

from __future__ import annotations

import shutil

import pytest
from _frames import create, onnxruntime_problem

from psdrt import build
from psdrt.runtime.errors import BackendUnavailable
from psdrt.runtime.session import session_library


def test_missing_headers_are_reported_with_the_fix(monkeypatch, capsys, tmp_path):
    if any(build._ort_header_version(d) for d in (build.Path("/usr/include/onnxruntime"),
                                                  build.Path("/usr/local/include/onnxruntime"))):
        pytest.skip("this machine has system ONNX Runtime headers")

    def offline(dest, verbose=False, timeout=300.0):
        raise RuntimeError("apt-get update failed (100): Temporary failure resolving the mirror")

    monkeypatch.delenv("ORT_INCLUDE_DIR", raising=False)
    monkeypatch.setattr(build, "fetch_ort_headers", offline)
    assert build.find_ort_include(tmp_path) is None
    err = capsys.readouterr().err
    assert "could not fetch the ONNX Runtime headers (apt-get update failed (100)" in err
    assert "guided mode only" in err and "--ort-include DIR" in err and "ORT_INCLUDE_DIR" in err
    assert "--no-session" in err
    assert build.find_ort_include(tmp_path, fetch=False) is None
    # a cached fetch is found again without the network
    inc = tmp_path / "third_party" / "onnxruntime" / "usr" / "include" / "onnxruntime"
    inc.mkdir(parents=True)
    (inc / "onnxruntime_c_api.h").write_text("#define ORT_API_VERSION 21\n")
    assert build.find_ort_include(tmp_path) == inc


def test_explicit_include_dir_is_checked(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="no onnxruntime_c_api.h there.*--ort-include DIR"):
        build.find_ort_include(tmp_path, explicit=tmp_path)
    (tmp_path / "onnxruntime_c_api.h").write_text("// old\n#define ORT_API_VERSION 20\n")
    monkeypatch.setenv("ORT_INCLUDE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="ORT_API_VERSION 20 < 21"):
        build.find_ort_include(tmp_path / "elsewhere")
    (tmp_path / "onnxruntime_c_api.h").write_text("#define ORT_API_VERSION 23\n")
    assert build.find_ort_include(tmp_path / "elsewhere") == tmp_path


def test_wheel_library_is_recorded(tmp_path):
    lib = build.find_ort_library()
    pytest.importorskip("onnxruntime")
    assert lib is not None and "libonnxruntime.so" in lib and build.Path(lib).is_file()
    cfg = build.prepare_session(tmp_path, fetch=False).config_header
    assert f'#define PSD_ORT_DEFAULT_LIB "{lib}"' in cfg.read_text()


def _tmp_build(d, capi_lib):
    src = build.DEFAULT_BUILD_DIR / "obj_cpu"
    if not src.is_dir():
        pytest.skip("no kernel objects to reuse (run python build.py first)")
    shutil.copytree(src, d / "obj_cpu")  # copy2 keeps the times: only the session compiles
    return d


@pytest.mark.slow
def test_library_without_onnxruntime_headers(capi_lib, tmp_path, monkeypatch):
    d = _tmp_build(tmp_path / "build", capi_lib)
    monkeypatch.setattr(build, "find_ort_include", lambda *a, **k: None)
    lib_path = build.build_kernels(cuda=False, build_dir=d)["cpu"]
    assert "#define PSD_HAVE_ORT 0" in (d / build.BUILD_CONFIG_H).read_text()
    lib = session_library(lib_path)
    (tmp_path / "probe").mkdir()
    msg = onnxruntime_problem(lib, tmp_path / "probe")
    assert msg and "built without the ONNX Runtime headers" in msg and "--ort-include DIR" in msg
    st, h, msg = create(lib, None)  # guided needs no ONNX Runtime
    assert st == 0, msg
    lib.psd_session_destroy(h)


@pytest.mark.slow
def test_no_session_build(capi_lib, tmp_path):
    d = _tmp_build(tmp_path, capi_lib)
    lib_path = build.build_kernels(cuda=False, build_dir=d, session=False)["cpu"]
    with pytest.raises(BackendUnavailable, match="without the session API.*--no-session"):
        session_library(lib_path)
