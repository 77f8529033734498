"""Accuracy evaluation of completion configurations on a dataset: the engine of ``psdrt eval``.

A *configuration* is one way of completing a frame, written ``[LABEL=]KIND[:ARG[:ARG]]``:

============================  ==================================================================
``guided``                    the weight-free guided mode (``Pipeline('guided')``, kernel library)
``ref-guided``                the FP32 PyTorch reference of the guided mode (needs torch)
``psd:DIR[:PRECISION]``       a deployable directory from ``psdrt build`` (``Pipeline.from_artifacts``);
                              PRECISION is fp32 (default), fp16, int8 or ENC+HEAD (int8+fp32: INT8
                              encoder, FP32 head); mode psd or propagate as built
``onnx:ENCODER[:HEAD]``       exported ONNX graphs (``Pipeline.from_onnx``): psd with a head, else propagate
``ref:CHECKPOINT[:MODE]``     the FP32 PyTorch reference (``ReferencePipeline.from_checkpoint``); MODE
                              psd or propagate (default: what the checkpoint holds)
``ckpt:CHECKPOINT[:MODE]``    the runtime pipeline over PyTorch backends (``Pipeline.from_checkpoint``)
``ip_basic``, ``nearest``     the classical baselines (``runtime.classical``): IP-Basic, nearest fill
============================  ==================================================================

``LABEL=`` names the column (default: the spec with paths shortened to their file names). Every
configuration runs with the dataset's propagation preset.

For every frame and sparse pattern, each configuration's prediction is scored with
``runtime.metrics.depth_metrics`` over the dataset's evaluation mask; the dataset score is the mean
of the per-image values (as the official trainer computes it). A frame whose sparse input or
evaluation mask is empty is skipped and reported (the official code would average a NaN).

Each row also holds ``edge_rmse`` (not an official metric): ``runtime.metrics.edge_band_rmse`` of
the prediction against the ground truth restricted to the evaluation mask, i.e. the RMSE in mm over
the evaluated pixels within 3 px of a depth edge (a 10 % jump between valid 4-neighbours; for
datasets whose mask is gt > 0 this is exactly ``edge_band_rmse(pred, gt)``). It is NaN for a frame
whose ground truth has no depth edge, and the dataset mean skips those frames (``edge_frames``
counts the others). And ``kind``: ``runtime.guided.input_kind`` of the frame's sparse input
(``"scan"``: scan-line LiDAR-like, ``"scattered"``: random, SLAM or corner points).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .datasets import DatasetReader, parse_patterns, sample_sparse
from .errors import InputError, PsdError
from .manifest import PRECISIONS, precision_parts
from .metrics import METRIC_KEYS, METRIC_UNITS, band_rmse, depth_edge_band, depth_metrics, mean_metrics

__all__ = [
    "BASELINES",
    "EDGE_KEY",
    "KINDS",
    "TABLE_KEYS",
    "EvalConfig",
    "parse_config",
    "parse_configs",
    "evaluate",
    "summarise",
    "summary_markdown",
    "write_outputs",
    "read_result",
    "environment",
    "format_metric",
]

log = logging.getLogger(__name__)

#: the classical baselines
BASELINES = ("ip_basic", "nearest")
#: configuration kinds
KINDS = ("guided", "ref-guided", "psd", "onnx", "ref", "ckpt") + BASELINES
#: the edge-band RMSE (mm, not an official metric; NaN for a frame without a ground-truth depth edge)
EDGE_KEY = "edge_rmse"
#: metrics shown in the markdown summaries, in order
TABLE_KEYS = ("rmse", "mae", "irmse", "imae", "rel", "d1", EDGE_KEY)
_LABELS = {"rmse": "RMSE", "mae": "MAE", "irmse": "iRMSE", "imae": "iMAE", "rel": "REL", "d1": "δ1",
           "d2": "δ2", "d3": "δ3", EDGE_KEY: "edge RMSE"}
#: units of every per-row metric (``METRIC_UNITS`` plus the edge-band RMSE)
_UNITS = {**METRIC_UNITS, EDGE_KEY: "mm"}
_MODES = ("psd", "propagate")
_KIND_ALIASES = {"ip-basic": "ip_basic", "ipbasic": "ip_basic", "ip": "ip_basic", "nn": "nearest",
                 "ref_guided": "ref-guided"}

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EvalConfig:
    """One configuration of ``psdrt eval`` (see the module docstring for the syntax).

    Attributes:
        label (str): column name in the results.
        kind (str): one of ``KINDS``.
        path (str | None): artefact directory, encoder ONNX or checkpoint.
        option (str | None): precision (psd), head ONNX (onnx) or mode (ref, ckpt).
        spec (str): the text it was parsed from.
    """

    label: str
    kind: str
    path: Optional[str] = None
    option: Optional[str] = None
    spec: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def describe(self) -> dict:
        return {"label": self.label, "kind": self.kind, "path": self.path, "option": self.option, "spec": self.spec}

    def build(self, preset: str) -> Predictor:
        """A function ``(rgb, sparse, K) -> depth`` for the dataset ``preset`` (cached per preset).

        Raises:
            InputError / ArtifactError / BackendUnavailable / CheckpointError: from the pipeline
            constructors (missing files, missing torch or onnxruntime...).
        """
        if preset not in self._cache:
            self._cache[preset] = self._build(preset)
        return self._cache[preset]

    def _build(self, preset: str) -> Predictor:
        if self.kind in BASELINES:
            from .classical import ip_basic_fill, nearest_fill

            fill = ip_basic_fill if self.kind == "ip_basic" else nearest_fill
            return lambda rgb, sparse, K: fill(sparse)
        if preset == "KITTI360" and self.kind not in ("guided", "ref-guided"):
            raise InputError("KITTI-360 needs the MEI camera model, which the psdrt pipelines do not take yet; "
                             "evaluate KITTI-360 with guided and the baselines only")
        if self.kind == "guided":
            from .pipeline import Pipeline

            pipe = Pipeline("guided", preset=preset)
        elif self.kind == "ref-guided":
            from psdrt.export.reference.pipeline import ReferencePipeline

            pipe = ReferencePipeline("guided", preset=preset)
        elif self.kind == "psd":
            from .pipeline import Pipeline

            pipe = Pipeline.from_artifacts(self.path, precision=self.option or "fp32", preset=preset)
        elif self.kind == "onnx":
            from .pipeline import Pipeline

            pipe = Pipeline.from_onnx(self.path, self.option, preset=preset)
        elif self.kind == "ref":
            from psdrt.export.reference.pipeline import ReferencePipeline

            pipe = ReferencePipeline.from_checkpoint(self.path, mode=self.option, preset=preset)
        else:  # ckpt
            from .pipeline import Pipeline

            pipe = Pipeline.from_checkpoint(self.path, mode=self.option, preset=preset)
        return lambda rgb, sparse, K: pipe(rgb, sparse, K).depth


def _short(path: str) -> str:
    p = Path(path)
    return p.name or str(p)


def parse_config(text: str) -> EvalConfig:
    """Parse one ``[LABEL=]KIND[:ARG[:ARG]]`` configuration.

    Raises:
        InputError: unknown kind, missing or extra arguments, a bad precision/mode, or a path that
            does not exist.
    """
    spec = str(text).strip()
    label = None
    if "=" in spec.split(":", 1)[0]:
        label, spec = (s.strip() for s in spec.split("=", 1))
        if not label:
            raise InputError(f"--config {text!r}: empty label before '='; write LABEL=SPEC")
    head, _, rest = spec.partition(":")
    kind = _KIND_ALIASES.get(head.strip().lower(), head.strip().lower())
    if kind not in KINDS:
        raise InputError(f"--config {text!r}: unknown kind {head!r}; use one of {', '.join(KINDS)} "
                         "(e.g. guided, psd:DIR:int8, onnx:ENC.onnx:HEAD.onnx, ref:CKPT, ip_basic)")
    path = option = None
    if kind in ("guided", "ref-guided") + BASELINES:
        if rest:
            raise InputError(f"--config {text!r}: {kind} takes no arguments")
    else:
        if not rest:
            what = {"psd": "DIR[:PRECISION]", "onnx": "ENCODER.onnx[:HEAD.onnx]"}.get(kind, "CHECKPOINT[:MODE]")
            raise InputError(f"--config {text!r}: {kind} needs a path: {kind}:{what}")
        path, option = rest, None
        choices = {"psd": PRECISIONS, "ref": _MODES, "ckpt": _MODES}.get(kind)
        if choices:
            base, _, last = rest.rpartition(":")
            if base and kind == "psd" and "+" in last and not Path(rest).exists():
                path, option = base, "+".join(precision_parts(last).values())  # ENC+HEAD, e.g. int8+fp32
            elif base and last.lower() in choices:
                path, option = base, last.lower()
            elif base and not Path(rest).exists():
                raise InputError(f"--config {text!r}: {last!r} is not one of {', '.join(choices)}")
        elif kind == "onnx":
            base, _, last = rest.rpartition(":")
            if base and last.lower().endswith(".onnx") and not Path(rest).exists():
                path, option = base, last
        for p in (path, option if kind == "onnx" else None):
            if p is not None and not Path(p).exists():
                raise InputError(f"--config {text!r}: {p} does not exist; pass an existing "
                                 f"{'directory' if kind == 'psd' else 'file'}")
    if label is None:
        label = kind if path is None else ":".join([kind, _short(path)] + ([_short(option)] if option else []))
    return EvalConfig(label=label, kind=kind, path=path, option=option, spec=str(text).strip())


def parse_configs(texts: Optional[Sequence[str]], baselines: bool = False) -> list[EvalConfig]:
    """Parse ``--config`` values (default ``guided``) and append the baselines when asked.

    Raises:
        InputError: a bad spec, or two configurations with the same label.
    """
    configs = [parse_config(t) for t in (texts or ["guided"])]
    if baselines:
        configs += [parse_config(b) for b in BASELINES if b not in {c.kind for c in configs}]
    seen = set()
    for c in configs:
        if c.label in seen:
            raise InputError(f"two configurations are labelled {c.label!r}; name them with LABEL=SPEC")
        seen.add(c.label)
    return configs


def environment() -> dict:
    """This machine and run, for result files: ``psdrt.benchmarks.harness.capture_environment``
    (the one capture every psdrt result file uses; ONNX Runtime providers are not probed)."""
    from psdrt.benchmarks.harness import capture_environment

    return capture_environment(ort_providers=False)


def evaluate(reader: DatasetReader, configs: Sequence[EvalConfig], patterns=None, seed: int = 0,
             progress: Optional[Callable[[str], None]] = None, env: Optional[dict] = None) -> dict:
    """Run every configuration on every frame and pattern of ``reader``.

    Args:
        reader (DatasetReader): the frames (``runtime.datasets.open_dataset``).
        configs (Sequence[EvalConfig]): what to evaluate (``parse_configs``).
        patterns (str | list | None): sparse patterns (``runtime.datasets.parse_patterns``); None =
            the stored sparse files when the dataset has them, else the four generated patterns.
        seed (int): run seed of the generated patterns (per frame: ``pattern_seed(seed, name)``).
        progress (callable | None): called with one line per frame and pattern.
        env (dict | None): environment recorded in ``meta`` (default: ``environment()``).

    Returns:
        dict: ``meta`` (dataset, patterns, seed, frame shapes, configs, environment), ``rows`` (one per frame,
        pattern and configuration: points, input ``kind``, seconds, ``METRIC_KEYS`` and ``edge_rmse``),
        ``summary`` (per pattern and configuration: frames, input kinds and the mean of each metric,
        see ``summarise``), ``skipped`` (frame, pattern, reason).

    Raises:
        InputError: bad patterns; PsdError subclasses from a configuration (the message names the
        frame, pattern and configuration).
    """
    if not configs:
        raise InputError("no configuration to evaluate; pass at least one --config")
    from .guided import input_kind

    patterns = parse_patterns(patterns, reader.has_sparse)
    predictors = {c.label: c.build(reader.key) for c in configs}
    rows, skipped, shapes = [], [], []
    n = len(reader)
    t_start = time.perf_counter()
    for i, sample in enumerate(reader, 1):
        mask = sample.mask
        if list(sample.gt.shape) not in shapes:
            shapes.append(list(sample.gt.shape))
        for pattern in patterns:
            sparse = sample_sparse(sample, pattern, seed)
            points = int(np.count_nonzero(sparse > 0))
            reason = ("no sparse point" if points == 0 else
                      "empty evaluation mask (no valid ground truth in range)" if not mask.any() else None)
            if reason:
                skipped.append({"frame": sample.name, "pattern": pattern, "reason": reason})
                if progress:
                    progress(f"[{i}/{n}] {sample.name} {pattern}: skipped ({reason})")
                continue
            kind = input_kind(sparse)
            # edge_band_rmse(pred, edge_gt), its band computed once for every configuration
            edge_gt = np.where(mask, sample.gt, np.float32(0))  # edges among the evaluated pixels only
            band = depth_edge_band(edge_gt)
            parts = []
            for c in configs:
                t0 = time.perf_counter()
                try:
                    pred = predictors[c.label](sample.rgb, sparse, sample.K)
                except PsdError as exc:
                    raise type(exc)(f"{sample.name} ({pattern}, {c.label}): {exc}") from exc
                sec = time.perf_counter() - t0
                m = depth_metrics(pred, sample.gt, mask)
                m[EDGE_KEY] = band_rmse(pred, edge_gt, band)
                rows.append({"frame": sample.name, "pattern": pattern, "config": c.label, "points": points,
                             "kind": kind, "seconds": sec, **m})
                parts.append(f"{c.label} {format_metric('rmse', m['rmse'])} mm")
            if progress:
                progress(f"[{i}/{n}] {sample.name} {pattern} ({points} pts, {kind}): RMSE " + ", ".join(parts))
    labels = [c.label for c in configs]
    meta = {
        "dataset": reader.describe(),
        "patterns": patterns,
        "seed": int(seed),
        "shapes": shapes,
        "configs": [c.describe() for c in configs],
        "environment": env if env is not None else environment(),
        "wall_seconds": time.perf_counter() - t_start,
        "metric_units": dict(_UNITS),
    }
    return {"meta": meta, "rows": rows, "summary": summarise(rows, patterns, labels), "skipped": skipped}


def _kinds(sel: Sequence[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in sel:
        if r.get("kind"):
            out[r["kind"]] = out.get(r["kind"], 0) + 1
    return dict(sorted(out.items()))


def summarise(rows: Sequence[dict], patterns: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """Per pattern and configuration: frames, mean points, mean seconds, the mean of each metric
    (``mean_metrics``: NaN and inf propagate) and the edge-band RMSE.

    ``edge_rmse`` is the mean over the frames whose value is not NaN (frames without a ground-truth
    depth edge are left out; NaN if no frame has one), ``edge_frames`` the number of those frames,
    and ``kinds`` the frames per input kind (``{"scan": 1}``). Rows without ``edge_rmse`` or
    ``kind`` (results written before they existed) give no such keys.
    """
    out = []
    for pattern in patterns:
        for label in labels:
            sel = [r for r in rows if r["pattern"] == pattern and r["config"] == label]
            if not sel:
                continue
            m = mean_metrics([{k: r[k] for k in METRIC_KEYS} for r in sel])
            entry = {"pattern": pattern, "config": label, "frames": len(sel),
                     "points": float(np.mean([r["points"] for r in sel])),
                     "seconds": float(np.mean([r["seconds"] for r in sel])), **m}
            if all(EDGE_KEY in r for r in sel):
                edges = [float(r[EDGE_KEY]) for r in sel if not math.isnan(float(r[EDGE_KEY]))]
                entry[EDGE_KEY] = float(np.mean(edges)) if edges else math.nan
                entry["edge_frames"] = len(edges)
            kinds = _kinds(sel)
            if kinds:
                entry["kinds"] = kinds
            out.append(entry)
    return out


def format_metric(key: str, value) -> str:
    """A metric value as the tables print it (mm with 1 decimal, the others with 2; inf/nan as words)."""
    v = float(value)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.1f}" if key in ("rmse", "mae", EDGE_KEY) else f"{v:.2f}"


def _best(values: list[float], higher: bool) -> Optional[float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return None
    return max(finite) if higher else min(finite)


def summary_markdown(result: dict) -> str:
    """The per-dataset markdown summary: one row per pattern and configuration, side by side."""
    meta = result["meta"]
    ds = meta["dataset"]
    env = meta.get("environment", {})
    size = ds.get("working_size")
    lines = [
        f"## {ds['title']} (`{ds['dataset']}`): {ds['frames']} frame(s)",
        "",
        f"Data: {ds.get('root')}" + (f", list {ds['list']}" if ds.get("list") else "")
        + (f", working size {size[0]}x{size[1]}" if size else ", stored size") + ". "
        + (f"Stored sparse input: {ds['sparse']}. " if ds.get("sparse") else "")
        + f"Generated patterns are seeded per frame from seed {meta['seed']}.",
        f"Measured {env.get('timestamp', '?')} on {env.get('cpu_model', '?')} ({env.get('cpu_cores', '?')} cores). "
        "Mean over frames of the per-frame metrics (official definitions): RMSE, MAE in mm; iRMSE, iMAE "
        "in 1/km; REL, δ1 in %; s/frame is the configuration's own time. Edge RMSE (mm, not an official "
        "metric): the RMSE over the evaluated pixels within 3 px of a ground-truth depth edge (a 10 % depth "
        "jump between valid neighbours); frames whose ground truth has no depth edge (NaN) are left out "
        "of its mean, the frames with one are counted in parentheses. Input: the frames per input kind "
        "of the sparse input (scan: scan-line LiDAR-like; scattered: random, SLAM or corner points). "
        "Best value per pattern in bold.",
        "",
        "| pattern | config | frames | " + " | ".join(_LABELS[k] for k in TABLE_KEYS) + " | s/frame | input |",
        "|---|---|---|" + "---|" * len(TABLE_KEYS) + "---|---|",
    ]
    summary = result["summary"]
    for pattern in meta["patterns"]:
        sel = [r for r in summary if r["pattern"] == pattern]
        best = {k: _best([float(r[k]) for r in sel if k in r], k.startswith("d")) for k in TABLE_KEYS}
        for r in sel:
            cells = []
            for k in TABLE_KEYS:
                if k not in r:  # a result written before the metric existed
                    cells.append("–")
                    continue
                s = format_metric(k, r[k])
                if k == EDGE_KEY and "edge_frames" in r and r["edge_frames"] != r["frames"]:
                    s += f" ({r['edge_frames']})"
                cells.append(f"**{s}**" if best[k] is not None and float(r[k]) == best[k] else s)
            kinds = ", ".join(f"{k} {n}" if len(r.get("kinds", {})) > 1 else k for k, n in r.get("kinds", {}).items())
            lines.append(f"| {pattern} | {r['config']} | {r['frames']} | " + " | ".join(cells)
                         + f" | {float(r['seconds']):.3f} | {kinds or '–'} |")
    if result.get("skipped"):
        lines += ["", f"Skipped {len(result['skipped'])} frame/pattern pair(s): "
                  + "; ".join(f"{s['frame']} {s['pattern']} ({s['reason']})" for s in result["skipped"][:10])]
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


_CSV_FIELDS = ("dataset", "frame", "pattern", "config", "points", "kind", "seconds") + METRIC_KEYS + (EDGE_KEY,)
_NUMERIC = set(METRIC_KEYS) | {EDGE_KEY, "seconds"}


def write_outputs(result: dict, out_dir, prefix: str) -> dict[str, Path]:
    """Write ``<prefix>.csv`` (one row per frame, pattern and configuration; full precision),
    ``<prefix>.md`` (``summary_markdown``) and ``<prefix>.json`` (everything; non-finite numbers
    as the strings "inf"/"nan") into ``out_dir``. CSV columns: dataset, frame, pattern, config,
    points, kind, seconds, ``METRIC_KEYS``, edge_rmse ("nan": no depth edge in the frame's ground
    truth); a row without kind or edge_rmse (an older result) leaves the cell empty.

    Returns:
        dict[str, Path]: ``{"csv": ..., "md": ..., "json": ...}``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out} ({exc}); pass a writable --out") from None
    paths = {"csv": out / f"{prefix}.csv", "md": out / f"{prefix}.md", "json": out / f"{prefix}.json"}
    name = result["meta"]["dataset"]["dataset"]
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in result["rows"]:
            w.writerow({"dataset": name, **{k: (repr(float(r[k])) if k in _NUMERIC else r[k])
                                            for k in _CSV_FIELDS if k != "dataset" and k in r}})
    paths["md"].write_text(summary_markdown(result))
    paths["json"].write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    return paths


def read_result(path) -> dict:
    """Load a result JSON written by ``write_outputs`` (the strings "inf"/"nan" back to floats)."""
    numeric = _NUMERIC | {"points"}

    def fix(v, key=None):
        if key in numeric and isinstance(v, str) and v in ("inf", "-inf", "nan"):
            return float(v)
        if isinstance(v, dict):
            return {k: fix(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read result file {path} ({exc}); re-run the evaluation") from None
    out = fix(data)
    for k in ("meta", "rows", "summary"):
        if k not in out:
            raise InputError(f"{path} is not a psdrt eval result (no {k!r}); re-run the evaluation")
    return out
