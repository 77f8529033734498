"""Per-frame cost of the C session (psd_session_run) against the Python Pipeline: same artefacts,
same frame, same ONNX Runtime (the wheel's libonnxruntime, default threads), same kernels.

Reported, not asserted. The two paths are run alternately (C, Python, C, ...) so that load from
other processes on the machine hits both alike. Per path: wall time of the call from Python
(``time.perf_counter``), the network stages (encoder + head, as each path times them) and the
rest (wall - networks: preprocessing, propagation, post-processing, validation, glue); for the C
path also the library's own total (``timings_ms['total']``, what a C caller sees, without
ctypes). Guided mode (no network) is measured the same way. Writes
benchmarks/results/capi_overhead_cpu.{json,md}.

    python -m psdrt.benchmarks.bm_capi_overhead [--artifacts DIR] [--repeats 30]

Without ``--artifacts`` a random-weight ViT-S PSD checkpoint is built at 228x304 (NYU size,
encoder 392x518) into a temporary folder (needs torch; about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (228, 304)


def _artifacts(tmp: Path) -> Path:
    import torch

    from psdrt import build as B
    from psdrt.export.checkpoints import save_official_psd
    from psdrt.export.models.psd import PSDModel
    from psdrt.export.models.random_weights import randomize_head_

    torch.manual_seed(0)
    ckpt = tmp / "psd_vits.ckpt"
    save_official_psd(randomize_head_(PSDModel("vits"), 0), ckpt)
    out = tmp / "deploy"
    B.build_artifacts(ckpt, out, size=SIZE, precisions=("fp32",), golden_shared=False, kernels=False)
    return out


def _frame(size):
    from psdrt.export.gate import fit_frame
    from psdrt.runtime.config import shared_data_dir
    from psdrt.runtime.io import load_middlebury, load_shared_frame
    from psdrt.runtime.patterns import make_sparse

    root = shared_data_dir()
    if root is not None and (Path(root) / "nyu" / "00000_rgb.jpg").is_file():
        frame, name = load_shared_frame(root, "NYUv2", "00000"), "NYUv2 00000"
    else:
        frame, name = load_middlebury(), "Middlebury Motorcycle"
    rgb, gt, K = fit_frame(frame, size)
    return rgb, make_sparse("random1", rgb, gt, 0), K, name


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)), "min": float(v.min())}


def _measure(engines: dict, frame, repeats: int, nets=("encoder", "head")) -> dict:
    rgb, sparse, K = frame
    for fn in engines.values():  # warm-up: first-run allocations, ORT arenas, OpenMP pools
        for _ in range(3):
            fn(rgb, sparse, K)
    rec = {name: {"wall": [], "net": [], "lib_total": [], "stages": []} for name in engines}
    outs = {}
    for _ in range(repeats):
        for name, fn in engines.items():
            t0 = time.perf_counter()
            r = fn(rgb, sparse, K)
            wall = (time.perf_counter() - t0) * 1e3
            tm = r.info["timings_ms"]
            rec[name]["wall"].append(wall)
            rec[name]["net"].append(sum(tm.get(k, 0.0) for k in nets))
            rec[name]["stages"].append(tm)
            if "total" in tm:
                rec[name]["lib_total"].append(tm["total"])
            outs[name] = r.depth
    res = {}
    for name, r in rec.items():
        rest = np.asarray(r["wall"]) - np.asarray(r["net"])
        res[name] = {"wall_ms": _stats(r["wall"]), "networks_ms": _stats(r["net"]), "rest_ms": _stats(rest),
                     "stages_p50_ms": {k: float(np.median([t[k] for t in r["stages"]])) for k in r["stages"][0]}}
        if r["lib_total"]:
            res[name]["library_total_ms"] = _stats(r["lib_total"])
    a, b = list(outs.values())
    res["max_abs_diff_m"] = float(np.abs(a - b).max())
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=None, help="a psdrt build directory (default: build one at 228x304)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads of both paths (default: its own choice); set "
                         "OMP_NUM_THREADS for the kernels")
    a = ap.parse_args(argv)
    if a.repeats < 30:
        ap.error("--repeats must be >= 30 (p50 over at least 30 runs)")
    load_before = os.getloadavg()[0]

    from psdrt.runtime.pipeline import Pipeline
    from psdrt.runtime.session import CSession

    tmp = None
    if a.artifacts:
        art = Path(a.artifacts)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bm_capi_")
        art = _artifacts(Path(tmp.name))
    m = json.loads((art / "manifest.json").read_text())
    size = tuple(m["size"])
    rgb, sparse, K, frame_name = _frame(size)
    c = CSession.from_artifacts(art, threads=a.threads)
    py = Pipeline.from_artifacts(art, threads=a.threads, engine="python")
    psd = _measure({"c": c, "python": py}, (rgb, sparse, K), a.repeats)
    cg, pg = CSession.guided(), Pipeline("guided")
    guided = _measure({"c": cg, "python": pg}, (rgb, sparse, K), a.repeats, nets=())
    import onnxruntime

    info = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "size": list(size),
            "fm_size": m.get("fm_size"), "frame": frame_name, "points": int((sparse > 0).sum()),
            "repeats": a.repeats, "onnxruntime": onnxruntime.__version__, "c_backend": c.backend,
            "ort_threads": a.threads or "default", "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "model": "random-weight ViT-S PSD (psdrt build, FP32); latency does not depend on the weights",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "note": "CPU only; 2-core shared machine with other jobs running: compare the two paths, "
                    "not absolute numbers"}
    from psdrt.benchmarks.harness import provenance, provenance_line

    doc = {"provenance": provenance(load_before, "bm_capi_overhead"), "info": info, "psd": psd, "guided": guided}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "capi_overhead_cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [provenance_line(doc["provenance"]), "", f"C session (psd_session_run via ctypes) vs Python Pipeline, {size[0]}x{size[1]} "
          f"({info['frame']}, {info['points']} sparse points), p50 over {a.repeats} alternating runs, ms "
          f"(p90 in brackets); ONNX Runtime threads {info['ort_threads']}, OMP_NUM_THREADS "
          f"{info['omp_num_threads']}. {info['note']}.", "",
          "| mode | path | wall (call from Python) | networks | rest (wall - networks) | in-library total |",
          "|---|---|---|---|---|---|"]
    for mode, res in (("psd", psd), ("guided", guided)):
        for path in ("c", "python"):
            r = res[path]
            lib = r.get("library_total_ms")
            md.append(f"| {mode} | {'C session' if path == 'c' else 'Python Pipeline'} | "
                      f"{r['wall_ms']['p50']:.1f} ({r['wall_ms']['p90']:.1f}) | {r['networks_ms']['p50']:.1f} | "
                      f"{r['rest_ms']['p50']:.2f} ({r['rest_ms']['p90']:.2f}) | "
                      f"{'-' if lib is None else format(lib['p50'], '.1f')} |")
    for mode, res in (("psd", psd), ("guided", guided)):
        for path in ("c", "python"):
            st = ", ".join(f"{k} {v:.1f}" for k, v in res[path]["stages_p50_ms"].items())
            md.append(f"\n{mode}, {'C session' if path == 'c' else 'Python Pipeline'}, stage p50 ms: {st}")
    md += ["", f"Largest output difference C vs Python: psd {psd['max_abs_diff_m']:.2e} m, guided "
               f"{guided['max_abs_diff_m']:.2e} m. C backend: {info['c_backend']}. {info['model']}. {info['date']}."]
    text = "\n".join(md) + "\n"
    (out / "capi_overhead_cpu.md").write_text(text)
    print(text)
    if tmp is not None:
        tmp.cleanup()
    return doc


if __name__ == "__main__":
    main()
