"""``psdrt batch``: a whole folder or evaluation dataset through ``psdrt run``'s per-frame code on Ray
Data (``runtime.batch``; needs the ``ray`` extra: ``pip install 'psdrt[ray]'``).

Exit code: 0 when every frame completed (or was already done); with failed frames, the first
recorded failure's exit code, as ``psdrt run`` over a folder (an unreadable frame: 2). The failed
frames are in ``<out>/failures.jsonl``, the counts in ``<out>/summary.json``; a rerun retries them.
"""

from __future__ import annotations

import argparse
import sys

from .run_cmd import DEFAULT_FORMATS, FIT_MODES, add_engine_flag


def _add_arguments(p) -> None:
    i = p.add_argument_group("frames: folders as `psdrt run` reads them (paired by stem)")
    i.add_argument("--rgb", metavar="DIR", help="folder of RGB images (PNG/JPEG)")
    src = i.add_mutually_exclusive_group()
    src.add_argument("--sparse", metavar="DIR", help="folder of sparse depth (16-bit PNG with --sparse-scale or "
                     "--convention, or float .npy metres)")
    src.add_argument("--points", metavar="DIR", help="folder of point clouds (.bin, .npy, .ply, .pcd), projected "
                     "with --calib or --extrinsics as `psdrt run --points` does")
    i.add_argument("--calib", metavar="FILE|DIR", help="KITTI calibration (K and LiDAR-to-camera), with --points")
    i.add_argument("--extrinsics", metavar="FILE|identity", help="4x4 sensor-to-camera transform, with --points")
    i.add_argument("--min-depth", type=float, default=0.1, help="with --points: drop points at z <= this (m)")
    i.add_argument("--max-depth", type=float, default=float("inf"), help="with --points: drop points beyond (m)")
    i.add_argument("--no-occlusion-filter", dest="occlusion_filter", action="store_false",
                   help="with --points: keep the LiDAR returns nearer returns enclose")
    i.add_argument("--sparse-scale", type=float, default=None, metavar="UNITS_PER_M",
                   help="stored units per metre of 16-bit sparse PNGs (256 KITTI-style, 1000 mm)")
    i.add_argument("--convention", choices=("kitti", "nyu"), default=None, help="a dataset's frame convention "
                   "(crop, K, PNG scale), as in `psdrt run`")
    i.add_argument("--intrinsics", help="'fx fy cx cy' / 3x3 file, or a folder of per-frame <stem>.txt")
    for name in ("fx", "fy", "cx", "cy"):
        i.add_argument(f"--{name}", type=float, help=f"{name} in pixels")
    d = p.add_argument_group("frames: an evaluation dataset's layout (runtime.datasets, as `psdrt eval` reads it)")
    d.add_argument("--dataset", help="dataset name (kitti, nyu, void, middlebury, kitti-shared, ...); "
                   "'middlebury' without --root is the built-in frame")
    d.add_argument("--root", help="its data folder (PSD-val layout)")
    d.add_argument("--list", dest="list_file", help="file list (the official val_*.txt format or one RGB per line)")
    d.add_argument("--limit", type=int, help="only the first N frames")
    d.add_argument("--no-crop", action="store_true", help="the stored size (no working-size crop/resize)")
    d.add_argument("--sparse-dir", help="stored sparse files from this folder")
    d.add_argument("--pattern", default=None, help="one sparse pattern: stored (the default where the dataset has "
                   "sparse files), random1, random0.1, pseudo_hole or harris (made from the ground truth)")
    d.add_argument("--seed", type=int, default=0, help="seed of the generated pattern (default 0)")
    m = p.add_argument_group("model (as `psdrt run`; each Ray actor builds its own pipeline once)")
    m.add_argument("--mode", choices=("guided", "propagate", "psd"), default=None,
                   help="default: from the weights, guided without weights")
    m.add_argument("--artifacts", metavar="DIR", help="a `psdrt build` directory (visible to every Ray node)")
    m.add_argument("--precision", default="fp32", help="with --artifacts: fp32, fp16, int8 or ENC+HEAD")
    add_engine_flag(m)
    m.add_argument("--guided-kind", choices=("auto", "scattered", "scan"), default="auto",
                   help="guided mode: the input kind (default auto: detected per frame), as in `psdrt run`")
    m.add_argument("--checkpoint", help="PSD checkpoint (PyTorch reference backends)")
    m.add_argument("--encoder", help="exported encoder ONNX file")
    m.add_argument("--head", help="exported correction-head ONNX file (mode psd)")
    m.add_argument("--preset", default=None, help="dataset preset (default: the build directory's, the "
                   "--dataset's or --convention's dataset, else NYUv2)")
    m.add_argument("--fit", choices=FIT_MODES, default=None, help="adapt frames to the artefacts' working size")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="psdrt_out", help="output folder (default ./psdrt_out; shared by all Ray nodes): "
                   "the files of `psdrt run`, failures.jsonl, summary.json")
    o.add_argument("--formats", default=DEFAULT_FORMATS, help="subset of npy,png16,color,ply,tiff (default: "
                   + DEFAULT_FORMATS + ")")
    o.add_argument("--ply-stride", type=int, default=1, help="keep every n-th pixel in the PLY (default: 1)")
    o.add_argument("--quiet", action="store_true", help="no per-frame progress lines (the summary still)")
    r = p.add_argument_group("Ray")
    r.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: start a "
                   "local Ray on this machine")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    r.add_argument("--gpus", default="auto", choices=("auto", "0", "1"),
                   help="auto (default): one GPU per actor where the cluster has GPUs, else CPU actors; "
                   "0: CPU actors; 1: GPU actors (error without GPUs)")
    r.add_argument("--actors", type=int, default=None, help="number of Ray actors (default: one per GPU, or "
                   "cluster CPUs / --threads)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads per CPU actor (default 1)")
    r.add_argument("--batch-size", type=int, default=4, help="frames per Ray Data batch (default 4: small "
                   "batches keep memory bounded)")
    r.add_argument("--ray-progress", action="store_true", help="also show Ray Data's own progress bars")
    r.add_argument("--verbose-workers", action="store_true", help="forward the Ray workers' logs to this terminal")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="a whole folder or dataset on Ray Data (local or a cluster), resumable; pip install 'psdrt[ray]'",
        description="Completes every frame of --rgb DIR + --sparse/--points DIR, or of --dataset NAME [--root DIR], "
        "with one pipeline per Ray actor (GPU actors where the cluster has GPUs), streaming in small batches. "
        "Writes the same files as `psdrt run` (byte-identical), atomically (temporary name, then rename); frames "
        "whose files all exist are skipped, so a rerun resumes a killed job. Failed frames go to "
        "<out>/failures.jsonl and do not stop the job; <out>/summary.json has the counts, throughput and "
        "per-stage times. Exit code: 0 when no frame failed, else the first failure's code (as `psdrt run` over "
        "a folder). Needs the ray extra: pip install 'psdrt[ray]'.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)


def namespace(**options) -> argparse.Namespace:
    """The ``psdrt batch`` arguments with their defaults, updated by ``options`` (``run_batch``).

    Raises:
        TypeError: an option ``psdrt batch`` does not have.
    """
    p = argparse.ArgumentParser()
    _add_arguments(p)
    args = p.parse_args([])
    for k, v in options.items():
        if not hasattr(args, k):
            raise TypeError(f"run_batch() got an unknown option {k!r}; see `psdrt batch -h`")
        setattr(args, k, v)
    args.verbose = 0
    return args


def run(args) -> int:
    from .. import batch

    batch.ray.load()  # BackendUnavailable naming pip install 'psdrt[ray]' (exit 4)
    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    s = batch.execute(args, progress=say)
    print(f"{s['done']} frame(s) completed, {s['skipped']} skipped (already done), {s['failed']} failed, "
          f"{s['unmatched']} unmatched file(s) of {s['frames']} in {s['wall_seconds']:.2f} s "
          f"({s['frames_per_second']:.2f} frames/s after Ray start-up, {s['actors']} actor(s), {s['placement']}); "
          f"outputs in {s['out']}")
    if s["failed"]:
        print(f"failed frames: {s['failures_file']}")
    return int(s["exit_code"])
