"""The occlusion (parallax) filter, psd_occlusion_filter via runtime.points.filter_occluded: on a
synthetic two-plane scene seen by a LiDAR mounted above and behind the camera, where the right
answer is known per pixel, and against its NumPy reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from _support import SHARED_DATA

from psdrt.runtime.errors import InputError, ShapeError
from psdrt.runtime.points import filter_occluded, project_points, reference_filter_occluded

K = np.array([[300.0, 0.0, 80.0], [0.0, 300.0, 60.0], [0.0, 0.0, 1.0]])
H, W = 120, 160
ZF, ZB = 4.0, 16.0  # a foreground box |x| <= 0.5 m, |y| <= 0.4 m at z = 4 m before a wall at 16 m


def _two_planes(lidar=(0.0, -0.25, -0.3)):
    """Scan-line LiDAR returns (26 lines 0.6 deg apart, 0.15 deg steps) from a sensor at `lidar`
    (camera frame, y down: above and behind the camera), projected; and the depth the camera sees."""
    lidar = np.asarray(lidar)
    el, az = np.meshgrid(np.deg2rad(np.arange(-8, 8, 0.6)), np.deg2rad(np.arange(-16, 16, 0.15)), indexing="ij")
    ray = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1).reshape(-1, 3)
    on_box = lidar + ((ZF - lidar[2]) / ray[:, 2])[:, None] * ray
    hit = (np.abs(on_box[:, 0]) <= 0.5) & (np.abs(on_box[:, 1]) <= 0.4)
    on_wall = lidar + ((ZB - lidar[2]) / ray[:, 2])[:, None] * ray
    sparse = project_points(np.where(hit[:, None], on_box, on_wall).astype(np.float32), K, (H, W))
    v, u = np.mgrid[0:H, 0:W]
    box = (np.abs((u - K[0, 2]) * ZF / K[0, 0]) <= 0.5) & (np.abs((v - K[1, 2]) * ZF / K[1, 1]) <= 0.4)
    return sparse, np.where(box, ZF, ZB).astype(np.float32)


def test_two_planes_hidden_wall_returns_go_and_every_visible_return_stays():
    sparse, truth = _two_planes()
    valid = sparse > 0
    wrong = valid & (np.abs(sparse - truth) > 1.0)  # wall returns where the camera sees the box
    kept = filter_occluded(sparse) > 0
    assert valid.sum() == 4368 and wrong.sum() == 407
    # no visible return is lost, the box and the wall beside its edges included
    assert not (valid & ~wrong & ~kept).any()
    # the hidden returns between the box's scan lines go (324 of 407); what stays lies on the box's
    # top and bottom rows, with nearer returns on one side only (the rule cannot tell them from an edge)
    assert (wrong & ~kept).sum() == 324
    rows = np.nonzero((wrong & kept).any(axis=1))[0]
    box_rows = np.nonzero((truth == ZF).any(axis=1))[0]
    assert rows.min() <= box_rows.min() + 2 and rows.max() >= box_rows.max() - 3
    assert set(rows.tolist()) <= set(range(box_rows.min(), box_rows.min() + 3)) | set(range(box_rows.max() - 3,
                                                                                              box_rows.max() + 1))


def test_camera_colocated_lidar_loses_nothing():
    sparse, truth = _two_planes(lidar=(0.0, 0.0, 0.0))
    # no parallax: nothing is hidden (a few box returns round onto the pixels just outside it)
    np.testing.assert_array_equal(filter_occluded(sparse), sparse)


def test_enclosed_point_rule_by_hand():
    s = np.zeros((9, 9), np.float32)
    s[4, 4] = 20.0                  # far point
    s[2, 3], s[6, 5] = 5.0, 5.0     # nearer above-left and below-right: enclosed
    out = filter_occluded(s, rx=2, ry=2)
    assert out[4, 4] == 0 and out[2, 3] == 5 and out[6, 5] == 5
    s[6, 5], s[6, 6] = 0.0, 5.0     # below only to the right, above only to the left: still enclosed
    assert filter_occluded(s, rx=2, ry=2)[4, 4] == 0
    s[2, 3], s[2, 5] = 0.0, 5.0     # now every nearer point is to the right: an edge, kept
    assert filter_occluded(s, rx=2, ry=2)[4, 4] == 20
    s[2, 4] = 18.5                  # within the 10 % margin (18.5 > 18): not nearer
    assert filter_occluded(s, rx=2, ry=2)[4, 4] == 20
    assert filter_occluded(s, rx=2, ry=1)[4, 4] == 20  # ry = 1 does not reach rows 2 and 6
    s[2, 4] = 17.9
    assert filter_occluded(s, rx=2, ry=2)[4, 4] == 0
    assert filter_occluded(s, rx=0, ry=2)[4, 4] == 20  # rx = 0: only column 4, nothing below it


@pytest.mark.parametrize("rx,ry,rel", [(4, 8, 0.1), (0, 1, 0.5), (7, 3, 0.02)])
def test_kernel_equals_reference_bit_for_bit(rx, ry, rel):
    rng = np.random.default_rng(rx + ry)
    s = np.where(rng.random((57, 83)) < 0.2, rng.uniform(0.5, 80, (57, 83)), 0).astype(np.float32)
    s[rng.random(s.shape) < 0.02] = np.nan
    s[rng.random(s.shape) < 0.02] = -1.0
    s[0, 0], s[1, 1] = np.inf, 3.4e38
    out = filter_occluded(s, rx=rx, ry=ry, rel=rel)
    np.testing.assert_array_equal(out, reference_filter_occluded(s, rx=rx, ry=ry, rel=rel))
    assert np.isfinite(out).all() and (out >= 0).all() and out[0, 0] == 0
    assert 0 < (out > 0).sum() < (np.nan_to_num(s) > 0).sum()


def test_degenerate_inputs():
    for s in (np.zeros((5, 7), np.float32), np.full((1, 9), 3.0, np.float32), np.full((6, 1), 2.0, np.float32)):
        np.testing.assert_array_equal(filter_occluded(s), s)  # empty, one row, one column, all equal
    one = np.zeros((5, 5), np.float32)
    one[2, 2] = 4.0
    np.testing.assert_array_equal(filter_occluded(one), one)


def test_real_lidar_frame():
    lidar = SHARED_DATA / "lidar" / "kittidc_a_lidar.png" if SHARED_DATA is not None else None
    if lidar is None or not lidar.is_file():
        pytest.skip("the shared KITTI LiDAR frame is absent (../shared/data/lidar)")
    from psdrt.runtime.io import read_depth

    s = read_depth(lidar, 256.0)
    out = filter_occluded(s)
    np.testing.assert_array_equal(out, reference_filter_occluded(s))
    gone = (s > 0) & (out == 0)
    assert 0 < gone.sum() < 0.1 * (s > 0).sum()


@pytest.mark.parametrize("kw", [{"rx": -1}, {"rx": 65}, {"ry": 0}, {"ry": 65}, {"rel": 0.0}, {"rel": 1.0},
                                {"rel": float("nan")}])
def test_bad_parameters(kw):
    with pytest.raises(InputError, match="occlusion filter"):
        filter_occluded(np.ones((4, 4), np.float32), **kw)


def test_bad_maps():
    with pytest.raises(ShapeError, match="H, W"):
        filter_occluded(np.ones((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="float"):
        filter_occluded(np.ones((4, 4), np.uint16))
