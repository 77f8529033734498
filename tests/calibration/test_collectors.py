"""Collectors vs brute force on an inline ONNX graph; TensorRanges validation; the registry."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _graphs import feeds, mlp_graph  # noqa: E402

from psdrt.calibration.collectors import (  # noqa: E402
    COLLECTORS, Entropy, MinMax, Percentile, TensorRanges, entropy_threshold, make_collector,
)
from psdrt.runtime.errors import CalibrationError  # noqa: E402


def _brute(batches, w1, w2):
    xs = np.concatenate([b["x"] for b in batches])
    t1 = xs @ w1
    t2 = np.maximum(t1, 0)
    return {"x": xs, "t1": t1, "t2": t2, "y": t2 @ w2}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path, w1, w2 = mlp_graph(tmp_path_factory.mktemp("mlp") / "mlp.onnx", batch=64)
    batches = feeds(40, (64, 16), seed=1)
    return path, batches, _brute(batches, w1, w2)


@pytest.mark.parametrize("in_memory", [1, 7])
def test_minmax_matches_brute_force_on_graph(mlp, in_memory):
    from psdrt.calibration.calibrate import collect_ranges

    path, batches, ref = mlp
    r = collect_ranges(path, batches, ["t1", "t2", "y"], method="minmax", progress=False,
                       max_batches_in_memory=in_memory)
    assert set(r) == {"x", "t1", "t2", "y"}
    for name, a in ref.items():
        np.testing.assert_allclose(r[name], (a.min(), a.max()), rtol=1e-5, atol=1e-5)


def test_percentile_matches_brute_force_on_graph(mlp):
    from psdrt.calibration.calibrate import collect_ranges

    path, batches, ref = mlp
    r = collect_ranges(path, batches, ["t1", "y"], method="percentile", method_options={"percentile": 99.0},
                       progress=False)
    for name in ("x", "t1", "y"):
        a = ref[name]
        slack = (a.max() - a.min()) / 4096 * 4  # histogram bins (re-binned as the range grew)
        # brute force brackets: the sample quantiles just below and above the requested ones
        lo_b = np.percentile(a, [0.9, 1.1])
        hi_b = np.percentile(a, [98.9, 99.1])
        assert lo_b[0] - slack <= r[name][0] <= lo_b[1] + slack
        assert hi_b[0] - slack <= r[name][1] <= hi_b[1] + slack
        assert a.min() <= r[name][0] <= r[name][1] <= a.max()


def test_percentile_streaming_range_growth():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(5000) * s for s in (0.1, 1.0, 5.0)]  # range grows twice
    p = Percentile(percentile=99.9, bins=4096)
    for a in parts:
        p.update({"t": a.astype(np.float32)})
    allv = np.concatenate(parts)
    lo, hi = p.ranges()["t"]
    ref_lo, ref_hi = np.percentile(allv, [0.1, 99.9])
    span = allv.max() - allv.min()
    assert abs(lo - ref_lo) < 0.01 * span and abs(hi - ref_hi) < 0.01 * span


def test_symmetric_minmax_and_percentile():
    a = np.array([-3.0, 1.0, 2.0], np.float32)
    m = MinMax(symmetric=True)
    m.update({"t": a})
    assert m.ranges()["t"] == (-3.0, 3.0)
    p = Percentile(percentile=100.0, symmetric=True)
    p.update({"t": a})
    lo, hi = p.ranges()["t"]
    assert lo == -hi and abs(hi - 3.0) < 1e-3


def test_entropy_clips_outliers_and_keeps_uniform():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal(200_000).astype(np.float32)
    gauss[:5] = 40.0  # rare outliers
    e = Entropy(stride=4)
    e.update({"g": gauss})
    lo, hi = e.ranges()["g"]
    assert lo == -hi
    assert 2.0 < hi < 20.0  # clipped far below the 40.0 outliers, above the bulk
    uni = rng.uniform(-1, 1, 200_000).astype(np.float32)
    e2 = Entropy(stride=4)
    e2.update({"u": uni})
    assert e2.ranges()["u"][1] > 0.9  # nothing to clip in a uniform distribution


def test_entropy_threshold_brute_force_small():
    pytest.importorskip("scipy")
    from scipy.stats import entropy

    counts = np.r_[np.full(40, 100.0), np.full(20, 1.0), np.zeros(3), [5.0]]  # 64 bins
    got = entropy_threshold(counts, 1.0, num_quantized_bins=16)
    best, best_i = np.inf, None
    for i in range(16, 65):  # direct transcription of TensorRT's loop
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        nz = p != 0
        q = np.zeros(i)
        step = i // 16
        for j in range(16):
            s, t = j * step, (j + 1) * step if j < 15 else i
            n = nz[s:t].sum()
            if n:
                q[s:t] = np.where(nz[s:t], counts[s:t].sum() / n, 0)
        kl = entropy(p, q) if q.sum() else np.inf
        if kl < best:
            best, best_i = kl, i
    assert got == pytest.approx(best_i + 0.5 if best_i < 64 else 64.0)


def test_tensor_ranges_validation_and_roundtrip():
    r = TensorRanges({"a": (-1.0, 2.0)}, "minmax")
    assert r.amax("a") == 2.0 and "a" in r and len(r) == 1
    assert TensorRanges.from_dict(r.to_dict()).ranges == r.ranges
    with pytest.raises(CalibrationError):
        TensorRanges({"a": (float("nan"), 1.0)})
    with pytest.raises(CalibrationError):
        TensorRanges({"a": (2.0, 1.0)})
    with pytest.raises(CalibrationError):
        TensorRanges({})
    with pytest.raises(TypeError):
        r.ranges["b"] = (0.0, 1.0)  # read-only view
    with pytest.raises(Exception):
        r.method = "x"  # frozen


def test_registry():
    assert set(COLLECTORS) == {"minmax", "percentile", "entropy"}
    assert isinstance(make_collector("percentile", percentile=99.9), Percentile)
    with pytest.raises(CalibrationError, match="minmax"):
        make_collector("kl")


def test_integer_tensor_refused():
    with pytest.raises(CalibrationError, match="float"):
        MinMax().update({"i": np.arange(3)})
