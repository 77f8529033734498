"""``psdrt run``: complete one frame or a folder of frames and write depth, 16-bit PNG, colour, PLY.

Folder mode pairs RGB and sparse files by stem, reports files without a partner, continues past a
bad frame (reporting why) and exits with the first failed frame's exit code. Progress goes to stderr;
the summary (frames, per-frame timing) to stdout.

Point clouds: ``--points FILE|DIR`` instead of ``--sparse`` projects each cloud into the frame
(``runtime.points``: z-buffered, nearest point wins) with K and the sensor-to-camera transform of
``--calib`` (KITTI calibration) or ``--extrinsics`` (a 4x4 text matrix, or ``identity``).

Units: 16-bit sparse PNGs have no unit of their own, so their scale must be given (``--sparse-scale``
or a ``--convention`` that implies it); float ``.npy`` files are metres.

Frame size: pipelines over a ``psdrt build`` directory (``--artifacts``) take frames of its working
size only. ``--fit resize|crop`` adapts each frame to it and returns the completed depth at the
frame's own size (:func:`fit_frame`); ``--convention kitti|nyu`` applies a dataset's own crop first
(``runtime.datasets.CONVENTIONS``), and its outputs are at the convention's working size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import InputError, PsdError, ShapeError
from .common import format_size

log = logging.getLogger(__name__)

RGB_EXTS = (".png", ".jpg", ".jpeg")
SPARSE_EXTS = (".png", ".npy")
DEFAULT_FORMATS = "npy,png16,color,ply"
FIT_MODES = ("crop", "resize")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="complete RGB + sparse depth + K into dense metric depth (single files or folders)",
        description="Completes one frame (--rgb FILE --sparse FILE) or every frame of a folder "
        "(--rgb DIR --sparse DIR, paired by file stem) and writes <stem>_depth.npy (float32 m, lossless), "
        "<stem>_depth_mm.png (uint16 mm, 0 = invalid, clipped at 65.535 m with a warning), "
        "<stem>_depth_color.png (with a colour bar in m) and <stem>.ply; --formats adds "
        "<stem>_depth.tiff (float32 m, lossless). Weights: none (--mode guided, the default without "
        "weights), a psdrt build directory (--artifacts DIR), a checkpoint (--checkpoint, PyTorch) or "
        "exported ONNX files (--encoder/--head).",
    )
    p.add_argument("--rgb", help="RGB image (PNG/JPEG) or a folder of them (required unless --bag)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", metavar="PATH",
                     help="a ROS 1 .bag, a rosbag2 directory (SQLite3 or MCAP) or a .mcap file instead of --rgb and "
                     "--sparse/--points: images, camera info and points or sparse depth from its topics, paired by "
                     "stamp; writes a rosbag2 (MCAP) of the completed depth to <--out>/<bag name>_depth "
                     "(pip install 'psdrt[ros]'; no ROS installation needed)")
    src.add_argument("--sparse",
                     help="sparse depth: 16-bit PNG (give its scale: --sparse-scale or --convention) or float "
                     ".npy in metres, or a folder of them (paired by stem)")
    src.add_argument("--points", metavar="FILE|DIR",
                     help="point cloud(s) instead of --sparse: KITTI Velodyne .bin, .npy (N x 3+), .ply or .pcd "
                     "(PLY/PCD: pip install 'psdrt[points]'), or a folder of them paired with --rgb by stem; "
                     "projected into each frame (z-buffer, nearest point wins) with K and the transform of "
                     "--calib or --extrinsics")
    pc = p.add_argument_group("point clouds (with --points)")
    pc.add_argument("--calib", metavar="FILE|DIR",
                    help="KITTI calibration: an object-benchmark file (P2, R0_rect, Tr_velo_to_cam) or a KITTI "
                    "raw date folder (calib_cam_to_cam.txt, calib_velo_to_cam.txt); gives K (camera 2) and the "
                    "LiDAR-to-camera transform, so --intrinsics is not needed")
    pc.add_argument("--extrinsics", metavar="FILE|identity",
                    help="the 4x4 (or 3x4) row-major sensor-to-camera transform in a text file, metres; "
                    "'identity' when the points are already in the camera frame (x right, y down, z forward)")
    pc.add_argument("--min-depth", type=float, default=0.1,
                    help="drop points at camera z <= this many metres (default 0.1: behind or at the camera)")
    pc.add_argument("--max-depth", type=float, default=float("inf"),
                    help="drop points at camera z beyond this many metres (default: keep all)")
    pc.add_argument("--no-occlusion-filter", dest="occlusion_filter", action="store_false",
                    help="keep the LiDAR returns that nearer returns enclose (by default they are dropped: a "
                    "LiDAR mounted apart from the camera sees background past foreground edges that the camera "
                    "does not; runtime.points.filter_occluded, window 9 columns x 8 rows above and below, "
                    "10 %% depth margin)")
    b = p.add_argument_group("ROS bags (with --bag)")
    b.add_argument("--list", action="store_true", help="print the bag's topics, types and message counts and exit")
    b.add_argument("--image-topic", help="sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) or CompressedImage "
                   "(PNG/JPEG) topic")
    b.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic: K of each image (the latest at or "
                   "before its stamp, else the first)")
    bs = b.add_mutually_exclusive_group()
    bs.add_argument("--points-topic", help="sensor_msgs/PointCloud2 topic (x, y, z), projected into each image with "
                    "the cloud-to-camera transform of the bag's /tf_static (or --extrinsics) and the occlusion "
                    "filter (--no-occlusion-filter), --min-depth, --max-depth")
    bs.add_argument("--depth-topic", help="sparse depth sensor_msgs/Image topic registered to the image: 32FC1 "
                    "metres or 16UC1 millimetres, 0/NaN = no depth")
    b.add_argument("--sync-tolerance", type=float, default=0.05, metavar="SECONDS",
                   help="each image takes the points/depth message nearest to its header stamp within this many "
                   "seconds (default 0.05); images without one are counted and listed as unpaired")
    b.add_argument("--out-topic", help="topic of the completed depth (default: the image topic's sibling "
                   "depth_completed, e.g. /cam/image_raw -> /cam/depth_completed); its camera info goes to "
                   "<out-topic>/camera_info, --out-points to <out-topic>/points")
    b.add_argument("--out-encoding", choices=("32FC1", "16UC1"), default="32FC1",
                   help="32FC1 float metres (REP 118, the default, lossless) or 16UC1 millimetres (clipped at "
                   "65.535 m)")
    b.add_argument("--out-points", action="store_true",
                   help="also write a sensor_msgs/PointCloud2 (x, y, z float32, the image's frame) of the completed "
                   "depth")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.add_argument("--sparse-scale", type=float, default=None, metavar="UNITS_PER_M",
                   help="stored units per metre of 16-bit sparse PNGs: 256 for KITTI-style PNGs (metres x 256), "
                   "1000 for millimetres. Required for PNG input unless --convention sets it: there is no "
                   "default, a wrong scale scales every output depth. Float .npy files are metres (divided by "
                   "this scale only when it is given)")
    p.add_argument("--convention", choices=("kitti", "nyu"), default=None,
                   help="a dataset's frame convention, as psdrt eval's readers apply it "
                   "(runtime.datasets.CONVENTIONS): kitti = the bottom 256x1216 crop (K shifted), PNGs / 256; "
                   "nyu = 480x640 halved, 240x320 centre-cropped to 228x304 (K scaled and shifted), PNGs / 256 "
                   "like the PSD-val NYUv2 files (raw NYU PNGs in millimetres: add --sparse-scale 1000). "
                   "Outputs are at the convention's size, with its K. Also the default --preset (KITTI, NYUv2)")
    k = p.add_argument_group("intrinsics (one of)")
    k.add_argument("--intrinsics",
                   help="text file with 'fx fy cx cy' or a 3x3 matrix, or a folder of per-frame <stem>.txt")
    for name in ("fx", "fy", "cx", "cy"):
        k.add_argument(f"--{name}", type=float, help=f"{name} in pixels at the image's resolution")
    m = p.add_argument_group("model")
    m.add_argument("--mode", choices=("guided", "propagate", "psd"), default=None,
                   help="default: from the weights (the manifest's mode with --artifacts, psd for a PSD checkpoint "
                   "or --encoder + --head, propagate for an encoder alone), guided without weights. guided is "
                   "weight-free; propagate over a psd build directory drops its head")
    m.add_argument("--artifacts", metavar="DIR",
                   help="a directory written by `psdrt build --checkpoint CKPT --size HxW --out DIR` "
                   "(Pipeline.from_artifacts: manifest, checksums and gate checked)")
    m.add_argument("--precision", default="fp32",
                   help="with --artifacts: fp32, fp16 or int8 (or ENC+HEAD such as int8+fp32); default fp32")
    m.add_argument("--guided-kind", choices=("auto", "scattered", "scan"), default="auto",
                   help="guided mode: the input kind, detected per frame by default (auto); scan = scan-line LiDAR "
                   "(parallax filter, sharper filter), scattered = random, SLAM or corner points")
    add_engine_flag(m)
    m.add_argument("--checkpoint", help="PSD checkpoint for the PyTorch reference backends (needs torch)")
    m.add_argument("--encoder", help="exported encoder ONNX file (ONNX Runtime)")
    m.add_argument("--head", help="exported correction-head ONNX file (mode psd)")
    m.add_argument("--preset", default=None,
                   help="dataset preset, e.g. KITTI (default: the build directory's, else the --convention's "
                   "dataset, else NYUv2)")
    m.add_argument("--fit", choices=FIT_MODES, default=None,
                   help="adapt frames of another size to the artefacts' working size: resize = scale each axis "
                   "(RGB bilinear, sparse by nearest sampling so no depth is interpolated across edges, K scaled "
                   "per axis); crop = scale to cover, then centre-crop (runtime.inputs.fit_to_size). Nearest "
                   "sampling keeps only the sparse points on sampled pixels (the per-frame line counts them). "
                   "The completed depth is returned at the frame's own size by nearest-neighbour resampling "
                   "(no depth interpolated across edges, sparse pixels not re-imposed); with crop, the pixels "
                   "outside the cropped region are 0 (invalid). Without --fit a frame of another size is refused")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="psdrt_out", help="output folder (default: ./psdrt_out)")
    o.add_argument("--formats", default=DEFAULT_FORMATS,
                   help="comma-separated subset of npy,png16,color,ply,tiff (default: " + DEFAULT_FORMATS + "); "
                   "npy and tiff are lossless float32 metres, png16 clips beyond 65.535 m")
    o.add_argument("--ply-stride", type=int, default=1, help="keep every n-th pixel in the PLY (default: 1)")
    p.set_defaults(func=run)


@dataclass
class FrameJob:
    """One frame to complete: its files and the K source (a file, or a fixed matrix)."""

    stem: str
    rgb: Path
    sparse: Path  # a sparse depth file, or a point cloud with --points
    intrinsics: Optional[Path] = None


# ------------------------------------------------------------------------------------------------ model


def _check_onnx_file(path, flag: str) -> None:
    p = Path(path)
    if p.is_dir():
        hint = ("it is a psdrt build directory: pass --artifacts " + str(p) if (p / "manifest.json").is_file()
                else "pass the .onnx file, or a psdrt build directory with --artifacts DIR")
        raise InputError(f"{flag} {p} is a directory; {hint}")
    if not p.is_file():
        raise InputError(f"{flag} {p} does not exist; pass an exported ONNX file, or build a deployable "
                         "directory with `psdrt build --checkpoint CKPT --size HxW --out DIR` and pass "
                         "--artifacts DIR")


def add_engine_flag(group) -> None:
    """``--engine`` of ``psdrt run`` and ``psdrt batch``: how a build directory runs."""
    group.add_argument("--engine", choices=("c", "python"), default="c",
                       help="with --artifacts: c (the C session: the deployment pipeline, the default) or python "
                       "(the Python Pipeline over the same artefacts, for experiments; identical output)")


def _artifacts_pipeline(args, preset):
    from ..pipeline import Pipeline

    d = Path(args.artifacts)
    if d.is_file():
        raise InputError(f"--artifacts {d} is a file; pass the directory written by `psdrt build` (the one holding "
                         "manifest.json), or use --encoder FILE.onnx for a single ONNX file")
    from ..manifest import precision_parts

    precision_parts(args.precision)  # the one spelling rule: InputError naming fp32, fp16, int8, ENC+HEAD
    kw = {} if preset is None else {"preset": preset}
    if args.mode:
        kw["mode"] = args.mode  # propagate over a psd directory drops the head; other mismatches are refused
    return Pipeline.from_artifacts(d, precision=args.precision, engine=args.engine, **kw)


def build_pipeline(args, convention=None):
    """The ``Pipeline`` the flags ask for (see ``psdrt run -h``)."""
    from ..pipeline import Pipeline

    preset = args.preset or (convention.dataset if convention is not None else None)
    sources = [f"--{n}" for n in ("artifacts", "checkpoint", "encoder") if getattr(args, n, None)]
    if args.head and not args.encoder:
        raise InputError("--head needs --encoder ENC.onnx as well (or pass a build directory with --artifacts DIR)")
    if args.mode == "guided" or (args.mode is None and not sources):
        if sources or args.head:
            log.warning("--mode guided uses no weights; ignoring %s", ", ".join(sources + ["--head"] * bool(args.head)))
        from ..guided import GuidedParams

        return Pipeline("guided", preset=preset or "NYUv2", guided=GuidedParams(kind=getattr(args, "guided_kind", "auto")))
    if len(sources) > 1:
        raise InputError(f"give one source of weights, not {' and '.join(sources)}: --artifacts DIR (psdrt build), "
                         "--checkpoint CKPT (PyTorch reference) or --encoder ENC.onnx [--head HEAD.onnx]")
    if args.artifacts:  # the manifest's preset unless --preset is given
        return _artifacts_pipeline(args, args.preset)
    preset = preset or "NYUv2"
    if args.checkpoint:
        return Pipeline.from_checkpoint(args.checkpoint, mode=args.mode, preset=preset)
    if args.encoder:
        _check_onnx_file(args.encoder, "--encoder")
        mode = args.mode or ("psd" if args.head else "propagate")
        if mode == "psd" and not args.head:
            raise InputError("--mode psd needs --head HEAD.onnx as well as --encoder; or use --mode propagate")
        if mode == "psd":
            _check_onnx_file(args.head, "--head")
        return Pipeline.from_onnx(args.encoder, args.head if mode == "psd" else None, mode=mode, preset=preset)
    raise InputError(f"--mode {args.mode} needs weights: pass --artifacts DIR (a `psdrt build` directory), "
                     "--checkpoint PATH or --encoder ENC.onnx [--head HEAD.onnx]; or use --mode guided, which "
                     "needs none")


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class Projection:
    """How ``--points`` clouds become sparse depth: the transform and the depth range."""

    T: Optional[np.ndarray]
    min_depth: float
    max_depth: float
    source: str
    occlusion: bool = True  # runtime.points.filter_occluded after the projection


def _projection(args):
    """(K or None, Projection or None) from --calib / --extrinsics; both None without --points.

    Raises:
        InputError: point-cloud flags without --points, or --points without a transform.
    """
    points = getattr(args, "points", None)
    calib, extr = getattr(args, "calib", None), getattr(args, "extrinsics", None)
    if not points:
        if calib or extr:
            raise InputError("--calib and --extrinsics describe point clouds: pass --points FILE|DIR (or drop them)")
        return None, None
    occl = getattr(args, "occlusion_filter", True)
    for flag, v in (("--min-depth", args.min_depth), ("--max-depth", args.max_depth)):
        if np.isnan(v) or v <= 0:
            raise InputError(f"{flag} {v:g} must be a positive number of metres")
    if not args.max_depth > args.min_depth:
        raise InputError(f"--max-depth {args.max_depth:g} must be greater than --min-depth {args.min_depth:g}")
    if calib and extr:
        raise InputError("give --calib (KITTI: K and the LiDAR-to-camera transform) or --extrinsics, not both")
    if calib:
        if args.intrinsics or any(getattr(args, n) is not None for n in ("fx", "fy", "cx", "cy")):
            raise InputError("--calib gives K (KITTI's P2): drop --intrinsics / --fx --fy --cx --cy")
        from ..points import read_kitti_calib

        c = read_kitti_calib(calib)
        return c.K, Projection(c.T, args.min_depth, args.max_depth, f"--calib {calib}", occl)
    if not extr:
        raise InputError("--points needs the sensor-to-camera transform: --calib FILE|DIR (KITTI) or --extrinsics "
                         "FILE (a 4x4 matrix), or --extrinsics identity for points already in the camera frame")
    if extr == "identity":
        return None, Projection(None, args.min_depth, args.max_depth, "camera-frame points", occl)
    from ..points import read_extrinsics

    return None, Projection(read_extrinsics(extr), args.min_depth, args.max_depth, f"--extrinsics {extr}", occl)


def _fixed_K(args):
    """K from --fx/--fy/--cx/--cy or an --intrinsics file; None when --intrinsics is a folder."""
    from ..io import intrinsics_matrix, read_intrinsics

    flags = [getattr(args, n) for n in ("fx", "fy", "cx", "cy")]
    if any(f is not None for f in flags):
        if args.intrinsics:
            raise InputError("give either --intrinsics or --fx/--fy/--cx/--cy, not both")
        if any(f is None for f in flags):
            raise InputError("--fx, --fy, --cx and --cy must be given together (pixels at the image's resolution)")
        return intrinsics_matrix(*flags)
    if not args.intrinsics:
        raise InputError("intrinsics are missing: pass --intrinsics FILE (fx fy cx cy, or a 3x3 matrix) or "
                         "--fx --fy --cx --cy")
    path = Path(args.intrinsics)
    return None if path.is_dir() else read_intrinsics(path)


def _by_stem(folder: Path, exts) -> dict:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def collect_jobs(args) -> tuple[list[FrameJob], list[str]]:
    """Pair the inputs. Returns the jobs and a list of unmatched-file messages."""
    from ..points import POINT_EXTS

    points = bool(getattr(args, "points", None))
    flag2, exts, what = ("--points", POINT_EXTS, "point cloud") if points else ("--sparse", SPARSE_EXTS, "sparse depth")
    rgb, sparse = Path(args.rgb), Path(args.points if points else args.sparse)
    for path, flag in ((rgb, "--rgb"), (sparse, flag2)):
        if not path.exists():
            raise InputError(f"{flag} {path} does not exist; pass an existing file or folder")
    k_dir = Path(args.intrinsics) if args.intrinsics and Path(args.intrinsics).is_dir() else None
    if rgb.is_file() and sparse.is_file():
        k_file = (k_dir / f"{rgb.stem}.txt") if k_dir else None
        return [FrameJob(rgb.stem, rgb, sparse, k_file)], []
    if not (rgb.is_dir() and sparse.is_dir()):
        raise InputError(f"--rgb and {flag2} must both be files or both be folders")
    rgbs, sparses = _by_stem(rgb, RGB_EXTS), _by_stem(sparse, exts)
    unmatched = [f"{p} has no {what} file with stem {s!r} in {sparse}" for s, p in rgbs.items() if s not in sparses]
    unmatched += [f"{p} has no RGB image with stem {s!r} in {rgb}" for s, p in sparses.items() if s not in rgbs]
    jobs = [FrameJob(s, p, sparses[s], (k_dir / f"{s}.txt") if k_dir else None) for s, p in rgbs.items() if s in sparses]
    if not jobs:
        raise InputError(f"no RGB/{what} pairs with the same file stem in {rgb} and {sparse}; name each "
                         "frame's files alike (e.g. rgb/0001.png and sparse/0001.png)")
    return jobs, unmatched


def png_scale_error(path) -> InputError:
    """The error for a 16-bit sparse PNG whose scale nobody gave."""
    return InputError(f"{path} is a 16-bit PNG and its depth unit is not known: pass --sparse-scale 256 for "
                      "KITTI-style PNGs (metres x 256) or --sparse-scale 1000 for millimetres (or --convention "
                      "kitti|nyu for those datasets' files); psdrt does not guess, a wrong scale scales every depth")


def sparse_scale_for(path: Path, sparse_scale: Optional[float], convention=None) -> Optional[float]:
    """The scale ``read_depth`` gets for one sparse file: ``--sparse-scale`` when given; for a PNG
    otherwise the convention's; None for ``.npy`` (metres).

    Raises:
        InputError: a PNG without a scale (``png_scale_error``).
    """
    if sparse_scale is not None:
        return float(sparse_scale)
    if path.suffix.lower() == ".png":
        if convention is None:
            raise png_scale_error(path)
        return float(convention.depth_scale)
    return None


# ------------------------------------------------------------------------------------------------ sizes


def fit_frame(rgb: np.ndarray, sparse: np.ndarray, K: np.ndarray, size, how: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Adapt a frame to a working size, and give the function that brings the depth back.

    * ``"resize"``: each axis scaled to ``size`` (aspect not kept): RGB bilinear (PyTorch
      semantics, ``runtime.preprocess.resize_bilinear``), sparse depth by nearest sampling (no
      depth is interpolated across edges or from invalid pixels), K scaled per axis.
    * ``"crop"``: ``runtime.inputs.fit_to_size``: scaled (aspect kept) to cover ``size``, then
      centre-cropped; K scaled and shifted.

    The returned ``restore(depth)`` maps a completed (H, W) depth at ``size`` back to the frame's
    own size by nearest-neighbour resampling (values are the pipeline's, never blends of them;
    the sparse pixels are not re-imposed). With ``"crop"``, pixels outside the cropped region get
    0 (invalid).

    Returns:
        tuple: ``(rgb, sparse, K, restore)`` with the first three at ``size``.
    """
    from ..inputs import _resize_nearest, fit_to_size
    from ..preprocess import resize_bilinear

    h0, w0 = sparse.shape
    h, w = int(size[0]), int(size[1])
    if how == "resize":
        rgb_f = np.clip(np.rint(resize_bilinear(rgb, h, w)), 0, 255).astype(np.uint8)
        sparse_f = _resize_nearest(sparse, h, w).astype(np.float32)
        K_f = np.array(K, dtype=np.float64)
        K_f[0, :] *= w / w0
        K_f[1, :] *= h / h0
        K_f[2] = (0.0, 0.0, 1.0)

        def restore(depth):
            return _resize_nearest(np.asarray(depth, np.float32), h0, w0)

        return rgb_f, sparse_f, K_f, restore
    if how != "crop":
        raise InputError(f"unknown fit {how!r}; use one of {', '.join(FIT_MODES)}")
    # the source pixel of every working pixel, carried through fit_to_size itself (exact in float32):
    # the cropped region in the frame's coordinates is then known without restating its geometry
    rows = np.broadcast_to(np.arange(h0, dtype=np.float32)[:, None], (h0, w0))
    cols = np.broadcast_to(np.arange(w0, dtype=np.float32)[None, :], (h0, w0))
    rgb_f, K_f, sparse_f, r, c = fit_to_size(rgb, K, (h, w), sparse, rows, cols)
    r0, r1, c0, c1 = int(r.min()), int(r.max()), int(c.min()), int(c.max())

    def restore(depth):
        out = np.zeros((h0, w0), np.float32)
        out[r0:r1 + 1, c0:c1 + 1] = _resize_nearest(np.asarray(depth, np.float32), r1 - r0 + 1, c1 - c0 + 1)
        return out

    return rgb_f, np.ascontiguousarray(sparse_f, np.float32), K_f, restore


