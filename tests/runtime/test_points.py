"""Point clouds in (runtime.points): KITTI calibration against a hand computation of KITTI's own
projection, the real Velodyne scan, the readers, and ``psdrt run --points``. The projection kernel
itself: tests/kernels/test_project.py."""

from __future__ import annotations

import numpy as np
import pytest

from _support import SHARED_DATA, requires_shared_data
from psdrt.runtime.errors import InputError
from psdrt.runtime.points import (
    POINT_EXTS,
    project_points,
    read_extrinsics,
    read_kitti_calib,
    read_points,
    reference_project_points,
)

# ------------------------------------------------------------------------------ KITTI calibration

P2 = np.array([[707.0493, 0.0, 604.0814, 45.75831], [0.0, 707.0493, 180.5066, -0.3454157],
               [0.0, 0.0, 1.0, 0.004981016]])
R0 = np.array([[0.9999128, 0.01009263, -0.008511932], [-0.01012729, 0.9999406, -0.004037671],
               [0.008470675, 0.004123522, 0.9999556]])
TR = np.array([[0.006927964, -0.9999722, -0.002757829, -0.02457729], [-0.001162982, 0.002749836, -0.9999955, -0.06127237],
               [0.9999753, 0.006931141, -0.001143899, -0.3321029]])


def _fmt(M):
    return " ".join(f"{v:.12e}" for v in np.asarray(M).reshape(-1))


def _kitti_pixels(pts):
    """KITTI's own projection, by hand: pixel ~ P2 @ R0_rect @ Tr_velo_to_cam @ [x, y, z, 1]."""
    R4, T4 = np.eye(4), np.eye(4)
    R4[:3, :3] = R0
    T4[:3] = TR
    X = np.c_[pts[:, :3].astype(np.float64), np.ones(len(pts))]
    p = (P2 @ R4 @ T4 @ X.T).T
    return p[:, 0] / p[:, 2], p[:, 1] / p[:, 2], p[:, 2]


def _check_against_kitti(calib, size=(370, 1224)):
    rng = np.random.default_rng(5)
    pts = np.stack([rng.uniform(3, 60, 4000), rng.uniform(-20, 20, 4000), rng.uniform(-2, 1, 4000)], 1).astype(np.float32)
    u, v, z = _kitti_pixels(pts)
    inside = (z > 0.1) & (u >= -0.5) & (u < size[1] - 0.5) & (v >= -0.5) & (v < size[0] - 0.5)
    # away from the pixel borders, where no rounding of the two computations can disagree
    clear = inside & (np.abs(u - np.floor(u) - 0.5) > 1e-6) & (np.abs(v - np.floor(v) - 0.5) > 1e-6)
    rows, cols = np.floor(v + 0.5).astype(int), np.floor(u + 0.5).astype(int)
    key = rows * size[1] + cols
    # pixels that exactly one point hits (elsewhere the z-buffer picks among several)
    hit, count = np.unique(key[inside], return_counts=True)
    single = clear & np.isin(key, hit[count == 1])
    d = project_points(pts, calib.K, size, T=calib.T, min_depth=0.1)
    assert single.sum() > 1000
    np.testing.assert_allclose(d[rows[single], cols[single]], z[single], rtol=1e-6)
    assert (d > 0).sum() == len(np.unique(key[inside]))


