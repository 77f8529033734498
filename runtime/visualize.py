"""Depth and error images for humans: a built-in viridis colormap, no matplotlib needed.

The colormap is matplotlib's *viridis* (perceptually uniform, readable in grey and by most
colour-blind viewers), stored as 17 sRGB anchors and linearly interpolated to 256 entries; the
interpolated table is within 6/255 of the full viridis table.

``colorize_depth(..., colorbar=True)`` and ``error_image(..., colorbar=True)`` append a colour bar
with its units to the right of the image (depth in m, error in mm): the first W columns stay the
frame's pixels, so the picture remains pixel-aligned with the depth map. Every PNG the ``psdrt``
command writes for humans (``psdrt run``'s ``<stem>_depth_color.png``, ``psdrt demo``) carries one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = ["VIRIDIS_ANCHORS", "colormap_lut", "colorize", "colorize_depth", "error_image", "add_colorbar",
           "write_png"]

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


def _range(values: np.ndarray, valid: np.ndarray, vmin, vmax) -> tuple[float | None, float | None]:
    """The (lo, hi) ``colorize`` maps onto the colormap; None where there is no valid value to take it from."""
    valid = valid & np.isfinite(values)
    lo = float(vmin) if vmin is not None else (float(values[valid].min()) if valid.any() else None)
    hi = float(vmax) if vmax is not None else (float(values[valid].max()) if valid.any() else None)
    return lo, hi


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   colorbar: bool = False) -> np.ndarray:
    """Colour a depth map (near = dark purple, far = yellow); invalid (≤ 0 or non-finite) pixels black.

    Args:
        depth (np.ndarray): (H, W) depth in metres.
        vmin (float | None): depth shown as the first colour. Defaults to the valid minimum.
        vmax (float | None): depth shown as the last colour. Defaults to the valid maximum.
            Pass the same pair for several images to make them comparable.
        colorbar (bool): append a colour bar labelled ``depth [m]`` (``add_colorbar``). Defaults
            to False.

    Returns:
        np.ndarray: uint8 (H, W, 3) RGB; with ``colorbar``, (max(H, 64), W + bar width, 3) with
        the frame in the first H rows and W columns.
    """
    depth = _as_map(depth, "depth")
    valid = np.isfinite(depth) & (depth > 0)
    img = colorize(depth, valid, vmin, vmax)
    if not colorbar:
        return img
    lo, hi = _range(depth, valid, vmin, vmax)
    return add_colorbar(img, lo, hi, "depth [m]")


def error_image(pred: np.ndarray, gt: np.ndarray, vmax: float | None = None, colorbar: bool = False) -> np.ndarray:
    """Colour the absolute error |pred − gt| (0 = dark, ``vmax`` = yellow); invalid GT pixels black.

    Args:
        pred (np.ndarray): (H, W) predicted depth in metres.
        gt (np.ndarray): (H, W) ground truth in metres, 0 = invalid.
        vmax (float | None): error in metres shown as the last colour. Defaults to the largest
            error over valid GT.
        colorbar (bool): append a colour bar labelled ``|error| [mm]``, its ticks in millimetres
            (``add_colorbar``). Defaults to False.

    Returns:
        np.ndarray: uint8 (H, W, 3) RGB (wider with ``colorbar``, see ``colorize_depth``).

    Raises:
        ShapeError: shapes differ.
    """
    pred = _as_map(pred, "pred")
    gt = _as_map(gt, "gt")
    if pred.shape != gt.shape:
        raise ShapeError(f"pred {pred.shape} and gt {gt.shape} differ; resize the prediction to the GT size")
    valid = np.isfinite(gt) & (gt > 0)
    err = np.abs(pred - gt)
    img = colorize(err, valid, 0.0, vmax)
    if not colorbar:
        return img
    lo, hi = _range(err, valid, 0.0, vmax)
    return add_colorbar(img, lo, hi, "|error| [mm]", scale=1000.0)


def _tick_text(v: float, span: float) -> str:
    digits = 2 if span <= 0 else int(np.clip(2 - np.floor(np.log10(span)), 0, 3))
    return f"{v:.{digits}f}"


def add_colorbar(img: np.ndarray, vmin: float | None, vmax: float | None, label: str, scale: float = 1.0,
                 ticks: int = 5) -> np.ndarray:
    """Append a vertical colour bar with tick values and a unit label to the right of an image.

    The bar shows the colormap from ``vmin`` (bottom, ``colormap_lut()[0]``) to ``vmax`` (top,
    entry 255), the mapping ``colorize`` applied. The image's own pixels are copied unchanged
    into the top-left H x W corner; the canvas is at least 64 rows high so that the text fits
    (extra rows below a short image are black).

    Args:
        img (np.ndarray): uint8 (H, W, 3) RGB, e.g. from ``colorize_depth``.
        vmin (float | None): value of the first colour, in the values' unit (None: no valid value;
            the bar then says so).
        vmax (float | None): value of the last colour.
        label (str): what and which unit the text shows, e.g. ``"depth [m]"``.
        scale (float): the tick texts show ``value * scale`` (1000: metres shown in mm). Defaults to 1.
        ticks (int): number of tick values. Defaults to 5.

    Returns:
        np.ndarray: uint8 (max(H, 64), W + bar width, 3) RGB.

    Raises:
        ShapeError: ``img`` is not (H, W, 3) uint8.
    """
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ShapeError(f"add_colorbar takes a uint8 (H, W, 3) image, got {a.dtype} {a.shape}; colourise "
                         "first (colorize_depth, error_image)")
    h, w = a.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    fs = float(np.clip(h / 700.0, 0.35, 0.8))
    th = max(1, int(round(fs * 2)))
    (_, text_h), base = cv2.getTextSize("0", font, fs, th)
    line = text_h + base + 4
    out_h = max(h, 64, 4 * line)
    margin = max(4, line // 3)
    top, bottom = margin + line + text_h // 2, out_h - margin - text_h // 2 - base
    bar_w = max(8, int(round(line * 0.9)))
    if vmin is None or vmax is None:
        values, tick_texts = [], []
    else:
        lo, hi = float(vmin) * scale, float(vmax) * scale
        fit = max(2, (bottom - top) // (2 * text_h) + 1)  # tick texts must not overlap on short images
        n = 1 if hi <= lo else max(2, min(int(ticks), fit))
        values = [lo] if n == 1 else list(np.linspace(lo, hi, n))
        tick_texts = [_tick_text(v, hi - lo) for v in values]
    tick_w = max([cv2.getTextSize(t, font, fs, th)[0][0] for t in tick_texts] or [0])
    label_text = label if tick_texts else f"{label}: no valid pixel"
    label_w = cv2.getTextSize(label_text, font, fs, th)[0][0]
    panel_w = max(label_w, bar_w + margin + tick_w) + 2 * margin
    canvas = np.zeros((out_h, w + panel_w, 3), np.uint8)
    canvas[:h, :w] = a
    x0 = w + margin
    cv2.putText(canvas, label_text, (x0, margin + text_h), font, fs, (255, 255, 255), th, cv2.LINE_AA)
    if tick_texts:
        rows = bottom - top + 1
        idx = np.rint(np.linspace(255.0, 0.0, rows)).astype(np.intp)  # top = last colour (vmax)
        canvas[top:bottom + 1, x0:x0 + bar_w] = _LUT[idx][:, None, :]
        lo, hi = float(vmin) * scale, float(vmax) * scale
        for v, t in zip(values, tick_texts):
            frac = 0.0 if hi <= lo else (v - lo) / (hi - lo)
            y = int(round(bottom - frac * (bottom - top)))
            cv2.line(canvas, (x0 + bar_w, y), (x0 + bar_w + margin // 2, y), (255, 255, 255), 1)
            cv2.putText(canvas, t, (x0 + bar_w + margin, y + text_h // 2), font, fs, (255, 255, 255), th,
                        cv2.LINE_AA)
    return canvas


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
    encode_to_file(path, ".png", a, "check the OpenCV installation")


def encode_to_file(path: Union[str, Path], ext: str, image: np.ndarray, encode_fix: str) -> None:
    """Encode ``image`` with OpenCV as ``ext`` and write it to ``path`` (any path OpenCV's own
    writer would mangle, non-ASCII included); failures are typed.

    Raises:
        InputError: OpenCV cannot encode the image (``encode_fix`` says what to do), or the file
            cannot be written.
    """
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image))
    if not ok:
        raise InputError(f"OpenCV could not encode {path} as {ext.lstrip('.').upper()}; {encode_fix}")
    try:
        buf.tofile(str(path))
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc}); create the folder, free space or fix its "
                         "permissions") from None
