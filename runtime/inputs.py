"""Validation of one frame's inputs (RGB, sparse depth, intrinsics) for every pipeline.

Every check raises a typed error (``InputError``/``ShapeError``) whose message names the fix. The
pipelines call :func:`validate_frame` first, so a bad frame never reaches a kernel or a network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError, ShapeError


@dataclass(frozen=True)
class FrameInputs:
    """A validated frame.

    Attributes:
        rgb (ndarray): H x W x 3 uint8, RGB order.
        sparse (ndarray): H x W float32 metres, 0 = missing: the accepted points only.
        K (ndarray): 3 x 3 float64 pinhole intrinsics at H x W.
        points (int): number of accepted sparse pixels.
        interior (int): accepted points strictly between the smallest and largest sparse depth; the
            least-squares alignment needs at least 2 (fewer = ``'degenerate'`` alignment).
        rejected_range (int): points dropped for lying outside [1 mm, 10 km].
        rejected_outliers (int): points dropped for lying over 100x above or below the median.
        dmin, dmax (float): smallest and largest accepted depth (the output guard's range is
            [0.5 dmin, 2 dmax]).
    """

    rgb: np.ndarray
    sparse: np.ndarray
    K: np.ndarray
    points: int
    interior: int
    rejected_range: int = 0
    rejected_outliers: int = 0
    dmin: float = 0.0
    dmax: float = 0.0

    def rejected(self) -> dict:
        """What ``result.info['rejected']`` reports."""
        return {"range": self.rejected_range, "outliers": self.rejected_outliers}

    def guard(self, depth: np.ndarray) -> int:
        """The output guard (psd_guard_depth): clamps ``depth`` (float32, C-contiguous) in place to
        [0.5 dmin, 2 dmax]; returns how many pixels changed (``info['clamped']``)."""
        from . import _capi

        return _capi.load().guard_depth(depth, self.dmin, self.dmax)


def validate_frame(rgb, sparse, K, bgr: bool = False, need_rgb: bool = True, mode: str | None = None) -> FrameInputs:
    """Check and normalise one frame.

    Args:
        rgb (ndarray): H x W x 3 uint8 image (H x W x 4 is refused: drop the alpha channel).
        sparse (ndarray): H x W (or 1 x H x W / H x W x 1) float depth in metres, 0 = missing.
        K (ndarray): 3 x 3 pinhole intrinsics for the H x W frame.
        bgr (bool): ``rgb`` is in BGR order (OpenCV); it is converted to RGB.
        need_rgb (bool): whether the image is required.
        mode (str, optional): ``"psd"``, ``"propagate"`` or ``"guided"``: the frame size must suit
            it (the kernel library's ``psd_check_frame_size``, which the C sessions apply too).
            Defaults to None: the rules of every mode (4 to 32768 pixels a side).

    Returns:
        FrameInputs: contiguous arrays in the documented dtypes.

    Raises:
        ShapeError: wrong rank or channel count, RGB and sparse sizes differ, or a size the mode
            cannot take.
        InputError: wrong dtype, NaN/Inf or negative depth, no sparse point (none left within
            [1 mm, 10 km]), invalid K.
    """
    from .io import validate_intrinsics  # io needs OpenCV; keep this module importable without it

    sp = np.asarray(sparse)
    if sp.ndim == 3 and 1 in (sp.shape[0], sp.shape[-1]):
        sp = sp.reshape(sp.shape[1:] if sp.shape[0] == 1 else sp.shape[:2])
    if sp.ndim != 2:
        raise ShapeError(f"sparse depth must be H x W, got shape {sp.shape}")
    if not np.issubdtype(sp.dtype, np.floating):
        raise InputError(
            f"sparse depth must be float metres, got dtype {sp.dtype}; for a 16-bit PNG divide by its "
            "scale first (e.g. psdrt.runtime.io.read_depth(path, scale=256))"
        )
    h, w = sp.shape
    from . import _capi

    lib = _capi.load()
    lib.check_frame_size(h, w, mode)  # before any network or allocation
    # NaN/Inf, negative, empty, and the rejection of impossible points: psd_prepare_sparse
    sp, stats = lib.prepare_sparse(sp)
    if need_rgb:
        im = np.asarray(rgb)
        if im.ndim != 3 or im.shape[2] != 3:
            raise ShapeError(
                f"RGB image must be H x W x 3, got shape {im.shape}"
                + ("; drop the alpha channel (img[..., :3])" if im.ndim == 3 and im.shape[2] == 4 else "")
            )
        if im.dtype != np.uint8:
            raise InputError(
                f"RGB image must be uint8, got {im.dtype}; convert with np.clip(img * 255, 0, 255).astype(np.uint8) "
                "for [0, 1] floats"
            )
        if im.shape[:2] != (h, w):
            raise ShapeError(
                f"RGB is {im.shape[0]}x{im.shape[1]} (HxW) but sparse depth is {h}x{w}; project the sparse "
                "points into the image at the image's resolution (or resize the image and scale K)"
            )
        im = np.ascontiguousarray(im[..., ::-1] if bgr else im)
    else:
        im = None
    Kv = validate_intrinsics(K, (h, w))
    return FrameInputs(rgb=im, sparse=sp, K=Kv, points=int(stats["points"]), interior=int(stats["interior"]),
                       rejected_range=int(stats["rejected_range"]), rejected_outliers=int(stats["rejected_outliers"]),
                       dmin=float(stats["dmin"]), dmax=float(stats["dmax"]))


def _resize_nearest(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    # depth must never be interpolated across edges or invalid (0) samples
    h, w = a.shape[:2]
    ys = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return np.ascontiguousarray(a[ys][:, xs])


def fit_to_size(rgb: np.ndarray, K, size, *depths):
    """Scale a frame (aspect kept) so that it covers ``size``, then centre-crop to exactly ``size``.

    The one definition used wherever a frame must match a fixed working resolution (calibration
    sources, the correctness gate's golden inputs). RGB is resized bilinearly with PyTorch's
    semantics (``runtime.preprocess``), depth maps by nearest sampling (0 stays invalid), and K is
    scaled and shifted with the image.

    Args:
        rgb (ndarray): H x W x 3 uint8.
        K (ndarray | None): 3 x 3 intrinsics of the frame, or None.
        size (tuple[int, int]): (H, W) wanted.
        *depths (ndarray | None): H x W depth maps to carry along (None passes through).

    Returns:
        tuple: ``(rgb, K, *depths)`` at exactly ``size`` (the inputs themselves when already there).
    """
    from .preprocess import resize_bilinear

    out_h, out_w = int(size[0]), int(size[1])
    h, w = rgb.shape[:2]
    if (h, w) == (out_h, out_w):
        return (rgb, K, *depths)
    s = max(out_h / h, out_w / w)
    rh, rw = max(out_h, int(round(h * s))), max(out_w, int(round(w * s)))
    y0, x0 = (rh - out_h) // 2, (rw - out_w) // 2
    out = np.clip(np.rint(resize_bilinear(rgb, rh, rw)), 0, 255).astype(np.uint8)
    out = np.ascontiguousarray(out[y0:y0 + out_h, x0:x0 + out_w])
    fitted = [
        None if d is None else _resize_nearest(d, rh, rw)[y0:y0 + out_h, x0:x0 + out_w].astype(np.float32)
        for d in depths
    ]
    Kf = None
    if K is not None:
        Kf = np.array(K, dtype=np.float64)
        Kf[0, :] *= rw / w
        Kf[1, :] *= rh / h
        Kf[0, 2] -= x0
        Kf[1, 2] -= y0
        Kf[2] = (0.0, 0.0, 1.0)
    return (out, Kf, *fitted)
