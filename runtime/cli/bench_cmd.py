"""``psdrt bench``: latency of the deployment pipeline, per stage, per precision and per resolution.

What is measured (one of):

* nothing given: the weight-free ``guided`` mode on the Middlebury demo frame (runs from a fresh
  install with no weights);
* ``--artifacts DIR``: a deployable directory from ``psdrt build``, one run per ``--precision``
  (ONNX Runtime; ``--backend`` picks the execution provider);
* ``--checkpoint CKPT`` (without ``--artifacts``): the PyTorch reference backends (needs torch).

Every run times ``Pipeline.__call__`` end to end (``psdrt.benchmarks.harness.measure``) on the
Middlebury frame fitted to each ``--size`` with a random 1 % sparse pattern, and reads the per-stage
timings the pipeline reports. ``--frames device`` (``--artifacts``, ``--engine c --backend cuda``)
times the C session's ``enqueue`` on device copies of the frame instead, stages from its CUDA
events, and ``--cuda-graph`` replays a captured CUDA graph of the frame. ``--compare-reference`` adds the FP32 PyTorch ``ReferencePipeline``
on the same inputs, split into the same stages, and prints speed-up ratios. The table goes to
stdout, progress to stderr; ``--out DIR`` writes ``bench.json`` (schema ``psdrt-bench`` v1),
``bench.md`` and PNG plots.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import ArtifactError, InputError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "cuda", "tensorrt", "torch")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency (per stage, per precision, per resolution); guided mode needs no weights",
        description="Times the pipeline end to end and per stage (p50/p90/p99, mean, min, std, fps, peak "
        "RSS) on the Middlebury frame fitted to each --size. With nothing given it benchmarks the "
        "weight-free guided mode.",
    )
    src = p.add_argument_group("what to measure (default: guided mode, no weights)")
    src.add_argument("--artifacts", metavar="DIR", help="deployable directory written by `psdrt build`")
    src.add_argument("--precision", default="fp32",
                     help="comma list of fp32, fp16, int8 to measure from --artifacts (default: fp32)")
    src.add_argument("--checkpoint", metavar="CKPT",
                     help="PSD/Depth Anything V2 checkpoint: PyTorch reference backends (needs torch); with "
                     "--artifacts, the checkpoint the directory was built from (for --compare-reference)")
    src.add_argument("--mode", choices=("guided", "propagate", "psd"), default=None,
                     help="default: guided without weights, the manifest's mode with --artifacts, psd (or "
                     "propagate for Depth Anything V2) with --checkpoint")
    src.add_argument("--preset", default=None, help="propagation preset (default: the manifest's, else NYUv2)")
    m = p.add_argument_group("measurement")
    m.add_argument("--size", default=None,
                   help="comma list of HxW working sizes, e.g. 228x304,256x1216 (default: the artefacts' "
                   "size; 228x304 with --checkpoint; the Middlebury frame's 500x741 for guided)")
    m.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    m.add_argument("--iters", type=int, default=20, help="timed calls per run (default: 20)")
    m.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of ONNX Runtime and PyTorch (default: the libraries' own)")
    m.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="network backend: ONNX Runtime on cpu/cuda (the C session: --engine c, the default), or "
                   "the provider cpu/cuda/tensorrt with --engine python (auto: the CPU session / the best provider) for "
                   "--artifacts; torch with --checkpoint (default: auto)")
    from .run_cmd import add_engine_flag

    add_engine_flag(m)
    m.add_argument("--frames", choices=("host", "device"), default="host",
                   help="host: time session(rgb, sparse, K) with NumPy frames (copies to and from the GPU "
                   "included on --backend cuda); device: upload the frame to the GPU once and time "
                   "CSession.enqueue on device buffers plus the wait for its work, stages from the "
                   "session's CUDA events (needs --artifacts, --engine c, --backend cuda; default: host)")
    m.add_argument("--cuda-graph", action="store_true",
                   help="with --frames device: capture the frame into a CUDA graph and replay it (warm-up "
                        "runs the capture; the stage split of a replayed graph is not measured, only its total)")
    m.add_argument("--compare-reference", action="store_true",
                   help="also time the FP32 PyTorch reference on the same inputs and report speed-ups (needs torch)")
    m.add_argument("--latency-only", action="store_true",
                   help="with --artifacts: also time artefacts that FAILED the correctness gate (e.g. an INT8 "
                   "head with random weights); their runs are marked NOT GATE-APPROVED and must not be deployed")
    m.add_argument("--pattern", default="random1", help="sparse pattern of the frame (default: random1, 1 %%)")
    m.add_argument("--seed", type=int, default=0, help="seed of the sparse pattern (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="write bench.json, bench.md and PNG plots into this folder")
    o.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    o.add_argument("--json", action="store_true", help="print the result JSON instead of the tables")
    p.set_defaults(func=run)


def parse_sizes(text: Optional[str]) -> List[Tuple[int, int]]:
    """``"228x304,256x1216"`` -> ``[(228, 304), (256, 1216)]``.

    Raises:
        InputError: a malformed entry or a side < 16 pixels.
    """
    sizes = []
    for part in (text or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            h, w = (int(v) for v in part.split("x"))
        except ValueError:
            raise InputError(f"--size {part!r}: write HxW, e.g. 228x304 (comma-separate several)") from None
        if h < 16 or w < 16:
            raise InputError(f"--size {part}: each side must be at least 16 pixels")
        sizes.append((h, w))
    return sizes


def parse_precisions(text: str) -> List[str]:
    from ..manifest import PRECISIONS, precision_parts

    precs = [p.strip().lower() for p in (text or "").split(",") if p.strip()]
    if not precs:
        raise InputError(f"--precision {text!r}: use a comma list of {', '.join(PRECISIONS)} (or ENC+HEAD such "
                         "as int8+fp32)")
    for p in precs:
        precision_parts(p)  # InputError naming the spellings
    return precs


def bench_frame(size: Optional[Tuple[int, int]], pattern: str = "random1", seed: int = 0):
    """The Middlebury demo frame fitted to ``size`` (None: native 500x741) with a sparse pattern.

    Returns:
        tuple: ``(rgb uint8 HxWx3, sparse float32 HxW, K float64 3x3)``.
    """
    import numpy as np

    from ..inputs import fit_to_size
    from ..io import load_middlebury
    from ..patterns import make_sparse

    frame = load_middlebury()
    rgb, K, gt = frame.rgb, frame.K, frame.depth
    if size is not None:
        rgb, K, gt = fit_to_size(rgb, K, size, gt)
    return rgb, np.ascontiguousarray(make_sparse(pattern, rgb, gt, seed), dtype=np.float32), K


def _providers(backend: str):
    return None if backend == "auto" else [backend]


def _read_manifest(directory) -> dict:
    from ..errors import ArtifactError

    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{directory} has no manifest.json; build one with `psdrt build --checkpoint CKPT "
                            f"--out {directory}`")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}); rebuild it with `psdrt build ... --force`") from None


def _with_mode(pipe, mode: Optional[str]):
    """``pipe`` as ``mode`` (``propagate`` from a ``psd`` directory drops the head)."""
    from ..pipeline import Pipeline

    if mode is None or mode == pipe.mode:
        return pipe
    if mode == "propagate" and pipe.encoder is not None:
        out = Pipeline("propagate", pipe.encoder, None, preset=pipe.preset, fm_lower=pipe.fm_lower, seed=pipe.seed)
        out.working_size = pipe.working_size
        return out
    raise InputError(f"--mode {mode} is not available from these weights (they give mode {pipe.mode!r}); "
                     f"drop --mode or use --mode propagate")


def _set_threads(threads: Optional[int], torch_needed: bool) -> None:
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: pass a positive thread count")
    if threads and torch_needed:
        import torch

        torch.set_num_threads(int(threads))


def plan(args) -> dict:
    """What to measure: ``{"targets": [(name, params, factory)], "sizes": [...], "reference": factory|None}``.

    ``factory(size)`` returns the pipeline to time at that size. Raises InputError for contradictory flags.
    """
    from ..pipeline import Pipeline

    if args.warmup < 0 or args.iters < 1:
        raise InputError("--warmup must be >= 0 and --iters >= 1")
    frames = getattr(args, "frames", "host")
    graph = bool(getattr(args, "cuda_graph", False))
    if graph and frames != "device":
        raise InputError("--cuda-graph captures device frames: add --frames device (host frames are copied in "
                         "and out around the graph-free pipeline)")
    if frames == "device" and not (args.engine == "c" and args.backend == "cuda"):
        raise InputError("--frames device times the C session's enqueue on GPU buffers: pass --engine c "
                         "--backend cuda (with --artifacts DIR, or nothing for the guided mode)")
    if graph and args.warmup < 2:
        raise InputError("--cuda-graph needs --warmup 2 or more: the first frame warms up, the second is captured")
    sizes = parse_sizes(args.size)
    targets = []
    reference = None
    torch_needed = bool(args.compare_reference or (args.checkpoint and not args.artifacts))
    _set_threads(args.threads, torch_needed)
    if args.artifacts:
        if args.backend == "torch":
            raise InputError("--backend torch measures a checkpoint: pass --checkpoint CKPT without --artifacts")
        m = _read_manifest(args.artifacts)
        built = tuple(m.get("size") or ())
        if not sizes:
            sizes = [built]
        wrong = [s for s in sizes if tuple(s) != built]
        if wrong:
            raise InputError(f"{args.artifacts} was built for {built[0]}x{built[1]}; to measure "
                             f"{wrong[0][0]}x{wrong[0][1]} build another directory with `psdrt build --size "
                             f"{wrong[0][0]}x{wrong[0][1]}` (or drop --size)")
        mode = args.mode or m.get("model", {}).get("mode")
        preset = args.preset or m.get("preset", "NYUv2")
        if args.engine == "c":
            if args.backend not in ("auto", "cpu", "cuda"):
                raise InputError(f"--backend {args.backend} with --engine c: the C session runs ONNX Runtime on "
                                 "--backend cpu or cuda; use --engine python for the other providers")
            engine_kw = {"device": "cuda" if args.backend == "cuda" else "cpu"}
            backend = "c-session-" + engine_kw["device"]
            if graph:
                engine_kw["cuda_graph"] = True
        else:
            engine_kw = {"providers": _providers(args.backend)}
            backend = "ort-" + (args.backend if args.backend != "auto" else "auto")
        for prec in parse_precisions(args.precision):
            def factory(size, prec=prec):
                return Pipeline.from_artifacts(args.artifacts, precision=prec, engine=args.engine, mode=mode,
                                               threads=args.threads, preset=preset, latency_only=args.latency_only,
                                               **engine_kw)

            targets.append((prec, {"mode": mode, "backend": backend, "engine": args.engine, "precision": prec,
                                   "preset": preset, "frames": frames, "cuda_graph": graph}, factory))
        if args.compare_reference:
            if not args.checkpoint:
                raise InputError("--compare-reference with --artifacts needs --checkpoint CKPT, the checkpoint "
                                 f"{args.artifacts} was built from (the reference runs its FP32 PyTorch model)")
            want = (m.get("model") or {}).get("checkpoint_sha256")
            from ..manifest import sha256_file

            if want and sha256_file(args.checkpoint) != want:
                raise InputError(f"--checkpoint {args.checkpoint} is not the checkpoint {args.artifacts} was built "
                                 f"from (SHA-256 differs from the manifest's); pass that checkpoint")
            reference = _reference_factory(args.checkpoint, mode, preset)
    elif args.checkpoint:
        if args.backend not in ("auto", "torch"):
            raise InputError(f"--backend {args.backend} needs ONNX artefacts: build them with `psdrt build "
                             f"--checkpoint {args.checkpoint}` and pass --artifacts DIR")
        sizes = sizes or [(228, 304)]
        preset = args.preset or "NYUv2"
        base = Pipeline.from_checkpoint(args.checkpoint, preset=preset)
        pipe = _with_mode(base, args.mode) if args.mode != "guided" else Pipeline("guided", preset=preset)
        targets.append(("torch", {"mode": pipe.mode, "backend": "torch", "precision": "fp32", "preset": preset},
                        lambda size: pipe))
        if args.compare_reference:
            reference = _reference_factory(args.checkpoint, pipe.mode, preset)
    else:
        if args.mode not in (None, "guided"):
            raise InputError(f"--mode {args.mode} needs weights: pass --artifacts DIR (from `psdrt build`) or "
                             "--checkpoint CKPT; or use the default guided mode, which needs none")
        sizes = sizes or [None]
        preset = args.preset or "MIDDLEBURY"
        if args.engine == "c" and args.backend == "cuda":  # the C session's guided mode on the GPU
            from ..session import CSession

            sess = CSession.guided(preset=preset, device="cuda", cuda_graph=graph)
            targets.append(("guided", {"mode": "guided", "backend": "c-session-cuda", "engine": "c",
                                       "precision": "fp32", "preset": preset, "frames": frames, "cuda_graph": graph},
                            lambda size: sess))
        else:
            if args.backend not in ("auto", "cpu"):
                log.warning("guided mode runs on the CPU kernel library; ignoring --backend %s", args.backend)
            pipe = Pipeline("guided", preset=preset)
            targets.append(("guided", {"mode": "guided", "backend": "kernels-cpu", "precision": "fp32",
                                       "preset": preset}, lambda size: pipe))
        if args.compare_reference:
            reference = _reference_factory(None, "guided", preset)
    return {"targets": targets, "sizes": sizes, "reference": reference}


def _reference_factory(checkpoint, mode, preset):
    def factory(size):
        try:
            from psdrt.export.reference.pipeline import ReferencePipeline
        except ImportError as exc:
            from ..errors import BackendUnavailable

            raise BackendUnavailable(f"--compare-reference needs torch ({exc}); install it: pip install "
                                     "'psdrt[torch]'") from None
        if checkpoint is None:
            return ReferencePipeline("guided", preset=preset)
        return ReferencePipeline.from_checkpoint(checkpoint, mode=mode, preset=preset)

    cache = {}

    def cached(size):
        if "ref" not in cache:
            cache["ref"] = factory(size)
        return cache["ref"]

    return cached


def measure_pipeline(pipe, frame, name: str, params: dict, warmup: int, iters: int, progress=True):
    """Time a deployment ``Pipeline`` on one frame (its own stage timings)."""
    from psdrt.benchmarks.harness import measure, pipeline_stages

    rgb, sparse, K = frame
    clock = "cpu"
    for b in (getattr(pipe, "encoder", None), getattr(pipe, "head", None)):
        provs = getattr(b, "providers", None) if b is not None else None
        if (provs and provs[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")) or \
                type(b).__name__ == "TrtBackend":
            clock = "cuda"  # GPU networks: CUDA events (legacy default stream) bracket the call
    return measure(lambda: pipe(rgb, sparse, K), warmup, iters, stage_timings=pipeline_stages, name=name,
                   params=params, clock=clock, progress=progress)


def measure_device_frames(sess, frame, name: str, params: dict, warmup: int, iters: int, progress=True):
    """Time ``CSession.enqueue`` on device copies of one frame: each call enqueues the frame (into
    a device output buffer, on the calling thread's default stream) and reads the session's stage
    times, which waits for that frame's work; stages come from the session's CUDA events."""
    import numpy as np

    from psdrt.benchmarks.harness import measure

    from .._cuda import DeviceArray, runtime_for
    from ..session import _kernel_library

    rgb, sparse, K = frame
    rt, wait = runtime_for(sess._path), _kernel_library(sess._path).stream_wait
    planes = [DeviceArray.from_host(a, rt, wait, sess.device_id) for a in (rgb, sparse, np.zeros_like(sparse))]

    def call():
        sess.enqueue(planes[0], planes[1], K, out=planes[2])
        return sess.timings()

    def stages(t):
        return {k: v for k, v in t.items() if k != "total" and v > 0}

    try:
        m = measure(call, warmup, iters, stage_timings=stages, name=name, params=params, progress=progress)
    finally:
        for p in planes:
            p.close()
    if params.get("cuda_graph"):
        m.params = {**m.params, "graph": sess.graph_info()}
    return m


def measure_reference(ref, frame, name: str, params: dict, warmup: int, iters: int, progress=True):
    """Time a ``ReferencePipeline`` on one frame, split into the deployment pipeline's stages."""
    from psdrt.benchmarks.harness import measure, reference_stage_targets, timed_calls

    rgb, sparse, K = frame
    sink: dict = {}

    def call():
        sink.clear()
        ref(rgb, sparse, K)
        return dict(sink)

    targets = reference_stage_targets(ref)
    with timed_calls(targets, sink):
        return measure(call, warmup, iters, stage_timings=(lambda s: s) if targets else None, name=name,
                       params=params, progress=progress)


def run_bench(args) -> dict:
    """Measure what ``args`` asks for; returns the result document (``harness.new_results``)."""
    from psdrt.benchmarks.harness import capture_environment, new_results, ratios

    p = plan(args)
    env = capture_environment()
    runs, comparisons, skipped, ungated = [], [], [], []
    n = len(p["targets"]) * len(p["sizes"]) * (2 if p["reference"] else 1)
    done = 0
    for size in p["sizes"]:
        frame = bench_frame(size, args.pattern, args.seed)
        hw = tuple(frame[1].shape)
        label = f"{hw[0]}x{hw[1]}"
        ref_run = None
        if p["reference"] is not None:
            done += 1
            name = f"reference {label}"
            print(f"[psdrt bench] {done}/{n} {name}: {args.warmup} warm-up, {args.iters} timed", file=sys.stderr)
            ref = p["reference"](hw)
            ref_run = measure_reference(ref, frame, name, {"mode": ref.mode, "backend": "torch-reference",
                                                           "precision": "fp32", "size": list(hw)},
                                        args.warmup, args.iters).to_dict()
            runs.append(ref_run)
        for tname, params, factory in p["targets"]:
            done += 1
            name = f"{params['mode']} {params['backend']} {params['precision']} {label}"
            print(f"[psdrt bench] {done}/{n} {name}: {args.warmup} warm-up, {args.iters} timed", file=sys.stderr)
            try:
                pipe = factory(hw)
            except ArtifactError as exc:  # e.g. a precision that failed the gate: report it, measure the rest
                hint = ("; `psdrt bench --latency-only` times it anyway (not gate-approved)"
                        if "correctness gate" in str(exc) and not args.latency_only else "")
                print(f"[psdrt bench] {name}: skipped: {exc}{hint}", file=sys.stderr)
                skipped.append(f"{name}: skipped: {exc}{hint}")
                continue
            extra = {}
            if getattr(pipe, "gate_approved", True) is False:
                name += " [NOT GATE-APPROVED: latency only]"
                extra["gate_approved"] = False
                print(f"[psdrt bench] WARNING: {name}: these artefacts FAILED the correctness gate; the latency is "
                      "measured, their output is not checked and must not be deployed", file=sys.stderr)
                ungated.append(f"{name}: FAILED the correctness gate; latency only, output not gate-approved")
            timer = measure_device_frames if params.get("frames") == "device" else measure_pipeline
            if params.get("frames") == "device":
                name += " device frames" + (" + CUDA graph" if params.get("cuda_graph") else "")
            run = timer(pipe, frame, name, {**params, **extra, "size": list(hw), "series": tname},
                        args.warmup, args.iters).to_dict()
            runs.append(run)
            if ref_run is not None:
                comparisons.append(ratios(run, ref_run))
    if not runs:
        raise ArtifactError("nothing could be measured: " + "; ".join(skipped))
    notes = skipped + ungated + ["inputs: the Middlebury 2014 Motorcycle frame (scikit-image) fitted to each size, "
                       "sparse pattern "
             f"{args.pattern} (seed {args.seed}); timed: "
             + ("CSession.enqueue on device buffers plus the wait for its work (stages: the session's CUDA events)"
                if getattr(args, "frames", "host") == "device" else "Pipeline.__call__ end to end, inputs on the host")]
    if args.threads:
        notes.append(f"threads: {args.threads} (ONNX Runtime intra-op / PyTorch)")
    return new_results(runs, env, title="psdrt bench", comparisons=comparisons, notes=notes,
                       extra={"argv": sys.argv[1:], "skipped": skipped, "not_gate_approved": ungated,
                              "threads": args.threads})


def write_outputs(doc: dict, out_dir, plots: bool = True) -> dict:
    """``bench.json``, ``bench.md`` and the PNG plots that apply (stages always; resolution with
    several sizes; precision with several precisions)."""
    from psdrt.benchmarks import harness

    paths = {k: v for k, v in harness.save_results(doc, out_dir, "bench").items()}
    if plots:
        from psdrt.benchmarks import plots as P

        out = Path(out_dir)
        runs = doc["runs"]
        P.plot_stage_breakdown(runs, out / "bench_stages.png")
        paths["stages_png"] = out / "bench_stages.png"
        sizes = {tuple(r["params"].get("size") or ()) for r in runs}
        if len(sizes) > 1:
            P.plot_latency_vs_resolution(runs, out / "bench_resolution.png")
            paths["resolution_png"] = out / "bench_resolution.png"
        precs = {r["params"].get("precision") for r in runs if r["params"].get("backend", "").startswith(("ort", "c-session"))}
        if len(precs) > 1:
            P.plot_precision_comparison([r for r in runs if r["params"].get("backend", "").startswith(("ort", "c-session"))],
                                        out / "bench_precision.png")
            paths["precision_png"] = out / "bench_precision.png"
    return paths


def run(args) -> int:
    from psdrt.benchmarks import harness

    from .common import check_out_dir

    if args.out:
        check_out_dir(args.out)  # before the timing, not as a traceback after it
    doc = run_bench(args)
    if args.out:
        paths = write_outputs(doc, args.out, plots=not args.no_plots)
        print("[psdrt bench] wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(harness.markdown_table(doc["runs"]))
        st = harness.stage_table(doc["runs"])
        if st:
            print(st)
        ct = harness.comparison_table(doc["comparisons"])
        if ct:
            print("Speed-up over the PyTorch reference (p50):\n")
            print(ct)
    if doc["extra"].get("skipped"):
        print("[psdrt bench] some configurations were skipped (see above); exit code 5", file=sys.stderr)
        return ArtifactError.exit_code
    return 0
