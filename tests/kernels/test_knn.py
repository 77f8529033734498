"""3D kNN propagation: identical choices to the PyTorch oracle and to brute force."""

import numpy as np
import pytest

from _kernel_reference import knn_naive, t4
from psdrt.export.reference import propagation as R


def cells(h, w, density, seed, positive=False, clustered=False):
    rng = np.random.default_rng(seed)
    feat = rng.standard_normal((12, h, w)).astype(np.float32)
    if positive:  # all cosines > 0: k > 1 weights are well conditioned, values comparable
        feat = np.abs(feat) + 0.1
    if clustered:  # LiDAR-like: points on a few surfaces, many near-equal distances
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        z = 5 + 40 * (yy / h) + rng.standard_normal((h, w)).astype(np.float32) * 0.01
        pts = np.stack([(xx - w / 2) * z / 200, (yy - h / 2) * z / 200, z]).astype(np.float32)
    else:
        pts = rng.standard_normal((3, h, w)).astype(np.float32)
    s4 = np.where(rng.random((h, w)) < density, rng.uniform(0.5, 80, (h, w)), 0).astype(np.float32)
    init = rng.uniform(0.5, 80, (h, w)).astype(np.float32)
    return feat, pts, init, s4


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("density", [0.02, 0.3])
def test_knn_matches_torch(lib, k, density):
    feat, pts, init, s4 = cells(57, 76, density, seed=k, positive=k > 1)
    ref = R.knn_propagate(t4(feat), t4(pts), t4(init), t4(s4), k)[0, 0].numpy()
    out = lib.knn_propagate(feat, pts, init, s4, k=k)
    if k == 1:
        np.testing.assert_array_equal(out, ref)  # a copied sparse value: same choice <=> equal
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-5)


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_grid_equals_brute_force(lib, clustered, k):
    feat, pts, init, s4 = cells(64, 304, 0.15, seed=10 + k, clustered=clustered)
    grid = lib.knn_propagate(feat, pts, init, s4, k=k)
    brute = lib.knn_propagate(feat, pts, init, s4, k=k, brute_force=True)
    np.testing.assert_array_equal(grid, brute)


def _plane_points(depth, K):
    """Back-projected pixel grid of a depth map (float32): a constant depth gives a regular grid,
    where every query has exactly equidistant candidates on both sides."""
    h, w = depth.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    z = depth.astype(np.float32)
    return np.stack([(xx - np.float32(K[0, 2])) * z / np.float32(K[0, 0]),
                     (yy - np.float32(K[1, 2])) * z / np.float32(K[1, 1]), z]).astype(np.float32)


