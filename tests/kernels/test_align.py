"""Alignment (§3.1 least squares, §3.2 median) vs the PyTorch oracle, degenerate cases included."""

import numpy as np
import pytest

from _kernel_reference import t4
from psdrt.export.reference import propagation as R
from psdrt.runtime.errors import InputError


def frame(n_points, seed=0, h=57, w=76):
    rng = np.random.default_rng(seed)
    s = np.zeros((h, w), np.float32)
    idx = rng.choice(h * w, n_points, replace=False)
    s.flat[idx] = rng.uniform(0.5, 10, n_points)
    return s, rng.uniform(0.1, 1, (h, w)).astype(np.float32), rng.uniform(0.3, 12, (h, w)).astype(np.float32)


@pytest.mark.parametrize("n", [3, 50, 693])
def test_inverse_ls_matches_torch(lib, n):
    s, r, _ = frame(n, seed=n)
    ref = R.align_inverse_ls(t4(r), t4(s))[0, 0].numpy()
    np.testing.assert_allclose(lib.align_inverse_ls(r, s), ref, rtol=2e-5)


@pytest.mark.parametrize("n", [3, 50, 693, 694])
def test_median_matches_torch(lib, n):
    s, _, ip = frame(n, seed=n)
    ref = R.align_median(t4(ip), t4(s))[0, 0].numpy()
    np.testing.assert_allclose(lib.align_median(ip, s), ref, rtol=1e-6)


@pytest.mark.parametrize("case", ["one_point", "all_equal", "two_points"])
def test_degenerate_sparse_gives_constant_max_and_no_nan(lib, case):
    s, r, ip = frame(1, seed=7)
    if case == "all_equal":
        s[:] = 0
        s[::7, ::5] = 3.5
    if case == "two_points":
        s[:] = 0
        s[3, 4], s[20, 30] = 2.0, 5.0
    dp = lib.align_inverse_ls(r, s)
    np.testing.assert_allclose(dp, np.full_like(dp, s.max()), rtol=1e-6)  # official: constant dmax
    np.testing.assert_allclose(dp, R.align_inverse_ls(t4(r), t4(s))[0, 0].numpy(), rtol=1e-6)
    im = lib.align_median(ip, s)
    assert np.isfinite(im).all()
    np.testing.assert_allclose(im, R.align_median(t4(ip), t4(s), safe=True)[0, 0].numpy(), rtol=1e-6)


def test_no_sparse_point_raises(lib):
    s, r, ip = frame(1)
    s[:] = 0
    with pytest.raises(InputError):
        lib.align_inverse_ls(r, s)
    with pytest.raises(InputError):
        lib.align_median(ip, s)
