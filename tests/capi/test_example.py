"""The README's C API steps on a fresh prefix: ``python build.py --no-cuda --install PREFIX``,
``psdrt demo --save-inputs DIR``, compile ``examples/psd_demo.c`` with pkg-config (and with
CMake's ``find_package(psd)``), run it, and check its 16-bit PNG against the Python session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from psdrt.runtime.result import DepthResult
from psdrt.runtime.session import CSession

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _read_inputs(d: Path):
    from psdrt.runtime.io import read_intrinsics

    raw = (d / "rgb.ppm").read_bytes()
    magic, w, h, maxval, data = raw.split(maxsplit=4)
    assert (magic, maxval) == (b"P6", b"255")
    rgb = np.frombuffer(data, np.uint8).reshape(int(h), int(w), 3)
    pfm = (d / "sparse.pfm").read_bytes().split(maxsplit=4)
    sparse = np.frombuffer(pfm[4], "<f4").reshape(int(pfm[2]), int(pfm[1]))[::-1]
    pgm = (d / "sparse_mm.pgm").read_bytes().split(maxsplit=4)
    mm = np.frombuffer(pgm[4], ">u2").reshape(int(pgm[2]), int(pgm[1]))
    np.testing.assert_array_equal(mm, DepthResult(sparse, "guided").depth_mm())
    return rgb, np.ascontiguousarray(sparse, np.float32), read_intrinsics(d / "K.txt")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    if shutil.which("pkg-config") is None or shutil.which("cc") is None:
        pytest.skip("pkg-config or cc not found")
    p = tmp_path_factory.mktemp("prefix")
    out = _run([sys.executable, "build.py", "--no-cuda", "--install", p], cwd=ROOT).stdout
    assert "installed library" in out and "pkg-config" in out
    for rel in ("lib/libpsd.so", "lib/libpsd.so.1", "include/psd/psd.h", "lib/pkgconfig/psd.pc",
                "lib/cmake/psd/psdConfig.cmake", "lib/cmake/psd/psdConfigVersion.cmake"):
        assert (p / rel).exists(), rel
    assert os.readlink(p / "lib" / "libpsd.so") == "libpsd.so.1"
    soname = _run(["readelf", "-d", p / "lib" / "libpsd.so.1"]).stdout if shutil.which("readelf") else "[libpsd.so.1]"
    assert "[libpsd.so.1]" in soname
    return p


@pytest.fixture(scope="module")
def demo_exe(prefix, tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    flags = _run(["pkg-config", "--cflags", "--libs", "psd"], env=env).stdout.split()
    assert f"-I{prefix}/include" in flags and "-lpsd" in flags
    exe = d / "psd_demo"
    _run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", ROOT / "examples" / "psd_demo.c", *flags,
          "-o", exe])
    return exe


def _png16(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint16 and img.ndim == 2, path
    return img


def test_demo_guided(demo_exe, tmp_path, capi_lib):
    inputs = tmp_path / "in"
    _run([sys.executable, "-m", "psdrt.runtime.cli", "demo", "--save-inputs", inputs])
    rgb, sparse, K = _read_inputs(inputs)
    assert rgb.shape == (500, 741, 3)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}  # the rpath from pkg-config finds it
    out = _run([demo_exe, inputs, tmp_path / "depth.png"], env=env).stdout
    assert "guided mode, 500x741" in out and "wrote" in out
    png = _png16(tmp_path / "depth.png")
    want = CSession.guided()(rgb, sparse, K)
    np.testing.assert_array_equal(png, want.depth_mm())
    assert (png > 0).all()


def test_demo_psd_with_artifacts(demo_exe, artifacts, tmp_path, capi_lib):
    inputs = tmp_path / "in"
    _run([sys.executable, "-m", "psdrt.runtime.cli", "demo", "--save-inputs", inputs, "--size", "56x84"])
    rgb, sparse, K = _read_inputs(inputs)
    out = _run([demo_exe, inputs, tmp_path / "depth.png", artifacts]).stdout
    assert "psd mode, 56x84" in out and "onnxruntime" in out
    want = CSession.from_artifacts(artifacts)(rgb, sparse, K).depth_mm()
    np.testing.assert_array_equal(_png16(tmp_path / "depth.png"), want)
    # a frame of the wrong size is refused with the fix
    full = tmp_path / "full"
    _run([sys.executable, "-m", "psdrt.runtime.cli", "demo", "--save-inputs", full])
    proc = subprocess.run([str(demo_exe), str(full), str(tmp_path / "x.png"), str(artifacts)], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "PSD_E_SHAPE_MISMATCH" in proc.stderr and "--size 500x741" in proc.stderr


def test_cmake_find_package(prefix, tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    build = tmp_path / "build"
    _run(["cmake", "-S", ROOT / "examples", "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}"])
    _run(["cmake", "--build", build])
    proc = subprocess.run([str(build / "psd_demo")], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
