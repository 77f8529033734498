"""Depth and error images for humans: a built-in viridis colormap, no matplotlib needed.

The colormap is matplotlib's *viridis* (perceptually uniform, readable in grey and by most
colour-blind viewers), stored as 17 sRGB anchors and linearly interpolated to 256 entries; the
interpolated table is within 6/255 of the full viridis table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = ["VIRIDIS_ANCHORS", "colormap_lut", "colorize", "colorize_depth", "error_image", "write_png"]

#: viridis at 17 equally spaced positions, sRGB uint8 (viridis is CC0, by S. van der Walt and N. Smith)
VIRIDIS_ANCHORS = np.array(
    [[68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141],
     [44, 114, 142], [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128], [63, 188, 115],
     [94, 201, 98], [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37]], dtype=np.uint8)


def _build_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(VIRIDIS_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, x, VIRIDIS_ANCHORS[:, c].astype(np.float64)) for c in range(3)], axis=1)
    lut = np.rint(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


_LUT = _build_lut()


def colormap_lut() -> np.ndarray:
    """The 256-entry colormap.

    Returns:
        np.ndarray: uint8 (256, 3) RGB, read-only; entry 0 = low values, 255 = high values.
    """
    return _LUT


def _as_map(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim > 2 and all(s == 1 for s in a.shape[:-2]):
        a = a.reshape(a.shape[-2:])
    if a.ndim != 2:
        raise ShapeError(f"{name} must be (H, W), got shape {a.shape}; drop batch/channel axes")
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} must be numeric, got {a.dtype}")
    return a.astype(np.float64, copy=False)


def colorize(values: np.ndarray, valid: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map values linearly onto the colormap; pixels outside ``valid`` are black.

    Args:
        values (np.ndarray): (H, W) numbers.
        valid (np.ndarray): bool (H, W).
        vmin (float | None): value shown as the first colour. Defaults to the minimum over ``valid``.
        vmax (float | None): value shown as the last colour. Defaults to the maximum over ``valid``.

    Returns:
        np.ndarray: uint8 (H, W, 3) RGB.
    """
    values = _as_map(values, "values")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(values)
    out = np.zeros(values.shape + (3,), np.uint8)
    if not valid.any():
        return out
    lo = float(values[valid].min()) if vmin is None else float(vmin)
    hi = float(values[valid].max()) if vmax is None else float(vmax)
    span = hi - lo if hi > lo else 1.0
    idx = np.clip(np.rint((values[valid] - lo) / span * 255.0), 0, 255).astype(np.intp)
    out[valid] = _LUT[idx]
    return out


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colour a depth map (near = dark purple, far = yellow); invalid (≤ 0 or non-finite) pixels black.

    Args:
        depth (np.ndarray): (H, W) depth in metres.
        vmin (float | None): depth shown as the first colour. Defaults to the valid minimum.
        vmax (float | None): depth shown as the last colour. Defaults to the valid maximum.
            Pass the same pair for several images to make them comparable.

    Returns:
        np.ndarray: uint8 (H, W, 3) RGB.
    """
    depth = _as_map(depth, "depth")
    return colorize(depth, np.isfinite(depth) & (depth > 0), vmin, vmax)


def error_image(pred: np.ndarray, gt: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Colour the absolute error |pred − gt| (0 = dark, ``vmax`` = yellow); invalid GT pixels black.

    Args:
        pred (np.ndarray): (H, W) predicted depth in metres.
        gt (np.ndarray): (H, W) ground truth in metres, 0 = invalid.
        vmax (float | None): error in metres shown as the last colour. Defaults to the largest
            error over valid GT.

    Returns:
        np.ndarray: uint8 (H, W, 3) RGB.

    Raises:
        ShapeError: shapes differ.
    """
    pred = _as_map(pred, "pred")
    gt = _as_map(gt, "gt")
    if pred.shape != gt.shape:
        raise ShapeError(f"pred {pred.shape} and gt {gt.shape} differ; resize the prediction to the GT size")
    valid = np.isfinite(gt) & (gt > 0)
    return colorize(np.abs(pred - gt), valid, 0.0, vmax)


def write_png(path: Union[str, Path], array: np.ndarray) -> None:
    """Write a PNG: uint8 RGB (H, W, 3), uint8 grey (H, W) or uint16 grey (H, W).

    Args:
        path (str | Path): output path; its folder must exist.
        array (np.ndarray): image; RGB order for colour images.

    Raises:
        InputError: unsupported dtype/shape, or the file cannot be written.
    """
    a = np.asarray(array)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    elif not (a.ndim == 2 and a.dtype in (np.uint8, np.uint16)):
        raise InputError(f"write_png takes uint8 (H, W, 3) RGB or uint8/uint16 (H, W) grey, got {a.dtype} "
                         f"{a.shape}; colourise with colorize_depth() or write depth with write_depth_png16()")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    if not ok:
        raise InputError(f"OpenCV could not encode {path}; check the OpenCV installation")
    try:
        buf.tofile(str(path))
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc}); create the folder or fix its permissions") from None