def test_kitti_object_calibration_reproduces_kittis_projection(tmp_path):
    f = tmp_path / "000000.txt"
    f.write_text(f"P0: {_fmt(np.c_[P2[:, :3], np.zeros(3)])}\nP1: {_fmt(P2)}\nP2: {_fmt(P2)}\nP3: {_fmt(P2)}\n"
                 f"R0_rect: {_fmt(R0)}\nTr_velo_to_cam: {_fmt(TR)}\nTr_imu_to_velo: {_fmt(TR)}\n")
    c = read_kitti_calib(f)
    np.testing.assert_allclose(c.K, P2[:, :3], rtol=0, atol=0)
    np.testing.assert_allclose(c.K @ c.T[:3], P2 @ np.vstack([np.c_[R0, np.zeros(3)], [0, 0, 0, 1]]) @
                               np.vstack([TR, [0, 0, 0, 1]]), atol=1e-9)
    _check_against_kitti(c)
    # the raw dataset's two files give the same calibration
    raw = tmp_path / "2011_09_26"
    raw.mkdir()
    (raw / "calib_cam_to_cam.txt").write_text(f"calib_time: 09-Jan-2012 13:57:47\nR_rect_00: {_fmt(R0)}\n"
                                             f"P_rect_02: {_fmt(P2)}\n")
    (raw / "calib_velo_to_cam.txt").write_text(f"R: {_fmt(TR[:, :3])}\nT: {_fmt(TR[:, 3])}\n")
    r = read_kitti_calib(raw)
    np.testing.assert_array_equal(r.K, c.K)
    np.testing.assert_allclose(r.T, c.T, atol=1e-12)
    with pytest.raises(InputError, match="lacks 'P_rect_03'"):
        read_kitti_calib(raw / "calib_cam_to_cam.txt", camera=3)
    bad = tmp_path / "bad.txt"
    bad.write_text("P2: 1 2 3\n")
    with pytest.raises(InputError):
        read_kitti_calib(bad)


@requires_shared_data
def test_real_velodyne_scan_projects_as_kitti_does():
    lidar = SHARED_DATA / "lidar"
    calib = read_kitti_calib(lidar / "kittiraw_a_calib.txt")
    pts = read_points(lidar / "kittiraw_a_velodyne.bin")
    assert pts.shape[1] == 4 and len(pts) > 100_000
    size = (370, 1224)
    d = project_points(pts, calib.K, size, T=calib.T)
    np.testing.assert_array_equal(d, reference_project_points(pts, calib.K, size, T=calib.T))
    # one HDL-64 scan in the camera's field of view: a few % of the pixels, rows above the horizon
    # empty, depths within the sensor's range
    valid = d > 0
    assert 0.03 < valid.mean() < 0.1 and not valid[:100].any()
    assert 1.0 < d[valid].min() and d[valid].max() < 120.0


# ------------------------------------------------------------------------------ readers


def test_read_bin_npy_and_errors(tmp_path):
    pts = np.random.default_rng(1).standard_normal((100, 4)).astype(np.float32)
    pts.tofile(tmp_path / "scan.bin")
    np.testing.assert_array_equal(read_points(tmp_path / "scan.bin"), pts)
    np.save(tmp_path / "scan.npy", pts[:, :3].astype(np.float64))
    np.testing.assert_array_equal(read_points(tmp_path / "scan.npy"), pts[:, :3])
    (tmp_path / "odd.bin").write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match="not a whole number of KITTI Velodyne points"):
        read_points(tmp_path / "odd.bin")
    (tmp_path / "scan.xyz").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown point-cloud type"):
        read_points(tmp_path / "scan.xyz")
    with pytest.raises(InputError, match="does not exist"):
        read_points(tmp_path / "missing.bin")
    assert set(POINT_EXTS) == {".bin", ".npy", ".ply", ".pcd"}


