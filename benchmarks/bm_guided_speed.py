"""Speed of the weight-free ``guided`` mode on the CPU: the one-call kernel vs the NumPy path it replaced.

* ``kernel``: ``Pipeline('guided')`` end to end (input validation + ``psd_guided``: colour
  features, nearest fill, coarse-to-fine CSPN, clamp), the library's cached workspace;
* ``numpy``: the pre-kernel ``Pipeline._guided`` (NumPy features ``runtime.guided.guided_features``,
  scipy nearest fill, NumPy pooling, ``kernels.cspn`` and ``kernels.resize`` per level, NumPy
  clamp), kept here as the comparison point.

Frames: the shared KITTI frame 0000000005 at its full 375x1242 (the size
``bm_guided_accuracy`` evaluates), its bottom-centre 256x1216 crop (the KITTI depth-completion
size) and the shared NYU frame 00000 (480x640), 1 % random sparse depth (seed 0); synthetic
frames of the same sizes when the shared data is absent. Latency: p50 / p90 (linear
interpolation) over ``--frames`` timed calls after warm-up; the load average before and after is
recorded because other processes on the machine inflate every number. Writes
``benchmarks/results/guided_speed_cpu.{json,md}``.

    python -m psdrt.benchmarks.bm_guided_speed [--frames 60] [--numpy-frames 8]
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
from psdrt.runtime.classical import nearest_fill
from psdrt.runtime.guided import GuidedParams, guided_features
from psdrt.runtime.io import intrinsics_matrix, list_shared_frames, load_shared_frame
from psdrt.runtime.patterns import make_sparse
from psdrt.runtime.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent / "results"


def numpy_path(kernels, rgb: np.ndarray, sparse: np.ndarray, params: GuidedParams = GuidedParams()) -> np.ndarray:
    """The guided mode as ``Pipeline._guided`` computed it before ``psd_guided`` (for comparison)."""
    h, w = sparse.shape
    feat = guided_features(rgb, params)
    d = nearest_fill(sparse)
    levels = max(1, min(params.levels, int(np.log2(max(min(h, w), 1))) - 1))
    for lev in reversed(range(levels)):
        f = 2**lev
        hl, wl = h // f, w // f
        if f > 1:
            crop = (slice(0, hl * f), slice(0, wl * f))
            s = sparse[crop].reshape(hl, f, wl, f)
            s_l = (s.sum((1, 3)) / ((s > 0).sum((1, 3)) + np.float32(1e-5))).astype(np.float32)
            f_l = feat[:, : hl * f, : wl * f].reshape(-1, hl, f, wl, f).mean((2, 4), dtype=np.float32)
            d0 = d[crop].reshape(hl, f, wl, f).mean((1, 3), dtype=np.float32) if lev == levels - 1 else \
                kernels.resize(d, (hl, wl), mode="bilinear")
        else:
            s_l, f_l = sparse, feat
            d0 = d if levels == 1 else kernels.resize(d, (h, w), mode="bilinear")
        d = kernels.cspn(s_l, np.ascontiguousarray(d0, np.float32), np.ascontiguousarray(f_l), params.iterations)
    vals = sparse[sparse > 0]
    return np.clip(d, vals.min(), vals.max())


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
        out.append((name, rgb, make_sparse("random1", rgb, depth, 0), K))
    return out


def _times(fn, n: int, warmup: int) -> list:
    from psdrt.benchmarks.harness import sample_ms

    return sample_ms(fn, n, warmup)


def _summary(ts: list) -> dict:
    a = np.asarray(ts)
    return {"frames": len(ts), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "mean_ms": float(a.mean())}


def measure(data_dir=None, n_kernel: int = 60, n_numpy: int = 8) -> dict:
    kernels = _capi.load()
    rows = []
    for name, rgb, sparse, K in frames(data_dir):
        pipe = Pipeline("guided", kernels=kernels)
        k = _summary(_times(lambda: pipe(rgb, sparse, K), n_kernel, warmup=5))
        ref = numpy_path(kernels, rgb, sparse)
        depth = pipe(rgb, sparse, K).depth
        npy = _summary(_times(lambda: numpy_path(kernels, rgb, sparse), n_numpy, warmup=1))
        rows.append({"frame": name, "size": list(sparse.shape), "points": int((sparse > 0).sum()),
                     "kernel": k, "numpy": npy, "speedup_p50": npy["p50_ms"] / k["p50_ms"],
                     "max_abs_diff_m": float(np.abs(depth - ref).max())})
    return {"rows": rows, "library": str(kernels.path)}


def _cpu_has_avx2() -> bool:
    """What the kernel library's ISA dispatch will find (x86-64 Linux; False elsewhere)."""
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def to_markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [
        f"Measured {m['date']} on {m['machine']} ({m['threads']} OpenMP threads, AVX2 "
        f"{'available' if m['cpu_avx2'] else 'absent'}), load average "
        f"{m['load_before']} before / {m['load_after']} after (other processes inflate every number). "
        f"`kernel` = `Pipeline('guided')` end to end (validation + one `psd_guided` call); `numpy` = the "
        "pre-kernel `Pipeline._guided` (NumPy features, scipy fill, `kernels.cspn` per level). 1 % random "
        "sparse depth, seed 0, default `GuidedParams` (32 channels, 2 levels, 40 sweeps). p50 / p90 by linear "
        "interpolation; the max difference is between the two paths' outputs (float32 rounding of features "
        "and CSPN).",
        "",
        "| frame | points | kernel p50 / p90 ms | numpy p50 / p90 ms | speed-up (p50) | max diff m |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        k, n = r["kernel"], r["numpy"]
        lines.append(f"| {r['frame']} | {r['points']} | {k['p50_ms']:.1f} / {k['p90_ms']:.1f} ({k['frames']} frames) | "
                     f"{n['p50_ms']:.0f} / {n['p90_ms']:.0f} ({n['frames']} frames) | {r['speedup_p50']:.0f}x | "
                     f"{r['max_abs_diff_m']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="shared KITTI/NYU frames (default: $PSD_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--frames", type=int, default=60, help="timed kernel frames per size (default 60)")
    ap.add_argument("--numpy-frames", type=int, default=8, help="timed NumPy-path frames per size (default 8)")
    args = ap.parse_args(argv)
    data = Path(args.data) if args.data else config.shared_data_dir()
    load_before = os.getloadavg()
    doc = measure(data if data and Path(data).is_dir() else None, args.frames, args.numpy_frames)
    doc["meta"] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        "load_before": f"{load_before[0]:.2f}", "load_after": f"{os.getloadavg()[0]:.2f}",
        "cpu_avx2": _cpu_has_avx2(),
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
