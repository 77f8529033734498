"""Depth-completion metrics exactly as PSD's ``compute_depth_error`` defines them (docs/psd_method.md §6.2).

Per image, over the evaluation mask V, with e = 1000·(pred − gt):

* MAE = mean|e| and RMSE = sqrt(mean e²), in millimetres;
* iMAE = mean|1000/pred − 1000/gt| and iRMSE = sqrt(mean(1000/pred − 1000/gt)²), in 1/km;
* REL = 100·mean(|gt − pred| / gt), in %;
* δj = 100·mean(max(gt/pred, pred/gt) < 1.25^j), j = 1, 2, 3, in %.

The prediction is not clamped and is not masked by its own validity, as upstream. Consequences kept
on purpose (they are what the published numbers mean):

* a prediction of 0 inside V makes 1/pred = inf, so iMAE and iRMSE of that image are ``inf`` (and
  so is any dataset mean that includes it); for δ, gt/0 = inf counts the pixel as a miss; MAE, RMSE
  and REL stay finite;
* a negative prediction gives finite but meaningless inverse errors, and both ratios gt/pred and
  pred/gt are negative, so upstream's max(...) < 1.25 counts the pixel as a δ **hit**; reproduced
  here (clamp predictions to a positive minimum before evaluating if that matters to you);
* an empty mask gives NaN for every metric (upstream: mean of an empty tensor).

Upstream computes in float32 on the GPU; this module computes in float64, so values agree to
float32 rounding (relative ~1e-6), not bit for bit.

Not an official metric: :func:`edge_band_rmse`, the RMSE (mm) in a band around the ground truth's
depth edges (:func:`depth_edge_band`), which shows feathered or misplaced depth edges that the
whole-image RMSE averages away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = ["METRIC_KEYS", "METRIC_UNITS", "EVAL_MASK_RANGES", "eval_mask", "depth_metrics", "mean_metrics",
           "depth_edge_band", "edge_band_rmse", "band_rmse"]

#: metric names in the order the PSD trainer writes them
METRIC_KEYS = ("mae", "rmse", "imae", "irmse", "rel", "d1", "d2", "d3")
#: unit of each metric
METRIC_UNITS = {"mae": "mm", "rmse": "mm", "imae": "1/km", "irmse": "1/km", "rel": "%",
                "d1": "%", "d2": "%", "d3": "%"}

#: open intervals (lo, hi) of valid GT for datasets with a special evaluation mask; all others use gt > 0
EVAL_MASK_RANGES: dict[str, tuple[float, float]] = {
    "VOID1500": (0.2, 5.0),
    "DIODEo": (1.0, 250.0),
    "VKITTI2": (1.0, 250.0),
    "Cityscape": (1.0, 250.0),
    "TOFDC": (0.0, 6.0),
}
# Official keys plus the spellings people actually type.
_MASK_ALIASES = {
    "void1500": "VOID1500", "void": "VOID1500",
    "diodeo": "DIODEo", "diode-out": "DIODEo", "diode_out": "DIODEo", "diode-outdoor": "DIODEo",
    "vkitti2": "VKITTI2", "vkitti": "VKITTI2",
    "cityscape": "Cityscape", "cityscapes": "Cityscape",
    "tofdc": "TOFDC",
}


def _as_depth(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 and all(s == 1 for s in a.shape[:-2]) else a
    if a.ndim != 2:
        raise ShapeError(f"{name} must be a (H, W) depth map, got shape {a.shape}; drop batch/channel axes")
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name} must be numeric depth in metres, got {a.dtype}")
    return a.astype(np.float64, copy=False)


def eval_mask(dataset: str | None, gt: np.ndarray) -> np.ndarray:
    """Evaluation mask of a dataset, as in PSD's ``compute_depth_error``.

    VOID1500: 0.2 < gt < 5; DIODE-outdoor, VKITTI2, Cityscapes: 1 < gt < 250; TOFDC: 0 < gt < 6;
    every other dataset (and None): gt > 0. Names are matched case-insensitively, with common
    aliases ("VOID", "DIODE-out", "Cityscapes").

    Args:
        dataset (str | None): dataset key, e.g. ``"NYUv2"``, ``"VOID1500"``.
        gt (np.ndarray): (H, W) ground truth in metres.

    Returns:
        np.ndarray: bool (H, W).
    """
    gt = _as_depth(gt, "gt")
    key = _MASK_ALIASES.get(str(dataset).lower()) if dataset is not None else None
    if key is None:
        return gt > 0
    lo, hi = EVAL_MASK_RANGES[key]
    return (gt > lo) & (gt < hi)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """All eight PSD metrics of one image.

    Args:
        pred (np.ndarray): (H, W) predicted depth in metres (any float/int dtype; (1, H, W) accepted).
        gt (np.ndarray): (H, W) ground truth in metres, 0 = invalid.
        mask (np.ndarray | None): bool (H, W) evaluation mask. Defaults to gt > 0; use
            ``eval_mask(dataset, gt)`` for the dataset-specific masks.

    Returns:
        dict[str, float]: keys ``METRIC_KEYS`` (units in ``METRIC_UNITS``). See the module
        docstring for zero/negative predictions and empty masks.

    Raises:
        ShapeError: shapes differ or are not 2-D.
    """
    pred = _as_depth(pred, "pred")
    gt = _as_depth(gt, "gt")
    if pred.shape != gt.shape:
        raise ShapeError(f"pred {pred.shape} and gt {gt.shape} differ; resize the prediction to the GT size")
    if mask is None:
        mask = gt > 0
    else:
        mask = np.asarray(mask)
        if mask.shape != gt.shape:
            mask = mask.reshape(mask.shape[-2:]) if mask.size == gt.size else mask
        if mask.shape != gt.shape:
            raise ShapeError(f"mask {mask.shape} and gt {gt.shape} differ; build it with eval_mask(dataset, gt)")
        mask = mask.astype(bool, copy=False)
    d = pred[mask]
    t = gt[mask]
    if t.size == 0:
        return {k: math.nan for k in METRIC_KEYS}

    err = 1000.0 * (d - t)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_err = 1000.0 / d - 1000.0 / t  # 1/(0.001 d) in 1/km; inf where d == 0 (kept, as upstream)
        ratio = np.maximum(t / d, d / t)  # inf (a miss) where d == 0; negative (a hit) where d < 0
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "imae": float(np.mean(np.abs(inv_err))),
        "irmse": float(np.sqrt(np.mean(inv_err * inv_err))),
        "rel": float(100.0 * np.mean(np.abs(t - d) / t)),
        "d1": float(100.0 * np.mean(ratio < 1.25)),
        "d2": float(100.0 * np.mean(ratio < 1.25 ** 2)),
        "d3": float(100.0 * np.mean(ratio < 1.25 ** 3)),
    }


def mean_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dataset score: arithmetic mean of the per-image values, key by key (not a pooled RMSE).

    Args:
        per_image (Iterable[Mapping[str, float]]): outputs of ``depth_metrics``; all must have the same keys.

    Returns:
        dict[str, float]: mean of each key; NaN and inf propagate (as in upstream's averaging).

    Raises:
        InputError: no images, or images with different keys.
    """
    rows = list(per_image)
    if not rows:
        raise InputError("mean_metrics got no images; evaluate at least one frame")
    keys = list(rows[0].keys())
    for i, row in enumerate(rows):
        if set(row.keys()) != set(keys):
            raise InputError(f"mean_metrics: image {i} has keys {sorted(row)}, expected {sorted(keys)}; "
                             "compute every image with depth_metrics()")
    return {k: float(np.mean([float(row[k]) for row in rows])) for k in keys}