def size_mismatch_error(stem: str, hw, working, source: str) -> ShapeError:
    """A frame of another size than the pipeline's working size, without --fit."""
    return ShapeError(f"{stem}: frame is {format_size(hw)} but {source} was built for {format_size(working)}; "
                      "pass --fit resize (scale each axis) or --fit crop (scale to cover, centre crop) to adapt "
                      f"each frame, or build for your camera: `psdrt build --checkpoint CKPT --size "
                      f"{format_size(hw)} --out DIR`")


# ------------------------------------------------------------------------------------------------ frames


def sparse_from_points(cloud, K, size, projection: Projection) -> tuple[np.ndarray, list]:
    """Project one point cloud into a frame of ``size`` (H, W) as ``--points`` does: the
    z-buffered projection, then the occlusion filter unless ``projection.occlusion`` is off.

    Returns:
        tuple: (float32 (H, W) sparse depth in metres, notes for the per-frame line).
    """
    from ..points import project_points

    sparse = project_points(cloud, K, size, T=projection.T, min_depth=projection.min_depth,
                            max_depth=projection.max_depth)
    notes = [f"{len(cloud)} points -> {int((sparse > 0).sum())} pixels"]
    if projection.occlusion:
        from ..points import filter_occluded

        before = int((sparse > 0).sum())
        sparse = filter_occluded(sparse)
        notes.append(f"{before - int((sparse > 0).sum())} occluded dropped")
    return sparse, notes


