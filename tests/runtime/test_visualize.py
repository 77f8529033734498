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


def test_colorbar_depth_in_metres_and_error_in_mm():
    depth = np.linspace(1.0, 9.0, 200 * 300).reshape(200, 300)
    depth[0, 0] = 0.0
    plain = vz.colorize_depth(depth)
    img = vz.colorize_depth(depth, colorbar=True)
    assert img.shape[0] == 200 and img.shape[1] > 300
    np.testing.assert_array_equal(img[:, :300], plain)  # pixel-aligned with the depth map
    panel = img[:, 300:]
    lut = vz.colormap_lut()
    # the bar: a column whose colours run from the last colour (top, vmax) to the first (bottom, vmin)
    bar_cols = [x for x in range(panel.shape[1]) if (panel[:, x] == lut[255]).all(axis=1).any()
                and (panel[:, x] == lut[0]).all(axis=1).any()]
    assert bar_cols
    col = panel[:, bar_cols[len(bar_cols) // 2]]
    top = np.flatnonzero((col == lut[255]).all(axis=1)).min()
    bottom = np.flatnonzero((col == lut[0]).all(axis=1)).max()
    assert top < bottom
    def text(a):  # anti-aliased white text: bright grey pixels (the colormap is never grey)
        return (a.min(axis=2) > 128) & (a.max(axis=2) - a.min(axis=2) < 8)

    assert text(panel).sum() > 50  # tick values and the unit label
    # the labels differ with the unit: same values, depth in m vs error in mm
    gt = np.full((200, 300), 2.0)
    err = vz.error_image(gt + depth / 1000.0, gt, colorbar=True)  # 1..9 mm
    np.testing.assert_array_equal(err[:, :300], vz.error_image(gt + depth / 1000.0, gt))
    label_rows = slice(0, 20)  # the unit label sits above the bar: "depth [m]" vs "|error| [mm]"
    assert text(err[label_rows, 300:]).any() and text(panel[label_rows]).any()
    w = min(err.shape[1], img.shape[1]) - 300
    assert not np.array_equal(text(err[label_rows, 300:300 + w]), text(panel[label_rows, :w]))
    # ticks for the values drawn; no valid pixel still gives an image
    none = vz.colorize_depth(np.zeros((10, 12)), colorbar=True)
    assert none.shape[0] == 64 and not none[:10, :12].any() and text(none[:, 12:]).any()


def test_colorbar_tick_texts_follow_the_unit():
    assert vz._tick_text(4.25, 8.0) == "4.25"
    assert vz._tick_text(5000.0, 9000.0) == "5000"
    assert vz._tick_text(2.5, 0.0) == "2.50"
    with pytest.raises(ShapeError):
        vz.add_colorbar(np.zeros((4, 4), np.uint8), 0, 1, "depth [m]")
