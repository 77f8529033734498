"""Tests of psdrt.runtime.classical: IP-Basic (PSD's settings) and nearest fill."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import _support
from psdrt.runtime.classical import ip_basic_fill, nearest_fill
from psdrt.runtime.errors import InputError, ShapeError


def _kitti_like(seed=0, h=60, w=80):
    """Sparse points only in the lower half, depth growing towards the top (like a road scene)."""
    rng = np.random.default_rng(seed)
    sp = np.zeros((h, w), np.float32)
    rows = rng.integers(h // 2, h, 200)
    cols = rng.integers(0, w, 200)
    sp[rows, cols] = (2.0 + 30.0 * (h - rows) / h + rng.uniform(0, 1, 200)).astype(np.float32)
    return sp


def test_ip_basic_constant_map_overwrites_the_max_point():
    # All pixels at 2 m, one at 5 m. Inverted: 3 everywhere, 0 at the max pixel (treated as empty);
    # the first dilation gives it 3, every later step keeps a constant 3, so re-inverting gives
    # 2 m everywhere: the farthest point is lost (upstream behaviour).
    sp = np.full((9, 9), 2.0, np.float32)
    sp[4, 4] = 5.0
    out = ip_basic_fill(sp)
    np.testing.assert_allclose(out, 2.0, atol=1e-6)


def test_ip_basic_values_near_max_come_out_near_zero():
    # All at 1.0 m and one at 1.05 m: inverted values 0.05 (and 0) are all < 0.1, so nothing is
    # ever re-inverted and the output holds the inverted 0.05, not a depth (upstream quirk).
    sp = np.full((8, 8), 1.0, np.float32)
    sp[0, 0] = 1.05
    out = ip_basic_fill(sp)
    assert out.max() < 0.1
    np.testing.assert_allclose(out[4, 4], 0.05, atol=1e-6)


def test_ip_basic_properties():
    sp = _kitti_like()
    before = sp.copy()
    out = ip_basic_fill(sp)
    np.testing.assert_array_equal(sp, before)  # input not modified (upstream works in place)
    assert out.dtype == np.float32 and out.shape == sp.shape and np.isfinite(out).all()
    assert (out[:5] > 0.1).all()  # top rows filled by the column extrapolation
    assert out.max() <= sp.max() + 1e-5
    np.testing.assert_array_equal(ip_basic_fill(sp), out)
    np.testing.assert_array_equal(ip_basic_fill(sp[None]), out)  # (1, H, W) accepted


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((5, 5), np.float32), InputError, "0.1 m"),
    (np.full((5, 5), 0.05, np.float32), InputError, "0.1 m"),
    (np.array([[np.nan, 1.0]], np.float32), InputError, "NaN"),
    (np.array([[-1.0, 1.0]], np.float32), InputError, "negative"),
    (np.ones((5, 5), np.uint16), InputError, "float"),
    (np.ones((2, 5, 5), np.float32), ShapeError, r"\(H, W\)"),
])
def test_ip_basic_rejects(bad, err, match):
    with pytest.raises(err, match=match):
        ip_basic_fill(bad)


def test_ip_basic_matches_official_when_available():
    why = _support.official_missing("shenglunch/PSD", "PSD_OFFICIAL_DIR", "PSD", ("datasets/ip_basic.py",))
    if why:
        pytest.skip(why)
    ref_dir = _support.official_psd_dir()
    spec = importlib.util.spec_from_file_location("_official_ip_basic", ref_dir / "datasets" / "ip_basic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for seed in range(3):
        sp = _kitti_like(seed)
        ref = mod.fill_in_fast(sp.copy(), max_depth=sp.max())
        np.testing.assert_array_equal(ip_basic_fill(sp), ref)


def test_nearest_fill_hand_case():
    sp = np.array([[0, 2, 0, 0, 5]], np.float32)
    # column 2 is 1 px from the 2 and 2 px from the 5; column 3 is 1 px from the 5
    np.testing.assert_array_equal(nearest_fill(sp), [[2, 2, 2, 5, 5]])


def test_nearest_fill_properties():
    rng = np.random.default_rng(0)
    sp = np.zeros((40, 50), np.float32)
    idx = rng.choice(sp.size, 30, replace=False)
    sp.flat[idx] = rng.uniform(1, 10, 30)
    out = nearest_fill(sp)
    assert out.dtype == np.float32 and np.isfinite(out).all() and (out > 0).all()
    np.testing.assert_array_equal(out.flat[idx], sp.flat[idx])
    assert set(np.unique(out)) <= set(np.unique(sp[sp > 0]))
    # brute force: each pixel's value belongs to a nearest valid pixel
    yy, xx = np.divmod(idx, sp.shape[1])
    for y, x in [(0, 0), (17, 33), (39, 49)]:
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        assert out[y, x] in sp.flat[idx[d2 == d2.min()]]
    tie = np.array([[3, 0, 7]], np.float32)
    assert nearest_fill(tie)[0, 1] in (3, 7) and nearest_fill(tie)[0, 1] == nearest_fill(tie)[0, 1]


def test_nearest_fill_rejects_empty():
    with pytest.raises(InputError, match="at least one"):
        nearest_fill(np.zeros((3, 3), np.float32))
