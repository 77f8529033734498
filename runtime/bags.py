"""ROS bags in and out, without a ROS installation: ``psdrt run --bag``.

Reads ROS 1 ``.bag`` files, rosbag2 directories (SQLite3 or MCAP storage) and bare ``.mcap``
files with the pure-Python ``rosbags`` library (``AnyReader``), and writes a rosbag2 directory
with MCAP storage (``rosbags.rosbag2.Writer``, CDR messages of the ROS 2 Humble type store). The
``ros`` extra installs it: ``pip install 'psdrt[ros]'``; ``import psdrt.runtime`` works without it.

Messages read:

* images: ``sensor_msgs/Image`` (``rgb8``, ``bgr8``, ``mono8`` replicated to three channels,
  ``rgba8``/``bgra8`` with the alpha dropped; ``step`` row padding honoured) or
  ``sensor_msgs/CompressedImage`` (PNG/JPEG, decoded like ``runtime.io.read_rgb``);
* ``sensor_msgs/CameraInfo``: K from ``k`` (ROS 2) or ``K`` (ROS 1); fx, fy > 0 required;
* sparse depth: ``sensor_msgs/PointCloud2`` (fields x, y, z FLOAT32 or FLOAT64 at any offsets,
  ``point_step``, ``row_step``, ``is_bigendian``; non-finite points dropped) projected into the
  image, or a depth ``sensor_msgs/Image`` (``32FC1`` metres, ``16UC1``/``mono16`` millimetres;
  0, NaN and Inf are "no depth");
* ``/tf_static`` (``tf2_msgs/TFMessage``) for the cloud-to-camera transform.

**Transform convention** (as tf2): a ``TransformStamped`` with ``header.frame_id = P`` (parent)
and ``child_frame_id = C`` maps points in frame C to frame P: ``p_P = R p_C + t`` with R the
rotation of the quaternion (x, y, z, w) and t the translation. :func:`lookup_transform` composes
such edges, in either direction, along the chain from the cloud's ``frame_id`` to the image's
``frame_id`` and returns the 4x4 matrix that maps cloud points into the image's frame (what
``runtime.points.project_points`` calls T, sensor-to-camera). The image's ``frame_id`` must be
the camera's optical frame (x right, y down, z forward), as ``sensor_msgs/Image`` defines it.

**Pairing** (:func:`pair_by_stamp`): by header stamps. Each image takes the points/depth message
whose stamp is nearest to its own within the tolerance (ties: the earlier one; one message may
serve several images); an image without one is *unpaired*, counted and listed, never dropped
silently. Its camera info is the latest at or before the image's stamp, else the first one.

Output (:class:`DepthBagWriter`): the dense depth as ``sensor_msgs/Image`` ``32FC1`` metres
(REP 118; 0 = no depth), or ``16UC1`` millimetres (``DepthResult.depth_mm``: 0 = invalid,
saturating at 65.535 m), with the image's header (stamp and frame_id), its camera info with the
same header, and optionally a ``PointCloud2`` (x, y, z float32, camera frame) of the completed
depth. Each output message is logged at the input image's log time.
"""

from __future__ import annotations

import bisect
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from ._lazy import lazy_import
from .errors import InputError, PsdError

__all__ = [
    "IMAGE_TYPES",
    "IMAGE_ENCODINGS",
    "DEPTH_ENCODINGS",
    "BagReader",
    "DepthBagWriter",
    "BagReport",
    "image_rgb",
    "depth_image_m",
    "camera_K",
    "cloud_xyz",
    "quaternion_matrix",
    "tf_edges",
    "lookup_transform",
    "pair_by_stamp",
    "stamp_ns",
    "default_out_topic",
    "process_bag",
]

_highlevel = lazy_import("rosbags.highlevel", extra="ros")
_rosbag2 = lazy_import("rosbags.rosbag2", extra="ros")
_typesys = lazy_import("rosbags.typesys", extra="ros")

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
#: colour encodings of sensor_msgs/Image: channels and the order that gives RGB
IMAGE_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "mono8": (1, [0, 0, 0]),
                   "rgba8": (4, [0, 1, 2]), "bgra8": (4, [2, 1, 0])}
