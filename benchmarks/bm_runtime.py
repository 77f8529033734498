"""The deployment runtime on the CPU, side by side with the PyTorch reference, in one run.

Reported, not asserted. Same inputs and the same random ViT-S weights for every variant: a random
official-format PSD checkpoint (``save_official_psd`` of ``randomize_head_(PSDModel("vits"), 0)``),
built into a deployable directory at NYU size (228x304; encoder 392x518) in FP32, FP16 and INT8 by
``build.build_artifacts``. Latency does not depend on the weight values; the gate results of the
random weights are reported, and artefacts that fail it are timed anyway (clearly marked; a real
deployment would refuse them).

Measured (``psdrt.benchmarks.harness``; networks through ``OrtBackend``, CPU provider):

(a) issue 5 target: ``propagate`` and ``psd`` modes at NYU size: the share of frame time outside
    the two network inferences (preprocess + propagation + post + glue; target <= 10 %);
(b) end to end, runtime (ORT FP32 / FP16 / INT8) vs ``ReferencePipeline`` (PyTorch FP32), per stage
    and total, as ratios; the NYU-size variants take turns in one loop (``measure_interleaved``,
    5 frames per turn after an untimed one), so that load from other processes hits all alike;
    a diagnostic times the propagation kernel call inside each pipeline (wall and thread CPU
    time), also with ORT sessions whose threads do not spin-wait (``allow_spinning = 0``);
(c) the parameter-free propagation alone (alignment + dual-space propagation, kernel library) vs
    the reference implementation of the same step (the inputs of ``bm_propagation``);
(d) ``Pipeline('guided')`` at KITTI size (256x1216) vs ``ReferencePipeline('guided')``, plus guided
    at NYU size and at the Middlebury frame's 500x741 for latency vs resolution; optionally the
    ``psd`` FP32 pipeline at KITTI size (a second, FP32-only build).

Writes ``benchmarks/results/runtime_cpu.{json,md}`` and PNGs in ``benchmarks/results/plots/``.

    python -m psdrt.benchmarks.bm_runtime [--iters 20] [--ref-iters 5] [--threads 2] [--no-kitti-networks]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from psdrt.benchmarks import harness as H

RESULTS = Path(__file__).resolve().parent / "results"
PLOTS = RESULTS / "plots"
NYU = (228, 304)
KITTI = (256, 1216)
STEM = "runtime_cpu"


def _say(msg: str) -> None:
    print(f"[bm_runtime] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# inputs


def nyu_frame(seed: int = 0):
    """NYU frame 00000 (shared data) fitted to 228x304 with 1 % random sparse; Middlebury if absent."""
    from psdrt.runtime.config import shared_data_dir
    from psdrt.runtime.inputs import fit_to_size
    from psdrt.runtime.io import load_middlebury, load_shared_frame
    from psdrt.runtime.patterns import make_sparse

    shared = shared_data_dir()
    try:
        fr, name = load_shared_frame(shared, "nyu", "00000"), "NYUv2 00000"
    except Exception:
        fr, name = load_middlebury(), "Middlebury motorcycle"
    rgb, K, gt = fit_to_size(fr.rgb, fr.K, NYU, fr.depth)
    return (rgb, np.ascontiguousarray(make_sparse("random1", rgb, gt, seed), np.float32), K), \
        f"{name} fitted to 228x304, random 1 % sparse (seed {seed})"


def kitti_frame(seed: int = 0):
    """KITTI 0000000005 bottom crop 256x1216 with 25 % of the semi-dense ground truth as sparse input
    (about 5 %, LiDAR-like density, as in ``bm_propagation``); Middlebury fitted, 5 % random, if absent."""
    from psdrt.runtime.config import shared_data_dir
    from psdrt.runtime.inputs import fit_to_size
    from psdrt.runtime.io import load_middlebury, load_shared_frame

    rng = np.random.default_rng(seed)
    try:
        fr = load_shared_frame(shared_data_dir(), "kitti", "0000000005")
        h, w = fr.depth.shape
        y0, x0 = h - KITTI[0], (w - KITTI[1]) // 2
        rgb = np.ascontiguousarray(fr.rgb[y0:, x0:x0 + KITTI[1]])
        gt = fr.depth[y0:, x0:x0 + KITTI[1]]
        K = np.array(fr.K, np.float64)
        K[0, 2] -= x0
        K[1, 2] -= y0
        keep, name = 0.25, "KITTI 0000000005 bottom crop 256x1216, 25 % of the semi-dense GT"
    except Exception:
        fr = load_middlebury()
        rgb, K, gt = fit_to_size(fr.rgb, fr.K, KITTI, fr.depth)
        keep, name = 0.05, "Middlebury motorcycle fitted to 256x1216, 5 % random"
    sparse = np.where((gt > 0) & (rng.random(gt.shape) < keep), gt, 0).astype(np.float32)
    return (rgb, sparse, K), f"{name} (seed {seed}, {100 * (sparse > 0).mean():.1f} % valid)"


def middlebury_frame(seed: int = 0):
    from psdrt.runtime.cli.bench_cmd import bench_frame

    return bench_frame(None, "random1", seed), f"Middlebury motorcycle 500x741, random 1 % (seed {seed})"


# ------------------------------------------------------------------------------------------------
# models


def checkpoint(work: Path) -> Path:
    """The random official-format ViT-S PSD checkpoint (seed 0), written once."""
    path = work / "psd_vits_random.ckpt"
    if not path.is_file():
        import torch

        from psdrt.export.checkpoints import save_official_psd
        from psdrt.export.models.psd import PSDModel
        from psdrt.export.models.random_weights import randomize_head_

        torch.manual_seed(0)
        work.mkdir(parents=True, exist_ok=True)
        save_official_psd(randomize_head_(PSDModel("vits"), 0), path)
    return path


def build(ckpt: Path, out: Path, size, precisions) -> dict:
    """``build.build_artifacts`` (incremental: a second run reuses the files); the manifest."""
    from psdrt import build as B

    t0 = time.perf_counter()
    res = B.build_artifacts(ckpt, out, size=size, precisions=precisions, kernels=False)
    _say(f"build {size[0]}x{size[1]} {','.join(precisions)}: {time.perf_counter() - t0:.0f} s")
    return res.manifest


class _NoSpinOrt:
    """Diagnostic backend: an ONNX Runtime CPU session whose intra-op threads do not spin-wait
    after a run (``session.intra_op.allow_spinning = 0``); otherwise like ``OrtBackend``."""

    def __init__(self, path, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.s.get_outputs()]

    def run(self, feeds, stream=None):
        return dict(zip(self.names, self.s.run(None, dict(feeds))))


def _gates(manifest: dict) -> dict:
    return {a["name"]: {"passed": bool((a.get("gate") or {}).get("passed")),
                        "max_rel": (a.get("gate") or {}).get("max_rel"),
                        "why": ((a.get("gate") or {}).get("why") or "")[:160]}
            for a in manifest.get("artifacts", [])}


# ------------------------------------------------------------------------------------------------
# measurement


def _pipe_case(pipe, frame, name, params, **kw):
    rgb, sparse, K = frame
    return {"name": name, "fn": lambda: pipe(rgb, sparse, K), "stage_timings": H.pipeline_stages,
            "params": params, **kw}


def _ref_case(ref, frame, name, params, sink, **kw):
    rgb, sparse, K = frame

    def call():
        sink.clear()
        ref(rgb, sparse, K)
        return dict(sink)

    return {"name": name, "fn": call, "stage_timings": (lambda s: s) if ref.mode != "guided" else None,
            "params": params, **kw}


def _dedupe(targets):
    seen, out = set(), []
    for t in targets:
        key = (id(t[0]), t[1])
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _kernel_alone(pipe, frame) -> dict:
    """The pipeline's propagation kernel call alone (p50 of 20 after 3 untimed), on its encoder's
    outputs for ``frame``, with no network run in between: wall and thread CPU time."""
    from psdrt.runtime import _capi
    from psdrt.runtime.inputs import validate_frame
    from psdrt.runtime.preprocess import fm_input_size, preprocess_rgb

    rgb, sparse, K = frame
    fr = validate_frame(rgb, sparse, K)
    enc = pipe.encoder.run({"rgb": preprocess_rgb(fr.rgb, size=fm_input_size(*fr.sparse.shape, lower=pipe.fm_lower))})
    rel, feat = np.ascontiguousarray(enc["rel_inv"][0, 0]), np.ascontiguousarray(enc["feat0"][0])
    kw = _capi.preset_kwargs(pipe.preset)
    wall, cpu = [], []
    for i in range(23):
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        pipe.kernels.propagate(rel, fr.sparse, feat, fr.K, seed=pipe.seed, **kw)
        if i >= 3:
            wall.append((time.perf_counter_ns() - t) / 1e6)
            cpu.append((time.thread_time_ns() - c) / 1e6)
    return {"stage_ms": None, "call_wall_ms": H.percentile(wall, 50), "call_cpu_ms": H.percentile(cpu, 50)}


def propagation_in_context(pipes: dict, frame, iters: int) -> dict:
    """Where the propagation stage's time goes inside each pipeline: per frame, the stage's wall
    time (``timings_ms``), the kernel call's wall time and the calling thread's CPU time during
    the call (``time.thread_time_ns``), and the kernel call alone on the same encoder outputs.
    Each pipeline runs ``iters`` frames back to back (after 2 untimed), in two alternating passes."""
    rgb, sparse, K = frame
    before = _kernel_alone(next(iter(pipes.values())), frame)
    res = {name: {"stage_ms": [], "call_wall_ms": [], "call_cpu_ms": []} for name in pipes}
    for _pass in range(2):
        for name, pipe in pipes.items():
            lib = pipe.kernels
            wall, cpu = {}, {}
            with H.timed_calls([(lib, "propagate", "k")], wall), \
                    H.timed_calls([(lib, "propagate", "k")], cpu, clock=time.thread_time_ns):
                for i in range(2 + iters // 2):
                    wall.clear()
                    cpu.clear()
                    r = pipe(rgb, sparse, K)
                    if i >= 2:
                        res[name]["stage_ms"].append(r.info["timings_ms"]["propagation"])
                        res[name]["call_wall_ms"].append(wall["k"])
                        res[name]["call_cpu_ms"].append(cpu["k"])
    out = {name: {k: H.summarize(v)["p50_ms"] for k, v in d.items()} for name, d in res.items()}
    out["kernel call alone (same inputs, no network run in between)"] = before
    return out


def issue5_shares(runs) -> list:
    """Share of the mean frame time outside the network inferences (encoder + head), per run."""
    rows = []
    for r in runs:
        st = r["stages"]
        if "encoder" not in st:
            continue
        total = r["total"]["mean_ms"]
        nets = st["encoder"]["mean_ms"] + st.get("head", {}).get("mean_ms", 0.0)
        outside = {k: v["mean_ms"] for k, v in st.items() if k not in ("encoder", "head")}
        rows.append({"run": r["name"], "mode": r["params"].get("mode"), "total_mean_ms": total,
                     "networks_mean_ms": nets, "outside_mean_ms": total - nets,
                     "share_outside": (total - nets) / total, "outside_ms": outside,
                     "meets_target": (total - nets) / total <= 0.10})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20, help="timed frames per runtime variant (default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ref-iters", type=int, default=5, help="timed frames of the PyTorch reference (default 5)")
    ap.add_argument("--block", type=int, default=5,
                    help="frames per turn when variants take turns (after 1 untimed frame; default 5)")
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op and PyTorch threads (default 2)")
    ap.add_argument("--work", default="/tmp/psdrt_bm_runtime", help="checkpoint and built artefacts (reused)")
    ap.add_argument("--no-kitti-networks", action="store_true",
                    help="skip the FP32 psd pipeline at KITTI size (a second build, ~2 min)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    import torch

    from psdrt.export.reference.pipeline import ReferencePipeline
    from psdrt.export.reference import propagation as R
    from psdrt.runtime import _capi
    from psdrt.runtime.backends.ort import OrtBackend
    from psdrt.runtime.pipeline import Pipeline
    from psdrt.runtime.presets import PRESETS

    torch.set_num_threads(args.threads)
    env = H.capture_environment()
    work = Path(args.work)
    ckpt = checkpoint(work)
    nyu_dir = work / "deploy_nyu"
    manifest = build(ckpt, nyu_dir, NYU, ("fp32", "fp16", "int8"))
    gates = {"228x304": _gates(manifest)}
    runs, comparisons, notes = [], [], []
    frames = {}
    frames["nyu"], nyu_desc = nyu_frame()
    frames["kitti"], kitti_desc = kitti_frame()
    frames["mb"], mb_desc = middlebury_frame()

    # (a) + (b): every NYU-size variant round-robin, the references included (fewer samples)
    from psdrt.export.checkpoints import load_model

    model, _ = load_model(ckpt)
    refs = {m: ReferencePipeline(m, model=model, preset="NYUv2") for m in ("psd", "propagate")}
    cases, sink = [], {}
    targets = []
    for m, ref in refs.items():
        targets += H.reference_stage_targets(ref)
        cases.append(_ref_case(ref, frames["nyu"], f"reference {m}", {
            "mode": m, "backend": "torch-reference", "precision": "fp32", "size": list(NYU), "group": m,
            "series": f"{m} reference"}, sink, iters=min(args.ref_iters, args.iters), warmup=1))
    pipes = {}
    for prec in ("fp32", "fp16", "int8"):
        enc = OrtBackend(nyu_dir / f"encoder.{prec}.onnx", providers=["cpu"], threads=args.threads)
        head = OrtBackend(nyu_dir / f"head.{prec}.onnx", providers=["cpu"], threads=args.threads)
        for m in ("psd", "propagate"):
            pipe = Pipeline(m, enc, head if m == "psd" else None, preset="NYUv2")
            pipes[(m, prec)] = pipe
            cases.append(_pipe_case(pipe, frames["nyu"], f"{m} ort {prec}", {
                "mode": m, "backend": "ort-cpu", "precision": prec, "size": list(NYU), "group": m,
                "series": f"{m} ort-cpu {prec}"}))
    _say(f"NYU size: {len(cases)} variants taking turns, {args.iters} timed frames each ({args.block} per turn)")
    with H.timed_calls(_dedupe(targets), sink):
        nyu_runs = [m.to_dict() for m in H.measure_interleaved(cases, args.warmup, args.iters, block=args.block,
                                                                progress=True)]
    runs += nyu_runs
    by = {r["name"]: r for r in nyu_runs}
    for m in ("psd", "propagate"):
        for prec in ("fp32", "fp16", "int8"):
            comparisons.append(H.ratios(by[f"{m} ort {prec}"], by[f"reference {m}"]))
    shares = issue5_shares([r for r in nyu_runs])
    _say("propagation in context: the kernel call's wall and thread CPU time inside each pipeline")
    nospin = Pipeline("psd", _NoSpinOrt(nyu_dir / "encoder.fp32.onnx", args.threads),
                      _NoSpinOrt(nyu_dir / "head.fp32.onnx", args.threads), preset="NYUv2")
    context = propagation_in_context({
        "psd ort fp32": pipes[("psd", "fp32")], "propagate ort fp32": pipes[("propagate", "fp32")],
        "psd ort int8": pipes[("psd", "int8")], "psd ort fp32, ORT no-spin": nospin}, frames["nyu"],
        max(4, args.iters // 2))

    # (c) propagation alone: kernel library vs the reference step (bm_propagation's inputs)
    from psdrt.benchmarks.bm_propagation import _frame as prop_frame

    lib = _capi.load("cpu")
    rng = np.random.default_rng(0)
    prop_cases = []
    for name, preset in (("NYU", PRESETS["NYUv2"]), ("KITTI", PRESETS["KITTI"])):
        rel, s, feat, K = prop_frame(name, rng)
        h, w = s.shape
        kw = _capi.preset_kwargs(preset)
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731

        def ref(rel=rel, s=s, feat=feat, K=K, h=h, w=w, preset=preset):
            with torch.no_grad():
                r = R.resize_bicubic(t(rel)[None, None], (h, w))
                dp = R.align_inverse_ls(r, t(s)[None, None])
                return R.dual_propagation(t(feat)[None], dp, dp, t(s)[None, None], t(K)[None], preset)

        params = {"mode": "propagation", "size": [h, w], "group": f"propagation {name}"}
        prop_cases.append({"name": f"propagation kernels {name}", "fn": lambda rel=rel, s=s, feat=feat, K=K, kw=kw:
                           lib.propagate(rel, s, feat, K, **kw),
                           "params": {**params, "backend": "kernels-cpu", "series": "propagation kernels"}})
        prop_cases.append({"name": f"propagation reference {name}", "fn": ref, "warmup": 1,
                           "iters": min(args.ref_iters if name == "NYU" else 3, args.iters),
                           "params": {**params, "backend": "torch-reference", "series": "propagation reference"}})
    _say("propagation alone: kernel library vs reference")
    prop_runs = [m.to_dict() for m in H.measure_interleaved(prop_cases, args.warmup, args.iters, block=args.block,
                                                            progress=True)]
    runs += prop_runs
    for i in range(0, len(prop_runs), 2):
        comparisons.append(H.ratios(prop_runs[i], prop_runs[i + 1]))

    # (d) guided: KITTI size vs the reference; NYU and Middlebury sizes for latency vs resolution
    g_cases = []
    for key, preset, desc in (("nyu", "NYUv2", "228x304"), ("kitti", "KITTI", "256x1216"),
                              ("mb", "MIDDLEBURY", "500x741")):
        rgb, s, K = frames[key]
        pipe = Pipeline("guided", preset=preset)
        size = list(s.shape)
        g_cases.append(_pipe_case(pipe, frames[key], f"guided kernels {desc}", {
            "mode": "guided", "backend": "kernels-cpu", "precision": "fp32", "size": size, "group": "guided",
            "series": "guided kernels-cpu"}))
        if key == "kitti":
            ref = ReferencePipeline("guided", preset=preset)
            g_cases.append(_ref_case(ref, frames[key], f"guided reference {desc}", {
                "mode": "guided", "backend": "torch-reference", "precision": "fp32", "size": size, "group": "guided",
                "series": "guided reference"}, {}, iters=min(args.ref_iters, args.iters), warmup=1))
    _say("guided: NYU, KITTI, Middlebury sizes")
    g_runs = [m.to_dict() for m in H.measure_interleaved(g_cases, args.warmup, args.iters, block=args.block,
                                                         progress=True)]
    runs += g_runs
    gb = {r["name"]: r for r in g_runs}
    comparisons.append(H.ratios(gb["guided kernels 256x1216"], gb["guided reference 256x1216"]))

    # psd FP32 at KITTI size (latency vs resolution of the full pipeline)
    if not args.no_kitti_networks:
        kdir = work / "deploy_kitti"
        km = build(ckpt, kdir, KITTI, ("fp32",))
        gates["256x1216"] = _gates(km)
        enc = OrtBackend(kdir / "encoder.fp32.onnx", providers=["cpu"], threads=args.threads)
        head = OrtBackend(kdir / "head.fp32.onnx", providers=["cpu"], threads=args.threads)
        kc = [_pipe_case(Pipeline("psd", enc, head, preset="KITTI"), frames["kitti"], "psd ort fp32 256x1216", {
            "mode": "psd", "backend": "ort-cpu", "precision": "fp32", "size": list(KITTI), "group": "psd KITTI",
            "series": "psd ort-cpu fp32"})]
        _say("psd FP32 at KITTI size")
        runs += [m.to_dict() for m in H.measure_interleaved(kc, min(args.warmup, 2), max(1, args.iters // 2),
                                                            progress=True)]
        del enc, head

    failed = sorted(n for g in gates.values() for n, v in g.items() if not v["passed"])
    notes += [
        f"NYU-size inputs: {nyu_desc}; KITTI-size: {kitti_desc}; Middlebury: {mb_desc}.",
        "Weights: random ViT-S PSD checkpoint (official format, seed 0); latency does not depend on the values. "
        "Networks: ONNX Runtime CPU provider, "
        f"{args.threads} intra-op threads; PyTorch reference: {args.threads} threads, FP32.",
        f"Variants of one group take turns in one process: {args.block} timed frames per turn after 1 untimed "
        "frame (the reference gets fewer samples, spread over the turns), so machine load hits all of them alike "
        "and threads left spinning by the previous variant are not timed; RSS figures are per group.",
    ]
    if failed:
        notes.append("Correctness gate with the random weights: " + ", ".join(failed) + " FAILED (a deployment "
                     "refuses them; timed here for latency only).")
    klib = Path(_capi.load().path)
    from psdrt.runtime.manifest import sha256_file

    extra = {"kernel_library": {"file": klib.name, "sha256": sha256_file(klib),
                                "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(klib.stat().st_mtime))},
             "issue5": shares, "propagation_in_context": context, "gates": gates,
             "frames": {"nyu": nyu_desc, "kitti": kitti_desc, "mb": mb_desc},
             "threads": args.threads, "iters": args.iters, "ref_iters": args.ref_iters,
             "wall_s": None}
    doc = H.new_results(runs, env, title="Runtime vs PyTorch reference on the CPU", comparisons=comparisons,
                        notes=notes, extra=extra)
    doc["extra"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    doc["extra"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    write(doc, out)
    print(markdown(doc))
    return 0


# ------------------------------------------------------------------------------------------------
# output


def write(doc: dict, out: Path) -> None:
    from psdrt.benchmarks import plots as P

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{STEM}.json").write_text(json.dumps(doc, indent=1, default=H._json_default) + "\n")
    (out / f"{STEM}.md").write_text(markdown(doc))
    plots = out / "plots"
    runs = doc["runs"]
    nyu = [r for r in runs if r["params"].get("size") == list(NYU) and r["params"].get("mode") in ("psd", "propagate")]
    P.plot_stage_breakdown(nyu, plots / f"{STEM}_stages_nyu.png",
                           title="psd / propagate at 228x304, per stage (mean ms)")
    res = [r for r in runs if r["params"].get("series") in ("guided kernels-cpu", "psd ort-cpu fp32")]
    P.plot_latency_vs_resolution(res, plots / f"{STEM}_resolution.png", title="Latency vs resolution (CPU)")
    prec = [r for r in nyu if r["params"].get("backend") == "ort-cpu"]
    P.plot_precision_comparison(prec, plots / f"{STEM}_precision.png",
                                title="ORT CPU precision at 228x304 (p50; speed-up over FP32)")


def _f(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _pct(x) -> str:
    return f"{100 * x:.1f} %"


def markdown(doc: dict) -> str:
    """The result file's markdown: the harness tables plus the issue-5 share and the gate status."""
    ex = doc.get("extra", {})
    lines = [H.render_markdown(doc).rstrip("\n"), ""]
    shares = ex.get("issue5") or []
    if shares:
        lines += ["## Issue 5 target: frame time outside the network inferences (228x304, target <= 10 %)", "",
                  "| run | frame mean ms | networks ms | outside ms | share outside | outside: largest parts (ms) |",
                  "|---|---|---|---|---|---|"]
        for s in shares:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(s["outside_ms"].items(), key=lambda kv: -kv[1])[:3])
            lines.append(f"| {s['run']} | {s['total_mean_ms']:.1f} | {s['networks_mean_ms']:.1f} | "
                         f"{s['outside_mean_ms']:.1f} | {_pct(s['share_outside'])}"
                         f"{'' if s['meets_target'] else ' (over)'} | {parts} |")
        lines.append("")
    ctx = ex.get("propagation_in_context") or {}
    if ctx:
        lines += ["Propagation stage inside each pipeline (p50 ms; frames back to back): the stage's wall time, the "
                  "kernel call's wall time and the calling thread's CPU time during that call:", "",
                  "| pipeline | stage wall | kernel call wall | kernel call thread CPU |", "|---|---|---|---|"]
        for name, v in ctx.items():
            lines.append(f"| {name} | {_f(v.get('stage_ms'))} | {_f(v.get('call_wall_ms'))} | "
                         f"{_f(v.get('call_cpu_ms'))} |")
        lines.append("")
    gates = ex.get("gates") or {}
    if gates:
        lines += ["Correctness gate of the built artefacts (random weights):", ""]
        for size, g in gates.items():
            status = (f"{n} {'passed' if v['passed'] else 'FAILED'}" for n, v in g.items())
            lines.append(f"- {size}: " + ", ".join(status))
        lines.append("")
    kl = ex.get("kernel_library")
    if kl:
        lines += [f"Kernel library: `{kl['file']}` (SHA-256 {kl['sha256'][:12]}..., built {kl['mtime']}).", ""]
    if ex.get("wall_s") is not None:
        load = ex.get("load_avg_end") or ["?"]
        lines += [f"Script wall time: {ex['wall_s']:.0f} s; load average {load[0]} at the end (2 cores shared with "
                  "other jobs).", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
