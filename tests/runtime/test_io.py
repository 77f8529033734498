"""Tests of psdrt.runtime.io: image/depth/intrinsics I/O, Middlebury and the shared frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import _support
from psdrt.runtime import io
from psdrt.runtime.errors import InputError, ShapeError


def _write(path, img):
    assert cv2.imwrite(str(path), img)
    return path


def test_read_rgb_converts_bgr_grey_and_alpha(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert np.array_equal(io.read_rgb(_write(tmp_path / "c.png", rgb[..., ::-1])), rgb)
    grey = np.full((4, 5), 77, np.uint8)
    out = io.read_rgb(_write(tmp_path / "g.png", grey))
    assert out.shape == (4, 5, 3) and (out == 77).all()
    bgra = np.dstack([rgb[..., ::-1], np.full((4, 5), 10, np.uint8)])
    assert np.array_equal(io.read_rgb(_write(tmp_path / "a.png", bgra)), rgb)


def test_read_rgb_rejects_depth_png_and_garbage(tmp_path):
    with pytest.raises(InputError, match="read_depth"):
        io.read_rgb(_write(tmp_path / "d.png", np.full((3, 3), 1000, np.uint16)))
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot decode"):
        io.read_rgb(tmp_path / "x.png")


def test_missing_file_is_typed_and_names_path(tmp_path):
    with pytest.raises(io.MissingFileError, match="nope.png") as info:
        io.read_depth(tmp_path / "nope.png", 256)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, InputError)


def test_read_depth_png16_scales(tmp_path):
    raw = np.array([[0, 256, 512], [65535, 1, 1000]], np.uint16)
    path = _write(tmp_path / "d.png", raw)
    d = io.read_depth(path, scale=256)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, raw.astype(np.float32) / np.float32(256))
    np.testing.assert_allclose(io.read_depth(path, scale=1000)[1, 2], 1.0)


def test_read_depth_png_needs_scale_and_16_bit(tmp_path):
    path = _write(tmp_path / "d.png", np.full((3, 3), 300, np.uint16))
    with pytest.raises(InputError, match="scale=256"):
        io.read_depth(path)
    with pytest.raises(InputError, match="positive"):
        io.read_depth(path, scale=0)
    with pytest.raises(InputError, match="16-bit"):
        io.read_depth(_write(tmp_path / "d8.png", np.full((3, 3), 30, np.uint8)), scale=256)
    with pytest.raises(InputError, match="channels"):
        io.read_depth(_write(tmp_path / "c.png", np.full((3, 3, 3), 300, np.uint16)), scale=256)
    with pytest.raises(InputError, match="unsupported"):
        io.read_depth(_write(tmp_path / "d.jpg", np.full((3, 3), 30, np.uint8)), scale=256)


def test_read_depth_npy(tmp_path):
    arr = np.array([[1.5, np.nan], [-2.0, np.inf]], np.float64)
    np.save(tmp_path / "m.npy", arr)
    d = io.read_depth(tmp_path / "m.npy")
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, [[1.5, 0], [0, 0]])
    np.save(tmp_path / "mm.npy", np.array([[1500]], np.uint16))
    with pytest.raises(InputError, match="scale"):
        io.read_depth(tmp_path / "mm.npy")
    np.testing.assert_allclose(io.read_depth(tmp_path / "mm.npy", scale=1000), [[1.5]])
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ShapeError):
        io.read_depth(tmp_path / "bad.npy")


def test_write_depth_png16_rounds_clips_never_wraps(tmp_path):
    depth = np.array([[0.0, 1.2344, 70.0], [np.nan, -1.0, 65.535]], np.float32)
    path = tmp_path / "o.png"
    io.write_depth_png16(path, depth)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, [[0, 1234, 65535], [0, 0, 65535]])
    io.write_depth_png16(path, depth[..., None], scale=256)
    np.testing.assert_allclose(io.read_depth(path, 256)[0, 1], round(1.2344 * 256) / 256)
    with pytest.raises(ShapeError):
        io.write_depth_png16(path, np.zeros(4))
    with pytest.raises(InputError, match="create the folder"):
        io.write_depth_png16(tmp_path / "missing" / "o.png", depth)


def test_read_intrinsics_formats(tmp_path):
    (tmp_path / "k4.txt").write_text("# fx fy cx cy\n500, 510 320 240\n")
    np.testing.assert_array_equal(io.read_intrinsics(tmp_path / "k4.txt"),
                                  [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    (tmp_path / "k9.txt").write_text("7.0e2 0 600\n0 7.0e2 180\n0 0 1\n")
    k = io.read_intrinsics(tmp_path / "k9.txt")
    assert k.dtype == np.float64 and k[0, 2] == 600
    (tmp_path / "k5.txt").write_text("1 2 3 4 5")
    with pytest.raises(InputError, match="4"):
        io.read_intrinsics(tmp_path / "k5.txt")
    (tmp_path / "kx.txt").write_text("a b c d")
    with pytest.raises(InputError, match="non-numeric"):
        io.read_intrinsics(tmp_path / "kx.txt")


@pytest.mark.parametrize("K, match", [
    (np.eye(2), "3x3"),
    ([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]], "NaN"),
    ([[-5, 0, 1], [0, 5, 1], [0, 0, 1]], "non-positive"),
    ([[5, 0, 1], [0, 5, 1], [0, 0, 2]], "bottom row"),
    ([[5, 5, 1], [5, 5, 1], [0, 0, 1]], "singular"),
    ([[707, 0, 604], [0, 707, 180], [0, 0, 1]], "another resolution"),
    # NYU's 640x480 K on the 304x228 working size (the principal point is just outside)
    ([[518.86, 0, 325.58], [0, 519.47, 253.74], [0, 0, 1]], "another resolution"),
    ([[259.4, 1e25, 154.8], [0, 259.7, 120.9], [0, 0, 1]], r"skew .* exceeds fx"),
    ([[259.4, 0, 154.8], [3, 259.7, 120.9], [0, 0, 1]], "upper triangular"),
    ([[1e-18, 0, 154.8], [0, 1e18, 120.9], [0, 0, 1]], "differ by more than 5x"),
    ([[1e-3, 0, 154.8], [0, 1e-3, 120.9], [0, 0, 1]], r"implausible for a 304x228 image .* 3.04 to 304000"),
    ([[1e9, 0, 154.8], [0, 1e9, 120.9], [0, 0, 1]], "implausible"),
])
def test_validate_intrinsics_rejects(K, match):
    with pytest.raises(InputError, match=match):
        io.validate_intrinsics(K, shape=(228, 304))


def test_validate_intrinsics_is_the_kernel_librarys_rule():
    """One definition: the Python check is psd_check_intrinsics (the C sessions call it too)."""
    from psdrt.runtime import _capi

    bad = np.array([[259.4, 1e25, 154.8], [0, 259.7, 120.9], [0, 0, 1]])
    with pytest.raises(InputError) as py:
        io.validate_intrinsics(bad, (228, 304))
    with pytest.raises(InputError) as c:
        _capi.load().check_intrinsics(bad, (228, 304))
    assert str(py.value) == str(c.value)
    io.validate_intrinsics(np.array([[1e-18, 0, 1], [0, 1e-18, 1], [0, 0, 1]]) * [[1e18, 1, 1], [1, 1e18, 1], [1, 1, 1]])


def test_validate_intrinsics_accepts_and_returns_float64():
    K = io.validate_intrinsics(np.array([[259.4, 0, 154.8], [0, 259.7, 120.9], [0, 0, 1]], np.float32), (228, 304))
    assert K.dtype == np.float64 and K.shape == (3, 3)


def test_load_middlebury():
    f = io.load_middlebury()
    assert f.rgb.shape == (500, 741, 3) and f.depth.shape == (500, 741)
    assert f.dataset == "MIDDLEBURY" and (f.min_depth, f.max_depth) == (0.1, 20.0)
    valid = f.depth > 0
    assert 0.9 < valid.mean() < 0.95  # about 7 % of the disparities are invalid
    # f·B/(d + doffs): the scene spans roughly 2-5 m
    assert 1.5 < f.depth[valid].min() and f.depth.max() < 6.0
    np.testing.assert_allclose(f.K, [[994.978, 0, 311.193], [0, 994.978, 254.877], [0, 0, 1]])


def test_frame_validates():
    with pytest.raises(ShapeError, match="uint8"):
        io.Frame(np.zeros((2, 2, 3)), np.zeros((2, 2), np.float32), np.eye(3), "x", "KITTI", 0.5, 90)
    with pytest.raises(ShapeError, match="float32"):
        io.Frame(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3), np.float32), np.eye(3), "x", "KITTI", 0.5, 90)


def test_shared_root_missing_names_env_var(tmp_path):
    with pytest.raises(io.MissingFileError, match="PSD_SHARED_DATA"):
        io.list_shared_frames(tmp_path / "nowhere")
    with pytest.raises(InputError, match="unknown shared dataset"):
        io.load_shared_frame(tmp_path, "VOID", "0")


@_support.requires_shared_data
def test_shared_frames():
    frames = io.list_shared_frames(_support.SHARED_DATA)
    assert ("KITTI", "0000000005") in frames and ("NYUv2", "00000") in frames
    k = io.load_shared_frame(_support.SHARED_DATA, "kitti", "0000000005")
    assert k.shape == (375, 1242) and k.dataset == "KITTI" and k.K[0, 0] == 707.0493
    assert 0.1 < (k.depth > 0).mean() < 0.3 and k.depth.max() < 90
    assert not (k.depth[:100] > 0).any()  # KITTI GT is empty above row ~119
    n = io.load_shared_frame(_support.SHARED_DATA, "NYUv2", "00000")
    assert n.shape == (480, 640) and n.K[1, 2] == 253.73617
    assert 0.5 < (n.depth > 0).mean() < 0.95 and n.depth.max() < 10