#: depth encodings: numpy type and the factor to metres
DEPTH_ENCODINGS = {"32fc1": ("f4", 1.0), "16uc1": ("u2", 1e-3), "mono16": ("u2", 1e-3)}
_POINT_TYPES = {7: "f4", 8: "f8"}  # sensor_msgs/PointField FLOAT32, FLOAT64


def _ros_type(name: str) -> str:
    """'sensor_msgs/Image' and 'sensor_msgs/msg/Image' -> the latter (rosbags' spelling)."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


# ------------------------------------------------------------------------------------------- decoding


def stamp_ns(header) -> int:
    """A header's stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _bytes(data) -> np.ndarray:
    """A message's ``uint8[]`` field (a NumPy array in rosbags, bytes elsewhere) as flat uint8."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data).view(np.uint8).reshape(-1)


def _rows(msg, bytes_per_row: int, what: str) -> np.ndarray:
    """The (height, bytes_per_row) uint8 rows of an image message, without the ``step`` padding."""
    h, step = int(msg.height), int(msg.step)
    data = _bytes(msg.data)
    if h == 0 or msg.width == 0:
        raise InputError(f"{what} is empty ({msg.width}x{msg.height} px)")
    if step < bytes_per_row:
        raise InputError(f"{what}: step {step} is shorter than a row ({msg.width} px = {bytes_per_row} bytes); "
                         "the message is corrupt")
    if data.size < h * step:
        raise InputError(f"{what}: {data.size} bytes of data, {h} rows x step {step} = {h * step} expected; "
                         "the message is truncated")
    return data[:h * step].reshape(h, step)[:, :bytes_per_row]


def image_rgb(msg, what: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) RGB of a ``sensor_msgs/Image`` or ``CompressedImage`` message.

    Raises:
        InputError: an encoding other than :data:`IMAGE_ENCODINGS`, or a corrupt message.
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):  # CompressedImage
        from .io import decode_rgb

        return decode_rgb(_bytes(msg.data).tobytes(), f"{what} (CompressedImage {msg.format!r})")
    enc = str(msg.encoding).lower()
    if enc not in IMAGE_ENCODINGS:
        raise InputError(f"{what}: encoding {msg.encoding!r} is not supported; supported: "
                         f"{', '.join(IMAGE_ENCODINGS)} (sensor_msgs/Image) or a PNG/JPEG CompressedImage")
    c, order = IMAGE_ENCODINGS[enc]
    w = int(msg.width)
    rows = _rows(msg, w * c, what)
    return np.ascontiguousarray(rows.reshape(int(msg.height), w, c)[:, :, order])


def depth_image_m(msg, what: str = "depth image") -> np.ndarray:
    """float32 (H, W) metres of a sparse depth ``sensor_msgs/Image`` (0 = no depth).

    ``32FC1`` is metres (REP 118), ``16UC1``/``mono16`` millimetres; ``is_bigendian`` is honoured.
    NaN, Inf and values <= 0 become 0.

    Raises:
        InputError: another encoding, or a corrupt message.
    """
    enc = str(msg.encoding).lower()
    if enc not in DEPTH_ENCODINGS:
        raise InputError(f"{what}: depth encoding {msg.encoding!r} is not supported; supported: 32FC1 (metres), "
                         "16UC1 or mono16 (millimetres)")
    kind, to_m = DEPTH_ENCODINGS[enc]
    dt = np.dtype((">" if msg.is_bigendian else "<") + kind)
    w = int(msg.width)
    rows = np.ascontiguousarray(_rows(msg, w * dt.itemsize, what))
    v = rows.view(dt).reshape(int(msg.height), w)
    d = v.astype(np.float32) if kind == "f4" else (v.astype(np.float64) * to_m).astype(np.float32)
    d[~np.isfinite(d) | (d <= 0)] = 0.0
    return d


def camera_K(msg, what: str = "camera info") -> np.ndarray:
    """float64 (3, 3) K of a ``sensor_msgs/CameraInfo`` (``k`` in ROS 2, ``K`` in ROS 1).

    Raises:
        InputError: K missing, not 9 numbers, or fx, fy not > 0 (an uncalibrated camera publishes
        zeros: calibrate it, or re-record with its calibration).
    """
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K", None)
    k = np.asarray(k if k is not None else [], dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise InputError(f"{what}: K has {k.size} values, 9 expected (row-major 3x3)")
    K = k.reshape(3, 3)
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise InputError(f"{what}: K has fx={K[0, 0]:g}, fy={K[1, 1]:g}; both must be > 0 (an uncalibrated "
                         "camera publishes zeros): calibrate the camera and record its camera info")
    return K


def cloud_xyz(msg, what: str = "point cloud") -> np.ndarray:
    """float32 (N, 3) x, y, z of a ``sensor_msgs/PointCloud2``, non-finite points dropped.

    The fields are read with a NumPy structured dtype at their offsets (no per-point loop);
    rows are ``row_step`` bytes apart, points ``point_step`` bytes apart.

    Raises:
        InputError: no x, y or z field, a field that is not FLOAT32/FLOAT64, or a corrupt message.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in fields]
    if missing:
        raise InputError(f"{what}: no field {', '.join(missing)} (fields: {', '.join(fields) or 'none'}); "
                         "PointCloud2 input needs x, y, z")
    end = ">" if msg.is_bigendian else "<"
    fmts = []
    for n in "xyz":
        f = fields[n]
        if int(f.datatype) not in _POINT_TYPES:
            raise InputError(f"{what}: field {n} has PointField datatype {f.datatype}; FLOAT32 (7) or FLOAT64 (8) "
                             "supported")
        fmts.append(end + _POINT_TYPES[int(f.datatype)])
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    offsets = [int(fields[n].offset) for n in "xyz"]
    if any(o + np.dtype(t).itemsize > ps for o, t in zip(offsets, fmts)):
        raise InputError(f"{what}: a field x, y, z lies past point_step {ps}; the message is corrupt")
    if h * w == 0:
        return np.zeros((0, 3), np.float32)
    if rs < w * ps:
        raise InputError(f"{what}: row_step {rs} < width {w} x point_step {ps}; the message is corrupt")
    data = _bytes(msg.data)
    if data.size < (h - 1) * rs + w * ps:
        raise InputError(f"{what}: {data.size} bytes of data, {h} rows x row_step {rs} expected; truncated")
    dt = np.dtype({"names": ["x", "y", "z"], "formats": fmts, "offsets": offsets, "itemsize": ps})
    if h > 1 and rs != w * ps:
        rows = np.lib.stride_tricks.as_strided(data, (h, w * ps), (rs, 1))
        pts = np.ascontiguousarray(rows).view(dt).reshape(-1)
    else:
        pts = np.ascontiguousarray(data[:h * w * ps]).view(dt).reshape(-1)
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float32)
    return xyz[np.isfinite(xyz).all(axis=1)]


