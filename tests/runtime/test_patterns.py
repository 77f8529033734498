"""Tests of psdrt.runtime.patterns: seeded sparse-depth generators."""

from __future__ import annotations

import numpy as np
import pytest

from psdrt.runtime import patterns as P
from psdrt.runtime.errors import InputError, ShapeError

H, W = 96, 128


def _gt(valid_fraction=0.6, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 20.0, (H, W)).astype(np.float32)
    gt[rng.random((H, W)) > valid_fraction] = 0.0
    return gt


def _checkerboard(dark=False):
    yy, xx = np.mgrid[:H, :W]
    board = ((yy // 16 + xx // 16) % 2).astype(np.uint8) * (90 if dark else 255)
    return np.repeat(board[..., None], 3, axis=2)


def _check_subset(sparse, gt):
    assert sparse.dtype == np.float32 and sparse.shape == gt.shape
    kept = sparse > 0
    assert (gt[kept] > P.VALID_EPS).all()
    np.testing.assert_array_equal(sparse[kept], gt[kept])


@pytest.mark.parametrize("rate", [0.01, 0.001, 0.2])
def test_random_sparse_count_and_values(rate):
    gt = _gt()
    sp = P.random_sparse(gt, rate, seed=1)
    assert (sp > 0).sum() == int(rate * H * W)
    _check_subset(sp, gt)


def test_random_sparse_seeding():
    gt = _gt()
    a = P.random_sparse(gt, 0.01, 7)
    np.testing.assert_array_equal(a, P.random_sparse(gt, 0.01, 7))
    assert not np.array_equal(a > 0, P.random_sparse(gt, 0.01, 8) > 0)


def test_random_sparse_takes_all_when_too_few_valid():
    gt = np.zeros((H, W), np.float32)
    gt[3, 4], gt[5, 6], gt[7, 8] = 1.0, 2.0, 5e-5  # the last is below the 1e-4 validity threshold
    sp = P.random_sparse(gt, 0.01, 0)
    assert (sp > 0).sum() == 2 and sp[7, 8] == 0


def test_random_sparse_validation():
    with pytest.raises(InputError, match="rate"):
        P.random_sparse(_gt(), 0.0, 0)
    with pytest.raises(ShapeError):
        P.random_sparse(np.zeros((2, 3, 4), np.float32), 0.1, 0)
    with pytest.raises(InputError, match="float"):
        P.random_sparse(np.zeros((4, 4), np.uint16), 0.1, 0)


def test_highlight_mask_rule():
    rgb = np.array([[[255, 255, 255], [255, 0, 255], [255, 255, 0], [150, 150, 150], [151, 151, 151]]], np.uint8)
    # E > 150 and G > 0 and B > 0: white yes; G = 0 no; B = 0 no; grey 150 no (E = 149.985); 151 yes
    np.testing.assert_array_equal(P.highlight_mask(rgb), [[True, False, False, False, True]])


def test_pseudo_hole_fraction_and_seeding():
    gt = np.full((200, 240), 3.0, np.float32)
    dark = np.full((200, 240, 3), 40, np.uint8)  # no highlights: only the ~20 % spatter
    a = P.pseudo_hole(dark, gt, 0)
    _check_subset(a, gt)
    assert abs((a == 0).mean() - 0.2) < 0.01
    np.testing.assert_array_equal(a, P.pseudo_hole(dark, gt, 0))
    assert not np.array_equal(a, P.pseudo_hole(dark, gt, 1))
    bright = dark.copy()
    bright[:, :60] = 230  # a quarter of the image is a highlight
    b = P.pseudo_hole(bright, gt, 0)
    assert (b[:, :60] == 0).all()
    np.testing.assert_array_equal(b[:, 60:], a[:, 60:])  # same spatter for the same seed
    assert 0.35 < (b == 0).mean() < 0.45  # 25 % + 20 % of the remaining 75 %


def test_pseudo_hole_shape_mismatch():
    with pytest.raises(ShapeError, match="differ"):
        P.pseudo_hole(np.zeros((10, 10, 3), np.uint8), _gt(), 0)


def test_harris_clusters_on_corners():
    gt = _gt(valid_fraction=1.0)
    rgb = _checkerboard()
    sp = P.harris_sparse(rgb, gt, 0, max_rate=None)
    _check_subset(sp, gt)
    kept = np.argwhere(sp > 0)
    assert len(kept) > 0
    # the checkerboard's corners are the 16-px grid crossings; every kept pixel is within a few px
    near = np.minimum(kept % 16, 16 - kept % 16)
    assert (near <= 3).all()
    np.testing.assert_array_equal(sp, P.harris_sparse(rgb, gt, 99, max_rate=None))  # seed-independent


def test_harris_cap_and_invalid_gt():
    gt = _gt(valid_fraction=1.0)
    rgb = _checkerboard()
    capped = P.harris_sparse(rgb, gt, 0, max_rate=0.002)
    assert 0 < (capped > 0).sum() <= int(0.002 * H * W / 9) * 9
    gt_half = gt.copy()
    gt_half[:, : W // 2] = 0
    _check_subset(P.harris_sparse(rgb, gt_half, 0), gt_half)
    assert not (P.harris_sparse(np.zeros((H, W, 3), np.uint8), gt, 0) > 0).any()  # flat image: no corners


def test_make_sparse_names():
    gt, rgb = _gt(), _checkerboard(dark=True)
    assert (P.make_sparse("random1", rgb, gt, 0) > 0).sum() == int(0.01 * H * W)
    assert (P.make_sparse("random0.1", rgb, gt, 0) > 0).sum() == int(0.001 * H * W)
    for name in ("pseudo_hole", "harris"):
        _check_subset(P.make_sparse(name, rgb, gt, 0), gt)
    with pytest.raises(InputError, match="random1"):
        P.make_sparse("random5", rgb, gt, 0)
