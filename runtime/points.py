"""Point clouds in: LiDAR, ToF or SLAM points plus calibration -> the sparse depth image psdrt takes.

:func:`project_points` is the kernel library's ``psd_project_points`` (one source for the CPU and
CUDA, ``kernels/project/project.h``), so that the projection a robot runs every frame is the one
tested here. For each point ``p`` (x, y, z in the sensor frame, metres):

* ``c = T @ [p, 1]`` with ``T`` the 4x4 sensor-to-camera transform (identity when the points are
  already in the camera frame);
* the point is dropped if any coordinate is NaN/Inf, or unless ``min_depth < c_z <= max_depth``
  (points behind the camera, or too close to it, are dropped);
* ``u = (K00 c_x + K01 c_y + K02 c_z) / c_z``, ``v = (K11 c_y + K12 c_z) / c_z``; its pixel is the
  nearest pixel centre, ``(row, col) = (floor(v + 0.5), floor(u + 0.5))``, with pixel centres at
  integer coordinates (0-based: OpenCV's and psdrt's K convention); outside the image it is dropped;
* the pixel's value is ``c_z`` (the camera's z, not the range, as a depth camera measures), and
  where several points fall on one pixel **the nearest wins** (a z-buffer).

The arithmetic is float64, unfused and in that order on every device, so the kernel equals the
NumPy reference :func:`reference_project_points` bit for bit, and the result does not depend on
the order of the points. What it does not do: rolling-shutter or motion compensation, or lens
distortion (undistort the image first; K is pinhole).

**Parallax** (a background return the LiDAR sees past a foreground edge, where the camera sees the
foreground) is a separate stage, :func:`filter_occluded` (``psd_occlusion_filter``): the z-buffer
only resolves points that land on the same pixel, and the background returns land *between* the
foreground's scan lines. ``psdrt run --points`` applies it by default (``--no-occlusion-filter``
turns it off).

Readers (:func:`read_points`): KITTI Velodyne ``.bin`` (float32 x, y, z, reflectance) and ``.npy``
with NumPy; PLY with ``plyfile`` and PCD with ``pypcd4`` (the ``points`` extra:
``pip install 'psdrt[points]'``). Calibration: :func:`read_kitti_calib` (KITTI's object-benchmark
file, or a KITTI raw date folder), :func:`read_extrinsics` (a 4x4 or 3x4 matrix in a text file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ._lazy import lazy_import
from .errors import InputError, ShapeError

__all__ = [
    "POINT_EXTS",
    "CameraCalib",
    "project_points",
    "reference_project_points",
    "filter_occluded",
    "reference_filter_occluded",
    "read_points",
    "read_kitti_calib",
    "read_extrinsics",
]

PathLike = Union[str, Path]

#: file types :func:`read_points` reads
POINT_EXTS = (".bin", ".npy", ".ply", ".pcd")
#: default depth range of a projection, metres (points closer than 10 cm are sensor noise or the
#: vehicle itself)
MIN_DEPTH, MAX_DEPTH = 0.1, float("inf")

_plyfile = lazy_import("plyfile")
_pypcd4 = lazy_import("pypcd4")


@dataclass(frozen=True)
class CameraCalib:
    """A camera's intrinsics and the sensor-to-camera transform of its point clouds.

    Attributes:
        K (np.ndarray): float64 (3, 3) pinhole intrinsics of the (rectified) image.
        T (np.ndarray): float64 (4, 4) sensor-to-camera transform, row-major.
        source (str): where it was read from.
    """

    K: np.ndarray
    T: np.ndarray
    source: str = ""


def _as_points(points) -> np.ndarray:
    a = np.asarray(points)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ShapeError(f"points must be (N, 3) or (N, S > 3) with x, y, z first, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"points must be floating point (metres), got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def project_points(points, K, size, T=None, min_depth: float = MIN_DEPTH,
                   max_depth: float = MAX_DEPTH) -> np.ndarray:
    """Project a point cloud into a z-buffered sparse depth image (the module docstring's rules).

    Args:
        points (np.ndarray): (N, S >= 3) x, y, z first, metres, in the sensor frame (KITTI's (N, 4)
            with reflectance is accepted as is). N = 0 gives an all-zero image.
        K (np.ndarray): (3, 3) pinhole intrinsics of the image (``validate_intrinsics``' rules).
        size (tuple[int, int]): the image's (H, W).
        T (np.ndarray | None): (4, 4) sensor-to-camera transform; None = the points are in the
            camera frame already. Must be rigid (bottom row 0 0 0 1, orthonormal rotation).
        min_depth (float): points with camera z <= this are dropped. Defaults to 0.1 m.
        max_depth (float): points with camera z > this are dropped. Defaults to +inf.

    Returns:
        np.ndarray: float32 (H, W) metres, 0 = no point.

    Raises:
        ShapeError: points, K or T of the wrong shape. InputError: non-float points, an unusable
        K or T, a bad depth range.
    """
    from . import _capi

    return _capi.load().project_points(_as_points(points), K, size, T=T, min_depth=min_depth, max_depth=max_depth)


def reference_project_points(points, K, size, T=None, min_depth: float = MIN_DEPTH,
                             max_depth: float = MAX_DEPTH) -> np.ndarray:
    """The NumPy reference of :func:`project_points`: the same float64 operations in the same
    order, the z-buffer as ``np.minimum.at`` (no validation of K or T: the tests use it)."""
    pts = _as_points(points)
    h, w = int(size[0]), int(size[1])
    K = np.asarray(K, np.float64)
    T = np.eye(4) if T is None else np.asarray(T, np.float64)
    x, y, z = (pts[:, i].astype(np.float64) for i in range(3))
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    with np.errstate(all="ignore"):  # non-finite points are dropped below
        cx = T[0, 0] * x + T[0, 1] * y + T[0, 2] * z + T[0, 3]
        cy = T[1, 0] * x + T[1, 1] * y + T[1, 2] * z + T[1, 3]
        cz = T[2, 0] * x + T[2, 1] * y + T[2, 2] * z + T[2, 3]
        u = (K[0, 0] * cx + K[0, 1] * cy + K[0, 2] * cz) / cz
        v = (K[1, 1] * cy + K[1, 2] * cz) / cz
        fu, fv = np.floor(u + 0.5), np.floor(v + 0.5)
    keep = finite & (cz > min_depth) & (cz <= max_depth) & (fu >= 0) & (fu < w) & (fv >= 0) & (fv < h)
    d = cz[keep].astype(np.float32)
    out = np.full((h, w), np.inf, np.float32)
    np.minimum.at(out, (fv[keep].astype(np.int64), fu[keep].astype(np.int64)), d)
    out[np.isinf(out)] = 0.0
    return out


# ------------------------------------------------------------------------------------- parallax

def filter_occluded(sparse, rx: int = 4, ry: int = 8, rel: float = 0.1) -> np.ndarray:
    """Drop the LiDAR returns that a nearer surface hides from the camera (parallax).

    A LiDAR mounted apart from the camera (above it and behind it, on a car) sees the background
    past a foreground edge where the camera sees the foreground. Projected, those background
    returns land inside the foreground's silhouette, between its scan lines. A valid point of depth
    ``d`` is dropped iff points nearer than ``d * (1 - rel)`` lie within columns ``x - rx .. x +
    rx`` in the ``ry`` rows above it **and** in the ``ry`` rows below it, **and** at columns ``<= x``
    and at columns ``>= x`` (counted over both row ranges): it is enclosed by nearer returns. A
    background point beside a silhouette has nearer points on one side only and stays, so edges
    keep their background. ``ry`` must span the gap between scan lines
    (KITTI's HDL-64: 2-5 px; the default 8 covers sensors up to about twice as sparse).

    This is ``psd_occlusion_filter`` (``kernels/project/project.h``, one source for the CPU and
    CUDA); the comparisons are exact, so :func:`reference_filter_occluded` equals it bit for bit.
    On a synthetic two-plane scene (tests/kernels/test_occlusion.py) it drops 324 of the 407
    hidden returns and no visible one; what it cannot drop lies on the rows of the foreground's
    top and bottom edges, where nearer returns are on one side only. It is not yet part of the
    guided mode itself: apply it to scan-line LiDAR input (``psdrt run --points`` does).

    Args:
        sparse (np.ndarray): float32 (H, W) metres, 0 (or <= 0, or NaN/Inf) = missing.
        rx (int): half-width of the window in columns, 0..64. Defaults to 4.
        ry (int): rows searched above and below, 1..64. Defaults to 8.
        rel (float): relative depth margin in (0, 1). Defaults to 0.1.

    Returns:
        np.ndarray: float32 (H, W), the kept points (missing pixels 0).

    Raises:
        ShapeError: not a 2-D map. InputError: a parameter out of range, a non-float map.
    """
    from . import _capi

    return _capi.load().occlusion_filter(_as_sparse(sparse), rx=rx, ry=ry, rel=rel)


def _as_sparse(sparse) -> np.ndarray:
    a = np.asarray(sparse)
    if a.ndim != 2:
        raise ShapeError(f"sparse depth must be a (H, W) map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"sparse depth must be float metres, got {a.dtype}; divide stored integers by their scale")
    return np.ascontiguousarray(a, dtype=np.float32)


def reference_filter_occluded(sparse, rx: int = 4, ry: int = 8, rel: float = 0.1) -> np.ndarray:
    """The NumPy reference of :func:`filter_occluded`: the same float32 threshold and exact
    comparisons, as shifted windows (no parameter validation: the tests use it)."""
    s = _as_sparse(sparse)
    h, w = s.shape
    with np.errstate(invalid="ignore"):
        valid = (s > 0) & np.isfinite(s)
    d = np.where(valid, s, np.float32(0))
    thr = d * np.float32(1.0 - rel)
    big = np.where(valid, d, np.float32(np.inf))
    pad = np.pad(big, ((ry, ry), (rx, rx)), constant_values=np.inf)
    flags = {k: np.zeros((h, w), bool) for k in ("above", "below", "left", "right")}
    for dy in range(-ry, ry + 1):
        if dy == 0:
            continue
        for dx in range(-rx, rx + 1):
            near = pad[ry + dy:ry + dy + h, rx + dx:rx + dx + w] < thr
            flags["above" if dy < 0 else "below"] |= near
            if dx <= 0:
                flags["left"] |= near
            if dx >= 0:
                flags["right"] |= near
    hidden = flags["above"] & flags["below"] & flags["left"] & flags["right"]
    return np.where(valid & ~hidden, d, np.float32(0)).astype(np.float32)


# ------------------------------------------------------------------------------------------- files


def _check_file(path: PathLike, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; pass a {what} file")
    if not p.is_file():
        raise InputError(f"{p} does not exist; pass a {what} file")
    return p


def read_points(path: PathLike) -> np.ndarray:
    """Read a point cloud as float32 (N, 3) x, y, z (N, 4 for KITTI ``.bin``: x, y, z, reflectance).

    ``.bin``: KITTI Velodyne scans, float32 x, y, z, reflectance per point (NumPy). ``.npy``: an
    (N, 3+) float array. ``.ply``: the ``vertex`` element's x, y, z (``plyfile``). ``.pcd``: the
    x, y, z fields, ASCII or binary, compressed included (``pypcd4``). PLY and PCD need the
    ``points`` extra. Non-finite points are kept here (the projection drops them).

    Raises:
        InputError: a missing or malformed file, an unknown extension.
        BackendUnavailable: a PLY/PCD file without the ``points`` extra (names the pip line).
    """
    p = _check_file(path, "point-cloud (" + ", ".join(POINT_EXTS) + ")")
    ext = p.suffix.lower()
    if ext == ".bin":
        raw = np.fromfile(p, dtype="<f4")
        if raw.size % 4:
            raise InputError(f"{p} is {p.stat().st_size} bytes, not a whole number of KITTI Velodyne points "
                             "(4 float32: x, y, z, reflectance); is it another format?")
        return raw.reshape(-1, 4)
    if ext == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{p} is not a plain .npy array ({exc})") from None
        return _as_points(a)
    if ext == ".ply":
        try:
            v = _plyfile.PlyData.read(str(p))["vertex"]
            return _as_points(np.stack([np.asarray(v[c], np.float64) for c in ("x", "y", "z")], 1))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{p} has no vertex element with x, y, z ({type(exc).__name__}: {exc})") from None
    if ext == ".pcd":
        try:
            pc = _pypcd4.PointCloud.from_path(str(p))
            return _as_points(pc.numpy(("x", "y", "z")))
        except (KeyError, ValueError) as exc:
            raise InputError(f"{p} is not a PCD file with x, y, z fields ({type(exc).__name__}: {exc})") from None
    raise InputError(f"{p}: unknown point-cloud type {ext!r}; use one of {', '.join(POINT_EXTS)}")


def _numbers(text: str, where: str) -> np.ndarray:
    try:
        return np.array([float(t) for t in text.replace(",", " ").split()], np.float64)
    except ValueError:
        raise InputError(f"{where} contains non-numeric values") from None


def _rigid(M: np.ndarray, where: str) -> np.ndarray:
    """3x4 or 4x4 -> 4x4 (bottom row added to a 3x4)."""
    if M.size == 12:
        M = np.vstack([M.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
    elif M.size == 16:
        M = M.reshape(4, 4)
    else:
        raise InputError(f"{where} has {M.size} numbers; write a 4x4 or 3x4 row-major matrix")
    return M


def read_extrinsics(path: PathLike) -> np.ndarray:
    """A 4x4 (or 3x4) row-major sensor-to-camera transform from a text file (``#`` comments).

    The projection checks that it is rigid (bottom row 0 0 0 1, orthonormal rotation)."""
    p = _check_file(path, "extrinsics (4x4 text matrix)")
    text = "\n".join(line.split("#", 1)[0] for line in p.read_text(encoding="utf-8", errors="replace").splitlines())
    return _rigid(_numbers(text, str(p)), str(p))


def _key_values(path: Path) -> dict:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = rest.strip()
    return out


def _from_projection(P: np.ndarray, R_rect: np.ndarray, velo_to_cam: np.ndarray, source: str) -> CameraCalib:
    """K and T of ``pixel ~ P @ R_rect @ velo_to_cam @ [x, y, z, 1]`` (P = K [I | t])."""
    K = np.array(P[:, :3], np.float64)
    t = np.linalg.solve(K, P[:, 3])
    R4 = np.eye(4)
    R4[:3, :3] = R_rect
    shift = np.eye(4)
    shift[:3, 3] = t
    return CameraCalib(K=K, T=shift @ R4 @ velo_to_cam, source=source)


def read_kitti_calib(path: PathLike, camera: int = 2) -> CameraCalib:
    """The camera's K and the Velodyne-to-camera T from KITTI calibration.

    Accepts the object-benchmark file (``P0..P3``, ``R0_rect``, ``Tr_velo_to_cam``, one file per
    frame) or a KITTI raw date folder (or either of its files) holding ``calib_cam_to_cam.txt``
    (``P_rect_0N``, ``R_rect_00``) and ``calib_velo_to_cam.txt`` (``R``, ``T``). KITTI's projection
    is ``pixel ~ P_N @ R_rect @ Tr_velo_to_cam @ [x, y, z, 1]``; with ``P_N = K [I | t]`` (the
    rectified camera N, ``t`` its offset from camera 0), the result is ``K = P_N[:, :3]`` and
    ``T = [I | t] @ R_rect @ Tr_velo_to_cam``, so :func:`project_points` computes exactly
    KITTI's pixel and depth.

    Args:
        path (str | Path): the file or the raw date folder.
        camera (int): 0-3; 2 = the left colour camera (KITTI's image_2). Defaults to 2.

    Raises:
        InputError: missing files or keys, malformed matrices.
    """
    if camera not in (0, 1, 2, 3):
        raise InputError(f"camera must be 0, 1, 2 or 3 (KITTI's cameras; 2 = left colour), got {camera!r}")
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    raw = (folder / "calib_cam_to_cam.txt", folder / "calib_velo_to_cam.txt")
    if p.is_dir() or p.name in {r.name for r in raw}:
        for f in raw:
            _check_file(f, f"KITTI raw calibration ({f.name})")
        cam, velo = _key_values(raw[0]), _key_values(raw[1])
        try:
            P = _numbers(cam[f"P_rect_0{camera}"], str(raw[0])).reshape(3, 4)
            R_rect = _numbers(cam["R_rect_00"], str(raw[0])).reshape(3, 3)
            M = np.eye(4)
            M[:3, :3] = _numbers(velo["R"], str(raw[1])).reshape(3, 3)
            M[:3, 3] = _numbers(velo["T"], str(raw[1])).reshape(3)
        except KeyError as exc:
            raise InputError(f"KITTI raw calibration in {folder} lacks {exc}") from None
        except ValueError as exc:
            raise InputError(f"KITTI raw calibration in {folder} is malformed ({exc})") from None
        return _from_projection(P, R_rect, M, str(folder))
    f = _check_file(p, "KITTI calibration")
    kv = _key_values(f)
    try:
        P = _numbers(kv[f"P{camera}"], str(f)).reshape(3, 4)
        R_rect = _numbers(kv.get("R0_rect", kv.get("R_rect")), str(f)).reshape(3, 3)
        M = _rigid(_numbers(kv.get("Tr_velo_to_cam", kv.get("Tr_velo_cam")), str(f)), str(f))
    except KeyError as exc:
        raise InputError(f"{f} lacks {exc}: not a KITTI object-benchmark calibration (P0..P3, R0_rect, "
                         "Tr_velo_to_cam); for KITTI raw pass its date folder") from None
    except (AttributeError, ValueError) as exc:
        raise InputError(f"{f} lacks R0_rect or Tr_velo_to_cam, or a matrix is malformed ({exc})") from None
    return _from_projection(P, R_rect, M, str(f))
