"""psdrt run --bag: ROS 1 .bag, rosbag2 (SQLite3, MCAP) and bare .mcap in, a rosbag2 MCAP of depth out.

The bags are written here with rosbags itself (a few 48x64 frames: structured RGB, a plane and a
box seen by a "LiDAR" whose transform to the camera is a TF chain in /tf_static). Each output is
read back with rosbags and, independently, with the mcap library, and its depth must equal
Pipeline('guided') run directly on the same frame and sparse depth.
"""

import io
import shutil

import numpy as np
import pytest

pytest.importorskip("rosbags")

from PIL import Image as PILImage  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from psdrt.runtime import bags  # noqa: E402
from psdrt.runtime.cli.__main__ import main  # noqa: E402
from psdrt.runtime.cli.run_cmd import Projection, sparse_from_points  # noqa: E402
from psdrt.runtime.pipeline import Pipeline  # noqa: E402

H, W = 48, 64
K = np.array([[60.0, 0.0, 31.5], [0.0, 58.0, 23.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000 * 10**9  # first image stamp, ns
DT = 100_000_000  # 10 Hz
TS2 = get_typestore(Stores.ROS2_HUMBLE)
TS1 = get_typestore(Stores.ROS1_NOETIC)
if "tf2_msgs/msg/TFMessage" not in TS1.types:  # rosbags' Noetic store lacks it; ROS 1 defines it so
    from rosbags.typesys import get_types_from_msg

    TS1.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
#: /tf_static: base_link -> cam (the standard optical rotation, q = (-0.5, 0.5, -0.5, 0.5)) and
#: base_link -> lidar (a yaw of 0.3 rad, 0.2 m up); the cloud is in "lidar", the image in "cam"
TF = [("base_link", "cam", (0.1, -0.05, 0.3), (-0.5, 0.5, -0.5, 0.5)),
      ("base_link", "lidar", (0.0, 0.0, 0.5), (0.0, 0.0, np.sin(0.15), np.cos(0.15)))]


def _rot(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _T(t, q):
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = _rot(q), t
    return M


#: lidar -> cam by hand: p_cam = inv(T_base_cam) @ T_base_lidar @ p_lidar
T_CAM_LIDAR = np.linalg.inv(_T(*TF[0][2:])) @ _T(*TF[1][2:])


def _rgb(i):
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.stack([(u * 4 + 10 * i) % 256, (v * 5) % 256, ((u // 8 + v // 8) % 2) * 200 + 20], axis=2)
    rgb[14:30, 20:40] = (230, 40, 40)  # the box
    return rgb.astype(np.uint8)


def _cloud_cam(i):
    """Camera-frame points: a plane at z = 4 m, a box face at 2.5 m, every 3rd pixel, moving with i."""
    v, u = np.mgrid[1:H:3, (i % 3):W:3].astype(np.float64)
    z = np.where((v >= 14) & (v < 30) & (u >= 20) & (u < 40), 2.5, 4.0 + 0.02 * u)
    x, y = (u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1]
    return np.stack([x.ravel(), y.ravel(), z.ravel()], 1)


def _cloud_lidar(i):
    p = _cloud_cam(i)
    q = (np.linalg.inv(T_CAM_LIDAR) @ np.c_[p, np.ones(len(p))].T).T[:, :3]
    return q.astype(np.float32)


def _sparse_img(i):
    """A registered sparse depth map (metres) for --depth-topic: every 4th pixel, millimetre-exact
    so that 16UC1 holds the same metres."""
    d = np.zeros((H, W), np.float32)
    v, u = np.mgrid[1:H:4, (i % 4):W:4]
    z = np.where((v >= 14) & (v < 30) & (u >= 20) & (u < 40), 2.5, 4.0 + 0.02 * u)
    d[v, u] = (np.rint(z * 1000) / 1000).astype(np.float32)
    return d


# ------------------------------------------------------------------------------------ writing bags


def _hdr(T, ts, stamp, frame, ros1):
    t = T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    if ros1:
        return T["std_msgs/msg/Header"](seq=0, stamp=t, frame_id=frame)
    return T["std_msgs/msg/Header"](stamp=t, frame_id=frame)


def _image_msg(T, hdr, rgb, encoding="rgb8", pad=0):
    if encoding in ("bgr8", "bgra8"):
        rgb = rgb[:, :, ::-1]
    c = 3
    if encoding == "mono8":
        rgb, c = rgb[:, :, :1], 1
    if encoding in ("rgba8", "bgra8"):
        rgb, c = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], 2), 4
    rows = np.zeros((H, W * c + pad), np.uint8)
    rows[:, :W * c] = np.ascontiguousarray(rgb).reshape(H, -1)
    return T["sensor_msgs/msg/Image"](header=hdr, height=H, width=W, encoding=encoding, is_bigendian=0,
                                      step=W * c + pad, data=rows.reshape(-1))


def _depth_msg(T, hdr, d, encoding):
    if encoding == "16UC1":
        a = np.rint(d * 1000).astype("<u2")
    else:
        a = d.astype("<f4")
    return T["sensor_msgs/msg/Image"](header=hdr, height=H, width=W, encoding=encoding, is_bigendian=0,
                                      step=W * a.itemsize, data=a.view(np.uint8).reshape(-1))


def _cloud_msg(T, hdr, xyz):
    """x, y, z float32 plus an intensity, point_step 16, NaN points mixed in (dropped by the reader)."""
    n = len(xyz)
    rec = np.zeros(n + 2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    rec["x"][:n], rec["y"][:n], rec["z"][:n] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["x"][n:] = np.nan
    rec["intensity"] = 1.0
    PF = T["sensor_msgs/msg/PointField"]
    fields = [PF(name=k, offset=4 * i, datatype=7, count=1) for i, k in enumerate(("x", "y", "z", "intensity"))]
    return T["sensor_msgs/msg/PointCloud2"](header=hdr, height=1, width=n + 2, fields=fields, is_bigendian=False,
                                            point_step=16, row_step=16 * (n + 2), data=rec.view(np.uint8).reshape(-1),
                                            is_dense=False)


def _info_msg(T, hdr, ros1, k=K):
    kw = dict(header=hdr, height=H, width=W, distortion_model="plumb_bob", binning_x=0, binning_y=0,
              roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    P = np.zeros((3, 4))
    P[:, :3] = k
    names = ("D", "K", "R", "P") if ros1 else ("d", "k", "r", "p")
    vals = (np.zeros(5), np.asarray(k, np.float64).reshape(9), np.eye(3).reshape(9), P.reshape(12))
    kw.update(dict(zip(names, vals)))
    return T["sensor_msgs/msg/CameraInfo"](**kw)


def _tf_msg(T, ros1):
    G = "geometry_msgs/msg/"
    out = []
    for parent, child, t, q in TF:
        out.append(T[G + "TransformStamped"](
            header=_hdr(T, None, T0 - 10**9, parent, ros1), child_frame_id=child,
            transform=T[G + "Transform"](translation=T[G + "Vector3"](x=t[0], y=t[1], z=t[2]),
                                         rotation=T[G + "Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))))
    return T["tf2_msgs/msg/TFMessage"](transforms=out)


def write_bag(path, kind="mcap", n=4, image="rgb8", sparse="points", stamps=None, info=True, tf=True,
              info_k=K, pad=0):
    """A test bag. kind: ros1 (.bag), sqlite3 or mcap (rosbag2 directory). image: an Image encoding
    or "png" (CompressedImage). sparse: points, 32FC1 or 16UC1 (--depth-topic). Returns the frames."""
    ros1 = kind == "ros1"
    ts = TS1 if ros1 else TS2
    T = ts.types
    if ros1:
        w = Writer1(path)
    else:
        w = Writer2(path, version=8, storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    ser = ts.serialize_ros1 if ros1 else ts.serialize_cdr
    stamps = stamps or [T0 + i * DT for i in range(n)]
    frames = []
    with w:
        img_type = "sensor_msgs/msg/CompressedImage" if image == "png" else "sensor_msgs/msg/Image"
        c_img = w.add_connection("/cam/image_raw", img_type, typestore=ts)
        c_info = w.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts) if info else None
        sp_topic, sp_type = (("/lidar/points", "sensor_msgs/msg/PointCloud2") if sparse == "points"
                             else ("/cam/sparse_depth", "sensor_msgs/msg/Image"))
        c_sp = w.add_connection(sp_topic, sp_type, typestore=ts)
        if tf:
            c_tf = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
            w.write(c_tf, T0 - 10**9, ser(_tf_msg(T, ros1), "tf2_msgs/msg/TFMessage"))
        if info:
            w.write(c_info, T0 - 10**9, ser(_info_msg(T, _hdr(T, ts, T0 - 10**9, "cam", ros1), ros1, info_k),
                                            "sensor_msgs/msg/CameraInfo"))
        for i, st in enumerate(stamps):
            rgb = _rgb(i)
            hdr = _hdr(T, ts, st, "cam", ros1)
            if image == "png":
                buf = io.BytesIO()
                PILImage.fromarray(rgb).save(buf, format="PNG")
                msg = T["sensor_msgs/msg/CompressedImage"](header=hdr, format="png",
                                                           data=np.frombuffer(buf.getvalue(), np.uint8))
            else:
                msg = _image_msg(T, hdr, rgb, image, pad)
            # the sparse message 10 ms after the image, logged before it (out of order on purpose)
            sp_st = T0 + i * DT + 10_000_000
            if sparse == "points":
                xyz = _cloud_lidar(i)
                sp = _cloud_msg(T, _hdr(T, ts, sp_st, "lidar", ros1), xyz)
            else:
                xyz = _sparse_img(i)
                sp = _depth_msg(T, _hdr(T, ts, sp_st, "cam", ros1), xyz, sparse)
            w.write(c_sp, st + 1000, ser(sp, sp_type))
            w.write(c_img, st + 2000, ser(msg, img_type))
            frames.append({"stamp": st, "rgb": rgb, "sparse": xyz})
    return frames


def _path(tmp_path, kind):
    return tmp_path / ("in.bag" if kind == "ros1" else "in_bag")


def _expected(frame, sparse="points", T=None):
    if sparse == "points":
        T = bags.lookup_transform(bags.tf_edges([_tf_msg(TS2.types, False)]), "lidar", "cam") if T is None else T
        sp, _ = sparse_from_points(frame["sparse"], K, (H, W), Projection(T, 0.1, float("inf"), "", True))
    else:
        sp = frame["sparse"]
    return Pipeline("guided")(frame["rgb"], sp, K)


def read_out(path):
    """{topic: [(stamp ns, msg)]} of an output bag, read with rosbags."""
    out = {}
    with AnyReader([path]) as r:
        for con, _, raw in r.messages():
            m = r.deserialize(raw, con.msgtype)
            out.setdefault(con.topic, []).append((bags.stamp_ns(m.header), m))
    return out


def read_out_mcap(path):
    """The same with the mcap library (independent of rosbags): {topic: [(stamp, decoded)]}."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (f,) = list(path.glob("*.mcap"))
    out = {}
    with open(f, "rb") as fh:
        for _, channel, _, msg in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            out.setdefault(channel.topic, []).append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg))
    return out


def _depth_of(m):
    dt = "<f4" if m.encoding == "32FC1" else "<u2"
    return np.frombuffer(bytes(m.data), dt).reshape(m.height, m.width)


BASE = ["run", "--image-topic", "/cam/image_raw", "--camera-info-topic", "/cam/camera_info"]


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("kind", ["ros1", "sqlite3", "mcap", "mcap-file"])
def test_points_bag_matches_the_pipeline_read_back_by_rosbags_and_mcap(tmp_path, capsys, kind):
    src = _path(tmp_path, "mcap" if kind == "mcap-file" else kind)
    frames = write_bag(src, "mcap" if kind == "mcap-file" else kind, n=3)
    if kind == "mcap-file":  # a bare .mcap file, no metadata.yaml beside it
        (f,) = list(src.glob("*.mcap"))
        src = shutil.move(str(f), str(tmp_path / "lone.mcap"))
        shutil.rmtree(tmp_path / "in_bag")
    out = tmp_path / "out"
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(out), "--out-points"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "3 of 3 image(s) completed" in cap.out and "0 unpaired" in cap.out
    assert "[3/3]" in cap.err and "(sparse +10.0 ms)" in cap.err
    name = {"ros1": "in", "sqlite3": "in_bag", "mcap": "in_bag", "mcap-file": "lone"}[kind]
    res = out / f"{name}_depth"
    for got in (read_out(res), read_out_mcap(res)):
        assert sorted(got) == ["/cam/depth_completed", "/cam/depth_completed/camera_info",
                               "/cam/depth_completed/points"]
        depth = got["/cam/depth_completed"]
        assert [s for s, _ in depth] == [f["stamp"] for f in frames]
        for (st, m), f in zip(depth, frames):
            assert m.header.frame_id == "cam" and m.encoding == "32FC1" and (m.height, m.width) == (H, W)
            assert m.step == W * 4 and not m.is_bigendian
            ref = _expected(f)
            assert np.array_equal(_depth_of(m), ref.depth)
        infos = got["/cam/depth_completed/camera_info"]
        assert [s for s, _ in infos] == [f["stamp"] for f in frames]
        np.testing.assert_array_equal(np.asarray(infos[0][1].k).reshape(3, 3), K)
        assert infos[0][1].header.frame_id == "cam" and infos[0][1].distortion_model == "plumb_bob"
        pts = got["/cam/depth_completed/points"]
        m = pts[-1][1]
        xyz = np.frombuffer(bytes(m.data), "<f4").reshape(-1, 3)
        assert m.width == H * W and xyz.shape == (H * W, 3) and m.header.frame_id == "cam"
        d = _expected(frames[-1]).depth
        # pixel (row 10, col 50): z = depth, x = (50 - cx) z / fx, y = (10 - cy) z / fy
        z = d[10, 50]
        np.testing.assert_allclose(xyz[10 * W + 50], [(50 - 31.5) * z / 60.0, (10 - 23.5) * z / 58.0, z], rtol=1e-6)


def test_tf_chain_is_composed_in_the_right_direction():
    edges = bags.tf_edges([_tf_msg(TS2.types, False)])
    M = bags.lookup_transform(edges, "lidar", "cam")
    np.testing.assert_allclose(M, T_CAM_LIDAR, atol=1e-12)
    np.testing.assert_allclose(bags.lookup_transform(edges, "cam", "lidar"), np.linalg.inv(T_CAM_LIDAR), atol=1e-12)
    # a camera-frame point on the optical axis 2 m ahead is 2 m ahead of base_link's x, shifted by the mount
    p = bags.lookup_transform(edges, "cam", "base_link") @ [0, 0, 2.0, 1]
    np.testing.assert_allclose(p[:3], [2.1, -0.05, 0.3], atol=1e-12)
    with pytest.raises(bags.InputError, match="--extrinsics"):
        bags.lookup_transform(edges, "radar", "cam")


@pytest.mark.parametrize("kind,image,sparse,enc", [("ros1", "png", "16UC1", "16UC1"),
                                                  ("sqlite3", "bgr8", "32FC1", "32FC1"),
                                                  ("mcap", "mono8", "32FC1", "16UC1")])
def test_depth_topic_and_image_variants(tmp_path, capsys, kind, image, sparse, enc):
    src = _path(tmp_path, kind)
    frames = write_bag(src, kind, n=2, image=image, sparse=sparse, tf=False, pad=8 if image != "png" else 0)
    out = tmp_path / "out"
    rc = main([*BASE, "--bag", str(src), "--depth-topic", "/cam/sparse_depth", "--out", str(out),
               "--out-encoding", enc, "--out-topic", "/cam/depth/image"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = next(out.iterdir())
    got = read_out_mcap(res)
    assert sorted(got) == ["/cam/depth/image", "/cam/depth/image/camera_info"]
    for (st, m), f in zip(got["/cam/depth/image"], frames):
        assert st == f["stamp"] and m.encoding == enc
        rgb = f["rgb"] if image != "mono8" else np.repeat(f["rgb"][:, :, :1], 3, axis=2)
        ref = Pipeline("guided")(rgb, f["sparse"], K)
        if enc == "32FC1":
            assert np.array_equal(_depth_of(m), ref.depth)
        else:
            assert m.step == W * 2 and np.array_equal(_depth_of(m), ref.depth_mm())
            assert 2400 < _depth_of(m)[20, 30] < 2600  # the box at 2.5 m, in millimetres


# ------------------------------------------------------------------------------------ bad bags


def test_list_prints_topics_types_and_counts(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    write_bag(src, "mcap", n=3)
    assert main(["run", "--bag", str(src), "--list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[1:]}
    assert lines == {"/cam/camera_info": ["sensor_msgs/msg/CameraInfo", "1", "message(s)"],
                     "/cam/image_raw": ["sensor_msgs/msg/Image", "3", "message(s)"],
                     "/lidar/points": ["sensor_msgs/msg/PointCloud2", "3", "message(s)"],
                     "/tf_static": ["tf2_msgs/msg/TFMessage", "1", "message(s)"]}
    assert "4 topic(s), ROS 2" in out
    assert not (tmp_path / "psdrt_out").exists()


def test_missing_topic_lists_the_available_ones(tmp_path, capsys):
    src = _path(tmp_path, "ros1")
    write_bag(src, "ros1", n=1, info=False)
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--camera-info-topic /cam/camera_info: no such topic" in err
    assert "/cam/image_raw (sensor_msgs/msg/Image)" in err and "/lidar/points (sensor_msgs/msg/PointCloud2)" in err
    rc = main(["run", "--bag", str(src), "--image-topic", "/lidar/points", "--camera-info-topic", "/x",
               "--points-topic", "/lidar/points"])
    assert rc == 2 and "is sensor_msgs/msg/PointCloud2, not" in capsys.readouterr().err
    assert main(["run", "--bag", str(src), "--points-topic", "/lidar/points"]) == 2
    assert "--bag needs --image-topic, --camera-info-topic" in capsys.readouterr().err


def test_unusable_camera_info_is_counted(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    write_bag(src, "mcap", n=2, info_k=np.zeros((3, 3)))
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 2
    assert "0 of 2 image(s) completed" in cap.out and "2 without usable camera info" in cap.out
    assert cap.out.count("no camera info: image 1700000000") == 2 and "fx=0, fy=0" in cap.out


def test_unsupported_encoding_names_the_supported_ones(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    write_bag(src, "mcap", n=2, image="rgba8")  # supported: the alpha is dropped
    ts, T = TS2, TS2.types
    src2 = tmp_path / "yuv"
    with Writer2(src2, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        ci = w.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        cd = w.add_connection("/d", "sensor_msgs/msg/Image", typestore=ts)
        hdr = _hdr(T, ts, T0, "cam", False)
        w.write(ci, T0, ts.serialize_cdr(_info_msg(T, hdr, False), "sensor_msgs/msg/CameraInfo"))
        w.write(cd, T0, ts.serialize_cdr(_depth_msg(T, hdr, _sparse_img(0), "32FC1"), "sensor_msgs/msg/Image"))
        m = T["sensor_msgs/msg/Image"](header=hdr, height=H, width=W, encoding="yuv422", is_bigendian=0, step=W * 2,
                                       data=np.zeros(H * W * 2, np.uint8))
        w.write(c, T0, ts.serialize_cdr(m, "sensor_msgs/msg/Image"))
        w.write(c, T0 + DT, b"\x00\x01\x00\x00garbage")  # a message that does not deserialize
    rc = main([*BASE, "--bag", str(src2), "--depth-topic", "/d", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 2 and "0 of 2 image(s) completed" in cap.out and "2 bad message(s) skipped" in cap.out
    assert "encoding 'yuv422' is not supported; supported: rgb8, bgr8, mono8, rgba8, bgra8" in cap.out
    assert "skipped: /cam/image_raw 1700000000.100000000: does not deserialize" in cap.out
    assert main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o2")]) == 0
    assert "2 of 2 image(s) completed" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["ros1", "mcap-file"])
def test_truncated_bag_is_an_input_error(tmp_path, capsys, kind):
    src = _path(tmp_path, "ros1" if kind == "ros1" else "mcap")
    write_bag(src, "ros1" if kind == "ros1" else "mcap", n=3)
    f = src if kind == "ros1" else next(src.glob("*.mcap"))
    data = f.read_bytes()
    target = tmp_path / ("cut.bag" if kind == "ros1" else "cut.mcap")
    target.write_bytes(data[:len(data) // 2])
    rc = main([*BASE, "--bag", str(target), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"cannot read bag {target}" in err and "reindex" in err and "Traceback" not in err


def test_clock_jump_leaves_an_unpaired_image_that_is_reported(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    stamps = [T0, T0 + DT, T0 + 2 * DT + 7 * 10**9, T0 + 3 * DT]  # image 3's clock jumped 7 s
    frames = write_bag(src, "mcap", stamps=stamps)
    out = tmp_path / "out"
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0
    assert "3 of 4 image(s) completed" in cap.out and "1 unpaired (no points within 0.05 s)" in cap.out
    assert "unpaired images (stamps): 1700000007.200000000" in cap.out
    assert "[4/4] 1700000007.200000000: UNPAIRED" in cap.err  # [i/N] counts in log order: it was logged last
    got = read_out(out / "in_bag_depth")["/cam/depth_completed"]
    assert [s for s, _ in got] == [stamps[0], stamps[1], stamps[3]]
    assert np.array_equal(_depth_of(got[2][1]), _expected(frames[3]).depth)
    # a tolerance of 5 ms pairs nothing (the clouds are 10 ms off): an error, not an empty success
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(out), "--overwrite",
               "--sync-tolerance", "0.005"])
    cap = capsys.readouterr()
    assert rc == 2 and "4 unpaired" in cap.out and "within --sync-tolerance 0.005 s" in cap.err


def test_extrinsics_flag_overrides_tf_and_missing_tf_names_the_fix(tmp_path, capsys):
    src = _path(tmp_path, "sqlite3")
    frames = write_bag(src, "sqlite3", n=2, tf=False)
    args = [*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no transform from the point cloud's frame 'lidar' to the image's frame 'cam'" in err and "--extrinsics" in err
    ext = tmp_path / "T.txt"
    np.savetxt(ext, T_CAM_LIDAR)
    assert main(args + ["--extrinsics", str(ext)]) == 0
    capsys.readouterr()
    got = read_out(tmp_path / "o" / "in_bag_depth")["/cam/depth_completed"]
    T = np.loadtxt(ext)
    assert np.array_equal(_depth_of(got[1][1]), _expected(frames[1], T=T).depth)


def test_existing_output_is_refused_without_overwrite(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    write_bag(src, "mcap", n=1)
    args = [*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert main(args) == 2
    assert "in_bag_depth exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_ctrl_c_leaves_a_valid_closed_bag(tmp_path, capsys, monkeypatch):
    src = _path(tmp_path, "mcap")
    frames = write_bag(src, "mcap", n=4)
    calls = []
    real = Pipeline.__call__

    def interrupting(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Pipeline, "__call__", interrupting)
    out = tmp_path / "out"
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 130 and "2 of 4 image(s) completed" in cap.out and "INTERRUPTED" in cap.out
    monkeypatch.setattr(Pipeline, "__call__", real)
    for got in (read_out(out / "in_bag_depth"), read_out_mcap(out / "in_bag_depth")):
        depth = got["/cam/depth_completed"]
        assert [s for s, _ in depth] == [frames[0]["stamp"], frames[1]["stamp"]]
        assert np.array_equal(_depth_of(depth[1][1]), _expected(frames[1]).depth)


def test_rgb_and_bag_flags_are_checked(tmp_path, capsys):
    assert main(["run", "--sparse", "x.npy", "--fx", "1", "--fy", "1", "--cx", "1", "--cy", "1"]) == 2
    assert "--rgb is required" in capsys.readouterr().err
    assert main(["run", "--rgb", "a.png", "--sparse", "x.npy", "--list"]) == 2
    assert "pass --bag PATH" in capsys.readouterr().err
    assert main(["run", "--bag", str(tmp_path / "nope.bag"), "--list"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ decoders


def test_cloud_xyz_honours_offsets_row_step_endianness_and_drops_nan():
    T = TS2.types
    PF = T["sensor_msgs/msg/PointField"]
    pts = np.array([[1, 2, 3], [4, 5, 6], [np.nan, 0, 1], [7, 8, 9]], np.float32)
    rec = np.zeros(4, dtype={"names": ["z", "x", "y"], "formats": [">f4"] * 3, "offsets": [0, 8, 12], "itemsize": 20})
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rows = np.zeros((2, 2 * 20 + 6), np.uint8)  # 2 x 2 points, 6 bytes of row padding
    rows[:, :40] = rec.view(np.uint8).reshape(2, 40)
    fields = [PF(name="z", offset=0, datatype=7, count=1), PF(name="x", offset=8, datatype=7, count=1),
              PF(name="y", offset=12, datatype=7, count=1)]
    msg = T["sensor_msgs/msg/PointCloud2"](header=_hdr(T, None, 0, "l", False), height=2, width=2, fields=fields,
                                           is_bigendian=True, point_step=20, row_step=46,
                                           data=rows.reshape(-1), is_dense=False)
    np.testing.assert_array_equal(bags.cloud_xyz(msg), pts[[0, 1, 3]])
    msg.fields = fields[:2]
    with pytest.raises(bags.InputError, match="no field y"):
        bags.cloud_xyz(msg)


def test_image_and_depth_decoders():
    T = TS2.types
    hdr = _hdr(T, None, 0, "c", False)
    rgb = _rgb(2)
    for enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
        assert np.array_equal(bags.image_rgb(_image_msg(T, hdr, rgb, enc, pad=5)), rgb), enc
    grey = bags.image_rgb(_image_msg(T, hdr, rgb, "mono8", pad=3))
    assert grey.shape == (H, W, 3) and all(np.array_equal(grey[:, :, k], rgb[:, :, 0]) for k in range(3))
    d = np.zeros((H, W), np.float32)
    d[3, 4], d[10, 20] = 1.234, 65.535
    be = np.rint(d * 1000).astype(">u2")
    msg = T["sensor_msgs/msg/Image"](header=hdr, height=H, width=W, encoding="16UC1", is_bigendian=1, step=W * 2 + 2,
                                     data=np.c_[be.view(np.uint8).reshape(H, -1), np.zeros((H, 2), np.uint8)].reshape(-1))
    got = bags.depth_image_m(msg)
    assert got.dtype == np.float32 and got[3, 4] == np.float32(1.234) and got[10, 20] == np.float32(65.535)
    assert int((got > 0).sum()) == 2
    f = d.copy()
    f[0, 0] = np.nan
    got = bags.depth_image_m(_depth_msg(T, hdr, f, "32FC1"))
    assert got[0, 0] == 0 and np.array_equal(got, d)
    bad = _image_msg(T, hdr, rgb)
    bad.data = bad.data[:100]
    with pytest.raises(bags.InputError, match="truncated"):
        bags.image_rgb(bad)


def test_pair_by_stamp_nearest_within_tolerance():
    assert bags.pair_by_stamp([100, 200, 300, 1000], [195, 90, 310, 205], 20) == [1, 0, 2, None]
    assert bags.pair_by_stamp([150], [140, 160], 10) == [0]  # a tie: the earlier
    assert bags._info_for(50, [100, 200]) == 0 and bags._info_for(250, [100, 200]) == 1


def test_zero_header_stamps_are_warned_about(tmp_path, capsys):
    src = _path(tmp_path, "mcap")
    write_bag(src, "mcap", stamps=[0, T0 + DT])  # a driver that left header.stamp unset on one image
    rc = main([*BASE, "--bag", str(src), "--points-topic", "/lidar/points", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 0 and "1 of 2 image(s) completed" in cap.out and "1 unpaired" in cap.out
    assert "WARNING: 1 image/points message(s) have header stamp 0" in cap.err
