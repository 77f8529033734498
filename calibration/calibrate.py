"""Calibration orchestration: source -> collect -> compute -> write, plus fidelity and sensitivity.

``calibrate(model, source, out_dir)`` is the whole flow behind ``psdrt calibrate``:

1. ``prepare_for_ort`` (ORT's fusions; the prepared model is also the FP32 baseline);
2. :func:`collect_ranges`: the model is augmented to also output every tensor the quantizer needs;
   each batch of the source runs once and is reduced into a collector (``collectors.py``), holding
   at most ``max_batches_in_memory`` batches of activations;
3. writers: ORT CPU Q/DQ ONNX, Model Optimizer's TensorRT Q/DQ ONNX (when installed), legacy
   TensorRT cache (only for TensorRT 8.5/8.6 targets);
4. :func:`fidelity`: max/mean error per output of INT8 vs FP32 on evaluation feeds; written as
   ``fidelity.json`` and ``fidelity.md``.

The per-layer :func:`sensitivity` report quantizes one group of nodes at a time and ranks the
groups by the error they cause alone; :func:`choose_exclusions` + ``write_qdq_ort(nodes_to_exclude=)``
apply the choice. onnx/onnxruntime are imported inside functions (style G2).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from psdrt.runtime.errors import BackendUnavailable, CalibrationError

from . import writers
from .collectors import TensorRanges, make_collector

__all__ = [
    "Progress",
    "collect_ranges",
    "fidelity",
    "fidelity_markdown",
    "depth_agreement",
    "pipeline_fidelity",
    "pipeline_fidelity_markdown",
    "sensitivity",
    "choose_exclusions",
    "node_groups",
    "CalibrationResult",
    "calibrate",
    "model_io",
    "apply_sensitivity",
]

log = logging.getLogger(__name__)
PathLike = Union[str, Path]
Feeds = Dict[str, np.ndarray]


class Progress:
    """A minimal progress bar on stderr (tqdm when it is already installed; never a dependency).

    Args:
        total (int, optional): number of steps, when known.
        desc (str): label.
        enabled (bool): False makes it silent. Defaults to True.
    """

    def __init__(self, total: Optional[int], desc: str, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, 0
        self._t0 = time.perf_counter()
        self._tqdm = None
        if enabled:
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
            except Exception:
                self._tqdm = None

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(k)
            return
        dt = time.perf_counter() - self._t0
        if self.total:
            filled = int(20 * self.n / self.total)
            bar = "#" * filled + "." * (20 - filled)
            sys.stderr.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {dt:.0f}s")
        else:
            sys.stderr.write(f"\r{self.desc} {self.n} {dt:.0f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _len(source: Any) -> Optional[int]:
    try:
        return len(source)
    except TypeError:
        return None


def _session(path_or_bytes: Union[PathLike, bytes], threads: Optional[int] = None):
    """A CPU ONNX Runtime session, through the project's backend when it is present."""
    from psdrt.runtime.backends.ort import OrtBackend

    return OrtBackend(path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes),
                      providers=["cpu"], threads=threads)


def _augmented(model_path: PathLike, tensors: Sequence[str]) -> bytes:
    onnx = writers._require("onnx", "export")
    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model.SerializeToString()


