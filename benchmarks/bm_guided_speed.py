"""Speed of the weight-free ``guided`` mode on the CPU: the DT method (the default) and the CSPN
method side by side, in one run, on the same frames.

Both rows are ``Pipeline('guided')`` end to end (input validation + one ``psd_guided`` call,
the library's cached workspace), with ``GuidedParams()`` (DT, input kind detected per frame) and
``GuidedParams(method='cspn')``.

Frames: the shared KITTI frame 0000000005 at its full 375x1242 and its bottom-centre 256x1216
crop (the KITTI depth-completion size), and the shared NYU frame 00000 (480x640), 1 % random
sparse depth (seed 0, scattered input); and, when ``../shared/data/lidar`` is there, the real
Velodyne scan of kittiraw_a projected at 375x1242 (scan input: the detector, the parallax filter
and the scan bandwidth run too). Synthetic frames of the KITTI/NYU sizes when the shared data is
absent. Latency: p50 / p90 (linear interpolation) over ``--frames`` timed calls after warm-up;
the load average before and after is recorded because other processes inflate every number.
Writes ``benchmarks/results/guided_speed_cpu.{json,md}``.

    python -m psdrt.benchmarks.bm_guided_speed [--frames 60]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np

from psdrt.runtime import _capi, config
from psdrt.runtime.guided import GuidedParams, input_kind
from psdrt.runtime.io import intrinsics_matrix, list_shared_frames, load_shared_frame
from psdrt.runtime.patterns import make_sparse
from psdrt.runtime.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent / "results"


def frames(data_dir):
    """(name, rgb, sparse, K) of the benchmarked sizes."""
    shared = data_dir is not None and any(ds == "KITTI" for ds, _ in list_shared_frames(data_dir))
    out = []
    if shared:
        kitti = load_shared_frame(data_dir, "KITTI", "0000000005")
        nyu = load_shared_frame(data_dir, "NYUv2", "00000")
        h, w = kitti.rgb.shape[:2]
        x0 = (w - 1216) // 2
        crop = (slice(h - 256, h), slice(x0, x0 + 1216))
        K = kitti.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= h - 256
        items = [("KITTI 375x1242", kitti.rgb, kitti.depth, kitti.K),
                 ("KITTI 256x1216", kitti.rgb[crop], kitti.depth[crop], K),
                 ("NYU 480x640", nyu.rgb, nyu.depth, nyu.K)]
    else:
        rng = np.random.default_rng(0)
        items = []
        for name, (h, w) in (("KITTI 375x1242 (synthetic)", (375, 1242)), ("KITTI 256x1216 (synthetic)", (256, 1216)),
                             ("NYU 480x640 (synthetic)", (480, 640))):
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            depth = rng.uniform(1.0, 20.0, (h, w)).astype(np.float32)
            items.append((name, rgb, depth, intrinsics_matrix(500.0, 500.0, w / 2, h / 2)))
    for name, rgb, depth, K in items:
        rgb, depth = np.ascontiguousarray(rgb), np.ascontiguousarray(depth)
        out.append((name + ", random 1 %", rgb, make_sparse("random1", rgb, depth, 0), K))
    lidar = Path(data_dir) / "lidar" if data_dir is not None else None
    if lidar is not None and (lidar / "kittiraw_a_velodyne.bin").is_file():
        from psdrt.runtime.io import read_rgb
        from psdrt.runtime.points import project_points, read_kitti_calib, read_points

        rgb = read_rgb(lidar / "kittiraw_a_rgb.png")
        calib = read_kitti_calib(lidar / "kittiraw_a_calib.txt")
        sparse = project_points(read_points(lidar / "kittiraw_a_velodyne.bin"), calib.K, rgb.shape[:2], T=calib.T)
        h, w = sparse.shape
        out.append((f"KITTI raw {h}x{w}, Velodyne scan", rgb, sparse, calib.K))
    return out


def _times(fn, n: int, warmup: int) -> list:
    from psdrt.benchmarks.harness import sample_ms

    return sample_ms(fn, n, warmup)


def _summary(ts: list) -> dict:
    a = np.asarray(ts)
    return {"frames": len(ts), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "mean_ms": float(a.mean())}


METHODS = {"dt": GuidedParams(), "cspn": GuidedParams(method="cspn")}


def measure(data_dir=None, n: int = 60) -> dict:
    kernels = _capi.load()
    rows = []
    for name, rgb, sparse, K in frames(data_dir):
        row = {"frame": name, "size": list(sparse.shape), "points": int((sparse > 0).sum()),
               "kind": input_kind(sparse)}
        for method, params in METHODS.items():
            pipe = Pipeline("guided", kernels=kernels, guided=params)
            row[method] = _summary(_times(lambda: pipe(rgb, sparse, K), n, warmup=5))
        row["dt_over_cspn_p50"] = row["dt"]["p50_ms"] / row["cspn"]["p50_ms"]
        rows.append(row)
    return {"rows": rows, "library": str(kernels.path)}


def to_markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [
        f"Measured {m['date']} on {m['machine']} ({m['threads']} OpenMP threads, CPU kernels' vector ISA "
        f"{m.get('cpu_isa', 'unknown')}), load average "
        f"{m['load_before']} before / {m['load_after']} after (other processes inflate every number). "
        "Both columns are `Pipeline('guided')` end to end (validation + one `psd_guided` call) in the same run: "
        "`dt` = `GuidedParams()` (the default; input kind detected per frame), `cspn` = "
        "`GuidedParams(method='cspn')`. p50 / p90 by linear interpolation.",
        "",
        "| frame | points | kind | dt p50 / p90 ms | cspn p50 / p90 ms | dt / cspn (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        d, c = r["dt"], r["cspn"]
        lines.append(f"| {r['frame']} | {r['points']} | {r['kind']} | {d['p50_ms']:.1f} / {d['p90_ms']:.1f} "
                     f"({d['frames']} frames) | {c['p50_ms']:.1f} / {c['p90_ms']:.1f} | {r['dt_over_cspn_p50']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="shared KITTI/NYU frames (default: $PSD_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--frames", type=int, default=60, help="timed frames per size and method (default 60)")
    args = ap.parse_args(argv)
    data = Path(args.data) if args.data else config.shared_data_dir()
    load_before = os.getloadavg()
    doc = measure(data if data and Path(data).is_dir() else None, args.frames)
    doc["meta"] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        "load_before": f"{load_before[0]:.2f}", "load_after": f"{os.getloadavg()[0]:.2f}",
        "cpu_isa": _capi.load().cpu_isa,
    }
    from psdrt.benchmarks.harness import provenance, provenance_line

    doc["provenance"] = provenance(load_before[0], "bm_guided_speed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guided_speed_cpu.json").write_text(json.dumps(doc, indent=1))
    md = provenance_line(doc["provenance"]) + "\n\n" + to_markdown(doc)
    (out / "guided_speed_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
