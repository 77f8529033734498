"""The foundation model's input preprocessing: the kernel library's ``psd_preprocess`` (its one
definition, for the CPU and CUDA alike) behind :func:`preprocess_rgb`, and NumPy references of
each method for the tests.

Two methods (``PREPROCESS_METHODS``):

* ``"official"`` (the default): what the official PSD evaluation loaders compute, scikit-image's
  ``resize(img, (Hm, Wm), order=3)`` (a cubic B-spline with its prefilter, mirror borders,
  clipping to the input range) on the uint8 image, then the ImageNet normalisation in float64 and a
  float32 cast. The released checkpoints were evaluated with it.
* ``"bicubic"``: PyTorch's ``F.interpolate(mode="bicubic", align_corners=False, antialias=False)``
  in float32, what an exported graph's ``Resize`` computes (``docs/preprocessing.md`` measures how
  far it is from the official one).

Export parity, INT8 calibration, the correctness gate, the runtime pipelines and the C session all
go through ``psd_preprocess``, so that the network sees the same tensor everywhere; a build
directory records the method it was built with (``manifest.json: preprocess``).

Each resize is separable: a fixed (out, in) weight matrix per axis, stored compactly as the column
indices and weights of its non-zero taps (4 for bicubic, 2 for bilinear) and cached per size pair.
Applying it is a handful of vectorised gathers, O(taps · output size), far cheaper than a dense
matmul at KITTI sizes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = [
    "FM_LOWER",
    "FM_MULTIPLE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BICUBIC_A",
    "fm_input_size",
    "resize_weights",
    "resize_matrix",
    "resize_bicubic",
    "resize_bilinear",
    "preprocess_rgb",
    "reference_preprocess_rgb",
    "PREPROCESS_METHODS",
    "DEFAULT_PREPROCESS",
]

#: the preprocessing methods (psd_preprocess_t) and the default: the official loaders'
PREPROCESS_METHODS = ("official", "bicubic")
DEFAULT_PREPROCESS = "official"

#: Depth Anything input: lower bound of both sides and the ViT patch multiple (docs/psd_method.md §2.2)
FM_LOWER = 392
FM_MULTIPLE = 14
#: ImageNet normalisation used by Depth Anything v1/v2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: cubic-convolution parameter used by PyTorch (and OpenCV); Keys' original value is -0.5
BICUBIC_A = -0.75


def fm_input_size(h: int, w: int, lower: int = FM_LOWER, multiple: int = FM_MULTIPLE) -> tuple[int, int]:
    """Foundation-model input size: keep aspect, both sides >= ``lower``, multiples of ``multiple``.

    s = max(lower/h, lower/w); each side becomes round(s·dim / multiple)·multiple, or the next
    multiple up if rounding fell below ``lower``. Rounding is NumPy's (half to even), as in the
    official ``constrain_to_multiple_of``.

    Args:
        h (int): input height.
        w (int): input width.
        lower (int): lower bound of both output sides. Defaults to 392.
        multiple (int): both output sides are multiples of this. Defaults to 14.

    Returns:
        tuple[int, int]: (Hm, Wm), e.g. 228×304 → 392×518, 256×1216 → 392×1862.

    Raises:
        InputError: non-positive sizes, lower > 4096 or multiple > 1024.
    """
    if h <= 0 or w <= 0 or lower <= 0 or multiple <= 0:
        raise InputError(f"fm_input_size needs positive sizes, got h={h}, w={w}, lower={lower}, multiple={multiple}")
    if lower > 4096 or multiple > 1024:  # the bounds of the kernel library's psd_fm_input_size
        raise InputError(f"fm_input_size: lower must be <= 4096 and multiple <= 1024, got lower={lower}, "
                         f"multiple={multiple} (PSD uses 392 and 14; Depth Anything 518 and 14)")
    s = max(lower / h, lower / w)

    def constrain(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        if y < lower:
            y = int(math.ceil(x / multiple) * multiple)
        return y

    return constrain(s * h), constrain(s * w)


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fractional position t."""
    # Keys' kernel: |x| <= 1: (a+2)|x|^3 - (a+3)|x|^2 + 1 ; 1 < |x| < 2: a|x|^3 - 5a|x|^2 + 8a|x| - 4a
    def near(x):
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


@lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int, mode: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """Taps of the 1-D resize matrix along one axis, PyTorch ``align_corners=False`` semantics.

    Source coordinate of output pixel i: x = (i + 0.5)·in/out − 0.5 (half-pixel centres). Bilinear
    clamps x < 0 to 0, bicubic does not; tap indices outside [0, in − 1] are clamped to the border.

    Args:
        in_size (int): input length along the axis.
        out_size (int): output length.
        mode (str): ``"bicubic"`` (a = −0.75) or ``"bilinear"``. Defaults to ``"bicubic"``.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``index`` int64 (out, taps) and ``weight`` float32 (out, taps);
        output[i] = Σ_k weight[i, k] · input[index[i, k]]. Read-only (cached).
    """
    # float32 coordinate arithmetic on purpose: PyTorch computes scale and source index in the
    # input's opmath type (float32), and at KITTI widths the float64 coordinate differs by ~3e-5 px,
    # enough to move outputs by 1e-4. PyTorch's CPU kernels are built with FMA contraction (x86
    # AVX2/AVX-512 builds, aarch64), so scale·(i + 0.5) − 0.5 is rounded to float32 once: the
    # float64 product of two float32 values is exact, which emulates that single rounding.
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    x = (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32).astype(np.float64)
    if mode == "bicubic":
        x0 = np.floor(x)
        weight = _cubic_weights(x - x0, BICUBIC_A)
        index = x0.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    elif mode == "bilinear":
        x = np.maximum(x, 0.0)
        x0 = np.floor(x)
        t = x - x0
        weight = np.stack([1.0 - t, t], axis=-1)
        index = x0.astype(np.int64)[:, None] + np.arange(0, 2)[None, :]
    else:
        raise InputError(f"unknown resize mode {mode!r}; use 'bicubic' or 'bilinear'")
    index = np.clip(index, 0, in_size - 1)
    weight = weight.astype(np.float32)
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def resize_matrix(in_size: int, out_size: int, mode: str = "bicubic") -> np.ndarray:
    """The dense (out, in) resize matrix along one axis (for inspection and tests).

    Args:
        in_size (int): input length.
        out_size (int): output length.
        mode (str): ``"bicubic"`` or ``"bilinear"``. Defaults to ``"bicubic"``.

    Returns:
        np.ndarray: float64 (out_size, in_size); rows sum to 1.
    """
    index, weight = resize_weights(in_size, out_size, mode)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.repeat(np.arange(out_size), index.shape[1])
    np.add.at(m, (rows, index.ravel()), weight.ravel().astype(np.float64))
    return m


