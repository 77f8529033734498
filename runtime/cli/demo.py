"""``psdrt demo``: the embedded default. Guided mode on the Middlebury frame, no weights."""

from __future__ import annotations

import json
import logging
import time

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="complete the built-in Middlebury frame in 'guided' mode (no weights) and compare "
        "with IP-Basic and nearest-neighbour fill",
        description="Runs the weight-free 'guided' mode on the Middlebury 2014 Motorcycle frame "
        "(shipped with scikit-image) from random sparse depth, prints RMSE/MAE/REL/delta1 against "
        "the ground truth next to IP-Basic and nearest-neighbour fill, and writes four PNGs into the "
        "folder ./psdrt_demo of the current directory (or --out DIR; created if missing, files of "
        "the same names overwritten): depth_guided.png and depth_gt.png (colour bar in m), "
        "error_guided.png (colour bar in mm) and rgb.png. --save-inputs DIR writes only the inputs "
        "for the C example, and nothing into ./psdrt_demo.",
    )
    p.add_argument("--pattern", default="random1",
                   help="sparse pattern: random1 (1%%), random0.1 (0.1%%), pseudo_hole, harris "
                   "(default: random1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sparse pattern (default: 0)")
    p.add_argument("--out", default="psdrt_demo", metavar="DIR",
                   help="folder for the four PNGs (default: ./psdrt_demo in the current directory; always "
                   "written, created if missing)")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--save-inputs", default=None, metavar="DIR",
                   help="only write the demo frame's inputs for the C example (examples/psd_demo.c) and "
                   "exit: rgb.ppm (binary PPM), sparse.pfm (float metres), sparse_mm.pgm (16-bit, mm), "
                   "K.txt (3x3, pixels)")
    p.add_argument("--size", default=None, metavar="HxW",
                   help="with --save-inputs: fit the frame to this size first (scale to cover, centre crop, "
                   "K adjusted), e.g. the working size of a psdrt build directory")
    p.set_defaults(func=run)


def save_inputs(out_dir, pattern: str = "random1", seed: int = 0, size=None) -> dict:
    """Write the demo frame's inputs in formats a few lines of C can read.

    * ``rgb.ppm``: binary PPM (P6, 8-bit RGB);
    * ``sparse.pfm``: PFM (``Pf``, little-endian float32, rows bottom to top as the format says),
      depth in metres, 0 = missing;
    * ``sparse_mm.pgm``: 16-bit binary PGM (P5, maxval 65535, big-endian), depth in millimetres
      (rounded; 0 = missing);
    * ``K.txt``: the 3x3 intrinsics in pixels, one row per line.

    Args:
        out_dir (path): output folder (created).
        pattern (str): sparse pattern (``make_sparse``). Defaults to "random1".
        seed (int): its seed. Defaults to 0.
        size (tuple[int, int], optional): fit the frame to (H, W) first. Defaults to None (500x741).

    Returns:
        dict: ``{"files": [...], "size": (H, W), "points": int}``.
    """
    import numpy as np

    from ..inputs import fit_to_size
    from ..io import load_middlebury
    from ..patterns import make_sparse

    from .common import check_out_dir

    out = check_out_dir(out_dir, "--save-inputs")
    frame = load_middlebury()
    rgb, K, gt = frame.rgb, frame.K, frame.depth
    if size is not None:
        rgb, K, gt = fit_to_size(rgb, K, size, gt)
    sparse = make_sparse(pattern, rgb, gt, seed).astype(np.float32)
    h, w = sparse.shape
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "rgb.ppm", out / "sparse.pfm", out / "sparse_mm.pgm", out / "K.txt"]
    files[0].write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb, np.uint8).tobytes())
    files[1].write_bytes(b"Pf\n%d %d\n-1.0\n" % (w, h) + np.ascontiguousarray(sparse[::-1], "<f4").tobytes())
    mm = np.clip(np.rint(sparse.astype(np.float64) * 1000.0), 0, 65535).astype(">u2")
    files[2].write_bytes(b"P5\n%d %d\n65535\n" % (w, h) + mm.tobytes())
    files[3].write_text("".join(" ".join(f"{v:.17g}" for v in row) + "\n" for row in np.asarray(K, np.float64)))
    return {"files": [str(f) for f in files], "size": (h, w), "points": int((sparse > 0).sum())}


