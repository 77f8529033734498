"""ONNX Runtime CPU latency and fidelity of the encoder (ViT-S, 392x518) and head (228x304): FP32 vs INT8.

Reported, not asserted. One run on one machine, all variants timed interleaved (round-robin), so
load from other processes hits every variant alike. Variants:

* ``fp32``: the ORT-prepared FP32 graph (the same fusions as the INT8 ones, no Q/DQ);
* ``int8 ort``: ``psdrt.calibration`` default for ORT CPU: Conv, Gemm and weight MatMuls in INT8
  (U8S8, per-channel weights), attention MatMuls/Softmax in FP32;
* ``int8 all-ops``: ``quantize_static`` with every op type it can quantize (incl. Softmax and
  attention MatMuls, U8S8) on the same ranges: shows why the default op set is narrower;
* ``int8 modelopt``: NVIDIA Model Optimizer's TensorRT placement (FP32 high precision so that it
  runs on ORT CPU), when ``modelopt`` imports.

Random weights (no DA-V2/PSD weights are stored on this machine): latency does not depend on the
values, fidelity is only indicative. Calibration: 8 generated Middlebury views; fidelity: the
shared KITTI/NYU frames (Middlebury if absent), i.e. held-out frames. Writes
``benchmarks/results/onnx_precision_cpu.{json,md}``.

    python -m psdrt.benchmarks.bm_onnx_precision [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
H, W = 228, 304
HM = (392, 518)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(sessions: dict, feeds: dict, repeats: int) -> dict:
    """Round-robin timing of ``sess.run`` (inputs already on the host; ORT CPU is synchronous)."""
    for s in sessions.values():
        s.run(None, feeds)  # warm-up
    times = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t)
    return {k: {"p50_ms": 1e3 * float(np.median(v)), "p90_ms": 1e3 * float(np.percentile(v, 90)),
                "runs": len(v)} for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/psdrt_bm_onnx_precision")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end pipeline fidelity")
    ap.add_argument("--sensitivity-only", action="store_true",
                    help="add the per-group sensitivity report to an existing results JSON (reuses --work)")
    args = ap.parse_args(argv)
    if args.sensitivity_only:
        return add_sensitivity(Path(args.work), args.threads)

    import onnxruntime as ort
    import torch

    from psdrt.calibration import calibrate as C
    from psdrt.calibration import sources as S
    from psdrt.calibration import writers
    from psdrt.export.models.psd import PSDModel
    from psdrt.export.models.random_weights import randomize_head_
    from psdrt.export.onnx_export import encoder_feat_sizes, export_encoder, export_head
    from psdrt.export.reference.pipeline import ReferencePipeline
    from psdrt.runtime.config import shared_data_dir

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = randomize_head_(PSDModel("vits"), 0)
    enc = work / "encoder.onnx"
    head = work / "head.onnx"
    if not enc.is_file():
        export_encoder(model.foundation, enc, size=HM)
    if not head.is_file():
        export_head(model, head, size=(H, W), feat_sizes=encoder_feat_sizes(HM))
    pipe = ReferencePipeline("psd", model=model, preset="NYUv2")

    cal = S.GeneratedSource(num=8, size=(H, W))
    shared = shared_data_dir()
    real_src = S.SharedFramesSource(shared, size=(H, W)) if shared is not None and shared.is_dir() else \
        S.GeneratedSource(num=2, size=(H, W), seed=7)
    real = list(real_src)
    results = {"device": _cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
               "onnxruntime": ort.__version__, "torch": torch.__version__, "weights": "random (seed 0)",
               "calibration": "8 generated Middlebury views, minmax", "eval_frames": [f.name for f in real],
               "load_avg_start": os.getloadavg(), "models": {}}
    mo_ok, mo_why = writers.modelopt_available()
    if not mo_ok:
        results["modelopt"] = f"not run: {mo_why}"

    for kind, path, feeds_of, size_txt in (
        ("encoder", enc, lambda frames: S.EncoderFeeds(frames, size=HM), f"{HM[0]}x{HM[1]}"),
        ("head", head, lambda frames: S.HeadFeeds(frames, pipe), f"{H}x{W}"),
    ):
        out = work / kind
        cal_feeds = list(feeds_of(cal))
        eval_feeds = list(feeds_of(real))
        t0 = time.perf_counter()
        res = C.calibrate(path, cal_feeds, out, formats=("ort", "trt-cache"), eval_feeds=eval_feeds,
                          threads=args.threads, progress=True)
        t_cal = time.perf_counter() - t0
        variants = {"fp32": res.fp32, "int8 ort": res.int8_ort}
        allops = out / f"{kind}.int8.allops.onnx"
        # every op type ORT can quantize needs every activation's range: ORT's own MinMax calibration
        try:
            _quantize_all_ops(res.fp32, allops, cal_feeds[:4])
            variants["int8 all-ops"] = allops
        except Exception as exc:  # reported, not fatal: ORT's quantizer fails on some graphs
            results.setdefault("notes", []).append(f"{kind} int8 all-ops not built: {type(exc).__name__}: {exc}")
        fid = {"int8 ort": res.fidelity["ort_int8"]}
        if mo_ok:
            mo = out / f"{kind}.int8.modelopt_fp32.onnx"
            writers.write_qdq_modelopt(path, mo, cal_feeds[:4], calibration_method="max", high_precision_dtype="fp32")
            variants["int8 modelopt"] = mo
        for k in ("int8 all-ops", "int8 modelopt"):
            if k in variants:
                fid[k] = C.fidelity(res.fp32, variants[k], eval_feeds, threads=args.threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sessions = {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in variants.items()}
        lat = _time(sessions, eval_feeds[0], args.repeats)
        base = lat["fp32"]["p50_ms"]
        for k in lat:
            lat[k]["speedup_p50"] = base / lat[k]["p50_ms"]
            lat[k]["size_mb"] = Path(variants[k]).stat().st_size / 2**20
        results["models"][kind] = {"size": size_txt, "latency": lat, "fidelity": fid, "calibrate_s": t_cal}

    if not args.no_e2e:
        e2e = C.pipeline_fidelity(pipe, real, encoder=results_path(work, "encoder"),
                                  head=results_path(work, "head"), threads=args.threads, progress=True)
        enc_only = C.pipeline_fidelity(pipe, real, encoder=results_path(work, "encoder"), threads=args.threads)
        results["end_to_end"] = {"INT8 encoder + INT8 head": e2e, "INT8 encoder, FP32 head": enc_only}
    results["load_avg_end"] = os.getloadavg()
    from psdrt.benchmarks.harness import provenance

    results["provenance"] = provenance(results["load_avg_start"][0], "bm_onnx_precision")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx_precision_cpu.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "onnx_precision_cpu.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def _quantize_all_ops(prepared: Path, out: Path, feeds) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def add_sensitivity(work: Path, threads: int) -> int:
    """Per-group sensitivity (one ViT block / head module quantized at a time) and the mixed model."""
    from psdrt.calibration import calibrate as C
    from psdrt.calibration.collectors import TensorRanges

    path = RESULTS / "onnx_precision_cpu.json"
    results = json.loads(path.read_text())
    results["sensitivity"] = {}
    for kind in ("encoder", "head"):
        out = work / kind
        ranges = TensorRanges.from_dict(json.loads((out / f"{kind}.ranges.json").read_text()))
        res = C.CalibrationResult(fp32=out / f"{kind}.fp32.onnx", ranges=ranges)
        rep = C.apply_sensitivity(res, out, kind, max_feeds=2, progress=True, threads=threads)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        paths = {"fp32": res.fp32, "int8 ort": out / f"{kind}.int8.ort.onnx", "int8 mixed": Path(rep["applied"]["model"])}
        sessions = {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in paths.items()}
        feeds = C._eval_feeds(out, kind, 1)[0]
        rep["applied"]["latency"] = _time(sessions, feeds, 10)
        results["sensitivity"][kind] = rep
    path.write_text(json.dumps(results, indent=1))
    (RESULTS / "onnx_precision_cpu.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def results_path(work: Path, kind: str) -> Path:
    return work / kind / f"{kind}.int8.ort.onnx"


def markdown(r: dict) -> str:
    from psdrt.calibration.calibrate import pipeline_fidelity_markdown

    from psdrt.benchmarks.harness import provenance_line

    lines = [
        "# ONNX Runtime CPU: FP32 vs INT8 (encoder ViT-S 392x518, head 228x304)",
        "",
        provenance_line(r["provenance"]) if r.get("provenance") else "Provenance: not recorded (an older run).",
        "",
        f"Device: {r['device']}, {r['cores']} cores (shared with other jobs; load average "
        f"{r['load_avg_start'][0]:.1f} at start, {r['load_avg_end'][0]:.1f} at end), ORT {r['onnxruntime']}, "
        f"{r['threads']} intra-op threads. Weights: {r['weights']}. Timed: `session.run` only, batch 1, "
        "inputs on the host, all variants round-robin in one process.",
        "",
        "| model | variant | p50 ms | p90 ms | speed-up (p50) | file MB |",
        "|---|---|---|---|---|---|",
    ]
    for kind, m in r["models"].items():
        for k, v in m["latency"].items():
            lines.append(f"| {kind} {m['size']} | {k} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} | "
                         f"{v['speedup_p50']:.2f}x | {v['size_mb']:.0f} |")
    lines += ["", f"Fidelity of each output vs FP32 on {len(r['eval_frames'])} held-out frames "
              f"({', '.join(r['eval_frames'])}); calibration: {r['calibration']}.", ""]
    for kind, m in r["models"].items():
        lines.append("| model | variant | output | max abs | mean abs | rel. RMSE | RMSE (m) | AbsRel | δ1 |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for var, rep in m["fidelity"].items():
            for name, e in rep["outputs"].items():
                extra = (f"{e['rmse']:.4g} | {e['absrel']:.4g} | {e['delta1']:.4f}" if "rmse" in e else " | | ")
                lines.append(f"| {kind} | {var} | {name} | {e['max_abs']:.4g} | {e['mean_abs']:.4g} | "
                             f"{e['rel_rmse']:.4g} | {extra} |")
        lines.append("")
    if "end_to_end" in r:
        lines += ["End-to-end depth (FP32 reference pipeline with the ONNX parts swapped in; propagation and "
                  "post-processing FP32), vs the FP32 pipeline's depth and vs ground truth:", "",
                  pipeline_fidelity_markdown(r["end_to_end"])]
    for kind, rep in r.get("sensitivity", {}).items():
        from psdrt.calibration.calibrate import sensitivity_markdown

        lines += [f"Sensitivity, {kind} (each group quantized alone, all else FP32; mean rel. RMSE over the "
                  "outputs on 2 held-out frames; worst 10):", "", sensitivity_markdown(rep, rep.get("applied"))]
        lat = rep.get("applied", {}).get("latency")
        if lat:
            lines += ["Latency p50 of the same run (ms): " + ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in lat.items()), ""]
    for note in r.get("notes", []):
        lines += [f"Note: {note}", ""]
    if "modelopt" in r:
        lines += [f"modelopt: {r['modelopt']}", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