# ------------------------------------------------------------------------------------------- TF


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """The 3x3 rotation of a quaternion (x, y, z, w), normalised first."""
    q = np.array([x, y, z, w], np.float64)
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < 1e-9:
        raise InputError(f"quaternion {tuple(q)} has no rotation (norm {n:g}); the transform is corrupt")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _frame(name: str) -> str:
    return str(name).lstrip("/")  # ROS 1 tf allowed a leading slash


def tf_edges(tf_messages: Iterable) -> dict:
    """``{(parent, child): 4x4}`` from ``tf2_msgs/TFMessage`` messages; each matrix maps child-frame
    points into the parent frame (the later message wins for a repeated edge)."""
    edges = {}
    for m in tf_messages:
        for ts in m.transforms:
            t, r = ts.transform.translation, ts.transform.rotation
            M = np.eye(4)
            M[:3, :3] = quaternion_matrix(r.x, r.y, r.z, r.w)
            M[:3, 3] = (t.x, t.y, t.z)
            edges[(_frame(ts.header.frame_id), _frame(ts.child_frame_id))] = M
    return edges


def lookup_transform(edges: dict, source: str, target: str) -> np.ndarray:
    """The 4x4 that maps points in frame ``source`` into frame ``target`` (``p_target = M p_source``),
    composed along the TF chain between them (edges walked in either direction).

    Raises:
        InputError: no chain connects the two frames (the message lists the known frames).
    """
    source, target = _frame(source), _frame(target)
    if source == target:
        return np.eye(4)
    nbrs: dict = {}
    for (parent, child), M in edges.items():
        nbrs.setdefault(child, []).append((parent, M))  # child -> parent: M
        nbrs.setdefault(parent, []).append((child, None if M is None else np.linalg.inv(M)))
    seen = {source: np.eye(4)}  # frame -> map from source into it
    todo = deque([source])
    while todo:
        cur = todo.popleft()
        for nxt, M in nbrs.get(cur, ()):
            if nxt not in seen:
                seen[nxt] = M @ seen[cur]
                if nxt == target:
                    return seen[nxt]
                todo.append(nxt)
    frames = sorted({f for e in edges for f in e})
    raise InputError(f"no transform from the point cloud's frame {source!r} to the image's frame {target!r} in "
                     f"/tf_static (frames there: {', '.join(frames) or 'none'}); pass --extrinsics FILE (a 4x4 "
                     "cloud-to-camera matrix) or --extrinsics identity")


