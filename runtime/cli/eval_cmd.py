"""``psdrt eval``: accuracy of one or several configurations on one of PSD's evaluation datasets.

Reads a dataset (``runtime.datasets``), completes every frame for each sparse pattern with each
configuration (``runtime.evaluation``), scores it with the official metrics and writes
``<out>/<name>.csv`` (per image, with the input ``kind`` and ``edge_rmse``), ``<out>/<name>.md``
(summary, configurations side by side), ``<out>/<name>.json`` and ``<out>/<name>_rmse.png`` (RMSE
per pattern and configuration; needs matplotlib, the ``bench`` extra: without it the plot is
skipped with a logged note). Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import logging
import sys

from ..errors import BackendUnavailable, InputError
from .common import check_out_dir

log = logging.getLogger(__name__)


def _datasets_help() -> str:
    from ..datasets import dataset_names

    return ", ".join(dataset_names())


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="accuracy (RMSE, MAE, iRMSE, iMAE, REL, delta1, edge-band RMSE) of guided / psd / ONNX / reference "
        "configurations and the classical baselines on PSD's evaluation datasets",
        description="Evaluates completion configurations on a dataset with the official PSD metrics "
        "(per image over the dataset's evaluation mask, then the mean over images), plus the RMSE in a "
        "3 px band around the ground truth's depth edges (edge_rmse, not official; its mean skips frames "
        "without a depth edge) and the input kind of each frame's sparse input (scan or scattered). Datasets: "
        f"{_datasets_help()}. 'middlebury' without --root is the built-in scikit-image frame; "
        "'kitti-shared'/'nyu-shared' read ../shared/data (or $PSD_SHARED_DATA), 'kitti-lidar-shared' its "
        "real-LiDAR frame (lidar/kittidc_a, stored raw LiDAR input, 352x1216). Other datasets read "
        "the PSD-val layout: ROOT/rgb/<F>, ROOT/depth/<F>, ROOT/sparse/{raw,scatter_001}/<F>, "
        "ROOT/intrinsics/<F> (or one dataset's rgb/, depth/, sparse/, intrinsics/ folders).",
    )
    p.add_argument("--dataset", required=True, help="dataset name (e.g. kitti, nyu, void, middlebury, kitti-shared)")
    p.add_argument("--root", help="data folder (not needed for middlebury, kitti-shared, nyu-shared, "
                   "kitti-lidar-shared)")
    p.add_argument("--list", dest="list_file",
                   help="file list: the official val_*.txt format (rgb [sparse depth [intrinsics]]) or one RGB "
                   "path per line (default: ROOT/filename/<official list> if present, else every RGB image)")
    p.add_argument("--limit", type=int, help="evaluate only the first N frames")
    p.add_argument("--no-crop", action="store_true",
                   help="evaluate at the stored size (no KITTI 256x1216 / NYUv2 228x304 crop, no Stanford resize)")
    p.add_argument("--sparse-dir", help="read stored sparse files from this folder instead of ROOT/sparse/<kind>/<F>")
    p.add_argument("--pattern", default=None,
                   help="comma-separated sparse patterns: stored, random1, random0.1, pseudo_hole, harris, or all "
                   "(default: stored when the dataset has sparse files, else the four generated patterns)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated patterns (default: 0)")
    p.add_argument("--config", action="append", metavar="[LABEL=]SPEC",
                   help="configuration, repeatable (default: guided): guided | ref-guided | psd:DIR[:fp32|fp16|int8] "
                   "| onnx:ENC.onnx[:HEAD.onnx] | ref:CKPT[:psd|propagate] | ckpt:CKPT[:psd|propagate] | "
                   "ip_basic | nearest")
    p.add_argument("--baselines", action="store_true", help="also evaluate IP-Basic and nearest-neighbour fill")
    p.add_argument("--out", default="psdrt_eval",
                   help="output folder (default: ./psdrt_eval): <name>.csv, .md, .json and <name>_rmse.png")
    p.add_argument("--no-plot", action="store_true", help="do not write the RMSE bar chart PNG")
    p.add_argument("--name", help="file name prefix of the outputs (default: eval_<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no per-frame progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..datasets import get_reader
    from ..evaluation import evaluate, parse_configs, summary_markdown, write_outputs

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    check_out_dir(args.out)
    configs = parse_configs(args.config, baselines=args.baselines)
    reader_cls = get_reader(args.dataset)
    reader = reader_cls(root=args.root, list_file=args.list_file, limit=args.limit, crop=not args.no_crop,
                        sparse_dir=args.sparse_dir)
    desc = reader.describe()
    print(f"psdrt eval: {desc['title']} ({desc['dataset']}), {len(reader)} of {desc['frames_available']} frame(s) "
          f"from {desc['root']}; configurations: {', '.join(c.label for c in configs)}", file=sys.stderr)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = evaluate(reader, configs, patterns=args.pattern, seed=args.seed, progress=progress)
    prefix = args.name or f"eval_{reader.name}"
    paths = write_outputs(result, args.out, prefix)
    if not args.no_plot:
        png = write_plot(result, args.out, prefix)
        if png is not None:
            paths["png"] = png
    print(summary_markdown(result))
    print(f"{len(result['rows'])} result row(s), {len(result['skipped'])} skipped, "
          f"{result['meta']['wall_seconds']:.1f} s; wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def write_plot(result: dict, out_dir, prefix: str, metric: str = "rmse"):
    """``<out>/<prefix>_<metric>.png`` (``benchmarks.plots.plot_eval_metric``); None, with a logged
    note naming the fix, where matplotlib is missing."""
    from pathlib import Path

    from psdrt.benchmarks import plots

    path = Path(out_dir) / f"{prefix}_{metric}.png"
    try:
        plots.plot_eval_metric(result, path, metric=metric)
    except BackendUnavailable as exc:
        log.warning("note: %s bar chart not written (%s); the CSV/markdown/JSON results are complete. For the plot: "
                    "pip install 'psdrt[bench]' (matplotlib)", metric.upper(), str(exc).splitlines()[0])
        return None
    return path
