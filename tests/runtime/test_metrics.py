"""Tests of psdrt.runtime.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psdrt.runtime.errors import InputError, ShapeError
from psdrt.runtime.metrics import METRIC_KEYS, depth_metrics, eval_mask, mean_metrics

# 2x2 case worked by hand. gt = [[1, 2], [4, 0]] (the 0 is masked out), pred = [[1.1, 1.8], [5, 3]].
#   e (mm)               = 100, -200, 1000
#   MAE  = 1300 / 3                                  = 433.3333
#   RMSE = sqrt((1e4 + 4e4 + 1e6) / 3) = sqrt(350000) = 591.6080
#   1000/pred - 1000/gt  = 909.0909 - 1000 = -90.9091 ; 555.5556 - 500 = 55.5556 ; 200 - 250 = -50
#   iMAE  = (90.9091 + 55.5556 + 50) / 3             = 65.4882
#   iRMSE = sqrt((8264.463 + 3086.420 + 2500) / 3)   = 67.9482
#   REL   = 100 * (0.1/1 + 0.2/2 + 1/4) / 3          = 15.0
#   ratios 1.1, 1.1111, 1.25 -> d1 = 2/3 (1.25 is not < 1.25), d2 = d3 = 1
GT = np.array([[1.0, 2.0], [4.0, 0.0]], np.float32)
PRED = np.array([[1.1, 1.8], [5.0, 3.0]], np.float32)
EXPECTED = {"mae": 1300 / 3, "rmse": math.sqrt(350000), "imae": 65.4882, "irmse": 67.9482,
            "rel": 15.0, "d1": 200 / 3, "d2": 100.0, "d3": 100.0}


def test_hand_computed_2x2():
    m = depth_metrics(PRED, GT)
    assert tuple(m) == METRIC_KEYS
    for k, v in EXPECTED.items():
        assert m[k] == pytest.approx(v, rel=1e-4), k


def test_explicit_mask_and_batch_axes():
    mask = np.array([[True, False], [False, False]])
    m = depth_metrics(PRED[None, None], GT[None], mask)
    assert m["mae"] == pytest.approx(100.0, rel=1e-5) and m["rel"] == pytest.approx(10.0, rel=1e-5)


def test_zero_prediction_gives_inf_inverse_errors_and_a_delta_miss():
    pred = PRED.copy()
    pred[0, 0] = 0.0
    m = depth_metrics(pred, GT)
    assert m["imae"] == math.inf and m["irmse"] == math.inf
    assert m["d1"] == pytest.approx(100 / 3) and m["d3"] == pytest.approx(200 / 3)
    assert math.isfinite(m["mae"]) and math.isfinite(m["rel"])


def test_negative_prediction_counts_as_delta_hit_like_upstream():
    pred = PRED.copy()
    pred[1, 0] = -4.0  # both ratios negative, so max(...) < 1.25
    m = depth_metrics(pred, GT)
    assert m["d1"] == pytest.approx(100.0)


def test_empty_mask_is_nan():
    m = depth_metrics(PRED, np.zeros_like(GT))
    assert all(math.isnan(v) for v in m.values())


def test_shape_errors():
    with pytest.raises(ShapeError, match="differ"):
        depth_metrics(PRED, np.zeros((3, 3), np.float32))
    with pytest.raises(ShapeError, match="mask"):
        depth_metrics(PRED, GT, np.ones((3, 3), bool))


@pytest.mark.parametrize("dataset, expected", [
    ("NYUv2", [True, True, True, True, True, True]),
    (None, [True, True, True, True, True, True]),
    ("VOID1500", [False, True, True, False, False, False]),
    ("void", [False, True, True, False, False, False]),
    ("DIODEo", [False, False, True, True, True, False]),
    ("Cityscapes", [False, False, True, True, True, False]),
    ("VKITTI2", [False, False, True, True, True, False]),
    ("TOFDC", [True, True, True, False, False, False]),
])
def test_eval_mask(dataset, expected):
    gt = np.array([[0.1, 0.5, 4.0, 6.0, 200.0, 300.0]], np.float32)
    np.testing.assert_array_equal(eval_mask(dataset, gt)[0], expected)
    assert not eval_mask(dataset, np.zeros((1, 1), np.float32)).any()


def test_mean_metrics_is_per_image_mean():
    a = depth_metrics(PRED, GT)
    b = depth_metrics(GT, GT)  # perfect: all errors 0, deltas 100
    m = mean_metrics([a, b])
    assert m["rmse"] == pytest.approx(math.sqrt(350000) / 2)  # mean of RMSEs, not pooled
    assert m["d1"] == pytest.approx((200 / 3 + 100) / 2)
    with pytest.raises(InputError, match="no images"):
        mean_metrics([])
    with pytest.raises(InputError, match="keys"):
        mean_metrics([a, {"mae": 1.0}])


def test_edge_band_of_a_step_and_its_rmse():
    from psdrt.runtime.metrics import depth_edge_band, edge_band_rmse

    gt = np.full((20, 40), 2.0, np.float32)
    gt[:, 20:] = 4.0  # one vertical depth edge between columns 19 and 20
    band = depth_edge_band(gt, band=3)
    assert band[:, 16:24].all() and not band[:, :16].any() and not band[:, 24:].any()
    pred = gt.copy()
    pred[:, 18:22] = 3.0  # a feathered edge: 1 m off on 4 columns inside the band
    # 4 of the 8 band columns are 1000 mm off: RMSE = sqrt(0.5) * 1000 mm
    assert edge_band_rmse(pred, gt, band=3) == pytest.approx(1000.0 * np.sqrt(0.5), rel=1e-12)
    assert edge_band_rmse(gt, gt) == 0.0
    from psdrt.runtime.metrics import band_rmse

    assert band_rmse(pred, gt, band) == edge_band_rmse(pred, gt, band=3)  # the band precomputed, same value
    assert np.isnan(band_rmse(pred, gt, np.zeros_like(band)))
    with pytest.raises(ShapeError, match="band mask"):
        band_rmse(pred, gt, band[:, :10])


def test_edge_band_ignores_slopes_and_invalid_neighbours():
    from psdrt.runtime.metrics import depth_edge_band, edge_band_rmse

    slope = np.tile(np.linspace(2.0, 3.0, 40, dtype=np.float32), (20, 1))  # 1.3 % steps: no edge
    assert not depth_edge_band(slope).any() and np.isnan(edge_band_rmse(slope, slope))
    sparse = np.zeros((20, 40), np.float32)
    sparse[5, 5], sparse[5, 7] = 2.0, 8.0  # no valid 4-neighbours of each other: no edge
    assert not depth_edge_band(sparse).any()
    sparse[5, 6] = 2.0  # now 2.0 | 8.0 are neighbours: an edge, the band covers both valid pixels
    assert depth_edge_band(sparse, band=1).sum() == 3
    with pytest.raises(InputError):
        depth_edge_band(slope, band=-1)
