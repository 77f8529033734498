"""Reading and writing RGB images, depth maps and intrinsics; the development frames as ``Frame`` objects.

Conventions used throughout psdrt: RGB is ``uint8 (H, W, 3)`` in RGB order; depth is
``float32 (H, W)`` in metres with 0 = invalid; intrinsics ``K`` are ``float64 (3, 3)`` at the
resolution of the image they describe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image

from psdrt.runtime import config
from psdrt.runtime.errors import InputError, ShapeError
from psdrt.runtime.presets import PRESETS

__all__ = [
    "MissingFileError",
    "Frame",
    "DATASET_DEPTH_RANGES",
    "SHARED_DATASETS",
    "MIDDLEBURY_CALIBRATION",
    "read_rgb",
    "decode_rgb",
    "read_depth",
    "write_depth_png16",
    "read_intrinsics",
    "validate_intrinsics",
    "intrinsics_matrix",
    "load_middlebury",
    "list_shared_frames",
    "load_shared_frame",
]

PathLike = Union[str, Path]

#: (min, max) depth in metres of each dataset, as the PSD config lists them (docs/psd_method.md §1.3);
#: one table, kept with the propagation presets
DATASET_DEPTH_RANGES: dict[str, tuple[float, float]] = {
    name: (p.min_depth, p.max_depth) for name, p in PRESETS.items() if name not in ("NK", "HAMMER")
}


@dataclass(frozen=True)
class _SharedDataset:
    folder: str
    size_hw: tuple[int, int]
    depth_scale: float
    rgb_ext: str
    intrinsics: tuple[float, float, float, float]  # fx, fy, cx, cy


#: the shared development frames (../shared/data/README.md), keyed by dataset name
SHARED_DATASETS: dict[str, _SharedDataset] = {
    "KITTI": _SharedDataset("kitti", (375, 1242), 256.0, ".png", (707.0493, 707.0493, 604.0814, 180.5066)),
    "NYUv2": _SharedDataset("nyu", (480, 640), 1000.0, ".jpg", (518.8579, 519.46961, 325.58245, 253.73617)),
}
_SHARED_ALIASES = {"kitti": "KITTI", "nyu": "NYUv2", "nyuv2": "NYUv2"}

#: Middlebury 2014 "Motorcycle" at the 741x500 size shipped by scikit-image (f, cx, cy, doffs in px; baseline in mm)
MIDDLEBURY_CALIBRATION = {"f": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline_mm": 193.001}


class MissingFileError(InputError, FileNotFoundError):
    """A file psdrt was asked to read does not exist (also a ``FileNotFoundError``)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One RGB-D frame with its calibration.

    Attributes:
        rgb (np.ndarray): uint8 (H, W, 3), RGB order.
        depth (np.ndarray): float32 (H, W) ground-truth depth in metres, 0 = invalid.
        K (np.ndarray): float64 (3, 3) pinhole intrinsics at (H, W).
        name (str): frame identifier, e.g. ``"00000"``.
        dataset (str): dataset key as the PSD code spells it (``"KITTI"``, ``"NYUv2"``, ``"MIDDLEBURY"``).
        min_depth (float): the dataset's minimum depth in metres (§1.3).
        max_depth (float): the dataset's maximum depth in metres (§1.3).
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    name: str
    dataset: str
    min_depth: float
    max_depth: float

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ShapeError(f"Frame.rgb must be uint8 (H, W, 3), got {self.rgb.dtype} {self.rgb.shape}; "
                             "load it with read_rgb()")
        if self.depth.dtype != np.float32 or self.depth.shape != self.rgb.shape[:2]:
            raise ShapeError(f"Frame.depth must be float32 {self.rgb.shape[:2]} like the RGB, got "
                             f"{self.depth.dtype} {self.depth.shape}; load it with read_depth()")
        validate_intrinsics(self.K, self.rgb.shape[:2])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the frame."""
        return self.rgb.shape[:2]


def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path}; check the path (and PSD_SHARED_DATA for shared frames)")
    return path


def _decode(path: Path, flags: int) -> np.ndarray:
    # np.fromfile + imdecode instead of imread: imread returns None silently and mishandles
    # non-ASCII paths on Windows.
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise InputError(f"cannot decode image {path}; the file is empty, truncated or not an image: re-export it")
    return img


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an 8-bit colour image as RGB.

    PIL does the decoding, like the official PSD loaders, so JPEG frames decode to the same pixels.
    Grey images are replicated to three channels and an alpha channel is dropped.

    Args:
        path (str | Path): PNG or JPEG file.

    Returns:
        np.ndarray: uint8 (H, W, 3), RGB order.

    Raises:
        MissingFileError: the file does not exist.
        InputError: the file is not an image or holds more than 8 bits per channel.
    """
    path = _check_file(path)
    return _pil_rgb(path, str(path))


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """:func:`read_rgb` for an encoded image in memory (PNG/JPEG bytes, e.g. a ROS
    ``sensor_msgs/CompressedImage``): the same PIL decoding, so the pixels equal the file's.

    Raises:
        InputError: the bytes are not an image, or hold more than 8 bits per channel (``name``
        says which image in the message).
    """
    import io as _io

    return _pil_rgb(_io.BytesIO(bytes(data)), name)


