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
