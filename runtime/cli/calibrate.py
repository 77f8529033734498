"""``psdrt calibrate``: FP32 ONNX (or a checkpoint) + calibration frames -> INT8 artefacts + fidelity.

Thin argparse layer over ``psdrt.calibration`` (style G19); torch, onnx and onnxruntime are
imported only when the command runs, so ``psdrt -h`` works without them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..errors import InputError
from .common import check_out_dir, format_size, parse_size

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="INT8 calibration: Q/DQ ONNX for ORT CPU / TensorRT, legacy TensorRT cache, fidelity table",
        description="Calibrate an FP32 encoder or head ONNX on frames and write INT8 artefacts plus a "
        "fidelity table (INT8 vs FP32). With --export, the ONNX is first exported from --checkpoint.",
    )
    p.add_argument("model", nargs="?", help="FP32 ONNX (encoder or head); omit with --export")
    p.add_argument("--export", choices=("encoder", "head"), help="export this part from --checkpoint first")
    p.add_argument("--checkpoint", help="PSD/DA-V2 checkpoint: export source, and the FP32 reference for head feeds")
    p.add_argument("--random-weights", metavar="ENCODER", choices=("vits", "vitb", "vitl"),
                   help="development only: a PSD model with random weights instead of --checkpoint")
    p.add_argument("--size", nargs="+", metavar="HxW", default=None,
                   help="frame (head) size HxW, e.g. 228x304 (the old form '228 304', height then width, is "
                   "still accepted); default: the head ONNX's input size, or 228x304 with --export")
    p.add_argument("--fm-lower", type=int, default=392, help="foundation-model input lower bound (default 392)")
    p.add_argument("--preset", default="NYUv2", help="propagation preset of the head feeds (default NYUv2)")
    p.add_argument("--source", default="middlebury",
                   help="'middlebury' (generated, always available), 'shared'/'kitti'/'nyu' (project frames) "
                   "or a folder of RGB images (default middlebury)")
    p.add_argument("--sparse-dir", help="with a folder --source: sparse depth per image (<stem>.png/.npy)")
    p.add_argument("--sparse-scale", type=float, help="stored units per metre of 16-bit sparse PNGs")
    p.add_argument("--intrinsics", help="with a folder --source: intrinsics file (fx fy cx cy or 3x3)")
    p.add_argument("--num", type=int, default=None, help="number of calibration frames")
    p.add_argument("--eval-source", default=None, help="frames for the fidelity table (default: --source)")
    p.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    p.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default 99.99)")
    p.add_argument("--formats", default="ort", help="comma list of ort, modelopt, trt-cache (default ort)")
    p.add_argument("--trt-version", default="8.6", help="TensorRT target of trt-cache: 8.5 or 8.6 (default 8.6)")
    p.add_argument("--exclude", nargs="*", default=(), help="node names kept in FP32")
    p.add_argument("--sensitivity", action="store_true",
                   help="per-group sensitivity report; keeps the worst groups in FP32 and writes *.int8.ort.mixed.onnx")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--out", default="psdrt_int8", help="output folder (default psdrt_int8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=run)


def _pipeline(args):
    import torch

    from psdrt.export.reference.pipeline import ReferencePipeline

    if args.checkpoint:
        return ReferencePipeline.from_checkpoint(args.checkpoint, mode="psd", preset=args.preset, fm_lower=args.fm_lower)
    if args.random_weights:
        from psdrt.export.models.psd import PSDModel
        from psdrt.export.models.random_weights import randomize_head_

        torch.manual_seed(args.seed)
        model = randomize_head_(PSDModel(args.random_weights), args.seed)
        log.warning("random weights: the numbers describe the numerics, not a trained model")
        return ReferencePipeline("psd", model=model, preset=args.preset, fm_lower=args.fm_lower)
    raise InputError("head calibration runs the FP32 reference to make its inputs: pass --checkpoint "
                     "(or --random-weights vits for development)")


def _export(args, out: Path) -> Path:
    from psdrt.export.onnx_export import encoder_feat_sizes, export_encoder, export_head
    from psdrt.runtime.preprocess import fm_input_size

    pipe = _pipeline(args)
    h, w = args.size or (228, 304)
    hm = fm_input_size(h, w, lower=args.fm_lower)
    if args.export == "encoder":
        return export_encoder(pipe.fm, out / "encoder.onnx", size=hm)
    return export_head(pipe.head, out / "head.onnx", size=(h, w), feat_sizes=encoder_feat_sizes(hm))


def run(args) -> int:
    from psdrt.calibration import calibrate as C
    from psdrt.calibration import sources as S

    args.size = parse_size(args.size, "--size") if args.size else None
    out = check_out_dir(args.out)
    if args.model is None and not args.export:
        raise InputError("give an FP32 ONNX file, or --export encoder|head with --checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else _export(args, out)
    kind, shapes = C.model_io(model)
    progress = not args.no_progress
    frame_kw = dict(seed=args.seed, sparse_dir=args.sparse_dir, sparse_scale=args.sparse_scale, K=args.intrinsics)
    if kind == "head":
        size = tuple(shapes["sparse"][2:])
        if args.size and tuple(args.size) != size:
            raise InputError(f"--size {format_size(args.size)} differs from the head's input size "
                             f"{format_size(size)}; drop --size or pass --size {format_size(size)}")
        pipe = _pipeline(args)

        def feeds(spec, num):
            return S.HeadFeeds(S.frame_source(spec, size, num, **frame_kw), pipe)
    else:
        hm = tuple(shapes["rgb"][2:])

        def feeds(spec, num):
            return S.EncoderFeeds(S.frame_source(spec, tuple(args.size) if args.size else None, num, **frame_kw),
                                  size=hm)

    eval_feeds = list(feeds(args.eval_source, 4)) if args.eval_source else None
    method_options = {"percentile": args.percentile} if args.method == "percentile" else None
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    res = C.calibrate(model, feeds(args.source, args.num), out, name=model.stem, method=args.method,
                      method_options=method_options, formats=formats, nodes_to_exclude=args.exclude,
                      eval_feeds=eval_feeds, trt_version=args.trt_version, progress=progress, threads=args.threads)
    print((out / f"{model.stem}.fidelity.md").read_text())
    if args.sensitivity and res.int8_ort is not None:
        rep = C.apply_sensitivity(res, out, model.stem, progress=progress, threads=args.threads)
        print((out / f"{model.stem}.sensitivity.md").read_text())
        log.info("sensitivity: %s", json.dumps(rep["applied"]))
    for label, path in (("FP32 (ORT-prepared)", res.fp32), ("INT8 Q/DQ, ORT CPU", res.int8_ort),
                        ("INT8 Q/DQ, TensorRT (modelopt)", res.int8_trt), ("TensorRT 8.5/8.6 cache", res.trt_cache)):
        if path is not None:
            print(f"{label}: {path}")
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