def complete_frame(pipe, rgb, sparse, K, stem: str, *, convention=None, fit: Optional[str] = None,
                   source: str = "the pipeline"):
    """Complete one decoded frame: the convention's crop, ``--fit`` to the working size, the
    pipeline, and the depth back at the frame's own size (folder and bag mode alike).

    Returns:
        tuple: (DepthResult, rgb and K of the result's frame, pipeline seconds, notes).
    """
    from ..result import DepthResult

    notes = []
    if convention is not None:
        h, w = sparse.shape
        if rgb.shape[:2] != (h, w):
            raise ShapeError(f"RGB is {format_size(rgb.shape[:2])} but sparse depth is {format_size((h, w))} (HxW); "
                             f"--convention {convention.name} needs both at the stored size")
        rgb, K, sparse = convention.apply(rgb, K, sparse, name=stem)
        if (h, w) != tuple(sparse.shape):
            notes.append(f"{convention.name} {format_size((h, w))} -> {format_size(sparse.shape)}")
    working = getattr(pipe, "working_size", None)
    restore = None
    if working is not None and tuple(sparse.shape) != tuple(working) and rgb.shape[:2] == sparse.shape:
        if fit is None:
            raise size_mismatch_error(stem, sparse.shape, working, source)
        before = int((sparse > 0).sum())
        rgb_in, sparse_in, K_in, restore = fit_frame(rgb, sparse, K, working, fit)
        notes.append(f"fit {fit} {format_size(sparse.shape)} -> {format_size(working)} "
                     f"(sparse points {before} -> {int((sparse_in > 0).sum())})")
    else:
        rgb_in, sparse_in, K_in = rgb, sparse, K
    t0 = time.perf_counter()
    result = pipe(rgb_in, sparse_in, K_in)
    seconds = time.perf_counter() - t0
    if restore is not None:
        result = DepthResult(depth=restore(result.depth), mode=result.mode,
                             info={**result.info, "fit": fit, "working_size": tuple(working)})
    else:
        rgb, K = rgb_in, K_in
    return result, rgb, K, seconds, notes