# ------------------------------------------------------------------------------------------- pairing


def pair_by_stamp(stamps: list, others: list, tol_ns: int) -> list:
    """For each stamp the index into ``others`` of the nearest stamp within ``tol_ns``, or None.

    Ties go to the earlier message; one message may serve several stamps.
    """
    order = sorted(range(len(others)), key=lambda j: (others[j], j))
    keys = [others[j] for j in order]
    out = []
    for s in stamps:
        i = bisect.bisect_left(keys, s)
        best = None
        for c in (i - 1, i):
            if 0 <= c < len(keys) and abs(keys[c] - s) <= tol_ns:
                if best is None or abs(keys[c] - s) < abs(keys[best] - s):
                    best = c
        out.append(None if best is None else order[best])
    return out


def _info_for(stamp: int, info_stamps: list) -> int:
    """Index of the camera info at or before ``stamp`` (the latest such), else the first (0)."""
    best = None
    for j, s in enumerate(info_stamps):
        if s <= stamp and (best is None or s >= info_stamps[best]):
            best = j
    return 0 if best is None else best


# ------------------------------------------------------------------------------------------- reading


def _bag_error(path, exc) -> InputError:
    return InputError(f"cannot read bag {path}: {type(exc).__name__}: {exc}; it is truncated, corrupt or not a bag "
                      "(a ROS 1 .bag, a rosbag2 directory or a .mcap file). A recording that was not closed "
                      "cleanly can be repaired with `rosbag reindex` (ROS 1) or `ros2 bag reindex` (rosbag2)")


class BagReader:
    """A ROS 1 ``.bag``, rosbag2 directory or bare ``.mcap`` file, opened with ``rosbags``'
    ``AnyReader`` (ROS 2 Humble's types for bags that embed no message definitions).

    Use as a context manager; errors of the underlying reader become ``InputError``.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"--bag {self.path} does not exist; pass a ROS 1 .bag file, a rosbag2 directory "
                             "(holding metadata.yaml) or a .mcap file")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            mcaps = sorted(self.path.glob("*.mcap"))
            if len(mcaps) == 1:  # a folder holding one bare .mcap (no metadata.yaml): read the file
                self.path = mcaps[0]
            else:
                raise InputError(f"--bag {self.path} is a directory without metadata.yaml; pass the rosbag2 "
                                 "directory itself, or one .bag/.mcap file")
        self._reader = None

    def __enter__(self) -> "BagReader":
        ts = _typesys.get_typestore(_typesys.Stores.ROS2_HUMBLE)
        try:
            self._reader = _highlevel.AnyReader([self.path], default_typestore=ts)
            self._reader.open()
        except InputError:
            raise
        except Exception as exc:
            raise _bag_error(self.path, exc) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # closing a reader of a corrupt file must not hide the first error
                pass
            self._reader = None

    @property
    def is_ros1(self) -> bool:
        return not self._reader.is2

    def topics(self) -> list:
        """[(topic, msgtype, message count)], sorted by topic; connections of one topic merged."""
        agg: dict = {}
        for c in self._reader.connections:
            t, n = agg.get(c.topic, (c.msgtype, 0))
            agg[c.topic] = (t, n + int(c.msgcount))
        return [(topic, t, n) for topic, (t, n) in sorted(agg.items())]

    def topic_type(self, topic: str, flag: str, allowed) -> str:
        """The type of ``topic``; InputError naming the available topics when it is absent or of another type."""
        types = {t: ty for t, ty, _ in self.topics()}
        if topic not in types:
            listing = "; ".join(f"{t} ({ty})" for t, ty, _ in self.topics()) or "none"
            raise InputError(f"{flag} {topic}: no such topic in {self.path}; topics: {listing}")
        if types[topic] not in allowed:
            raise InputError(f"{flag} {topic} is {types[topic]}, not {' or '.join(allowed)}; pick a topic of that "
                             "type (psdrt run --bag PATH --list shows them)")
        return types[topic]

    def messages(self, topics) -> Iterator:
        """(topic, log time ns, message or the exception that decoding it raised), in log-time order.

        A message that does not deserialize is yielded with its exception (the caller counts and
        reports it); a reader failure (truncated file) raises ``InputError``.
        """
        cons = [c for c in self._reader.connections if c.topic in set(topics)]
        if not cons:
            return
        it = self._reader.messages(connections=cons)
        while True:
            try:
                con, t, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise _bag_error(self.path, exc) from None
            try:
                msg = self._reader.deserialize(raw, con.msgtype)
            except Exception as exc:
                msg = exc
            yield con.topic, int(t), msg


# ------------------------------------------------------------------------------------------- writing


def default_out_topic(image_topic: str) -> str:
    """``/cam/image_raw`` -> ``/cam/depth_completed``: a sibling of the camera's image topic."""
    parent = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/depth_completed"