def collect_ranges(
    model_path: PathLike,
    source: Iterable[Mapping[str, np.ndarray]],
    tensors: Optional[Sequence[str]] = None,
    *,
    method: str = "minmax",
    method_options: Optional[Mapping[str, Any]] = None,
    max_batches: Optional[int] = None,
    max_batches_in_memory: int = 1,
    progress: bool = True,
    threads: Optional[int] = None,
) -> TensorRanges:
    """Run the source through the model and compute the ranges of ``tensors``.

    Args:
        model_path (str | Path): FP32 ONNX (the ORT-prepared one when quantizing for ORT).
        source (Iterable[Mapping[str, np.ndarray]]): feed dicts (any iterable; ``__len__`` optional).
        tensors (Sequence[str], optional): tensor names to calibrate. Defaults to None: the
            quantizable tensors of ``writers.ORT_CPU_OP_TYPES`` plus graph inputs and outputs.
        method (str): a ``collectors.COLLECTORS`` key. Defaults to "minmax".
        method_options (Mapping, optional): keyword options of the collector (``percentile=99.9``).
        max_batches (int, optional): stop after this many batches. Defaults to None (all).
        max_batches_in_memory (int): batches of activations held before they are reduced into
            the collector (bounds memory like ORT's ``max_intermediate_outputs``). Defaults to 1.
        progress (bool): progress bar on stderr. Defaults to True.
        threads (int, optional): ORT intra-op threads. Defaults to None.

    Returns:
        TensorRanges: validated ranges.

    Raises:
        CalibrationError: the source yields nothing, or a feed does not match the model.
    """
    if max_batches_in_memory < 1:
        raise ValueError(f"max_batches_in_memory must be >= 1, got {max_batches_in_memory}")
    onnx = writers._require("onnx", "export")
    model = onnx.load(str(model_path), load_external_data=False)
    if tensors is None:
        nodes = writers.quantizable_nodes(model)
        tensors = writers.quantizable_tensors(model, nodes)
    graph_inputs = [i.name for i in model.graph.input if i.name not in writers._initializer_names(model)]
    tensors = list(dict.fromkeys(list(graph_inputs) + [o.name for o in model.graph.output] + list(tensors)))
    del model
    backend = _session(_augmented(model_path, tensors), threads)
    wanted = [t for t in tensors if t not in graph_inputs]
    collector = make_collector(method, **dict(method_options or {}))
    total = _len(source)
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    bar = Progress(total, f"calibrate ({method})", progress)
    pending: Dict[str, List[np.ndarray]] = {}
    count = 0
    try:
        for feeds in source:
            if max_batches is not None and count >= max_batches:
                break
            outs = backend.run(dict(feeds))
            for name in graph_inputs:
                if name in feeds:
                    pending.setdefault(name, []).append(np.asarray(feeds[name]))
            for name in wanted:
                if name in outs:
                    pending.setdefault(name, []).append(outs[name])
            count += 1
            if count % max_batches_in_memory == 0:
                collector.update({k: np.concatenate([a.reshape(-1) for a in v]) for k, v in pending.items()})
                pending.clear()
            bar.update()
        if pending:
            collector.update({k: np.concatenate([a.reshape(-1) for a in v]) for k, v in pending.items()})
    finally:
        bar.close()
        backend.close()
    if count == 0:
        raise CalibrationError("the calibration source yielded no batch; give it at least one frame")
    log.info("collected %s ranges of %d tensors over %d batches", method, len(wanted), count)
    return collector.ranges()


# --------------------------------------------------------------------------------------------
# fidelity


def _errors(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    d = np.abs(got - ref)
    scale = float(np.sqrt(np.mean(ref * ref))) or 1.0
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "rel_rmse": float(np.sqrt(np.mean(d * d)) / scale), "ref_rms": scale}