def read_frame(job: FrameJob, K, sparse_scale, *, convention=None, projection: Optional[Projection] = None):
    """Read one frame's files as ``psdrt run`` does: the RGB, the sparse depth (or the projected
    point cloud) and K (the frame's own file where ``job.intrinsics`` is set, else ``K``).

    Returns:
        tuple: (rgb, sparse, K, notes for the per-frame line).
    """
    from ..io import read_depth, read_intrinsics, read_rgb

    rgb = read_rgb(job.rgb)
    if job.intrinsics is not None:
        K = read_intrinsics(job.intrinsics)
    notes = []
    if projection is not None:
        from ..points import read_points

        sparse, notes = sparse_from_points(read_points(job.sparse), K, rgb.shape[:2], projection)
    else:
        sparse = read_depth(job.sparse, sparse_scale_for(job.sparse, sparse_scale, convention))
    return rgb, sparse, K, notes


def write_frame(result, out_dir, stem: str, rgb, K, formats, ply_stride=1) -> tuple[dict, list]:
    """Write one completed frame in ``formats`` (``runtime.outputs.save_outputs``) as ``psdrt run``
    does, with its note about clipped 16-bit PNG pixels.

    Returns:
        tuple: (files by format, notes for the per-frame line).
    """
    from ..outputs import FORMATS, png16_saturation, save_outputs, saturation_note

    notes = []
    files = save_outputs(result, out_dir, stem, rgb, K, formats=formats, ply_stride=ply_stride)
    if "png16" in formats:
        clipped, total = png16_saturation(result.depth)
        if clipped:
            lossless = [FORMATS[f].format(stem=stem) for f in ("npy", "tiff") if f in formats]
            notes.append("WARNING png16: " + saturation_note(
                clipped, total, " and ".join(lossless) if lossless else "npy (add it to --formats)"))
    return files, notes


