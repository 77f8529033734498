"""Per-frame alignment + dual-space propagation: CPU kernel library vs the PyTorch reference.

Reported, not asserted. NYU size (228x304, 1 % random sparse) and KITTI size (256x1216, ~5 %
LiDAR-like density from the shared KITTI frame, synthetic if absent). Writes
benchmarks/results/propagation_cpu.{json,md}. Peak memory: the library's workspace (its only
memory besides inputs/outputs) and the process peak RSS growth of the reference call.

    python -m psdrt.benchmarks.bm_propagation [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from pathlib import Path

import numpy as np

from psdrt.runtime import _capi
from psdrt.runtime.presets import PRESETS

RESULTS = Path(__file__).resolve().parent / "results"


def _frame(name: str, rng):
    if name == "NYU":
        h, w, n = 228, 304, 693
        s = np.zeros((h, w), np.float32)
        s.flat[rng.choice(h * w, n, replace=False)] = rng.uniform(0.5, 10, n)
        K = np.array([[259.43, 0, 154.79], [0, 259.73, 120.87], [0, 0, 1]], np.float32)
        feat = rng.standard_normal((256, 28, 37)).astype(np.float32)
        rel_size = (392, 518)
    else:
        h, w = 256, 1216
        shared = Path(os.environ.get("PSD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
        png = shared / "kitti" / "0000000005_depth.png"
        if png.is_file():
            from PIL import Image

            gt = np.asarray(Image.open(png)).astype(np.float32)[-256:, 13:13 + 1216] / 256
            s = np.where((gt > 0) & (rng.random(gt.shape) < 0.25), gt, 0).astype(np.float32)
        else:
            s = np.where(rng.random((h, w)) < 0.05, rng.uniform(5, 80, (h, w)), 0).astype(np.float32)
        K = np.array([[707.05, 0, 591.08], [0, 707.05, 61.51], [0, 0, 1]], np.float32)
        feat = rng.standard_normal((256, 28, 133)).astype(np.float32)
        rel_size = (392, 1862)
    rel = rng.uniform(0.05, 1.0, rel_size).astype(np.float32)
    return rel, s, feat, K


def _time(fn, repeats):
    from psdrt.benchmarks.harness import sample_ms

    ts = sample_ms(fn, repeats)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 90))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--ref-repeats", type=int, default=3)
    a = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    import torch

    from psdrt.export.reference import propagation as R

    torch.set_num_threads(os.cpu_count() or 1)
    lib = _capi.load("cpu")
    rng = np.random.default_rng(0)
    rows = []
    for name, preset in (("NYU", PRESETS["NYUv2"]), ("KITTI", PRESETS["KITTI"])):
        rel, s, feat, K = _frame(name, rng)
        h, w = s.shape
        kw = _capi.preset_kwargs(preset)
        p50, p90 = _time(lambda: lib.propagate(rel, s, feat, K, **kw), a.repeats)
        desc = _capi.FrameDesc(__import__("ctypes").sizeof(_capi.FrameDesc), 0, h, w, *rel.shape, *feat.shape)
        ws = lib.propagate_workspace_size(desc, lib._params(**kw), False)
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x))

        def ref():
            with torch.no_grad():
                r = R.resize_bicubic(t(rel)[None, None], (h, w))
                dp = R.align_inverse_ls(r, t(s)[None, None])
                return R.dual_propagation(t(feat)[None], dp, dp, t(s)[None, None], t(K)[None], preset)

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r50, r90 = _time(ref, a.ref_repeats)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows.append(dict(size=name, h=h, w=w, sparse_fraction=float((s > 0).mean()), lib_ms_p50=p50,
                         lib_ms_p90=p90, ref_ms_p50=r50, ref_ms_p90=r90, speedup=r50 / p50,
                         lib_workspace_mb=ws / 2**20, ref_peak_rss_growth_mb=(rss1 - rss0) / 1024))
    info = dict(machine=platform.machine(), cpu_count=os.cpu_count(), torch=torch.__version__,
                threads=torch.get_num_threads(), library=str(lib.path), note="CPU only; no GPU numbers")
    from psdrt.benchmarks.harness import provenance, provenance_line

    prov = provenance(load_before, "bm_propagation")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "propagation_cpu.json").write_text(json.dumps(dict(provenance=prov, info=info, rows=rows), indent=2))
    md = ["| size | sparse | library p50 / p90 ms | reference p50 ms | speed-up | library workspace MB | reference peak RSS growth MB |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['size']} {r['h']}x{r['w']} | {100 * r['sparse_fraction']:.1f} % | {r['lib_ms_p50']:.1f} / {r['lib_ms_p90']:.1f} | "
                  f"{r['ref_ms_p50']:.0f} | {r['speedup']:.0f}x | {r['lib_workspace_mb']:.1f} | {r['ref_peak_rss_growth_mb']:.0f} |")
    text = (f"{provenance_line(prov)}\n\nPropagation per frame (alignment + 3D-2D dual-space propagation), "
            f"{info}\n\n" + "\n".join(md) + "\n")
    (RESULTS / "propagation_cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