def _pil_rgb(source, name: str) -> np.ndarray:
    try:
        with Image.open(source) as img:
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise InputError(f"{name} is a {img.mode} (16-bit or float) image, not 8-bit RGB; "
                                 "read depth maps with read_depth()")
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except Exception as exc:  # PIL raises several unrelated types for bad files
        raise InputError(f"cannot decode image {name} ({exc}); re-export it as PNG or JPEG") from None
    return np.ascontiguousarray(rgb)


def read_depth(path: PathLike, scale: float | None = None) -> np.ndarray:
    """Read a depth map as float32 metres (0 = invalid).

    Args:
        path (str | Path): a single-channel 16-bit PNG, or a ``.npy`` array of shape (H, W) or (H, W, 1).
        scale (float | None): stored units per metre; metres = stored / scale. Required for PNG
            (256 for KITTI, 1000 for NYUv2: there is no safe guess). For float ``.npy`` files,
            None means the values already are metres. Defaults to None.

    Returns:
        np.ndarray: float32 (H, W) depth in metres. Non-finite and negative values become 0.

    Raises:
        MissingFileError: the file does not exist.
        InputError: 8-bit or multi-channel PNG, missing ``scale`` for PNG or integer arrays,
            a non-positive ``scale``, an unsupported extension.
    """
    path = _check_file(path)
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise InputError(f"depth scale must be a positive number, got {scale!r}; use 256 for KITTI, 1000 for NYUv2")
    ext = path.suffix.lower()
    if ext == ".png":
        raw = _decode(path, cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[..., 0]
        if raw.ndim != 2:
            raise InputError(f"{path} has {raw.shape[2]} channels; a depth PNG must be single-channel 16-bit")
        if raw.dtype != np.uint16:
            raise InputError(f"{path} is a {raw.dtype} PNG; depth PNGs must be 16-bit (an 8-bit PNG cannot "
                             "hold metric depth): re-export it with write_depth_png16()")
        if scale is None:
            raise InputError(f"read_depth({path.name!r}) needs scale for a 16-bit PNG: pass scale=256 for KITTI, "
                             "scale=1000 for NYUv2 (millimetres)")
        # Divide in float32, as the official loaders do, so values match bit for bit.
        return raw.astype(np.float32) / np.float32(scale)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot load {path} ({exc}); save depth with numpy.save(array)") from None
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ShapeError(f"{path} holds shape {arr.shape}; a depth array must be (H, W) or (H, W, 1)")
        if arr.dtype.kind in "iu":
            if scale is None:
                raise InputError(f"{path} holds integers ({arr.dtype}); pass scale (stored units per metre)")
        elif arr.dtype.kind != "f":
            raise InputError(f"{path} holds {arr.dtype}; save depth as float32 metres")
        depth = arr.astype(np.float32)
        if scale is not None:
            depth /= np.float32(scale)
        bad = ~np.isfinite(depth) | (depth < 0)
        if bad.any():
            depth[bad] = 0.0
        return depth
    raise InputError(f"unsupported depth file {path}; use a 16-bit .png or a .npy array")


def write_depth_png16(path: PathLike, depth_m: np.ndarray, scale: float = 1000.0) -> None:
    """Write depth in metres as a 16-bit PNG (stored = round(depth·scale), 0 = invalid).

    Values beyond the 16-bit range are clipped to 65535 (never wrapped); non-finite, negative and
    zero depths are written as 0.

    Args:
        path (str | Path): output ``.png`` path; its folder must exist.
        depth_m (np.ndarray): (H, W) or (H, W, 1) depth in metres.
        scale (float): stored units per metre. Defaults to 1000 (millimetres).

    Raises:
        ShapeError: ``depth_m`` is not 2-D.
        InputError: non-positive scale, or the file cannot be written.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive number, got {scale!r}; use 1000 for mm, 256 for KITTI")
    depth = np.asarray(depth_m)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ShapeError(f"depth_m must be (H, W), got shape {depth.shape}; squeeze batch/channel axes first")
    stored = depth.astype(np.float64) * scale
    stored = np.where(np.isfinite(stored) & (stored > 0), stored, 0.0)
    stored = np.clip(np.rint(stored), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    from psdrt.runtime.visualize import write_png

    write_png(path, stored)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Build a pinhole K.

    Args:
        fx (float): focal length along x in pixels.
        fy (float): focal length along y in pixels.
        cx (float): principal point x in pixels.
        cy (float): principal point y in pixels.

    Returns:
        np.ndarray: float64 (3, 3).
    """
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def validate_intrinsics(K: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Check that ``K`` is a usable pinhole matrix, optionally for an image of ``shape``.

    The rules are the kernel library's ``psd_check_intrinsics`` (listed in ``psd.h``), the one
    definition the C sessions apply too: finite, bottom row (0, 0, 1), upper triangular, fx, fy > 0,
    |skew| <= fx, fy / fx in [1/5, 5]; with ``shape``, focal lengths of 0.01 to 1000 times the
    longer side and the principal point inside the image.

    Args:
        K (np.ndarray): (3, 3) intrinsics.
        shape (tuple[int, int] | None): (H, W) of the image K belongs to. Defaults to None (no
            image-size rules).

    Returns:
        np.ndarray: ``K`` as a float64 (3, 3) array.

    Raises:
        InputError: not 3×3 or numeric, or a rule above fails (the message names the fix).
    """
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("intrinsics K must be a numeric 3x3 matrix [[fx,0,cx],[0,fy,cy],[0,0,1]]") from None
    if K.shape != (3, 3):
        raise InputError(f"intrinsics K must be 3x3, got shape {K.shape}; "
                         "build it with intrinsics_matrix(fx, fy, cx, cy)")
    from . import _capi

    _capi.load().check_intrinsics(K, shape)
    return K


def read_intrinsics(path: PathLike) -> np.ndarray:
    """Read intrinsics from a small text file.

    The file holds either 4 numbers ``fx fy cx cy`` or 9 numbers (a row-major 3×3 matrix, the
    layout of PSD's per-frame ``.txt`` files), separated by whitespace or commas; ``#`` starts a comment.

    Args:
        path (str | Path): text file.

    Returns:
        np.ndarray: validated float64 (3, 3) K.

    Raises:
        MissingFileError: the file does not exist.
        InputError: wrong number of values, non-numeric values, or an invalid K.
    """
    path = _check_file(path)
    tokens: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        tokens += line.split("#", 1)[0].replace(",", " ").split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"{path} contains non-numeric values; write 'fx fy cx cy' or a 3x3 matrix") from None
    if len(values) == 4:
        K = intrinsics_matrix(*values)
    elif len(values) == 9:
        K = np.array(values, dtype=np.float64).reshape(3, 3)
    else:
        raise InputError(f"{path} has {len(values)} numbers; write 4 ('fx fy cx cy') or 9 (a 3x3 matrix)")
    return validate_intrinsics(K)


def load_middlebury() -> Frame:
    """The Middlebury 2014 "Motorcycle" frame shipped inside scikit-image, with metric ground truth.

    Depth comes from the ground-truth disparity: depth_mm = f·baseline / (disparity + doffs);
    non-finite disparities are invalid (0).

    Returns:
        Frame: 500×741 frame, dataset ``"MIDDLEBURY"`` (0.1–20 m).

    Raises:
        InputError: the scikit-image data has an unexpected size (another scikit-image release).
    """
    from skimage import data  # only this loader needs skimage.data

    left, _right, disparity = data.stereo_motorcycle()
    if left.shape != (500, 741, 3) or disparity.shape != (500, 741):
        raise InputError(f"skimage.data.stereo_motorcycle() returned {left.shape}/{disparity.shape}, expected "
                         "(500, 741); the calibration is only valid at that size: install scikit-image>=0.21")
    c = MIDDLEBURY_CALIBRATION
    disparity = disparity.astype(np.float64)
    valid = np.isfinite(disparity) & (disparity + c["doffs"] > 0)
    depth = np.zeros(disparity.shape, dtype=np.float32)
    depth[valid] = (c["f"] * c["baseline_mm"] / (disparity[valid] + c["doffs"]) / 1000.0).astype(np.float32)
    lo, hi = DATASET_DEPTH_RANGES["MIDDLEBURY"]
    return Frame(rgb=np.ascontiguousarray(left, dtype=np.uint8), depth=depth,
                 K=intrinsics_matrix(c["f"], c["f"], c["cx"], c["cy"]),
                 name="motorcycle", dataset="MIDDLEBURY", min_depth=lo, max_depth=hi)


def _shared_root(root: PathLike | None) -> Path:
    path = Path(root) if root is not None else config.shared_data_dir()
    if path is None or not path.is_dir():
        raise MissingFileError(f"shared data folder not found ({path}); set PSD_SHARED_DATA to the folder "
                               "holding kitti/ and nyu/")
    return path


def _dataset_key(dataset: str) -> str:
    key = _SHARED_ALIASES.get(str(dataset).lower())
    if key is None:
        raise InputError(f"unknown shared dataset {dataset!r}; use one of {sorted(SHARED_DATASETS)}")
    return key


def list_shared_frames(root: PathLike | None = None) -> list[tuple[str, str]]:
    """List the shared development frames.

    Args:
        root (str | Path | None): folder holding ``kitti/`` and ``nyu/``. Defaults to
            ``config.shared_data_dir()``.

    Returns:
        list[tuple[str, str]]: sorted ``(dataset, frame_id)`` pairs that have both RGB and depth.

    Raises:
        MissingFileError: the folder does not exist.
    """
    base = _shared_root(root)
    frames = []
    for key, spec in SHARED_DATASETS.items():
        folder = base / spec.folder
        for depth_file in sorted(folder.glob("*_depth.png")):
            frame_id = depth_file.name[: -len("_depth.png")]
            if (folder / f"{frame_id}_rgb{spec.rgb_ext}").is_file():
                frames.append((key, frame_id))
    return sorted(frames)


def load_shared_frame(root: PathLike | None, dataset: str, frame_id: str) -> Frame:
    """Load one shared KITTI or NYUv2 development frame with its intrinsics.

    Args:
        root (str | Path | None): folder holding ``kitti/`` and ``nyu/``; None uses ``config.shared_data_dir()``.
        dataset (str): ``"KITTI"`` or ``"NYUv2"`` (case-insensitive; ``"nyu"`` also accepted).
        frame_id (str): e.g. ``"0000000005"`` (KITTI) or ``"00000"`` (NYU).

    Returns:
        Frame: full stored resolution (KITTI 375×1242, NYUv2 480×640).

    Raises:
        MissingFileError: the folder or a file is missing.
        InputError: unknown dataset, or a frame of unexpected size.
    """
    key = _dataset_key(dataset)
    spec = SHARED_DATASETS[key]
    folder = _shared_root(root) / spec.folder
    rgb = read_rgb(folder / f"{frame_id}_rgb{spec.rgb_ext}")
    depth = read_depth(folder / f"{frame_id}_depth.png", scale=spec.depth_scale)
    if rgb.shape[:2] != spec.size_hw or depth.shape != spec.size_hw:
        raise InputError(f"{key} frame {frame_id} is {rgb.shape[:2]}/{depth.shape}, expected {spec.size_hw}; "
                         "the shared intrinsics are only valid at that size: restore the original files")
    lo, hi = DATASET_DEPTH_RANGES[key]
    return Frame(rgb=rgb, depth=depth, K=intrinsics_matrix(*spec.intrinsics), name=str(frame_id),
                 dataset=key, min_depth=lo, max_depth=hi)