def run_frame(pipe, job: FrameJob, K, sparse_scale, out_dir, formats, ply_stride=1, *, convention=None,
              fit: Optional[str] = None, source: str = "the pipeline",
              projection: Optional[Projection] = None) -> tuple[dict, float, list]:
    """Read, complete and write one frame (``read_frame``, ``complete_frame``, ``write_frame``).

    Args:
        sparse_scale (float | None): ``--sparse-scale`` (``sparse_scale_for``).
        convention (Convention | None): ``runtime.datasets`` convention applied first.
        fit (str | None): ``"resize"``/``"crop"`` to the pipeline's ``working_size`` (``fit_frame``).
        projection (Projection | None): ``job.sparse`` is a point cloud, projected into the RGB
            frame with K and this transform (``sparse_from_points``).

    Returns:
        tuple: (files, pipeline seconds, notes for the per-frame line).
    """
    rgb, sparse, K, notes = read_frame(job, K, sparse_scale, convention=convention, projection=projection)
    result, rgb, K, seconds, more = complete_frame(pipe, rgb, sparse, K, job.stem, convention=convention, fit=fit,
                                                   source=source)
    files, written = write_frame(result, out_dir, job.stem, rgb, K, formats, ply_stride)
    return files, seconds, notes + more + written


def _summary(times: list) -> str:
    if not times:
        return "no frame completed"
    ms = np.asarray(times) * 1000.0
    return (f"pipeline time per frame: mean {ms.mean():.1f} ms, median {np.median(ms):.1f} ms, "
            f"min {ms.min():.1f} ms, max {ms.max():.1f} ms")


