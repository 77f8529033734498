"""Tests of psdrt.runtime.visualize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from psdrt.runtime import visualize as vz
from psdrt.runtime.errors import InputError, ShapeError


def test_lut_is_viridis_and_monotonic_in_lightness():
    lut = vz.colormap_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    np.testing.assert_array_equal(lut[0], vz.VIRIDIS_ANCHORS[0])
    np.testing.assert_array_equal(lut[-1], vz.VIRIDIS_ANCHORS[-1])
    luma = lut.astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(luma) > -0.6).all()  # perceptual map: lightness rises (up to rounding)
    matplotlib = pytest.importorskip("matplotlib")
    full = np.rint(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255)
    assert np.abs(full - lut).max() <= 6


def test_colorize_depth_range_and_invalid():
    depth = np.array([[0.0, 1.0, 2.0, np.nan]], np.float32)
    img = vz.colorize_depth(depth)
    assert img.shape == (1, 4, 3) and img.dtype == np.uint8
    lut = vz.colormap_lut()
    np.testing.assert_array_equal(img[0], [[0, 0, 0], lut[0], lut[255], [0, 0, 0]])
    fixed = vz.colorize_depth(depth, vmin=0.0, vmax=4.0)
    np.testing.assert_array_equal(fixed[0, 2], lut[128])
    assert not vz.colorize_depth(np.zeros((3, 3))).any()


def test_error_image():
    gt = np.array([[1.0, 2.0, 0.0]], np.float32)
    pred = np.array([[1.0, 3.0, 5.0]], np.float32)
    img = vz.error_image(pred, gt)
    lut = vz.colormap_lut()
    np.testing.assert_array_equal(img[0], [lut[0], lut[255], [0, 0, 0]])
    with pytest.raises(ShapeError):
        vz.error_image(pred, gt[:, :2])


def test_write_png_roundtrip(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    vz.write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "c.png"))[..., ::-1], rgb)
    grey16 = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    vz.write_png(tmp_path / "g.png", grey16)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), grey16)
    with pytest.raises(InputError, match="colorize_depth"):
        vz.write_png(tmp_path / "f.png", np.zeros((4, 5), np.float32))
    with pytest.raises(InputError, match="create the folder"):
        vz.write_png(tmp_path / "no" / "c.png", rgb)