class DepthBagWriter:
    """A rosbag2 directory (MCAP storage) of completed depth, its camera info and optionally points.

    The directory must not exist (``overwrite=True`` replaces an earlier output bag, a directory
    holding ``metadata.yaml``; anything else is refused). Closing (the ``with`` block's end, also on
    an exception or Ctrl-C) writes the MCAP summary and ``metadata.yaml``, so the bag is valid.
    """

    def __init__(self, path, depth_topic: str, info_topic: str, points_topic: Optional[str] = None,
                 encoding: str = "32FC1", overwrite: bool = False) -> None:
        self.path = Path(path)
        if encoding not in ("32FC1", "16UC1"):
            raise InputError(f"output encoding {encoding!r}: use 32FC1 (metres) or 16UC1 (millimetres)")
        if self.path.exists():
            if not overwrite:
                raise InputError(f"{self.path} exists; pass --overwrite to replace it, or another --out folder")
            if not (self.path / "metadata.yaml").is_file():
                raise InputError(f"--overwrite: {self.path} exists and is not a rosbag2 directory (no metadata.yaml); "
                                 "psdrt replaces only its own output bags: remove it yourself or pick another --out")
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.encoding = encoding
        self.topics = {"depth": depth_topic, "info": info_topic, "points": points_topic}
        self.ts = _typesys.get_typestore(_typesys.Stores.ROS2_HUMBLE)
        self._w = _rosbag2.Writer(self.path, version=8, storage_plugin=_rosbag2.StoragePlugin.MCAP)
        self._open = False
        self.written = 0

    def __enter__(self) -> "DepthBagWriter":
        self._w.open()
        self._open = True
        T = self.ts.types
        self._cons = {"depth": self._w.add_connection(self.topics["depth"], "sensor_msgs/msg/Image", typestore=self.ts),
                      "info": self._w.add_connection(self.topics["info"], INFO_TYPE, typestore=self.ts)}
        if self.topics["points"]:
            self._cons["points"] = self._w.add_connection(self.topics["points"], POINTS_TYPE, typestore=self.ts)
        self._T = T
        return self

    def __exit__(self, *exc) -> None:
        if self._open:
            self._open = False
            self._w.close()

    def _header(self, stamp: int, frame_id: str):
        T = self._T
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                                               nanosec=stamp % 1_000_000_000),
                                        frame_id=frame_id)

    def _put(self, key: str, msg, log_ns: int) -> None:
        self._w.write(self._cons[key], log_ns, self.ts.serialize_cdr(msg, msg.__msgtype__))

    def write(self, log_ns: int, stamp: int, frame_id: str, result, info_msg, K) -> None:
        """Write one frame: depth (the image's stamp and frame_id), camera info, points."""
        T = self._T
        depth = np.asarray(result.depth, np.float32)
        h, w = depth.shape
        if self.encoding == "32FC1":
            data, step = np.ascontiguousarray(depth, "<f4").view(np.uint8).reshape(-1), w * 4
        else:
            data, step = np.ascontiguousarray(result.depth_mm(), "<u2").view(np.uint8).reshape(-1), w * 2
        self._put("depth", T["sensor_msgs/msg/Image"](header=self._header(stamp, frame_id), height=h, width=w,
                                                      encoding=self.encoding, is_bigendian=0, step=step,
                                                      data=data), log_ns)
        self._put("info", self._camera_info(stamp, frame_id, info_msg, K, h, w), log_ns)
        if "points" in self._cons:
            self._put("points", self._points(stamp, frame_id, depth, K), log_ns)
        self.written += 1

    def _camera_info(self, stamp, frame_id, src, K, h, w):
        T = self._T

        def f(name, default):  # ROS 2 lower-case fields, ROS 1 upper-case ones
            for n in (name, name.upper()):
                if hasattr(src, n):
                    return getattr(src, n)
            return default

        roi = getattr(src, "roi", None)
        roi = T["sensor_msgs/msg/RegionOfInterest"](
            x_offset=int(getattr(roi, "x_offset", 0)), y_offset=int(getattr(roi, "y_offset", 0)),
            height=int(getattr(roi, "height", 0)), width=int(getattr(roi, "width", 0)),
            do_rectify=bool(getattr(roi, "do_rectify", False)))
        P = np.zeros(12)
        P.reshape(3, 4)[:, :3] = K
        return T[INFO_TYPE](
            header=self._header(stamp, frame_id), height=int(src.height) or h, width=int(src.width) or w,
            distortion_model=str(getattr(src, "distortion_model", "")),
            d=np.asarray(f("d", []), np.float64), k=np.asarray(K, np.float64).reshape(9),
            r=np.asarray(f("r", np.eye(3).reshape(9)), np.float64).reshape(9),
            p=np.asarray(f("p", P), np.float64).reshape(12),
            binning_x=int(getattr(src, "binning_x", 0)), binning_y=int(getattr(src, "binning_y", 0)), roi=roi)

    def _points(self, stamp, frame_id, depth, K):
        T = self._T
        xyz = backproject(depth, K)
        PF = T["sensor_msgs/msg/PointField"]
        fields = [PF(name=n, offset=4 * i, datatype=PF.FLOAT32, count=1) for i, n in enumerate("xyz")]
        return T[POINTS_TYPE](header=self._header(stamp, frame_id), height=1, width=len(xyz), fields=fields,
                              is_bigendian=False, point_step=12, row_step=12 * len(xyz),
                              data=np.ascontiguousarray(xyz, "<f4").view(np.uint8).reshape(-1), is_dense=True)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """float32 (N, 3) camera-frame points of the valid pixels (row-major order) of a depth map:
    ``[x, y, z] = z K^-1 [u, v, 1]`` (skew included), pixel centres at integer coordinates."""
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    Ki = np.linalg.inv(np.asarray(K, np.float64))
    rays = Ki @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    return (rays * z).T.astype(np.float32)