def _scale_text(jobs, sparse_scale, convention, projection=None) -> str:
    if projection is not None:
        return f"point clouds projected with {projection.source}"
    if not any(j.sparse.suffix.lower() == ".png" for j in jobs):
        return "sparse .npy in metres" if sparse_scale is None else f"sparse files / {sparse_scale:g}"
    if sparse_scale is not None:
        return f"sparse PNGs / {sparse_scale:g} (--sparse-scale)"
    return f"sparse PNGs / {convention.depth_scale:g} (--convention {convention.name})"


def check_common(args) -> list:
    """The checks of ``--formats``, ``--sparse-scale``, ``--precision``/``--engine`` (``psdrt run``
    and ``psdrt batch``). Returns the formats."""
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    from ..outputs import FORMATS

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"--formats {args.formats!r}: choose a comma-separated subset of {','.join(FORMATS)}")
    if args.sparse_scale is not None and not (np.isfinite(args.sparse_scale) and args.sparse_scale > 0):
        raise InputError(f"--sparse-scale {args.sparse_scale:g} must be a positive number of stored units per "
                         "metre: 256 for KITTI-style PNGs, 1000 for millimetres")
    if not args.artifacts and (args.precision != "fp32" or args.engine != "c"):
        raise InputError("--precision and --engine choose how a build directory runs: pass --artifacts DIR too "
                         "(or drop them)")
    return formats