def run_demo(pattern: str = "random1", seed: int = 0, out_dir="psdrt_demo") -> dict:
    """Run the demo and write its images into ``out_dir`` (created; default ``./psdrt_demo``).

    Raises:
        InputError: ``out_dir`` is an existing file.

    Returns:
        dict: ``{"rows": {method: metrics}, "files": [...], "seconds": float, "frame": ...}``.
    """
    from ..classical import ip_basic_fill, nearest_fill
    from ..io import load_middlebury
    from ..metrics import depth_metrics
    from ..patterns import make_sparse
    from ..visualize import colorize_depth, error_image, write_png
    from .common import check_out_dir

    out = check_out_dir(out_dir, "--out")  # before the work, not as a FileExistsError after it
    frame = load_middlebury()
    gt = frame.depth
    sparse = make_sparse(pattern, frame.rgb, gt, seed)
    from ..pipeline import Pipeline

    pipe = Pipeline("guided", preset="MIDDLEBURY")  # the kernel library; no torch, no weights
    t0 = time.perf_counter()
    result = pipe(frame.rgb, sparse, frame.K)
    seconds = time.perf_counter() - t0
    preds = {"guided": result.depth, "ip_basic": ip_basic_fill(sparse), "nearest": nearest_fill(sparse)}
    rows = {name: depth_metrics(pred, gt) for name, pred in preds.items()}
    out.mkdir(parents=True, exist_ok=True)
    valid = gt > 0
    vmin, vmax = float(gt[valid].min()), float(gt[valid].max())
    files = []
    for name, img in (
        ("depth_guided.png", colorize_depth(result.depth, vmin, vmax, colorbar=True)),
        ("error_guided.png", error_image(result.depth, gt, colorbar=True)),
        ("depth_gt.png", colorize_depth(gt, vmin, vmax, colorbar=True)),
        ("rgb.png", frame.rgb),
    ):
        write_png(out / name, img)
        files.append(str(out / name))
    return {"rows": rows, "files": files, "seconds": seconds, "frame": frame.name,
            "points": int((sparse > 0).sum()), "pattern": pattern, "seed": seed}


def format_table(rows: dict) -> str:
    cols = [("RMSE mm", "rmse", "{:9.1f}"), ("MAE mm", "mae", "{:8.1f}"), ("REL %", "rel", "{:6.2f}"),
            ("delta1 %", "d1", "{:8.2f}")]
    head = f"{'method':<10}" + "".join(f" {c[0]:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<10}" + "".join(" " + c[2].format(m[c[1]]).rjust(9) for c in cols))
    return "\n".join(lines)


def run(args) -> int:
    from .common import parse_size

    if args.size and not args.save_inputs:
        from ..errors import InputError

        raise InputError("--size applies to --save-inputs DIR (the frame written for the C example); add it, or "
                         "drop --size")
    if args.save_inputs:
        size = parse_size(args.size, "--size", minimum=4) if args.size else None
        res = save_inputs(args.save_inputs, args.pattern, args.seed, size)
        print(f"Middlebury 2014 Motorcycle at {res['size'][0]}x{res['size'][1]}, {args.pattern} sparse depth "
              f"(seed {args.seed}): {res['points']} points")
        print("wrote: " + ", ".join(res["files"]))
        return 0
    res = run_demo(args.pattern, args.seed, args.out)
    print(f"Middlebury 2014 Motorcycle ({res['frame']}), {res['pattern']} sparse depth, "
          f"seed {res['seed']}: {res['points']} points; guided mode took {res['seconds']:.2f} s "
          "(CPU kernel library)")
    print(format_table(res["rows"]))
    print("wrote: " + ", ".join(res["files"]))
    if args.json:
        print(json.dumps(res["rows"], indent=1))
    return 0