# ------------------------------------------------------------------------------------------- the run


@dataclass
class BagReport:
    """What :func:`process_bag` did; every image is in exactly one of written, unpaired,
    no_camera_info and skipped (or was not reached when ``interrupted``)."""

    images: int = 0
    written: int = 0
    unpaired: list = field(default_factory=list)  # image stamps (ns) without points/depth in tolerance
    no_camera_info: list = field(default_factory=list)  # (stamp, reason)
    skipped: list = field(default_factory=list)  # (what, stamp or log time, reason, exit code)
    times: list = field(default_factory=list)
    interrupted: bool = False


@dataclass
class BagSpec:
    """The topics and rules of one run (``psdrt run --bag`` flags)."""

    image_topic: str
    info_topic: str
    points_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    tolerance_s: float = 0.05
    extrinsics: Optional[np.ndarray] = None  # overrides /tf_static; None there = look it up
    extrinsics_given: bool = False  # --extrinsics given (identity is None with this True)
    tf_topic: str = "/tf_static"


def fmt_stamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _scan(bag: BagReader, spec: BagSpec, report: BagReport) -> dict:
    """Pass 1: the stamps and frames of every image and points/depth message, all camera infos, TF."""
    other = spec.points_topic or spec.depth_topic
    topics = [spec.image_topic, other, spec.info_topic]
    has_tf = any(t == spec.tf_topic and ty == TF_TYPE for t, ty, _ in bag.topics())
    if has_tf:
        topics.append(spec.tf_topic)
    s = {"img": [], "oth": [], "info": [], "tf": []}
    counters = {spec.image_topic: 0, other: 0}
    for topic, t, msg in bag.messages(topics):
        if topic == spec.tf_topic:
            if not isinstance(msg, Exception):
                s["tf"].append(msg)
            continue
        if isinstance(msg, Exception):
            report.skipped.append((topic, t, f"does not deserialize: {type(msg).__name__}: {msg}", 2))
            if topic in counters:
                counters[topic] += 1
                s["img" if topic == spec.image_topic else "oth"].append(None)
            continue
        if topic == spec.info_topic:
            s["info"].append((stamp_ns(msg.header), msg))
        else:
            s["img" if topic == spec.image_topic else "oth"].append((stamp_ns(msg.header),
                                                                     _frame(msg.header.frame_id)))
            counters[topic] += 1
    return s