def prepare_frames(args):
    """The frames of ``--rgb`` + ``--sparse``/``--points`` and how to read them, checked before any
    model is loaded (``psdrt run`` and ``psdrt batch``).

    Returns:
        tuple: (convention or None, fixed K or None, Projection or None, jobs, unmatched-file messages).
    """
    convention = None
    if args.convention:
        from ..datasets import get_convention

        convention = get_convention(args.convention)
    K, projection = _projection(args)
    if K is None:
        K = _fixed_K(args)
    jobs, unmatched = collect_jobs(args)
    if projection is None and args.sparse_scale is None and convention is None:  # before any model is loaded
        pngs = [j.sparse for j in jobs if j.sparse.suffix.lower() == ".png"]
        if pngs:
            raise png_scale_error(pngs[0] if len(pngs) == 1 else f"{pngs[0]} (and {len(pngs) - 1} more)")
    return convention, K, projection, jobs, unmatched


def run(args) -> int:
    import sys

    formats = check_common(args)
    if getattr(args, "bag", None):
        return run_bag(args)
    if getattr(args, "list", False) or any(getattr(args, n, None) for n in BAG_ONLY):
        raise InputError("--list, --image-topic, --camera-info-topic, --points-topic, --depth-topic, --out-topic and "
                         "--out-points read or write ROS bags: pass --bag PATH (or drop them)")
    if not args.rgb:
        raise InputError("--rgb is required: an RGB image or a folder of them (or --bag PATH for a ROS bag)")
    convention, K, projection, jobs, unmatched = prepare_frames(args)
    pipe = build_pipeline(args, convention)
    working = getattr(pipe, "working_size", None)
    if args.fit and working is None:
        log.warning("--fit %s has no effect: this pipeline (%s mode) takes frames of any size", args.fit, pipe.mode)
    source = f"the build directory {args.artifacts}" if args.artifacts else "the pipeline"
    print(f"psdrt run: {pipe.mode} mode" + (f", {args.artifacts} ({args.precision}, engine {args.engine})"
                                            if args.artifacts else "")
          + (f", working size {format_size(working)}" + (f" (--fit {args.fit})" if args.fit else "")
             if working is not None else "")
          + (f", convention {convention.name}" if convention else "")
          + f"; {_scale_text(jobs, args.sparse_scale, convention, projection)}", file=sys.stderr)
    for msg in unmatched:
        print(f"unmatched: {msg}", file=sys.stderr)
    single = len(jobs) == 1 and Path(args.rgb).is_file()
    times, failed = [], []
    t_all = time.perf_counter()
    kw = dict(convention=convention, fit=args.fit, source=source, projection=projection)
    for i, job in enumerate(jobs, 1):
        if single:  # errors go to the dispatcher, which maps them to their exit code
            files, sec, notes = run_frame(pipe, job, K, args.sparse_scale, args.out, formats, args.ply_stride, **kw)
        else:
            try:
                files, sec, notes = run_frame(pipe, job, K, args.sparse_scale, args.out, formats, args.ply_stride,
                                              **kw)
            except PsdError as exc:
                failed.append((job.stem, exc.exit_code))
                print(f"[{i}/{len(jobs)}] {job.stem}: FAILED: {exc}", file=sys.stderr)
                continue
            except Exception as exc:  # a bad frame must not stop the folder; report it with its type
                log.debug("frame %s", job.stem, exc_info=True)
                failed.append((job.stem, 1))
                print(f"[{i}/{len(jobs)}] {job.stem}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
        times.append(sec)
        print(f"[{i}/{len(jobs)}] {job.stem}: {sec * 1000:.1f} ms -> {', '.join(p.name for p in files.values())}"
              + "".join(f"; {n}" for n in notes), file=sys.stderr)
    wall = time.perf_counter() - t_all
    print(f"{len(times)} of {len(jobs)} frame(s) completed in {wall:.2f} s ({pipe.mode} mode), "
          f"{len(failed)} failed, {len(unmatched)} unmatched file(s); outputs in {args.out}")
    print(_summary(times))
    if failed:
        print("failed: " + ", ".join(stem for stem, _ in failed))
        return failed[0][1]
    return 0


# ------------------------------------------------------------------------------------------------ bags

#: flags that only --bag reads
BAG_ONLY = ("image_topic", "camera_info_topic", "points_topic", "depth_topic", "out_topic", "out_points")


def _bag_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def run_bag(args) -> int:
    """``psdrt run --bag``: complete every image of a ROS bag into a rosbag2 (runtime.bags)."""
    import sys

    from .. import bags

    bag_path = Path(args.bag)
    if args.rgb:
        raise InputError("--bag takes the images from --image-topic: drop --rgb")
    with bags.BagReader(bag_path) as bag:
        if args.list:
            rows = bag.topics()
            width = max([len(t) for t, _, _ in rows] + [5])
            tw = max([len(ty) for _, ty, _ in rows] + [4])
            print(f"{bag.path}: {len(rows)} topic(s), {'ROS 1' if bag.is_ros1 else 'ROS 2'}")
            for topic, ty, n in rows:
                print(f"  {topic:<{width}}  {ty:<{tw}}  {n} message(s)")
            return 0
        missing = [f for f, v in (("--image-topic", args.image_topic), ("--camera-info-topic", args.camera_info_topic))
                   if not v]
        if not (args.points_topic or args.depth_topic):
            missing.append("--points-topic or --depth-topic")
        if missing:
            raise InputError(f"--bag needs {', '.join(missing)}; `psdrt run --bag {bag_path} --list` shows the topics")
        if args.calib or args.convention:
            raise InputError("--calib and --convention do not apply to --bag: K comes from --camera-info-topic and the "
                             "transform from /tf_static or --extrinsics; drop them")
        if args.intrinsics or any(getattr(args, n) is not None for n in ("fx", "fy", "cx", "cy")):
            raise InputError("--bag takes K from --camera-info-topic: drop --intrinsics / --fx --fy --cx --cy")
        if args.extrinsics and not args.points_topic:
            raise InputError("--extrinsics is the cloud-to-camera transform of --points-topic: drop it with --depth-topic")
        if not (np.isfinite(args.sync_tolerance) and args.sync_tolerance >= 0):
            raise InputError(f"--sync-tolerance {args.sync_tolerance:g} must be >= 0 seconds (e.g. 0.05)")
        bag.topic_type(args.image_topic, "--image-topic", bags.IMAGE_TYPES)
        bag.topic_type(args.camera_info_topic, "--camera-info-topic", (bags.INFO_TYPE,))
        if args.points_topic:
            bag.topic_type(args.points_topic, "--points-topic", (bags.POINTS_TYPE,))
        else:
            bag.topic_type(args.depth_topic, "--depth-topic", ("sensor_msgs/msg/Image",))
        for flag, v in (("--min-depth", args.min_depth), ("--max-depth", args.max_depth)):
            if np.isnan(v) or v < 0:
                raise InputError(f"{flag} {v:g} must be >= 0 metres")
        T, given = None, False
        if args.extrinsics:
            given = True
            if args.extrinsics != "identity":
                from ..points import read_extrinsics

                T = read_extrinsics(args.extrinsics)
        spec = bags.BagSpec(image_topic=args.image_topic, info_topic=args.camera_info_topic,
                            points_topic=args.points_topic, depth_topic=args.depth_topic,
                            tolerance_s=float(args.sync_tolerance), extrinsics=T, extrinsics_given=given)
        out_topic = args.out_topic or bags.default_out_topic(args.image_topic)
        out_path = Path(args.out) / f"{_bag_name(bag.path)}_depth"
        pipe = build_pipeline(args)
        source = f"the build directory {args.artifacts}" if args.artifacts else "the pipeline"
        projection = Projection(None, args.min_depth, args.max_depth, "", args.occlusion_filter)

        def complete(rgb, sparse, K, stem):
            result, _, _, sec, notes = complete_frame(pipe, rgb, sparse, K, stem, fit=args.fit, source=source)
            return result, sec, notes

        def project(xyz, K, hw, T):
            from dataclasses import replace

            return sparse_from_points(xyz, K, hw, replace(projection, T=T))

        sparse_what = (f"{args.points_topic} (extrinsics: "
                       + (f"--extrinsics {args.extrinsics}" if given else "/tf_static") + ")"
                       if args.points_topic else f"{args.depth_topic}")
        print(f"psdrt run: {pipe.mode} mode; bag {bag.path}: {args.image_topic} + {sparse_what}, K from "
              f"{args.camera_info_topic}, tolerance {args.sync_tolerance:g} s -> {out_path} ({out_topic}, "
              f"{args.out_encoding})", file=sys.stderr)
        if out_path.exists() and not args.overwrite:  # before the scan; DepthBagWriter checks again
            raise InputError(f"{out_path} exists; pass --overwrite to replace it, or another --out folder")

        def make_writer():
            return bags.DepthBagWriter(out_path, out_topic, f"{out_topic}/camera_info",
                                       f"{out_topic}/points" if args.out_points else None,
                                       encoding=args.out_encoding, overwrite=args.overwrite)

        # the writer is closed on any exit, Ctrl-C included: the output bag stays valid
        report = bags.process_bag(bag, spec, make_writer, complete, project,
                                  progress=lambda line: print(line, file=sys.stderr))
    return _bag_summary(report, out_path, out_topic, args)


def _bag_summary(report, out_path, out_topic, args) -> int:
    from ..bags import fmt_stamp

    r = report
    print(f"{r.written} of {r.images} image(s) completed -> {out_path} ({out_topic}); {len(r.unpaired)} unpaired "
          f"(no {'points' if args.points_topic else 'depth'} within {args.sync_tolerance:g} s), "
          f"{len(r.no_camera_info)} without usable camera info, {len(r.skipped)} bad message(s) skipped"
          + ("; INTERRUPTED (Ctrl-C): the bag holds the frames completed until then" if r.interrupted else ""))
    print(_summary(r.times))

    def listing(items, n=10):
        items = list(items)
        return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")

    if r.unpaired:
        print("unpaired images (stamps): " + listing(fmt_stamp(s) for s in r.unpaired))
    for stamp, why in r.no_camera_info:
        print(f"no camera info: image {fmt_stamp(stamp)}: {why}")
    for topic, stamp, why, _ in r.skipped:
        print(f"skipped: {topic} {fmt_stamp(stamp)}: {why}")
    if r.interrupted:
        return 130
    if r.skipped:
        return r.skipped[0][3]
    if r.no_camera_info:
        return InputError.exit_code
    if r.images and not r.written:
        raise InputError(f"no image of {args.image_topic} was completed: none has a "
                         f"{args.points_topic or args.depth_topic} message within --sync-tolerance "
                         f"{args.sync_tolerance:g} s of its stamp; check the topics' stamps or raise the tolerance")
    return 0