def depth_edge_band(gt: np.ndarray, band: int = 3, jump: float = 0.1) -> np.ndarray:
    """Valid ground-truth pixels within ``band`` pixels (Chebyshev distance) of a depth edge.

    An edge pixel is a valid pixel (gt > 0) with a valid 4-neighbour whose depth differs by more
    than ``jump`` times the nearer of the two (10 %: an object boundary, not a slanted surface).
    Only valid neighbours count, so a semi-dense ground truth (KITTI) yields the edges it samples.

    Args:
        gt (np.ndarray): (H, W) ground truth in metres, 0 = invalid.
        band (int): half-width of the band in pixels. Defaults to 3.
        jump (float): relative depth jump of an edge. Defaults to 0.1.

    Returns:
        np.ndarray: bool (H, W), True on valid pixels of the band.
    """
    import cv2

    gt = _as_depth(gt, "gt")
    if band < 0 or not jump > 0:
        raise InputError(f"band must be >= 0 and jump > 0, got band={band}, jump={jump}")
    valid = gt > 0
    edge = np.zeros(gt.shape, bool)
    for a, b, sa, sb in ((gt[:, :-1], gt[:, 1:], np.s_[:, :-1], np.s_[:, 1:]),
                         (gt[:-1, :], gt[1:, :], np.s_[:-1, :], np.s_[1:, :])):
        both = (a > 0) & (b > 0)
        step = both & (np.abs(a - b) > jump * np.minimum(a, b))
        edge[sa] |= step
        edge[sb] |= step
    k = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    return cv2.dilate(edge.astype(np.uint8), k).astype(bool) & valid


def edge_band_rmse(pred: np.ndarray, gt: np.ndarray, band: int = 3, jump: float = 0.1) -> float:
    """RMSE in millimetres over :func:`depth_edge_band` (NaN when the ground truth has no edge)."""
    return band_rmse(pred, gt, depth_edge_band(gt, band, jump))


def band_rmse(pred: np.ndarray, gt: np.ndarray, band_mask: np.ndarray) -> float:
    """RMSE in millimetres over ``band_mask`` (NaN when it is empty): :func:`edge_band_rmse` with the
    band computed once (``depth_edge_band(gt)``) for several predictions of one frame."""
    mask = np.asarray(band_mask, dtype=bool)
    pred, gt = _as_depth(pred, "pred"), _as_depth(gt, "gt")
    if pred.shape != gt.shape:
        raise ShapeError(f"pred {pred.shape} and gt {gt.shape} differ; resize the prediction to the GT size")
    if mask.shape != gt.shape:
        raise ShapeError(f"band mask {mask.shape} and gt {gt.shape} differ; build it with depth_edge_band(gt)")
    if not mask.any():
        return math.nan
    e = 1000.0 * (pred[mask] - gt[mask])
    return float(np.sqrt(np.mean(e * e)))
