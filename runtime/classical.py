"""Classical (learning-free) densification of sparse depth: IP-Basic and nearest-neighbour fill.

References: the IP-Basic algorithm (Ku, Harakeh, Waslander, "In Defense of Classical Image Processing:
Fast Depth Completion on the CPU", CRV 2018) as PSD calls it (shenglunch/PSD, datasets/ip_basic.py,
``fill_in_fast``); re-implemented here from its description in docs/psd_method.md §1.4.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from psdrt.runtime.errors import InputError, ShapeError

__all__ = ["IP_BASIC_EPS", "DIAMOND_5", "ip_basic_fill", "nearest_fill"]

#: IP-Basic's validity threshold in metres: depths <= this count as empty, before and after inversion
IP_BASIC_EPS = 0.1

#: 5x5 diamond used for the first dilation (IP-Basic's default ``custom_kernel``)
DIAMOND_5 = np.array(
    [[0, 0, 1, 0, 0],
     [0, 1, 1, 1, 0],
     [1, 1, 1, 1, 1],
     [0, 1, 1, 1, 0],
     [0, 0, 1, 0, 0]], dtype=np.uint8)
_FULL_5 = np.ones((5, 5), np.uint8)
_FULL_7 = np.ones((7, 7), np.uint8)
_FULL_31 = np.ones((31, 31), np.uint8)


def _check_sparse(sparse: np.ndarray, fn: str) -> np.ndarray:
    sparse = np.asarray(sparse)
    if sparse.ndim == 3 and sparse.shape[0] == 1:
        sparse = sparse[0]
    if sparse.ndim != 2:
        raise ShapeError(f"{fn} needs a (H, W) sparse depth map, got shape {sparse.shape}; drop batch/channel axes")
    if sparse.dtype.kind != "f":
        raise InputError(f"{fn} needs float depth in metres, got {sparse.dtype}; divide the stored "
                         "integers by their scale (read_depth does)")
    sparse = sparse.astype(np.float32, copy=False)
    if not np.isfinite(sparse).all():
        raise InputError(f"{fn}: sparse depth contains NaN/Inf; mark missing pixels with 0 instead")
    if (sparse < 0).any():
        raise InputError(f"{fn}: sparse depth has negative values; mark missing pixels with 0 instead")
    return sparse


def ip_basic_fill(sparse: np.ndarray) -> np.ndarray:
    """IP-Basic ``fill_in_fast`` exactly as PSD runs it (gaussian blur, extrapolation on).

    With max_depth = sparse.max(): invert valid (> 0.1 m) depths as max_depth − d; dilate with a
    5×5 diamond; close with a 5×5 full kernel; fill empty (< 0.1) pixels from a 7×7 dilation; copy
    each column's topmost valid value up to row 0; fill remaining empty pixels from a 31×31 dilation;
    5×5 median blur; 5×5 Gaussian blur (σ = 1.1, OpenCV's value for ksize 5) written back only to
    valid pixels; re-invert valid pixels.

    Upstream quirks kept on purpose (the network was trained on them): pixels whose filled value is
    within 0.1 m of max_depth stay "empty" after inversion and come out ≈ 0 (the inverted value,
    not the depth); sparse depths in (0, 0.1] are not inverted but still take part in the
    dilations as tiny values; OpenCV's border rules (replicate for the median, reflect-101 for the
    Gaussian) apply at the image edges. Columns without any valid pixel are left to the 31×31 fill.

    This is the reference: the pipelines run the kernel ``psd_ip_basic`` (``KernelLibrary.ip_basic``,
    kernels/ip_basic), which equals it bit for bit (tests/kernels/test_ip_basic.py).

    Args:
        sparse (np.ndarray): float (H, W) or (1, H, W) sparse depth in metres, 0 = missing. Not modified.

    Returns:
        np.ndarray: float32 (H, W) filled depth; finite, may contain ≈ 0 where nothing reached.

    Raises:
        InputError: no depth > 0.1 m, non-finite or negative values, integer dtype.
        ShapeError: not a single 2-D map.
    """
    depth = _check_sparse(sparse, "ip_basic_fill").copy()  # the upstream function works in place
    valid = depth > IP_BASIC_EPS
    if not valid.any():
        raise InputError("ip_basic_fill needs at least one sparse depth > 0.1 m; check the sparse input "
                         "(units are metres: divide millimetres by 1000)")
    eps = np.float32(IP_BASIC_EPS)
    max_depth = depth.max()  # float32 scalar: PSD passes sparse.max(), so float32 arithmetic
    depth[valid] = max_depth - depth[valid]

    depth = cv2.dilate(depth, DIAMOND_5)
    depth = cv2.morphologyEx(depth, cv2.MORPH_CLOSE, _FULL_5)

    empty = depth < eps
    depth = np.where(empty, cv2.dilate(depth, _FULL_7), depth)

    # Extrapolate: above each column's first valid row, copy that row's value. A column with no
    # valid pixel has argmax 0 and is left untouched (the 31x31 dilation fills it next).
    has_value = depth > eps
    top_row = np.argmax(has_value, axis=0)
    top_value = depth[top_row, np.arange(depth.shape[1])]
    above = np.arange(depth.shape[0])[:, None] < top_row[None, :]
    depth = np.where(above, top_value[None, :], depth)

    empty = depth < eps
    depth = np.where(empty, cv2.dilate(depth, _FULL_31), depth)

    depth = cv2.medianBlur(np.ascontiguousarray(depth, dtype=np.float32), 5)

    blurred = cv2.GaussianBlur(depth, (5, 5), 0)
    valid = depth > eps
    depth = np.where(valid, blurred, depth)

    valid = depth > eps
    depth[valid] = max_depth - depth[valid]
    return depth.astype(np.float32, copy=False)


def nearest_fill(sparse: np.ndarray) -> np.ndarray:
    """Give every pixel the depth of its nearest valid pixel (Euclidean distance).

    Ties are broken deterministically by scipy's exact distance transform (the same input always
    gives the same output).

    Args:
        sparse (np.ndarray): float (H, W) or (1, H, W) sparse depth in metres, 0 = missing.

    Returns:
        np.ndarray: float32 (H, W) dense depth; valid input pixels keep their value.

    Raises:
        InputError: no positive depth, non-finite or negative values, integer dtype.
        ShapeError: not a single 2-D map.
    """
    sparse = _check_sparse(sparse, "nearest_fill")
    valid = sparse > 0
    if not valid.any():
        raise InputError("nearest_fill needs at least one positive sparse depth; check the sparse input")
    # The transform measures the distance to the nearest zero, so pass "missing" as the foreground.
    rows, cols = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return sparse[rows, cols].astype(np.float32, copy=False)