@pytest.mark.parametrize("fm", ["constant", "quantised"])
@pytest.mark.parametrize("k", [1, 3])
def test_exact_ties_go_to_the_lower_candidate_cell(lib, fm, k):
    """A constant foundation-model output (random ViT-L weights give one) makes the point cloud a
    plane and the features equal: distances and affinities tie everywhere. The kernel (grid and
    brute force) must then follow its documented rule, the lower candidate cell first, exactly
    (knn_naive). A quantised output (four depth levels) ties within each level."""
    h, w = 57, 76
    rng = np.random.default_rng(7)
    K = np.array([[60.0, 0, 37.5], [0, 60.0, 28.0], [0, 0, 1]])
    depth = np.full((h, w), 4.0, np.float32) if fm == "constant" else \
        (2.0 + np.floor(np.linspace(0, 4, w, endpoint=False))[None].repeat(h, 0)).astype(np.float32)
    pts = _plane_points(depth, K)
    feat = np.ones((12, h, w), np.float32) if fm == "constant" else \
        np.repeat(rng.standard_normal((12, 1, 4)).astype(np.float32), w // 4, axis=2).repeat(h, 1)
    s4 = np.zeros((h, w), np.float32)
    s4[::6, ::6] = rng.uniform(1.0, 10.0, s4[::6, ::6].shape)  # a regular lattice: symmetric ties
    init = np.full((h, w), 5.0, np.float32)
    want = knn_naive(feat, pts, init, s4, k)
    np.testing.assert_array_equal(lib.knn_propagate(feat, pts, init, s4, k=k), want)
    np.testing.assert_array_equal(lib.knn_propagate(feat, pts, init, s4, k=k, brute_force=True), want)
    # the rule decides: ties to the upper cell give another map on these frames
    upper = knn_naive(feat, pts, init, s4, k, ties="upper")
    assert (upper != want).mean() > 0.05


@pytest.mark.parametrize("m", [0, 1, 2, 5])
def test_fewer_than_2k_candidates_uses_all(lib, m):
    feat, pts, init, s4 = cells(20, 24, 0.0, seed=m, positive=True)
    s4.flat[np.random.default_rng(m).choice(s4.size, m, replace=False)] = np.arange(1, m + 1)
    out = lib.knn_propagate(feat, pts, init, s4, k=3)
    assert np.isfinite(out).all()
    ref = R.knn_propagate(t4(feat), t4(pts), t4(init), t4(s4), 3, safe=True)[0, 0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    np.testing.assert_allclose(out, knn_naive(feat, pts, init, s4, 3), rtol=1e-5)


@pytest.mark.parametrize("rate,cap", [(0.5, 0), (1.0, 40), (0.3, 25)])
def test_seeded_subsets_match_naive_reference(lib, rate, cap):
    feat, pts, init, s4 = cells(24, 32, 0.2, seed=5)
    out = lib.knn_propagate(feat, pts, init, s4, k=1, rate=rate, candidates=cap, seed=1234)
    np.testing.assert_array_equal(out, knn_naive(feat, pts, init, s4, 1, rate, cap, seed=1234))
    again = lib.knn_propagate(feat, pts, init, s4, k=1, rate=rate, candidates=cap, seed=1234)
    np.testing.assert_array_equal(out, again)


def test_zero_cosine_sum_falls_back_to_equal_weights(lib):
    feat, pts, init, s4 = cells(10, 10, 0.0, seed=1)
    s4[0, 0], s4[9, 9] = 2.0, 4.0
    feat[:] = 0.0  # every cosine is 0: official 0/0
    out = lib.knn_propagate(feat, pts, init, s4, k=2)
    empty = s4 <= 0
    np.testing.assert_allclose(out[empty], 3.0)


@pytest.mark.parametrize("bad", [1e30, np.inf, np.nan])
def test_huge_or_non_finite_points_finish_and_match_brute_force(lib, bad):
    """Squared distances that overflow (or NaN) defeat the grid's early exit; such frames take
    the brute-force search instead of walking every ring of the grid for every query."""
    import time

    feat, pts, init, s4 = cells(64, 304, 0.15, seed=3, clustered=True)
    pts[0, ::7] *= 1e20  # an elongated grid: one axis spans 1e21
    pts[1, 5, 5] = bad
    t0 = time.perf_counter()
    out = lib.knn_propagate(feat, pts, init, s4, k=3)
    assert time.perf_counter() - t0 < 30
    np.testing.assert_array_equal(out, lib.knn_propagate(feat, pts, init, s4, k=3, brute_force=True))


def test_propagation_with_an_extreme_skew_returns(lib):
    """A K skew of 1e25 passed validation and NYU-size frames never returned (> 40 s here before
    the fix, 0.3 s after). The C API takes any K (the sessions and Python now refuse it): the
    kernel must still finish."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from psdrt.runtime import _capi; lib = _capi.load('cpu')\n"
        "rng = np.random.default_rng(0); h, w = 228, 304\n"
        "s = np.where(rng.random((h, w)) < 0.01, rng.uniform(1, 10, (h, w)), 0).astype(np.float32)\n"
        "K = np.array([[259.4, 1e25, 154.8], [0, 259.7, 120.9], [0, 0, 1]], np.float32)\n"
        "out = lib.propagate(rng.uniform(0.1, 1, (392, 518)).astype(np.float32), s,\n"
        "                    rng.standard_normal((64, 28, 37)).astype(np.float32), K)\n"
        "print(bool(np.isfinite(out).all()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]