def process_bag(bag: BagReader, spec: BagSpec, make_writer: Callable[[], DepthBagWriter],
                complete: Callable, project: Callable, progress: Optional[Callable] = None) -> BagReport:
    """Pair, complete and write every image of ``spec.image_topic``.

    The bag is scanned first (stamps, camera infos, TF; every transform resolved), so a bag that
    cannot be processed fails before any output exists; then ``make_writer()`` opens the output,
    which is closed on every exit (an exception, Ctrl-C) and so stays a valid bag.

    Args:
        make_writer: returns the (unopened) :class:`DepthBagWriter`.
        complete: ``complete(rgb, sparse, K, stem) -> (DepthResult, seconds, notes)``.
        project: ``project(xyz, K, (H, W), T) -> (sparse, notes)`` for PointCloud2 input.
        progress: called with one line per image (stderr in the CLI).

    Returns:
        BagReport (``interrupted`` after a Ctrl-C in the frame loop, with what was done until
        then).
    """
    report = BagReport()
    say = progress or (lambda _line: None)
    s = _scan(bag, spec, report)
    if not s["info"]:
        raise InputError(f"--camera-info-topic {spec.info_topic} has no readable CameraInfo message in {bag.path}; "
                         "K comes from it: record the camera's camera_info topic with the images")
    imgs, oth = s["img"], s["oth"]
    report.images = len(imgs)
    zero = sum(1 for x in imgs + oth if x is not None and x[0] == 0)
    if zero:  # some drivers leave header.stamp unset: pairing by stamp would then pair arbitrary frames
        say(f"WARNING: {zero} image/{'points' if spec.points_topic else 'depth'} message(s) have header stamp 0; "
            "frames are paired by header stamps, so these pair with whatever else has stamp 0 (fix the "
            "driver's stamps, or re-stamp the bag)")
    tol = int(round(spec.tolerance_s * 1e9))
    valid_oth = [o[0] if o is not None else None for o in oth]
    keep = [j for j, o in enumerate(valid_oth) if o is not None]
    sub = pair_by_stamp([i[0] if i is not None else 0 for i in imgs], [valid_oth[j] for j in keep], tol)
    pairs = [None if (imgs[i] is None or sub[i] is None) else keep[sub[i]] for i in range(len(imgs))]
    # extrinsics of each (cloud frame, image frame), resolved before any completion (fatal if missing)
    transforms = {}
    if spec.points_topic:
        edges = tf_edges(s["tf"]) if not spec.extrinsics_given else {}
        for i, j in enumerate(pairs):
            if j is None:
                continue
            key = (oth[j][1], imgs[i][1])
            if key not in transforms:
                transforms[key] = spec.extrinsics if spec.extrinsics_given else lookup_transform(edges, *key)
    info_stamps = [st for st, _ in s["info"]]
    need: dict = {}
    for i, j in enumerate(pairs):
        if j is not None:
            need[j] = need.get(j, 0) + 1
    cache: dict = {}  # points/depth index -> decoded data (or exception)
    waiting: dict = {}  # points/depth index -> [(image index, log time, msg)]
    counters = {"img": 0, "oth": 0}
    n = len(imgs)

    def do(i, log_t, msg, j):
        stamp, frame_id = imgs[i]
        name = f"image {fmt_stamp(stamp)}"
        info_stamp, info = s["info"][_info_for(stamp, info_stamps)]
        try:
            rgb = image_rgb(msg, name)
            try:
                K = camera_K(info, f"camera info {fmt_stamp(info_stamp)}")
                if info.width and info.height and (int(info.height), int(info.width)) != rgb.shape[:2]:
                    raise InputError(f"camera info {fmt_stamp(info_stamp)} is for {info.height}x{info.width} px, the "
                                     f"image is {rgb.shape[0]}x{rgb.shape[1]}")
            except InputError as exc:
                report.no_camera_info.append((stamp, str(exc)))
                say(f"[{i + 1}/{n}] {fmt_stamp(stamp)}: no usable camera info: {exc}")
                return
            data = cache[j]
            if isinstance(data, Exception):
                raise data
            notes = []
            if spec.points_topic:
                sparse, notes = project(data, K, rgb.shape[:2], transforms[(oth[j][1], frame_id)])
            else:
                sparse = data
                if sparse.shape != rgb.shape[:2]:
                    raise InputError(f"the depth image is {sparse.shape[0]}x{sparse.shape[1]} px, the image "
                                     f"{rgb.shape[0]}x{rgb.shape[1]}; sparse depth must be registered to the image")
            result, sec, more = complete(rgb, sparse, K, fmt_stamp(stamp))
        except PsdError as exc:
            report.skipped.append((spec.image_topic, stamp, str(exc), exc.exit_code))
            say(f"[{i + 1}/{n}] {fmt_stamp(stamp)}: SKIPPED: {exc}")
            return
        except Exception as exc:  # a bad frame must not stop the bag (as in folder mode); reported with its type
            report.skipped.append((spec.image_topic, stamp, f"{type(exc).__name__}: {exc}", 1))
            say(f"[{i + 1}/{n}] {fmt_stamp(stamp)}: SKIPPED: {type(exc).__name__}: {exc}")
            return
        writer.write(log_t, stamp, frame_id, result, info, K)
        report.written += 1
        report.times.append(sec)
        dt = (oth[j][0] - stamp) / 1e6
        say(f"[{i + 1}/{n}] {fmt_stamp(stamp)}: {sec * 1000:.1f} ms (sparse {dt:+.1f} ms)"
            + "".join(f"; {x}" for x in notes + more))

    def done_with(j):
        need[j] -= 1
        if need[j] == 0:
            cache.pop(j, None)

    other = spec.points_topic or spec.depth_topic
    with make_writer() as writer:  # closed on every way out of the loop: the output bag stays valid
        try:
            for topic, log_t, msg in bag.messages([spec.image_topic, other]):
                if topic == other:
                    j = counters["oth"]
                    counters["oth"] += 1
                    if j not in need:
                        continue
                    what = f"{'point cloud' if spec.points_topic else 'depth image'} {fmt_stamp(oth[j][0])}"
                    try:
                        cache[j] = cloud_xyz(msg, what) if spec.points_topic else depth_image_m(msg, what)
                    except PsdError as exc:
                        cache[j] = exc
                    except Exception as exc:  # reported with the images it was paired with
                        cache[j] = InputError(f"{what}: {type(exc).__name__}: {exc}")
                    for i, lt, m in waiting.pop(j, []):
                        do(i, lt, m, j)
                        done_with(j)
                    continue
                i = counters["img"]
                counters["img"] += 1
                if imgs[i] is None:  # did not deserialize: in report.skipped already
                    continue
                j = pairs[i]
                if j is None:
                    report.unpaired.append(imgs[i][0])
                    say(f"[{i + 1}/{n}] {fmt_stamp(imgs[i][0])}: UNPAIRED: no {other} message within "
                        f"{spec.tolerance_s:g} s")
                    continue
                if j in cache:
                    do(i, log_t, msg, j)
                    done_with(j)
                else:
                    waiting.setdefault(j, []).append((i, log_t, msg))
        except KeyboardInterrupt:  # the report says so; the caller prints it and exits 130
            report.interrupted = True
            return report
    for j, items in waiting.items():  # never silently: a partner that pass 1 saw and pass 2 did not
        for i, _, _ in items:
            report.skipped.append((spec.image_topic, imgs[i][0], f"its {other} message was not read again", 1))
    return report