def depth_agreement(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    """RMSE (m), AbsRel and delta1 of a depth map against the FP32 depth taken as ground truth."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    m = np.isfinite(ref) & (ref > 1e-3)
    r, g = ref[m], np.maximum(got[m], 1e-6)
    if r.size == 0:
        return {"rmse": math.nan, "absrel": math.nan, "delta1": math.nan}
    ratio = np.maximum(g / r, r / g)
    return {"rmse": float(np.sqrt(np.mean((g - r) ** 2))), "absrel": float(np.mean(np.abs(g - r) / r)),
            "delta1": float(np.mean(ratio < 1.25))}


def fidelity(
    fp32_path: PathLike,
    int8_path: PathLike,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    depth_outputs: Sequence[str] = ("depth_pix",),
    threads: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """Error of the INT8 model against the FP32 one, per output, over ``feeds``.

    Args:
        fp32_path (str | Path): FP32 model.
        int8_path (str | Path): quantized model (same inputs and outputs).
        feeds (Sequence[Mapping]): evaluation feeds.
        depth_outputs (Sequence[str]): outputs that are metric depth; they also get RMSE/AbsRel/delta1.
        threads (int, optional): ORT threads.
        progress (bool): progress bar. Defaults to False.

    Returns:
        dict: ``{"outputs": {name: {max_abs, mean_abs, rel_rmse, ref_rms[, rmse, absrel, delta1]}},
        "frames": n}``; each number is the worst (max_abs) or the mean (others) over the feeds.
    """
    with _session(fp32_path, threads) as a, _session(int8_path, threads) as b:
        names = [s.name for s in a.output_specs()]
        per: Dict[str, List[Dict[str, float]]] = {n: [] for n in names}
        bar = Progress(len(feeds), "fidelity", progress)
        for f in feeds:
            ra, rb = a.run(dict(f)), b.run(dict(f))
            for n in names:
                e = _errors(ra[n], rb[n])
                if n in depth_outputs:
                    e.update(depth_agreement(ra[n], rb[n]))
                per[n].append(e)
            bar.update()
        bar.close()
    out = {}
    for n, rows in per.items():
        agg = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        agg["max_abs"] = float(max(r["max_abs"] for r in rows))
        out[n] = agg
    return {"outputs": out, "frames": len(feeds)}


def fidelity_markdown(report: Mapping[str, Any], title: str = "INT8 vs FP32") -> str:
    """Markdown table of a :func:`fidelity` report (or several, keyed by model name)."""
    lines = [f"### {title}", "", "| model | output | max abs | mean abs | rel. RMSE | RMSE (m) | AbsRel | δ1 |",
             "|---|---|---|---|---|---|---|---|"]
    reports = report if "outputs" not in report else {"model": report}
    for model, rep in reports.items():
        for name, e in rep["outputs"].items():
            extra = ("| {rmse:.4g} | {absrel:.4g} | {delta1:.4f} |".format(**e) if "rmse" in e else "| | | |")
            lines.append(f"| {model} | {name} | {e['max_abs']:.4g} | {e['mean_abs']:.4g} | {e['rel_rmse']:.4g} {extra}")
    return "\n".join(lines) + "\n"


class _OrtModule:
    """Callable stand-in for the reference's torch modules, running an ONNX model on ORT CPU."""

    def __init__(self, path: PathLike, kind: str, threads: Optional[int]) -> None:
        self.backend, self.kind = _session(path, threads), kind
        self.names = [s.name for s in self.backend.output_specs()]

    def eval(self):
        return self

    def __call__(self, *args):
        import torch

        if self.kind == "encoder":
            outs = self.backend.run({"rgb": args[0].numpy()})
            t = {k: torch.from_numpy(v) for k, v in outs.items()}
            return t["rel_inv"], tuple(t[f"feat{i}"] for i in range(4))
        sparse, diff, feats = args
        feeds = {"sparse": sparse.numpy(), "depth_diff": diff.numpy()}
        feeds.update({f"feat{i}": f.numpy() for i, f in enumerate(feats)})
        return {k: torch.from_numpy(v) for k, v in self.backend.run(feeds).items()}


def pipeline_fidelity(
    pipeline: Any,
    frames: Iterable[Any],
    *,
    encoder: Optional[PathLike] = None,
    head: Optional[PathLike] = None,
    threads: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """End-to-end depth of the pipeline with ONNX (e.g. INT8) encoder/head vs the FP32 reference.

    The FP32 ``ReferencePipeline`` runs each frame twice: as is, and with its foundation model
    and/or head replaced by the given ONNX models on ORT CPU (propagation and post-processing stay
    the reference's). Reported per frame and averaged: RMSE (m), AbsRel and delta1 of the ONNX
    pipeline's depth against the FP32 depth, and both pipelines' RMSE against ground truth when
    the frame has it.

    Args:
        pipeline (ReferencePipeline): FP32 reference in mode ``psd`` (head) or ``propagate``.
        frames (Iterable[CalibFrame]): frames with sparse depth and K, at the head's size.
        encoder (str | Path, optional): encoder ONNX replacing the foundation model.
        head (str | Path, optional): head ONNX replacing the correction head.
        threads (int, optional): ORT threads.
        progress (bool): progress bar. Defaults to False.

    Returns:
        dict: ``{"mean": {...}, "frames": [{"name", "rmse", "absrel", "delta1"[, "gt_rmse_fp32",
        "gt_rmse_onnx"]}]}``.
    """
    import copy

    swapped = copy.copy(pipeline)
    if encoder is not None:
        swapped.fm = _OrtModule(encoder, "encoder", threads)
    if head is not None:
        swapped.head = _OrtModule(head, "head", threads)
    rows = []
    bar = Progress(_len(frames), "pipeline fidelity", progress)
    for fr in frames:
        ref = pipeline(fr.rgb, fr.sparse, fr.K).depth
        got = swapped(fr.rgb, fr.sparse, fr.K).depth
        row = {"name": fr.name, **depth_agreement(ref, got)}
        if fr.gt is not None and (fr.gt > 0).any():
            m = fr.gt > 0
            row["gt_rmse_fp32"] = float(np.sqrt(np.mean((ref[m] - fr.gt[m]) ** 2)))
            row["gt_rmse_onnx"] = float(np.sqrt(np.mean((got[m] - fr.gt[m]) ** 2)))
        rows.append(row)
        bar.update()
    bar.close()
    if not rows:
        raise CalibrationError("pipeline_fidelity got no frame")
    keys = [k for k in rows[0] if k != "name"]
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    mean["delta1_min"] = float(min(r["delta1"] for r in rows))
    return {"mean": mean, "frames": rows}


def pipeline_fidelity_markdown(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of several :func:`pipeline_fidelity` reports keyed by a label."""
    lines = ["| variant | frames | RMSE vs FP32 (m) | AbsRel vs FP32 | δ1 vs FP32 (min) | RMSE vs GT FP32 → ONNX (m) |",
             "|---|---|---|---|---|---|"]
    for label, rep in reports.items():
        m = rep["mean"]
        gt = (f"{m['gt_rmse_fp32']:.4f} → {m['gt_rmse_onnx']:.4f}" if "gt_rmse_fp32" in m else "")
        lines.append(f"| {label} | {len(rep['frames'])} | {m['rmse']:.4g} | {m['absrel']:.4g} | "
                     f"{m['delta1']:.4f} ({m['delta1_min']:.4f}) | {gt} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# sensitivity


def node_groups(model_path: PathLike, nodes: Sequence[str], depth: int = 3) -> Dict[str, List[str]]:
    """Group node names by their module path prefix (``/pretrained/blocks.3/...`` -> ``/pretrained/blocks.3``).

    Args:
        model_path (str | Path): model whose nodes are grouped.
        nodes (Sequence[str]): node names (e.g. ``writers.quantizable_nodes``).
        depth (int): path components kept. Defaults to 3.

    Returns:
        dict[str, list[str]]: group -> node names, in graph order.
    """
    groups: Dict[str, List[str]] = {}
    for name in nodes:
        parts = [p for p in name.split("/") if p]
        key = "/" + "/".join(parts[: max(1, min(depth, len(parts) - 1))])
        groups.setdefault(key, []).append(name)
    return groups


def _score(rep: Mapping[str, Any], outputs: Optional[Sequence[str]]) -> float:
    outs = rep["outputs"]
    keys = [k for k in outs if outputs is None or k in outputs]
    return float(np.mean([outs[k]["rel_rmse"] for k in keys]))


def sensitivity(
    prepared_path: PathLike,
    ranges: TensorRanges,
    feeds: Sequence[Mapping[str, np.ndarray]],
    work_dir: PathLike,
    *,
    groups: Optional[Mapping[str, Sequence[str]]] = None,
    outputs: Optional[Sequence[str]] = None,
    progress: bool = True,
    **write_options: Any,
) -> Dict[str, Any]:
    """Quantize one group at a time and measure its error against FP32 (mean rel. RMSE of ``outputs``).

    Args:
        prepared_path (str | Path): FP32 model after ``writers.prepare_for_ort``.
        ranges (TensorRanges): ranges collected on it.
        feeds (Sequence[Mapping]): evaluation feeds (a few are enough).
        work_dir (str | Path): folder for the temporary models.
        groups (Mapping[str, Sequence[str]], optional): group -> node names. Defaults to
            :func:`node_groups` of the quantizable nodes.
        outputs (Sequence[str], optional): outputs scored. Defaults to None (all).
        progress (bool): progress bar. Defaults to True.
        **write_options: passed to ``writers.write_qdq_ort`` (op_types, activation_type ...).

    Returns:
        dict: ``{"groups": [{"group", "nodes", "score"} sorted worst first], "all_int8": score}``.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    all_nodes = writers.quantizable_nodes(prepared_path, write_options.get("op_types", writers.ORT_CPU_OP_TYPES))
    if groups is None:
        groups = node_groups(prepared_path, all_nodes)
    tmp = work / "sensitivity.onnx"
    rows = []
    bar = Progress(len(groups) + 1, "sensitivity", progress)
    writers.write_qdq_ort(prepared_path, tmp, ranges, **write_options)
    full = _score(fidelity(prepared_path, tmp, feeds), outputs)
    bar.update()
    for key, members in groups.items():
        keep = set(members)
        writers.write_qdq_ort(prepared_path, tmp, ranges,
                              nodes_to_exclude=[n for n in all_nodes if n not in keep], **write_options)
        rows.append({"group": key, "nodes": list(members), "score": _score(fidelity(prepared_path, tmp, feeds), outputs)})
        bar.update()
    bar.close()
    tmp.unlink(missing_ok=True)
    rows.sort(key=lambda r: -r["score"])
    return {"groups": rows, "all_int8": full}


def choose_exclusions(report: Mapping[str, Any], max_groups: int = 2, min_share: float = 0.15) -> List[str]:
    """Groups to keep in FP32: the worst ones, each causing at least ``min_share`` of the summed error.

    Returns:
        list[str]: node names to pass as ``nodes_to_exclude``.
    """
    rows = report["groups"]
    total = sum(r["score"] for r in rows) or 1.0
    chosen = [r for r in rows[:max_groups] if r["score"] / total >= min_share]
    return [n for r in chosen for n in r["nodes"]]


def sensitivity_markdown(report: Mapping[str, Any], applied: Optional[Mapping[str, float]] = None, top: int = 10) -> str:
    lines = ["| group (quantized alone) | nodes | mean rel. RMSE |", "|---|---|---|"]
    for r in report["groups"][:top]:
        lines.append(f"| `{r['group']}` | {len(r['nodes'])} | {r['score']:.4g} |")
    lines.append(f"| **all quantized** | | **{report['all_int8']:.4g}** |")
    if applied:
        lines += ["", f"Keeping {applied['excluded_groups']} in FP32: mean rel. RMSE {applied['before']:.4g} -> "
                  f"{applied['after']:.4g}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# orchestration


@dataclass
class CalibrationResult:
    """What :func:`calibrate` wrote (paths are None where a format was not requested or unavailable)."""

    fp32: Path
    int8_ort: Optional[Path] = None
    int8_trt: Optional[Path] = None
    trt_cache: Optional[Path] = None
    ranges: Optional[TensorRanges] = None
    fidelity: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


FORMATS = ("ort", "modelopt", "trt-cache")


def calibrate(
    model_path: PathLike,
    source: Iterable[Mapping[str, np.ndarray]],
    out_dir: PathLike,
    *,
    name: Optional[str] = None,
    method: str = "minmax",
    method_options: Optional[Mapping[str, Any]] = None,
    formats: Sequence[str] = ("ort",),
    nodes_to_exclude: Sequence[str] = (),
    max_batches: Optional[int] = None,
    max_batches_in_memory: int = 1,
    eval_feeds: Optional[Sequence[Mapping[str, np.ndarray]]] = None,
    depth_outputs: Sequence[str] = ("depth_pix",),
    trt_version: str = "8.6",
    progress: bool = True,
    threads: Optional[int] = None,
) -> CalibrationResult:
    """FP32 ONNX + calibration source -> INT8 artefacts and a fidelity table.

    Args:
        model_path (str | Path): FP32 ONNX (e.g. from ``export.onnx_export.export_encoder``).
        source (Iterable[Mapping]): calibration feeds (``sources.EncoderFeeds`` / ``HeadFeeds`` ...).
        out_dir (str | Path): output folder (created).
        name (str, optional): file stem. Defaults to the model's stem.
        method (str): collector (``minmax``, ``percentile``, ``entropy``). Defaults to "minmax".
        method_options (Mapping, optional): collector options.
        formats (Sequence[str]): any of ``"ort"`` (ORT CPU Q/DQ), ``"modelopt"`` (TensorRT Q/DQ by
            Model Optimizer), ``"trt-cache"`` (TensorRT 8.5/8.6). Defaults to ("ort",).
        nodes_to_exclude (Sequence[str]): nodes kept in FP32 (see :func:`sensitivity`).
        max_batches (int, optional): calibration batches used. Defaults to None (all).
        max_batches_in_memory (int): see :func:`collect_ranges`. Defaults to 1.
        eval_feeds (Sequence[Mapping], optional): fidelity feeds. Defaults to None: the
            calibration feeds (kept, at most 8).
        depth_outputs (Sequence[str]): outputs scored as metric depth. Defaults to ("depth_pix",).
        trt_version (str): TensorRT target of the legacy cache. Defaults to "8.6".
        progress (bool): progress bars on stderr. Defaults to True.
        threads (int, optional): ORT intra-op threads.

    Returns:
        CalibrationResult: paths, ranges, fidelity report and notes (e.g. why modelopt did not run).

    Raises:
        CalibrationError: unknown format, empty source, or unusable ranges.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CalibrationError(f"unknown output format(s) {bad}; use any of {FORMATS}")
    if "trt-cache" in formats:
        writers._trt_code(trt_version)  # refuse a TensorRT 10 cache before spending time on calibration
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or Path(model_path).stem
    prepared = writers.prepare_for_ort(model_path, out / f"{stem}.fp32.onnx")
    res = CalibrationResult(fp32=prepared)

    kept: List[Feeds] = []

    def tee() -> Iterator[Mapping[str, np.ndarray]]:
        for f in source:
            if eval_feeds is None and len(kept) < 8:
                kept.append({k: np.array(v) for k, v in f.items()})
            yield f

    src = tee()
    if _len(source) is not None:
        src = _Sized(src, _len(source))
    ranges = collect_ranges(prepared, src, method=method, method_options=method_options, max_batches=max_batches,
                            max_batches_in_memory=max_batches_in_memory, progress=progress, threads=threads)
    res.ranges = ranges
    (out / f"{stem}.ranges.json").write_text(json.dumps(ranges.to_dict(), indent=1))
    feeds = list(eval_feeds) if eval_feeds is not None else kept
    # kept for the sensitivity step (apply_sensitivity), which runs after calibration
    np.savez(out / f"{stem}.eval_feeds.npz", **{f"{i}::{k}": v for i, f in enumerate(feeds[:4]) for k, v in f.items()})

    if "ort" in formats:
        res.int8_ort = writers.write_qdq_ort(prepared, out / f"{stem}.int8.ort.onnx", ranges,
                                             nodes_to_exclude=nodes_to_exclude)
        res.fidelity["ort_int8"] = fidelity(prepared, res.int8_ort, feeds, depth_outputs=depth_outputs,
                                            threads=threads, progress=progress)
    if "trt-cache" in formats:
        res.trt_cache = writers.write_trt_cache(ranges, out / f"{stem}.trt{trt_version}.calib.cache", trt_version)
    if "modelopt" in formats:
        try:
            res.int8_trt = writers.write_qdq_modelopt(model_path, out / f"{stem}.int8.trt.onnx", feeds,
                                                      nodes_to_exclude=nodes_to_exclude)
        except BackendUnavailable as exc:
            res.notes.append(f"modelopt Q/DQ not written: {exc}")
            log.warning("modelopt Q/DQ not written: %s", exc)
    (out / f"{stem}.fidelity.json").write_text(json.dumps({"fidelity": res.fidelity, "notes": res.notes}, indent=1))
    (out / f"{stem}.fidelity.md").write_text(fidelity_markdown(res.fidelity, f"{stem}: INT8 vs FP32 "
                                                               f"({len(feeds)} frames, {method})")
                                             if res.fidelity else "no fidelity measured\n")
    return res


class _Sized:
    def __init__(self, it: Iterator, n: int) -> None:
        self._it, self._n = it, n

    def __iter__(self):
        return self._it

    def __len__(self) -> int:
        return self._n


def model_io(model_path: PathLike) -> Tuple[str, Dict[str, Tuple[int, ...]]]:
    """Kind (``"encoder"``/``"head"``/``"other"``) and static input shapes of an ONNX model.

    The kind comes from the exporter's ``psdrt.kind`` metadata, else from the input names.

    Raises:
        InputError: a dynamic input dimension (calibrate a static export).
    """
    from psdrt.runtime.errors import InputError

    onnx = writers._require("onnx", "export")
    m = onnx.load(str(model_path), load_external_data=False)
    consts = writers._initializer_names(m)
    shapes = {}
    for i in m.graph.input:
        if i.name in consts:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
        if any(d < 1 for d in dims):
            raise InputError(f"input {i.name!r} of {model_path} has a dynamic shape {dims}; calibrate a static "
                             "export (export_encoder/export_head with dynamic=False)")
        shapes[i.name] = dims
    meta = {p.key: p.value for p in m.metadata_props}
    kind = meta.get("psdrt.kind")
    if kind is None:
        kind = "head" if "depth_diff" in shapes else "encoder" if set(shapes) == {"rgb"} else "other"
    return kind, shapes


def apply_sensitivity(
    res: CalibrationResult,
    out_dir: PathLike,
    stem: str,
    *,
    max_feeds: int = 3,
    max_groups: int = 2,
    depth: int = 3,
    progress: bool = True,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Sensitivity report on a :func:`calibrate` result, then the mixed-precision model that keeps the worst groups in FP32.

    Writes ``<stem>.sensitivity.{json,md}`` and ``<stem>.int8.ort.mixed.onnx``. Groups are
    :func:`node_groups` at ``depth`` (3: one ViT block / one head module per group).

    Returns:
        dict: the sensitivity report plus ``applied`` (excluded groups, score before and after).
    """
    out = Path(out_dir)
    feeds = _eval_feeds(out, stem, max_feeds)
    groups = node_groups(res.fp32, writers.quantizable_nodes(res.fp32), depth)
    rep = sensitivity(res.fp32, res.ranges, feeds, out, groups=groups, progress=progress)
    exclude = choose_exclusions(rep, max_groups=max_groups)
    mixed = writers.write_qdq_ort(res.fp32, out / f"{stem}.int8.ort.mixed.onnx", res.ranges, nodes_to_exclude=exclude)
    after = _score(fidelity(res.fp32, mixed, feeds, threads=threads), None)
    groups = [r["group"] for r in rep["groups"] if set(r["nodes"]) <= set(exclude) and r["nodes"]]
    rep["applied"] = {"excluded_groups": groups, "excluded_nodes": len(exclude),
                      "before": rep["all_int8"], "after": after, "model": str(mixed)}
    (out / f"{stem}.sensitivity.json").write_text(json.dumps(rep, indent=1))
    (out / f"{stem}.sensitivity.md").write_text(sensitivity_markdown(rep, rep["applied"]))
    return rep


def _eval_feeds(out: Path, stem: str, n: int) -> List[Feeds]:
    path = out / f"{stem}.eval_feeds.npz"
    if not path.is_file():
        raise CalibrationError(f"{path} not found; run calibrate() first")
    with np.load(path) as z:
        names = sorted({k.split("::", 1)[1] for k in z.files})
        count = len({k.split("::", 1)[0] for k in z.files})
        return [{nm: z[f"{i}::{nm}"] for nm in names} for i in range(min(n, count))]
