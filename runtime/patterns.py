"""Seeded sparse-depth patterns made from ground truth: random x %, pseudo-hole, Harris corners.

PSD evaluates four patterns (docs/psd_method.md §1.5). The random and pseudo-hole samplers follow
the official training-time code; the Harris pattern has no upstream code and uses the parameters in
``HARRIS_PARAMS``. Every generator takes a ``seed`` and draws from ``numpy.random.default_rng(seed)``
only, so the same seed gives the same map on every machine. Outputs are float32 (H, W) metres with
0 = missing, and every non-zero value equals the ground truth at that pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = [
    "VALID_EPS",
    "HARRIS_PARAMS",
    "PATTERNS",
    "random_sparse",
    "highlight_mask",
    "spatter_mask",
    "pseudo_hole",
    "harris_sparse",
    "make_sparse",
]

#: GT values above this count as valid for sampling (the official ``get_sparse_depth`` threshold)
VALID_EPS = 1e-4

#: Parameters of the Harris-corner pattern (no upstream code; chosen here, see ``harris_sparse``):
#: ``block_size``/``ksize``/``k``: cv2.cornerHarris on the grey image in [0, 1];
#: ``rel_threshold``: a corner is a 3x3 local maximum of the response above this fraction of the
#: image's maximum response, on a valid GT pixel; ``cluster``: each corner keeps the valid GT in a
#: cluster x cluster square around it (the "small dense clusters" of the paper's figure);
#: ``max_rate``: at most this fraction of the image is kept, strongest corners first (keeps textured
#: frames near the 1 % budget of the random pattern instead of flooding them). On the shared frames
#: this keeps 0.2-0.9 % of the pixels (KITTI 0.36-0.50 %, NYU 0.23-0.82 %, Middlebury 0.85 %).
HARRIS_PARAMS = {
    "block_size": 2,
    "ksize": 3,
    "k": 0.04,
    "rel_threshold": 0.01,
    "cluster": 3,
    "max_rate": 0.01,
}

#: names accepted by ``make_sparse``
PATTERNS = ("random1", "random0.1", "pseudo_hole", "harris")


def _check_gt(gt: np.ndarray, fn: str) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim == 3 and gt.shape[0] == 1:
        gt = gt[0]
    if gt.ndim != 2:
        raise ShapeError(f"{fn} needs a (H, W) ground-truth depth, got shape {gt.shape}; drop batch/channel axes")
    if gt.dtype.kind != "f":
        raise InputError(f"{fn} needs float depth in metres, got {gt.dtype}; load it with read_depth()")
    gt = gt.astype(np.float32, copy=False)
    # NaN/Inf GT would be sampled as depth; treat them as invalid instead of failing on real data.
    return np.where(np.isfinite(gt), gt, np.float32(0.0))


def _check_rgb(rgb: np.ndarray, shape: tuple[int, int], fn: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{fn} needs uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}; load it with read_rgb()")
    if rgb.shape[:2] != shape:
        raise ShapeError(f"{fn}: RGB {rgb.shape[:2]} and depth {shape} differ; resize/crop both the same way")
    return rgb


def _keep(gt: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, gt, np.float32(0.0)).astype(np.float32, copy=False)


def random_sparse(gt: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Keep ``int(rate·H·W)`` valid GT pixels drawn uniformly without replacement.

    Mirrors the official ``get_sparse_depth`` (valid = GT > 1e-4; if fewer valid pixels than
    requested, all of them are kept), with NumPy's generator instead of ``torch.randperm``.

    Args:
        gt (np.ndarray): float (H, W) ground truth in metres, 0 = invalid.
        rate (float): fraction of all H·W pixels to keep, in (0, 1].
        seed (int): seed of ``numpy.random.default_rng``.

    Returns:
        np.ndarray: float32 (H, W) sparse depth.

    Raises:
        InputError: rate outside (0, 1], non-float GT.
        ShapeError: GT not 2-D.
    """
    gt = _check_gt(gt, "random_sparse")
    if not (0.0 < rate <= 1.0):
        raise InputError(f"random_sparse rate must be in (0, 1], got {rate}; 1 % is rate=0.01")
    num = int(rate * gt.size)
    valid = np.flatnonzero(gt > VALID_EPS)
    rng = np.random.default_rng(seed)
    if num >= valid.size:
        chosen = valid
    else:
        chosen = rng.choice(valid, size=num, replace=False)
    out = np.zeros_like(gt)
    out.flat[chosen] = gt.flat[chosen]
    return out


def highlight_mask(rgb: np.ndarray, threshold: float = 150.0) -> np.ndarray:
    """Specular-highlight mask of the pseudo-hole pattern.

    The official ``SegmentationHighLight`` tests G > (G/E)·T, B > (B/E)·T and E > T on the luma
    E = 0.2989 R + 0.5870 G + 0.1140 B; for uint8 input these reduce exactly to
    E > T and G > 0 and B > 0, which is what is computed here.

    Args:
        rgb (np.ndarray): uint8 (H, W, 3) RGB.
        threshold (float): luma threshold T. Defaults to 150.

    Returns:
        np.ndarray: bool (H, W).
    """
    rgb = np.asarray(rgb)
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    luma = 0.2989 * r + 0.5870 * g + 0.1140 * b
    return (luma > threshold) & (g > 0) & (b > 0)