def _check_image(img: np.ndarray, out_h: int, out_w: int, fn: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ShapeError(f"{fn} needs an (H, W) or (H, W, C) array, got shape {img.shape}; "
                         "move channels last and drop the batch axis")
    if img.dtype != np.float32:
        if img.dtype.kind not in "fiu":
            raise InputError(f"{fn} needs a numeric image, got {img.dtype}; convert with .astype(np.float32)")
        img = img.astype(np.float32)
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ShapeError(f"{fn} got an empty image of shape {img.shape}")
    if int(out_h) < 1 or int(out_w) < 1:
        raise InputError(f"{fn} output size must be positive, got {out_h}x{out_w}")
    return img


def _resize(img: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    h, w = img.shape[:2]
    # Rows first: the intermediate (out_h, w[, C]) is the smaller one when downscaling height.
    iy, wy = resize_weights(h, int(out_h), mode)
    wy_b = wy.reshape(wy.shape + (1,) * (img.ndim - 1))  # (out_h, taps, 1[, 1])
    tmp = wy_b[:, 0] * img[iy[:, 0]]
    for k in range(1, iy.shape[1]):
        tmp += wy_b[:, k] * img[iy[:, k]]
    ix, wx = resize_weights(w, int(out_w), mode)
    wx_b = wx.reshape((1,) + wx.shape + (1,) * (img.ndim - 2))  # (1, out_w, taps[, 1])
    out = wx_b[:, :, 0] * tmp[:, ix[:, 0]]
    for k in range(1, ix.shape[1]):
        out += wx_b[:, :, k] * tmp[:, ix[:, k]]
    return out


def resize_bicubic(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bicubic resize equal to ``F.interpolate(mode='bicubic', align_corners=False, antialias=False)``.

    Cubic convolution with a = −0.75, half-pixel centres, border indices clamped; no anti-aliasing
    when downscaling and no clamping of the result (it can overshoot the input range).

    Args:
        img (np.ndarray): (H, W) or (H, W, C); converted to float32.
        out_h (int): output height.
        out_w (int): output width.

    Returns:
        np.ndarray: float32 (out_h, out_w[, C]).

    Raises:
        ShapeError: not 2-D or 3-D, or empty.
        InputError: non-numeric dtype or non-positive output size.
    """
    img = _check_image(img, out_h, out_w, "resize_bicubic")
    return _resize(img, out_h, out_w, "bicubic")


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize equal to ``F.interpolate(mode='bilinear', align_corners=False, antialias=False)``.

    Args:
        img (np.ndarray): (H, W) or (H, W, C); converted to float32.
        out_h (int): output height.
        out_w (int): output width.

    Returns:
        np.ndarray: float32 (out_h, out_w[, C]).

    Raises:
        ShapeError: not 2-D or 3-D, or empty.
        InputError: non-numeric dtype or non-positive output size.
    """
    img = _check_image(img, out_h, out_w, "resize_bilinear")
    return _resize(img, out_h, out_w, "bilinear")


def _check_rgb(rgb, method: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise InputError(f"preprocess_rgb needs uint8 RGB, got {rgb.dtype}; pass the image as read by "
                         "read_rgb() (for [0, 1] floats use (img * 255).round().astype(np.uint8))")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"preprocess_rgb needs (H, W, 3), got shape {rgb.shape}; convert grey/RGBA to RGB "
                         "first (read_rgb() does)")
    if method not in PREPROCESS_METHODS:
        raise InputError(f"unknown preprocessing {method!r}; use one of {', '.join(PREPROCESS_METHODS)}")
    return rgb


def preprocess_rgb(rgb: np.ndarray, size: tuple[int, int] | None = None, bgr: bool = False,
                   method: str = DEFAULT_PREPROCESS) -> np.ndarray:
    """RGB image → foundation-model input tensor, by the kernel library (``psd_preprocess``).

    Args:
        rgb (np.ndarray): uint8 (H, W, 3).
        size (tuple[int, int] | None): (Hm, Wm) output size. Defaults to ``fm_input_size(H, W)``.
        bgr (bool): the input is in BGR order (as from ``cv2.imread``). Defaults to False.
        method (str): ``"official"`` (scikit-image ``resize(order=3)``, the official loaders') or
            ``"bicubic"`` (PyTorch bicubic, an exported graph's). Defaults to "official".

    Returns:
        np.ndarray: float32 (1, 3, Hm, Wm), C-contiguous.

    Raises:
        InputError: dtype is not uint8, the image does not have 3 channels, an unknown method, or
            (official) a down-scale of more than 32x (its anti-aliasing Gaussian's radius).
    """
    rgb = np.ascontiguousarray(_check_rgb(rgb, method))
    from . import _capi

    return _capi.load().preprocess(rgb, size=size, bgr=bgr, method=method)


def reference_preprocess_rgb(rgb: np.ndarray, size: tuple[int, int] | None = None, bgr: bool = False,
                             method: str = DEFAULT_PREPROCESS) -> np.ndarray:
    """The NumPy reference of :func:`preprocess_rgb` (tests compare the kernels with it, and the
    official method with scikit-image itself)."""
    rgb = _check_rgb(rgb, method)
    if bgr:
        rgb = rgb[..., ::-1]
    h, w = rgb.shape[:2]
    out_h, out_w = fm_input_size(h, w) if size is None else (int(size[0]), int(size[1]))
    if method == "official":
        img = _resize_bspline(rgb.astype(np.float64) / 255.0, out_h, out_w)
        img = (img - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
        return np.ascontiguousarray(img.astype(np.float32).transpose(2, 0, 1)[None])
    img = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    img = _resize(img, out_h, out_w, "bicubic")
    img -= np.asarray(IMAGENET_MEAN, dtype=np.float32)
    img *= np.asarray([1.0 / s for s in IMAGENET_STD], dtype=np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


# scipy's pole of the cubic B-spline prefilter (ni_splines.c), for the same double arithmetic
_SPLINE_POLE = -0.267949192431122706472553658494127633


def _prefilter_axis(c: np.ndarray, axis: int) -> None:
    """scipy's spline prefilter (order 3, the mirror boundary initialisers) along ``axis``, in place."""
    c = np.moveaxis(c, axis, 0)
    n = c.shape[0]
    if n < 2:
        return
    z = _SPLINE_POLE
    c *= (1.0 - z) * (1.0 - 1.0 / z)
    zn1 = z ** (n - 1)
    c0 = c[0] + zn1 * c[n - 1]
    zi = z
    for i in range(1, n - 1):
        c0 += zi * (c[i] + zn1 * c[n - 1 - i])
        zi *= z
    c[0] = c0 / (1.0 - zn1 * zn1)
    for i in range(1, n):
        c[i] += z * c[i - 1]
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0)
    for i in range(n - 2, -1, -1):
        c[i] = z * (c[i + 1] - c[i])


def _spline_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (n_out, 4), weights (n_out, 4)) of the cubic B-spline at scipy's grid-mode
    coordinates, the coordinate and the taps mirrored at the borders."""
    o = np.arange(n_out, dtype=np.float64)
    c = ((o + 0.5) * (n_in / n_out)) - 0.5
    if n_in > 1:
        p = 2.0 * n_in - 2.0
        c = np.where(c < 0, -c, c)  # the coordinates of a resize leave [0, n - 1] by less than one sample
        c = np.where(c > n_in - 1, p - c, c)
    else:
        c = np.zeros_like(c)
    fl = np.floor(c)
    x = c - fl
    y, z = x, 1.0 - x
    w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
    w0 = z * z * z / 6.0
    w3 = 1.0 - w0 - w1 - w2
    idx = fl.astype(np.int64)[:, None] - 1 + np.arange(4)
    if n_in > 1:
        p = 2 * n_in - 2
        idx %= p
        idx = np.where(idx < n_in, idx, p - idx)
    else:
        idx[:] = 0
    return idx, np.stack([w0, w1, w2, w3], 1)


def _resize_bspline(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """scikit-image ``resize(order=3)`` of a float64 (H, W, C) image in [0, 1]: its anti-aliasing
    Gaussian on down-scaled axes (sigma = (in/out - 1) / 2, scipy's gaussian_filter1d, mirror),
    the B-spline, the clip to the input range."""
    from scipy.ndimage import gaussian_filter1d

    h, w = img.shape[:2]
    coef = np.array(img, dtype=np.float64)
    for axis, (n_in, n_out) in enumerate(((h, out_h), (w, out_w))):
        sigma = max(0.0, (n_in / n_out - 1.0) / 2.0)
        if sigma > 1e-15:
            coef = gaussian_filter1d(coef, sigma, axis=axis, mode="mirror", truncate=4.0)
    _prefilter_axis(coef, 0)
    _prefilter_axis(coef, 1)
    iy, wy = _spline_taps(h, out_h)
    ix, wx = _spline_taps(w, out_w)
    rows = sum(coef[iy[:, t]] * wy[:, t, None, None] for t in range(4))
    out = sum(rows[:, ix[:, t]] * wx[None, :, t, None] for t in range(4))
    return np.clip(out, img.min(), img.max())
