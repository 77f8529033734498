"""Writing a completed frame to disk: float depth, 16-bit millimetres, a colour image, a point cloud.

``save_outputs`` is what ``psdrt run`` calls per frame; ``write_ply`` back-projects depth with K into
a binary little-endian PLY (x, y, z float32 in metres, camera frame: x right, y down, z forward, plus
optional uchar red/green/blue), readable by Open3D, MeshLab and CloudCompare.

Lossless outputs are ``npy`` (float32 metres, written by default) and ``tiff`` (float32 metres, one
channel, readable by OpenCV, PIL, GDAL and tifffile). The 16-bit millimetre PNG (``png16``, the ROS
16UC1 convention) cannot hold more than 65.535 m: farther pixels are clipped to 65535, and
``save_outputs`` logs a warning with their count (``png16_saturation``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from .errors import InputError, ShapeError
from .io import validate_intrinsics, write_depth_png16
from .visualize import colorize_depth, encode_to_file, write_png

__all__ = ["FORMATS", "PNG16_MAX_M", "png16_saturation", "saturation_note", "write_depth_tiff", "write_ply",
           "save_outputs"]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: output format -> file name pattern (``{stem}`` is replaced)
FORMATS = {
    "npy": "{stem}_depth.npy",
    "png16": "{stem}_depth_mm.png",
    "color": "{stem}_depth_color.png",
    "ply": "{stem}.ply",
    "tiff": "{stem}_depth.tiff",
}

#: the farthest depth a 16-bit millimetre PNG holds (65535 mm)
PNG16_MAX_M = 65.535


def png16_saturation(depth) -> tuple[int, int]:
    """How many pixels the 16-bit millimetre PNG clips: finite depth whose rounded millimetres exceed
    65535 (the rounding of ``DepthResult.depth_mm`` and ``write_depth_png16``).

    Returns:
        tuple[int, int]: (clipped pixels, all pixels).
    """
    d = _depth_map(depth).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        n = int((np.isfinite(d) & (np.rint(d * 1000.0) > 65535)).sum())
    return n, int(d.size)


def saturation_note(clipped: int, total: int, lossless: str) -> str:
    """The sentence ``psdrt run`` and ``save_outputs`` print about clipped 16-bit PNG pixels."""
    pct = 100.0 * clipped / max(total, 1)
    return (f"{clipped} of {total} pixels ({pct:.1f} %) lie beyond {PNG16_MAX_M} m and are clipped to 65535 "
            f"in the 16-bit mm PNG; the lossless float32 metres are in {lossless}")


def _depth_map(depth) -> np.ndarray:
    d = np.asarray(depth)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ShapeError(f"depth must be (H, W), got shape {d.shape}; squeeze batch/channel axes first")
    return d


def write_ply(path: PathLike, depth: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None,
              stride: int = 1) -> int:
    """Back-project valid depth with K and write a binary little-endian PLY point cloud.

    Pixel (u, v) with depth z becomes ``x = (u - cx)·z/fx, y = (v - cy)·z/fy, z``; pixels whose
    depth is non-finite or ≤ 0 are skipped.

    Args:
        path (str | Path): output ``.ply`` path; its folder must exist.
        depth (np.ndarray): (H, W) depth in metres.
        K (np.ndarray): (3, 3) intrinsics at (H, W).
        rgb (np.ndarray | None): uint8 (H, W, 3) RGB; adds red/green/blue properties. Defaults to None.
        stride (int): keep every ``stride``-th pixel along both axes (from pixel (0, 0)). Defaults to 1.

    Returns:
        int: number of points written.

    Raises:
        ShapeError: depth not 2-D, or rgb of another size.
        InputError: invalid K, stride < 1, or the file cannot be written.
    """
    depth = _depth_map(depth)
    K = validate_intrinsics(K, depth.shape)
    stride = int(stride)
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}; use 1 to keep every pixel")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != depth.shape + (3,):
            raise ShapeError(f"rgb must be uint8 {depth.shape + (3,)} like the depth, got {rgb.dtype} {rgb.shape}; "
                             "pass the RGB image the depth was computed from")
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    z = depth[::stride, ::stride].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    z, u, v = z[valid], u[valid], v[valid]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    pts = np.empty(z.size, dtype=np.dtype(fields))
    pts["x"] = (u - cx) * z / fx
    pts["y"] = (v - cy) * z / fy
    pts["z"] = z
    if rgb is not None:
        col = rgb[::stride, ::stride][valid]
        pts["red"], pts["green"], pts["blue"] = col[:, 0], col[:, 1], col[:, 2]
    header = ["ply", "format binary_little_endian 1.0", "comment psdrt depth point cloud (metres, camera frame)",
              f"element vertex {z.size}", "property float x", "property float y", "property float z"]
    if rgb is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    try:
        with open(path, "wb") as fh:
            fh.write(("\n".join(header) + "\n").encode("ascii"))
            fh.write(pts.tobytes())
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc}); check that the folder exists and is writable") from None
    return int(z.size)


def write_depth_tiff(path: PathLike, depth_m: np.ndarray) -> None:
    """Write depth as a lossless single-channel float32 TIFF, in metres (0 = invalid).

    Read it back with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` (float32, bit-exact),
    ``PIL.Image.open`` (mode ``F``) or tifffile.

    Raises:
        ShapeError: ``depth_m`` is not 2-D.
        InputError: the file cannot be encoded or written.
    """
    d = np.ascontiguousarray(_depth_map(depth_m), dtype=np.float32)
    encode_to_file(path, ".tiff", d, "use the npy format instead")


def save_outputs(result, out_dir: PathLike, stem: str, rgb: np.ndarray | None, K: np.ndarray,
                 formats: Iterable[str] = ("npy", "png16", "color", "ply"), ply_stride: int = 1) -> dict:
    """Write one frame's outputs as ``FORMATS`` names them.

    ``npy``: float32 metres (lossless); ``tiff``: float32 metres (lossless, single-channel TIFF);
    ``png16``: uint16 millimetres, 0 = invalid (``DepthResult.depth_mm``), clipped at 65.535 m (a
    warning is logged with the count of clipped pixels, ``png16_saturation``); ``color``: colourised
    depth (valid range of this frame) with a colour bar in metres to the right of the frame;
    ``ply``: point cloud, coloured by ``rgb`` when given.

    Args:
        result (DepthResult | np.ndarray): the pipeline's result (or a bare (H, W) depth in metres).
        out_dir (str | Path): output folder; created if missing.
        stem (str): file name prefix, usually the input's stem.
        rgb (np.ndarray | None): uint8 (H, W, 3) RGB for the point colours.
        K (np.ndarray): (3, 3) intrinsics at the depth's size.
        formats (Iterable[str]): subset of ``FORMATS``. Defaults to npy, png16, color and ply (not tiff).
        ply_stride (int): pixel stride of the point cloud. Defaults to 1.

    Returns:
        dict[str, Path]: format -> written file.

    Raises:
        InputError: unknown format, or a file cannot be written.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown output format(s) {unknown}; choose from {sorted(FORMATS)}")
    depth = _depth_map(getattr(result, "depth", result)).astype(np.float32, copy=False)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out} ({exc}); pick a writable --out") from None
    files = {}
    for fmt in formats:
        path = out / FORMATS[fmt].format(stem=stem)
        if fmt == "npy":
            try:
                np.save(path, depth)
            except OSError as exc:
                raise InputError(f"cannot write {path} ({exc}); check free space and permissions") from None
        elif fmt == "png16":
            write_depth_png16(path, depth, scale=1000.0)  # the same rounding as DepthResult.depth_mm()
            clipped, total = png16_saturation(depth)
            if clipped:
                lossless = [FORMATS[f].format(stem=stem) for f in ("npy", "tiff") if f in formats]
                log.warning("%s: %s", path.name, saturation_note(
                    clipped, total, " and ".join(lossless) if lossless
                    else f"{FORMATS['npy'].format(stem=stem)} (add npy to the formats)"))
        elif fmt == "tiff":
            write_depth_tiff(path, depth)
        elif fmt == "color":
            write_png(path, colorize_depth(depth, colorbar=True))
        else:
            write_ply(path, depth, K, rgb=rgb, stride=ply_stride)
        files[fmt] = path
    return files