def spatter_mask(shape: tuple[int, int], rng: np.random.Generator, sigma: float = 10.0,
                 fraction: float = 0.2) -> np.ndarray:
    """Blob-shaped hole mask of the pseudo-hole pattern (the official ``Spatter``).

    U(0, 1) noise is blurred with ``skimage.filters.gaussian(sigma)`` and thresholded strictly
    above its (1 − fraction) percentile, so about ``fraction`` of the pixels are holes.

    Args:
        shape (tuple[int, int]): (H, W).
        rng (np.random.Generator): source of the noise.
        sigma (float): blur σ in pixels (the official "granularity"). Defaults to 10.
        fraction (float): hole fraction (the official ``percentile_void``). Defaults to 0.2.

    Returns:
        np.ndarray: bool (H, W).
    """
    from skimage.filters import gaussian  # only this pattern needs skimage.filters

    noise = rng.uniform(size=tuple(shape))
    blurred = gaussian(noise, sigma=sigma)
    return blurred > np.percentile(blurred, 100.0 * (1.0 - fraction))


def pseudo_hole(rgb: np.ndarray, gt: np.ndarray, seed: int) -> np.ndarray:
    """Dense GT with pseudo holes: specular highlights ∪ Gaussian-blob spatter zeroed.

    Args:
        rgb (np.ndarray): uint8 (H, W, 3) RGB, same size as ``gt``.
        gt (np.ndarray): float (H, W) ground truth in metres.
        seed (int): seed of ``numpy.random.default_rng`` (drives the spatter noise).

    Returns:
        np.ndarray: float32 (H, W): GT where neither mask is set, else 0 (about 20 % holes plus
        the highlights, on top of GT's own invalid pixels).
    """
    gt = _check_gt(gt, "pseudo_hole")
    rgb = _check_rgb(rgb, gt.shape, "pseudo_hole")
    holes = highlight_mask(rgb) | spatter_mask(gt.shape, np.random.default_rng(seed))
    return _keep(gt, ~holes & (gt > VALID_EPS))


def harris_sparse(rgb: np.ndarray, gt: np.ndarray, seed: int, *, block_size: int = 2, ksize: int = 3,
                  k: float = 0.04, rel_threshold: float = 0.01, cluster: int = 3,
                  max_rate: float | None = 0.01) -> np.ndarray:
    """GT kept in small clusters around Harris corners of the image.

    There is no upstream generator; defaults are ``HARRIS_PARAMS``. Steps: grey = cv2 RGB→grey in
    [0, 1]; R = cv2.cornerHarris(grey, block_size, ksize, k); corners are pixels that are the
    maximum of their 3×3 neighbourhood, have R > rel_threshold·max(R) and lie on valid GT;
    corners are ranked by R
    (ties by raster order) and, if ``max_rate`` is set, only the strongest
    ``max_rate·H·W / cluster²`` are kept; each kept corner is dilated to a ``cluster``×``cluster``
    square and the valid GT inside is kept.

    The pattern is deterministic in the image; ``seed`` is accepted for a uniform generator
    signature and does not change the result.

    Args:
        rgb (np.ndarray): uint8 (H, W, 3) RGB, same size as ``gt``.
        gt (np.ndarray): float (H, W) ground truth in metres.
        seed (int): unused (see above).
        block_size (int): neighbourhood of the structure tensor. Defaults to 2.
        ksize (int): Sobel aperture. Defaults to 3.
        k (float): Harris free parameter. Defaults to 0.04.
        rel_threshold (float): response threshold relative to the maximum. Defaults to 0.01.
        cluster (int): side of the square kept around each corner (odd). Defaults to 3.
        max_rate (float | None): cap on the kept fraction of pixels; None = no cap. Defaults to 0.01.

    Returns:
        np.ndarray: float32 (H, W) sparse depth (empty if the image has no corner).
    """
    del seed
    gt = _check_gt(gt, "harris_sparse")
    rgb = _check_rgb(rgb, gt.shape, "harris_sparse")
    if cluster < 1 or cluster % 2 == 0:
        raise InputError(f"harris_sparse cluster must be a positive odd size, got {cluster}")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / np.float32(255.0)
    response = cv2.cornerHarris(grey, block_size, ksize, k)
    peak = float(response.max())
    if not peak > 0:
        return np.zeros_like(gt)
    local_max = response >= cv2.dilate(response, np.ones((3, 3), np.uint8))
    # Only corners on valid GT: otherwise the budget goes to sky/texture where there is no depth.
    corners = np.flatnonzero(local_max & (response > rel_threshold * peak) & (gt > VALID_EPS))
    if max_rate is not None:
        budget = max(1, int(max_rate * gt.size / (cluster * cluster)))
        if corners.size > budget:
            order = np.argsort(-response.flat[corners], kind="stable")
            corners = corners[order[:budget]]
    seeds = np.zeros(gt.shape, np.uint8)
    seeds.flat[corners] = 1
    keep = cv2.dilate(seeds, np.ones((cluster, cluster), np.uint8)).astype(bool)
    return _keep(gt, keep & (gt > VALID_EPS))


def make_sparse(pattern: str, rgb: np.ndarray, gt: np.ndarray, seed: int) -> np.ndarray:
    """Make one of PSD's four evaluation patterns.

    Args:
        pattern (str): ``"random1"`` (1 %), ``"random0.1"`` (0.1 %), ``"pseudo_hole"`` or ``"harris"``.
        rgb (np.ndarray): uint8 (H, W, 3) RGB (unused by the random patterns).
        gt (np.ndarray): float (H, W) ground truth in metres.
        seed (int): generator seed.

    Returns:
        np.ndarray: float32 (H, W) sparse depth, 0 = missing.

    Raises:
        InputError: unknown pattern name.
    """
    if pattern == "random1":
        return random_sparse(gt, 0.01, seed)
    if pattern == "random0.1":
        return random_sparse(gt, 0.001, seed)
    if pattern == "pseudo_hole":
        return pseudo_hole(rgb, gt, seed)
    if pattern == "harris":
        return harris_sparse(rgb, gt, seed, **HARRIS_PARAMS)
    raise InputError(f"unknown sparse pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
