"""Accuracy of the weight-free ``guided`` mode vs the classical baselines on real frames.

Runs the FP32 reference of the ``guided`` mode, IP-Basic and nearest-neighbour fill on the
Middlebury Motorcycle frame (always available) and on the shared KITTI/NYU frames (when present),
at random 1 % and 0.1 % sparse depth (seed 0), and writes per-frame and mean metrics (official
definitions, mm) to ``benchmarks/results/guided_accuracy.{json,md}``. The shipped path,
``Pipeline('guided')`` (one ``psd_guided`` kernel call), runs on the same inputs: each guided row
records its largest difference from the reference (``kernel_max_abs_mm``) and the kernel's own
RMSE, so the table holds for what users run.

Usage: python -m psdrt.benchmarks.bm_guided_accuracy [--data DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np

from psdrt.export.reference.pipeline import ReferencePipeline
from psdrt.runtime import config
from psdrt.runtime.classical import ip_basic_fill, nearest_fill
from psdrt.runtime.io import list_shared_frames, load_middlebury, load_shared_frame
from psdrt.runtime.metrics import depth_metrics, eval_mask, mean_metrics
from psdrt.runtime.patterns import make_sparse
from psdrt.runtime.pipeline import Pipeline

METHODS = ("guided", "ip_basic", "nearest")
PATTERNS = ("random1", "random0.1")


def frames(data_dir):
    yield load_middlebury()
    if data_dir is not None:
        for dataset, frame_id in list_shared_frames(data_dir):
            yield load_shared_frame(data_dir, dataset, frame_id)


def evaluate(data_dir=None, seed=0):
    rows = []
    for frame in frames(data_dir):
        pipe = ReferencePipeline("guided", preset=frame.dataset)
        kernel = Pipeline("guided", preset=frame.dataset)
        mask = eval_mask(frame.dataset, frame.depth)
        for pattern in PATTERNS:
            sparse = make_sparse(pattern, frame.rgb, frame.depth, seed)
            t0 = time.perf_counter()
            guided = pipe(frame.rgb, sparse, frame.K).depth
            secs = time.perf_counter() - t0
            fast = kernel(frame.rgb, sparse, frame.K).depth
            preds = {"guided": guided, "ip_basic": ip_basic_fill(sparse), "nearest": nearest_fill(sparse)}
            for method, pred in preds.items():
                m = depth_metrics(pred, frame.depth, mask)
                extra = {}
                if method == "guided":
                    extra = {"kernel_max_abs_mm": float(np.abs(fast - guided).max() * 1000.0),
                             "kernel_rmse": depth_metrics(fast, frame.depth, mask)["rmse"]}
                rows.append({"dataset": frame.dataset, "frame": frame.name, "pattern": pattern,
                             "points": int((sparse > 0).sum()), "method": method,
                             "seconds": secs if method == "guided" else None, **m, **extra})
    return rows


def summarise(rows):
    out = []
    keys = sorted({(r["dataset"], r["pattern"]) for r in rows})
    for dataset, pattern in keys:
        for method in METHODS:
            sel = [r for r in rows if (r["dataset"], r["pattern"], r["method"]) == (dataset, pattern, method)]
            m = mean_metrics([{k: r[k] for k in ("rmse", "mae", "rel", "d1")} for r in sel])
            out.append({"dataset": dataset, "pattern": pattern, "method": method, "frames": len(sel), **m})
    return out


def to_markdown(summary, meta):
    lines = [
        f"Measured {meta['date']} on {meta['machine']} (CPU, FP32 PyTorch reference), seed {meta['seed']}; "
        "mean over frames of per-frame metrics (official definitions).",
        "",
        "| dataset | pattern | frames | method | RMSE mm | MAE mm | REL % | delta1 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['dataset']} | {r['pattern']} | {r['frames']} | {r['method']} | {r['rmse']:.1f} | "
                     f"{r['mae']:.1f} | {r['rel']:.2f} | {r['d1']:.2f} |")
    if meta.get("kernel_max_abs_mm") is not None:
        lines += ["", f"`Pipeline('guided')` (the `psd_guided` kernel) on the same inputs: largest difference from "
                  f"the reference {meta['kernel_max_abs_mm']:.3f} mm over all frames; largest RMSE difference "
                  f"{meta['kernel_rmse_diff_mm']:.4f} mm."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="shared KITTI/NYU frames (default: $PSD_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = Path(args.data) if args.data else config.shared_data_dir()
    load_before = __import__("os").getloadavg()[0]
    rows = evaluate(data if data and Path(data).is_dir() else None, args.seed)
    summary = summarise(rows)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
            f"{__import__('os').cpu_count()} cores", "seed": args.seed}
    guided_rows = [r for r in rows if r["method"] == "guided"]
    meta["kernel_max_abs_mm"] = max(r["kernel_max_abs_mm"] for r in guided_rows)
    meta["kernel_rmse_diff_mm"] = max(abs(r["kernel_rmse"] - r["rmse"]) for r in guided_rows)
    from psdrt.benchmarks.harness import provenance, provenance_line

    prov = provenance(load_before, "bm_guided_accuracy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guided_accuracy.json").write_text(json.dumps({"provenance": prov, "meta": meta, "summary": summary,
                                                          "rows": rows}, indent=1))
    md = provenance_line(prov) + "\n\n" + to_markdown(summary, meta)
    (out / "guided_accuracy.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
