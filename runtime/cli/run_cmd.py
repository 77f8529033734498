"""``psdrt run``: complete one frame or a folder of frames and write depth, 16-bit PNG, colour, PLY.

Folder mode pairs RGB and sparse files by stem, reports files without a partner, continues past a
bad frame (reporting why) and exits with the first failed frame's exit code. Progress goes to stderr;
the summary (frames, per-frame timing) to stdout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError, PsdError

log = logging.getLogger(__name__)

RGB_EXTS = (".png", ".jpg", ".jpeg")
SPARSE_EXTS = (".png", ".npy")
DEFAULT_FORMATS = "npy,png16,color,ply"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="complete RGB + sparse depth + K into dense metric depth (single files or folders)",
        description="Completes one frame (--rgb FILE --sparse FILE) or every frame of a folder "
        "(--rgb DIR --sparse DIR, paired by file stem) and writes <stem>_depth.npy (float32 m), "
        "<stem>_depth_mm.png (uint16 mm, 0 = invalid), <stem>_depth_color.png and <stem>.ply.",
    )
    p.add_argument("--rgb", required=True, help="RGB image (PNG/JPEG) or a folder of them")
    p.add_argument("--sparse", required=True,
                   help="sparse depth: 16-bit PNG or float .npy in metres, or a folder of them (paired by stem)")
    p.add_argument("--sparse-scale", type=float, default=None,
                   help="stored units per metre of 16-bit sparse PNGs (default: 256, like KITTI; "
                   "1000 for millimetres); .npy files are metres unless given")
    k = p.add_argument_group("intrinsics (one of)")
    k.add_argument("--intrinsics",
                   help="text file with 'fx fy cx cy' or a 3x3 matrix, or a folder of per-frame <stem>.txt")
    for name in ("fx", "fy", "cx", "cy"):
        k.add_argument(f"--{name}", type=float, help=f"{name} in pixels at the image's resolution")
    m = p.add_argument_group("model")
    m.add_argument("--mode", choices=("guided", "propagate", "psd"), default="guided",
                   help="guided: weight-free (default); propagate/psd: need --checkpoint or --encoder")
    m.add_argument("--checkpoint", help="PSD checkpoint for the PyTorch reference backends (needs torch)")
    m.add_argument("--encoder", help="exported encoder ONNX (ONNX Runtime)")
    m.add_argument("--head", help="exported correction-head ONNX (mode psd)")
    m.add_argument("--preset", default="NYUv2", help="dataset preset (default: NYUv2), e.g. KITTI")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="psdrt_out", help="output folder (default: ./psdrt_out)")
    o.add_argument("--formats", default=DEFAULT_FORMATS,
                   help=f"comma-separated subset of npy,png16,color,ply (default: {DEFAULT_FORMATS})")
    o.add_argument("--ply-stride", type=int, default=1, help="keep every n-th pixel in the PLY (default: 1)")
    p.set_defaults(func=run)


@dataclass
class FrameJob:
    """One frame to complete: its files and the K source (a file, or a fixed matrix)."""

    stem: str
    rgb: Path
    sparse: Path
    intrinsics: Optional[Path] = None


def build_pipeline(args):
    """The ``Pipeline`` the flags ask for."""
    from ..pipeline import Pipeline

    if args.mode == "guided":
        if args.checkpoint or args.encoder or args.head:
            log.warning("--mode guided uses no weights; ignoring --checkpoint/--encoder/--head")
        return Pipeline("guided", preset=args.preset)
    if args.checkpoint and args.encoder:
        raise InputError("give either --checkpoint (PyTorch reference) or --encoder/--head (ONNX), not both")
    if args.checkpoint:
        return Pipeline.from_checkpoint(args.checkpoint, mode=args.mode, preset=args.preset)
    if args.encoder:
        if args.mode == "psd" and not args.head:
            raise InputError("--mode psd needs --head HEAD.onnx as well as --encoder; or use --mode propagate")
        return Pipeline.from_onnx(args.encoder, args.head if args.mode == "psd" else None, mode=args.mode,
                                  preset=args.preset)
    raise InputError(f"--mode {args.mode} needs weights: pass --checkpoint PATH or --encoder ENC.onnx "
                     "[--head HEAD.onnx]; or use --mode guided, which needs none")


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
    rgb, sparse = Path(args.rgb), Path(args.sparse)
    for path, flag in ((rgb, "--rgb"), (sparse, "--sparse")):
        if not path.exists():
            raise InputError(f"{flag} {path} does not exist; pass an existing file or folder")
    k_dir = Path(args.intrinsics) if args.intrinsics and Path(args.intrinsics).is_dir() else None
    if rgb.is_file() and sparse.is_file():
        k_file = (k_dir / f"{rgb.stem}.txt") if k_dir else None
        return [FrameJob(rgb.stem, rgb, sparse, k_file)], []
    if not (rgb.is_dir() and sparse.is_dir()):
        raise InputError("--rgb and --sparse must both be files or both be folders")
    rgbs, sparses = _by_stem(rgb, RGB_EXTS), _by_stem(sparse, SPARSE_EXTS)
    unmatched = [f"{p} has no sparse depth file with stem {s!r} in {sparse}" for s, p in rgbs.items() if s not in sparses]
    unmatched += [f"{p} has no RGB image with stem {s!r} in {rgb}" for s, p in sparses.items() if s not in rgbs]
    jobs = [FrameJob(s, p, sparses[s], (k_dir / f"{s}.txt") if k_dir else None) for s, p in rgbs.items() if s in sparses]
    if not jobs:
        raise InputError(f"no RGB/sparse pairs with the same file stem in {rgb} and {sparse}; name each "
                         "frame's files alike (e.g. rgb/0001.png and sparse/0001.png)")
    return jobs, unmatched


def run_frame(pipe, job: FrameJob, K, sparse_scale, out_dir, formats, ply_stride=1) -> tuple[dict, float]:
    """Read, complete and write one frame. Returns (files, pipeline seconds)."""
    from ..io import read_depth, read_intrinsics, read_rgb
    from ..outputs import save_outputs

    rgb = read_rgb(job.rgb)
    ext = job.sparse.suffix.lower()
    scale = (256.0 if sparse_scale is None else sparse_scale) if ext == ".png" else sparse_scale
    sparse = read_depth(job.sparse, scale)
    if job.intrinsics is not None:
        K = read_intrinsics(job.intrinsics)
    t0 = time.perf_counter()
    result = pipe(rgb, sparse, K)
    seconds = time.perf_counter() - t0
    files = save_outputs(result, out_dir, job.stem, rgb, K, formats=formats, ply_stride=ply_stride)
    return files, seconds


def _summary(times: list) -> str:
    if not times:
        return "no frame completed"
    ms = np.asarray(times) * 1000.0
    return (f"pipeline time per frame: mean {ms.mean():.1f} ms, median {np.median(ms):.1f} ms, "
            f"min {ms.min():.1f} ms, max {ms.max():.1f} ms")


def run(args) -> int:
    import sys

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    from ..outputs import FORMATS

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"--formats {args.formats!r}: choose a comma-separated subset of {','.join(FORMATS)}")
    K = _fixed_K(args)
    jobs, unmatched = collect_jobs(args)
    pipe = build_pipeline(args)
    for msg in unmatched:
        print(f"unmatched: {msg}", file=sys.stderr)
    single = len(jobs) == 1 and Path(args.rgb).is_file()
    times, failed = [], []
    t_all = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        if single:  # errors go to the dispatcher, which maps them to their exit code
            files, sec = run_frame(pipe, job, K, args.sparse_scale, args.out, formats, args.ply_stride)
        else:
            try:
                files, sec = run_frame(pipe, job, K, args.sparse_scale, args.out, formats, args.ply_stride)
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
        print(f"[{i}/{len(jobs)}] {job.stem}: {sec * 1000:.1f} ms -> {', '.join(p.name for p in files.values())}",
              file=sys.stderr)
    wall = time.perf_counter() - t_all
    print(f"{len(times)} of {len(jobs)} frame(s) completed in {wall:.2f} s ({args.mode} mode), "
          f"{len(failed)} failed, {len(unmatched)} unmatched file(s); outputs in {args.out}")
    print(_summary(times))
    if failed:
        print("failed: " + ", ".join(stem for stem, _ in failed))
        return failed[0][1]
    return 0
