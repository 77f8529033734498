"""psdrt.runtime.metrics against the official ``DCNet.compute_depth_error`` (skipped without the
official checkout, naming what is missing).

The official method is called unbound, with a stand-in ``self`` that holds only the dataset names
its masks switch on. It computes in float32 torch and psdrt in float64 NumPy, so the two agree to
float32 rounding, not bit for bit: relative 2e-6 on every metric (measured at most 9.9e-8).
The δ thresholds count the same pixels, so δ1-δ3 are equal up to that rounding too.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from parity import _official
from psdrt.runtime.metrics import METRIC_KEYS, depth_metrics, eval_mask

pytestmark = pytest.mark.skipif(_official.official_problem() is not None,
                                reason=str(_official.official_problem()))

#: the datasets whose masks differ (official: VOID1500, DIODEo, VKITTI2, Cityscape, TOFDC, else gt > 0)
DATASETS = {"NYUv2": "NYUv2", "VOID1500": "VOID1500", "DIODEo": "DIODE-out", "VKITTI2": "VKITTI2",
            "Cityscape": "Cityscapes", "TOFDC": "TOFDC"}


@pytest.fixture(scope="module")
def official_metrics():
    module = _official.import_official_module(_official.official_checkout())
    names = {k: types.SimpleNamespace(name=k) for k in ("VOID1500", "DIODEo", "VKITTI2", "Cityscape", "TOFDC")}
    stand_in = types.SimpleNamespace(**names)
    return lambda gt, pred, data: module.DCNet.compute_depth_error(
        stand_in, {"target": torch.from_numpy(gt)[None, None]}, {"depth": [torch.from_numpy(pred)[None, None]]}, data)


@pytest.mark.parametrize("official_name", list(DATASETS))
def test_metrics_match_the_official_compute_depth_error(official_metrics, official_name):
    rng = np.random.default_rng(len(official_name))
    gt = np.where(rng.random((96, 128)) < 0.6, rng.uniform(0.05, 300.0, (96, 128)), 0).astype(np.float32)
    pred = (gt * rng.uniform(0.6, 1.6, gt.shape) + rng.uniform(0.01, 2.0, gt.shape)).astype(np.float32)
    want = {k: float(v[0]) for k, v in official_metrics(gt, pred, official_name).items()}
    got = depth_metrics(pred, gt, eval_mask(DATASETS[official_name], gt))
    assert set(want) == set(METRIC_KEYS)
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in METRIC_KEYS)
    print(f"\n[{official_name}] largest relative difference {worst:.2g}")
    assert worst <= 2e-6, {k: (got[k], want[k]) for k in METRIC_KEYS}
