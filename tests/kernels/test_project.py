"""The point-cloud projection kernel (psd_project_points via runtime.points.project_points) on
hand-built clouds, and against its NumPy reference bit for bit (also run under ASan/UBSan by
test_sanitize.py). Calibration, readers and the CLI: tests/runtime/test_points.py."""

from __future__ import annotations

import numpy as np
import pytest

from psdrt.runtime.errors import InputError, ShapeError
from psdrt.runtime.points import project_points, reference_project_points

K = np.array([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]])
SIZE = (60, 80)


def _at(col, row, z):
    """A camera-frame point that projects exactly to pixel coordinates (col, row) at depth z."""
    return [(col - K[0, 2]) * z / K[0, 0], (row - K[1, 2]) * z / K[1, 1], z]


def test_z_buffer_keeps_the_nearest_point_whatever_the_order():
    pts = np.array([_at(10, 20, 5.0), _at(10, 20, 3.0), _at(10, 20, 4.0), _at(11, 20, 7.0)], np.float32)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        d = project_points(pts[order], K, SIZE)
        assert d[20, 10] == np.float32(3.0) and d[20, 11] == np.float32(7.0)
        assert (d > 0).sum() == 2 and d.dtype == np.float32 and d.shape == SIZE


def test_behind_too_close_too_far_and_outside_are_dropped():
    pts = np.array([_at(5, 5, -2.0),          # behind the camera
                    _at(6, 5, 0.05),          # closer than min_depth 0.25
                    _at(7, 5, 0.25),          # exactly min_depth: dropped (z > min_depth)
                    _at(8, 5, 50.0),          # beyond max_depth 40
                    _at(-3, 5, 2.0), _at(5, 70, 2.0), _at(85, 5, 2.0),  # outside the 60x80 image
                    [1e30, 1e30, 2.0], [np.nan, 0, 2.0], [0, np.inf, 2.0],  # absurd and non-finite
                    _at(9, 5, 40.0)], np.float32)  # kept: max_depth is inclusive
    d = project_points(pts, K, SIZE, min_depth=0.25, max_depth=40.0)
    assert np.argwhere(d > 0).tolist() == [[5, 9]] and d[5, 9] == np.float32(40.0)
    np.testing.assert_array_equal(d, reference_project_points(pts, K, SIZE, min_depth=0.25, max_depth=40.0))


def test_pixel_is_the_nearest_centre():
    # u = 2.49 -> column 2, u = 2.5 -> column 3 (floor(u + 0.5)); u = -0.49 -> column 0, u = -0.51 -> out
    cases = [(2.49, 2), (2.5, 3), (-0.49, 0), (79.49, 79)]
    for u, col in cases:
        z = 4.0
        pts = np.array([[(u - 40.0) * z / 100.0, 0.0, z]], np.float64)
        d = project_points(pts, K, SIZE)
        assert np.argwhere(d > 0).tolist() == [[30, col]], (u, col)
    for u in (-0.51, 79.5):
        assert not project_points(np.array([[(u - 40.0) * 0.04, 0.0, 4.0]]), K, SIZE).any(), u


def test_extrinsics_rotate_and_translate_into_the_camera():
    # a sensor whose x axis looks forward (z of the camera), y left (-x), z up (-y), mounted 1 m
    # above and 0.5 m behind the camera: T maps sensor coordinates into the camera frame
    R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    t = np.array([0.0, -1.0, 0.5])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    sensor = np.array([[10.0, 1.0, 0.5]], np.float32)  # 10 m ahead, 1 m left, 0.5 m up of the sensor
    cam = R @ sensor[0].astype(np.float64) + t  # hand computation: (-1, -1.5, 10.5)
    u, v = 100.0 * cam[0] / cam[2] + 40.0, 100.0 * cam[1] / cam[2] + 30.0
    d = project_points(sensor, K, SIZE, T=T)
    assert np.argwhere(d > 0).tolist() == [[int(np.floor(v + 0.5)), int(np.floor(u + 0.5))]]
    assert d[d > 0][0] == np.float32(cam[2])


def test_kernel_equals_the_numpy_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 200_000
    pts = np.stack([rng.uniform(-30, 30, n), rng.uniform(-3, 3, n), rng.uniform(-5, 80, n),
                    rng.uniform(0, 1, n)], 1).astype(np.float32)
    pts[::97, :3] = np.round(pts[::97, :3])  # exact duplicates and ties
    pts[1::97] = pts[::97][: len(pts[1::97])]
    th = 0.03
    T = np.array([[np.cos(th), 0, np.sin(th), 0.1], [0, 1, 0, -0.2], [-np.sin(th), 0, np.cos(th), 0.3], [0, 0, 0, 1]])
    Kk = np.array([[707.05, 0.0, 604.08], [0.0, 707.05, 180.51], [0.0, 0.0, 1.0]])
    got = project_points(pts, Kk, (375, 1242), T=T)
    want = reference_project_points(pts, Kk, (375, 1242), T=T)
    np.testing.assert_array_equal(got, want)
    assert 0.02 < (got > 0).mean() < 0.3
    np.testing.assert_array_equal(project_points(pts[rng.permutation(n)], Kk, (375, 1242), T=T), got)


def test_empty_one_and_equal_clouds():
    assert not project_points(np.zeros((0, 3), np.float32), K, SIZE).any()
    one = project_points(np.array([_at(3, 4, 2.0)]), K, SIZE)
    assert (one > 0).sum() == 1 and one[4, 3] == 2.0
    same = project_points(np.array([_at(3, 4, 2.0)] * 50), K, SIZE)
    np.testing.assert_array_equal(same, one)


@pytest.mark.parametrize("bad,err,match", [
    (dict(points=np.zeros((5, 2), np.float32)), ShapeError, "x, y, z first"),
    (dict(points=np.zeros((5, 3), np.int32)), InputError, "floating point"),
    (dict(K=np.eye(3)[:2]), ShapeError, "3x3"),
    (dict(K=np.array([[100.0, 0, 40], [0, -100, 30], [0, 0, 1]])), InputError, "focal"),
    (dict(T=np.eye(4)[:3]), ShapeError, "4x4"),
    (dict(T=np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.5, 0, 0, 1]])), InputError, "transposed"),
    (dict(T=np.diag([1000.0, 1000.0, 1000.0, 1.0])), InputError, "orthonormal"),
    (dict(T=np.full((4, 4), np.nan)), InputError, "NaN"),
    (dict(min_depth=0.0), InputError, "min_depth"),
    (dict(min_depth=5.0, max_depth=5.0), InputError, "max_depth"),
])
def test_bad_input_is_a_typed_error(bad, err, match):
    kw = dict(points=np.array([_at(3, 4, 2.0)], np.float32), K=K, size=SIZE)
    kw.update(bad)
    with pytest.raises(err, match=match):
        project_points(**kw)
