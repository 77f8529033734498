"""Fixed-affinity CSPN vs the PyTorch oracle and the naive loop reference."""

import numpy as np
import pytest

from _kernel_reference import cspn_naive, t4
from psdrt.export.reference import propagation as R


def inputs(c, h, w, seed=0):
    rng = np.random.default_rng(seed)
    s = np.where(rng.random((h, w)) < 0.05, rng.uniform(0.5, 10, (h, w)), 0).astype(np.float32)
    d = rng.uniform(0.5, 10, (h, w)).astype(np.float32)
    return s, d, rng.standard_normal((c, h, w)).astype(np.float32)


@pytest.mark.parametrize("c,h,w,it", [(12, 57, 76, 3), (16, 64, 90, 3), (32, 40, 50, 8), (5, 9, 11, 0), (7, 1, 1, 2)])
def test_cspn_matches_torch(lib, c, h, w, it):
    s, d, f = inputs(c, h, w, seed=c)
    ref = R.cspn(t4(s), t4(d), t4(f), it, safe=True)[0, 0].numpy()
    np.testing.assert_allclose(lib.cspn(s, d, f, it), ref, atol=5e-5, rtol=1e-5)


def test_cspn_matches_naive_loops(lib):
    s, d, f = inputs(12, 12, 15, seed=3)
    np.testing.assert_allclose(lib.cspn(s, d, f, 3), cspn_naive(s, d, f, 3), atol=5e-5, rtol=1e-5)


def test_zero_affinity_sum_keeps_value_without_nan(lib):
    s, d, f = inputs(16, 20, 24, seed=4)
    f[:, 5:12, 6:14] = 0.0  # zero features: every affinity of these pixels vanishes
    out = lib.cspn(s, d, f, 3)
    assert np.isfinite(out).all()
    official = R.cspn(t4(s), t4(d), t4(f), 3, safe=False)[0, 0].numpy()
    assert np.isnan(official).any()  # the official arithmetic divides 0 by 0 here
    ref = R.cspn(t4(s), t4(d), t4(f), 3, safe=True)[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=5e-5, rtol=1e-5)
    inner = (slice(6, 11), slice(7, 13))
    np.testing.assert_array_equal(out[inner], np.where(s > 0, s, d)[inner])