def test_read_ply_and_pcd(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    pypcd4 = pytest.importorskip("pypcd4")
    pts = np.random.default_rng(2).standard_normal((50, 3)).astype(np.float32)
    v = np.array([tuple(p) for p in pts], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")]).write(str(tmp_path / "c.ply"))
    np.testing.assert_array_equal(read_points(tmp_path / "c.ply"), pts)
    pypcd4.PointCloud.from_xyz_points(pts).save(str(tmp_path / "c.pcd"))
    np.testing.assert_array_equal(read_points(tmp_path / "c.pcd"), pts)


def test_read_extrinsics(tmp_path):
    (tmp_path / "T.txt").write_text("# lidar to camera\n1 0 0 0.1\n0 1 0 0.2\n0 0 1 0.3\n")
    T = read_extrinsics(tmp_path / "T.txt")
    assert T.shape == (4, 4) and T[3].tolist() == [0, 0, 0, 1] and T[:3, 3].tolist() == [0.1, 0.2, 0.3]
    (tmp_path / "bad.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="4x4 or 3x4"):
        read_extrinsics(tmp_path / "bad.txt")


# ------------------------------------------------------------------------------ psdrt run --points


def test_run_with_points_and_kitti_calibration(tmp_path, capsys):
    from psdrt.runtime.cli.__main__ import main
    from psdrt.runtime.visualize import write_png

    rng = np.random.default_rng(3)
    size = (120, 400)
    f = tmp_path / "calib.txt"
    # a small frame: the principal point moved into it
    small = P2.copy()
    small[0, 2], small[1, 2] = 200.0, 60.0
    f.write_text(f"P2: {_fmt(small)}\nR0_rect: {_fmt(R0)}\nTr_velo_to_cam: {_fmt(TR)}\n")
    n = 20000
    pts = np.stack([rng.uniform(5, 40, n), rng.uniform(-15, 15, n), rng.uniform(-1.7, 1, n), rng.uniform(0, 1, n)],
                   1).astype(np.float32)
    (tmp_path / "pts").mkdir()
    (tmp_path / "rgb").mkdir()
    pts.tofile(tmp_path / "pts" / "0001.bin")
    write_png(tmp_path / "rgb" / "0001.png", rng.integers(0, 255, size + (3,), dtype=np.uint8))
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(tmp_path / "rgb"), "--points", str(tmp_path / "pts"), "--calib", str(f),
               "--out", str(out), "--formats", "npy"])
    assert rc == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    calib = read_kitti_calib(f)
    from psdrt.runtime.points import filter_occluded

    projected = project_points(pts, calib.K, size, T=calib.T)
    sparse = filter_occluded(projected)  # on by default for point clouds
    dropped = int((projected > 0).sum() - (sparse > 0).sum())
    assert dropped > 0  # random points at 5-40 m: many far ones lie between nearer ones
    assert f"{n} points -> {int((projected > 0).sum())} pixels" in err and "projected with --calib" in err
    assert f"{dropped} occluded dropped" in err
    depth = np.load(out / "0001_depth.npy")
    assert depth.shape == size and np.isfinite(depth).all() and depth.min() > 0
    # exactly what the pipeline gives for the projected, filtered sparse depth
    from psdrt.runtime.io import read_rgb
    from psdrt.runtime.pipeline import Pipeline

    rgb = read_rgb(tmp_path / "rgb" / "0001.png")
    np.testing.assert_array_equal(depth, Pipeline("guided")(rgb, sparse, calib.K).depth)
    # --no-occlusion-filter: the projection as it is
    rc = main(["run", "--rgb", str(tmp_path / "rgb"), "--points", str(tmp_path / "pts"), "--calib", str(f),
               "--out", str(tmp_path / "out2"), "--formats", "npy", "--no-occlusion-filter"])
    assert rc == 0, capsys.readouterr().err
    assert "occluded dropped" not in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "out2" / "0001_depth.npy"), Pipeline("guided")(rgb, projected, calib.K).depth)
    # a transform is required; --calib replaces --intrinsics
    base = ["run", "--rgb", str(tmp_path / "rgb"), "--points", str(tmp_path / "pts"), "--out", str(out)]
    assert main(base + ["--fx", "700", "--fy", "700", "--cx", "200", "--cy", "60"]) == 2
    assert "--extrinsics identity" in capsys.readouterr().err
    assert main(base + ["--calib", str(f), "--intrinsics", str(f)]) == 2
    assert "drop --intrinsics" in capsys.readouterr().err
    assert main(["run", "--rgb", str(tmp_path / "rgb"), "--sparse", str(tmp_path / "pts"), "--calib", str(f),
                 "--out", str(out)]) == 2
    assert "pass --points" in capsys.readouterr().err
