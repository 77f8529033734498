"""The correctness gate, NumPy side: golden inputs on disk, per-precision thresholds, comparison.

Every artefact (ONNX FP32/FP16/INT8, TensorRT engine, ONNX Runtime session: anything with the
``Backend`` protocol's ``run(feeds) -> dict``) is run on fixed golden inputs and compared with the
FP32 PyTorch reference before it is accepted (docs/platform.md §1: TensorRT 10.3 miscompiles ViT
depth models in the field, so nothing is trusted unchecked). The golden inputs and the reference
outputs are produced once, with torch, by ``psdrt.export.gate``; this module only reads them, so the
same gate runs on the target right after an engine is built there, without torch.

Two checks, both against the FP32 reference:

* **tensors**: every output of the artefact (for the encoder: relative inverse depth and the four
  DPT features) by relative L2 error ``||y - r|| / ||r||`` and normalised max error
  ``max|y - r| / max|r|``; any NaN/Inf or shape mismatch fails;
* **depth** (when the caller passes the artefact's pipeline as ``depth_fn``): the end-to-end depth
  of the pipeline built on the artefact vs the FP32 pipeline's depth, with ``depth_metrics``
  (RMSE, AbsRel, delta1), the reference depth playing the ground truth.

The thresholds (:data:`THRESHOLDS`) are a frozen table; how they were chosen is written beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from psdrt.runtime.errors import ArtifactError, InputError
from psdrt.runtime.manifest import PRECISIONS
from psdrt.runtime.metrics import depth_metrics

__all__ = [
    "PRECISIONS",
    "GOLDEN_FORMAT",
    "Thresholds",
    "THRESHOLDS",
    "GoldenCase",
    "GoldenInputs",
    "TensorRow",
    "DepthRow",
    "GateReport",
    "compare_tensor",
    "compare_depth",
    "check_backend",
]

#: version of the golden ``.npz`` layout written by :meth:`GoldenInputs.save`
GOLDEN_FORMAT = 1
_TINY = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """Acceptance limits of one precision.

    Args:
        tensor_rel_l2 (float): largest ``||y - r||_2 / ||r||_2`` of any output tensor.
        tensor_max_rel (float): largest ``max|y - r| / max|r|`` of any output tensor.
        depth_rmse_rel (float): largest end-to-end depth RMSE as a fraction of the mean reference
            depth of the frame (RMSE in mm depends on the scene scale; the fraction does not).
        depth_absrel_pct (float): largest AbsRel (``depth_metrics`` ``rel``, in %).
        depth_d1_pct (float): smallest delta1 (%), i.e. share of pixels within 1.25x of the reference.
    """

    tensor_rel_l2: float
    tensor_max_rel: float
    depth_rmse_rel: float
    depth_absrel_pct: float
    depth_d1_pct: float


# How the limits were chosen. Measured on this project's CPU machines with random weights (PSDModel
# ViT-S, torch.manual_seed(0), randomize_head_(seed=1)), encoder at 196x266 and 392x518, frames
# Middlebury + KITTI 0000000005 + NYU 00000, sparse random 1 %, end-to-end mode ``psd``:
#
# | artefact vs PyTorch FP32        | tensor rel-L2 | tensor max-rel | depth RMSE/mean | AbsRel %  | delta1 %  |
# |---------------------------------|---------------|----------------|-----------------|-----------|-----------|
# | ONNX Runtime FP32               | <= 1.2e-6     | <= 5.4e-6      | <= 4.5e-4       | <= 0.0054 | 100       |
# | PyTorch FP16 (CPU, model.half())| <= 9.6e-4     | <= 1.3e-3      | <= 1.2e-2       | <= 0.43   | 100       |
# | ONNX Runtime INT8 static Q/DQ   | <= 2.9e-2     | <= 5.3e-2      | <= 5.0e-2       | <= 2.5    | >= 99.73  |
#
# (worst over frames, the five encoder outputs and both sizes.)
# End-to-end depth amplifies tensor noise (~1e-6 -> ~1e-4 relative: kNN/bin decisions near ties
# flip), so the depth limits are not the tensor limits. Each limit is ~4-100x above the measured
# value, leaving room for GPU kernels (TensorRT FP16 fuses attention/LayerNorm differently from
# PyTorch), while one perturbed weight fails fp32 and a 2 % output scale fails fp32 and fp16
# (tests/export/test_gate.py).
# A TensorRT "fp32" engine built with TF32 (TensorRT's default on Ampere+) lands near 1e-3: gate it
# as fp16 or build with TF32 disabled.
THRESHOLDS: Mapping[str, Thresholds] = MappingProxyType({
    "fp32": Thresholds(tensor_rel_l2=1e-4, tensor_max_rel=1e-3, depth_rmse_rel=5e-3,
                       depth_absrel_pct=0.05, depth_d1_pct=99.9),
    "fp16": Thresholds(tensor_rel_l2=1e-2, tensor_max_rel=5e-2, depth_rmse_rel=5e-2,
                       depth_absrel_pct=2.0, depth_d1_pct=99.0),
    "int8": Thresholds(tensor_rel_l2=1e-1, tensor_max_rel=2e-1, depth_rmse_rel=1e-1,
                       depth_absrel_pct=5.0, depth_d1_pct=97.0),
})


def _precision(precision: str) -> str:
    p = str(precision).lower()
    if p not in THRESHOLDS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return p


# ------------------------------------------------------------------------------------------------
# Golden inputs


@dataclass(frozen=True)
class GoldenCase:
    """One golden input with its FP32 reference results.

    Args:
        name (str): e.g. ``"middlebury/motorcycle"``.
        feeds (Mapping[str, ndarray]): artefact inputs by tensor name.
        expected (Mapping[str, ndarray]): FP32 reference outputs by tensor name.
        rgb, sparse, K (ndarray | None): the frame the feeds were made from, at the size the
            pipeline runs (for the end-to-end check).
        depth (ndarray | None): the FP32 reference pipeline's depth of that frame (H, W) metres.
    """

    name: str
    feeds: Mapping[str, np.ndarray]
    expected: Mapping[str, np.ndarray]
    rgb: Optional[np.ndarray] = None
    sparse: Optional[np.ndarray] = None
    K: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None


_FRAME_FIELDS = ("rgb", "sparse", "K", "depth")


@dataclass(frozen=True)
class GoldenInputs:
    """A fixed, ordered set of golden cases plus JSON metadata, stored as one ``.npz``.

    ``meta`` says what produced the reference (model, mode, preset, fm_lower, shapes, seed). Arrays
    are stored by position (``c0.in1``) with the tensor names in the metadata, so any ONNX tensor
    name survives the round trip. Loading never unpickles.
    """

    cases: tuple[GoldenCase, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cases:
            raise InputError("GoldenInputs needs at least one case; generate them with psdrt.export.gate")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.cases[0].feeds)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.cases[0].expected)

    def _arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        index = []
        for i, c in enumerate(self.cases):
            entry = {"name": c.name, "inputs": list(c.feeds), "outputs": list(c.expected), "frame": []}
            for j, a in enumerate(c.feeds.values()):
                arrays[f"c{i}.in{j}"] = np.asarray(a)
            for j, a in enumerate(c.expected.values()):
                arrays[f"c{i}.out{j}"] = np.asarray(a)
            for f in _FRAME_FIELDS:
                if getattr(c, f) is not None:
                    arrays[f"c{i}.{f}"] = np.asarray(getattr(c, f))
                    entry["frame"].append(f)
            index.append(entry)
        header = {"format": GOLDEN_FORMAT, "meta": dict(self.meta), "cases": index}
        return arrays, header

    def sha256(self) -> str:
        """Digest of the content (names, metadata, dtypes, shapes and bytes), independent of zip details."""
        arrays, header = self._arrays()
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for k in sorted(arrays):
            a = np.ascontiguousarray(arrays[k])
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, path: Union[str, Path]) -> Path:
        """Write ``path`` (``.npz``, compressed) and return it."""
        arrays, header = self._arrays()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, __header__=np.array(json.dumps(header, sort_keys=True)), **arrays)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "GoldenInputs":
        """Read a file written by :meth:`save`.

        Raises:
            ArtifactError: missing, corrupt or of another format version.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"golden inputs not found: {path}; generate them with "
                                "psdrt.export.gate.make_golden_inputs (needs torch) and copy the .npz")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["__header__"]))
                if header.get("format") != GOLDEN_FORMAT:
                    raise ArtifactError(f"{path} has golden format {header.get('format')}, this psdrt reads "
                                        f"{GOLDEN_FORMAT}; regenerate it with this version of psdrt")
                cases = []
                for i, e in enumerate(header["cases"]):
                    frame = {f: z[f"c{i}.{f}"] for f in e["frame"]}
                    cases.append(GoldenCase(
                        name=e["name"],
                        feeds={n: z[f"c{i}.in{j}"] for j, n in enumerate(e["inputs"])},
                        expected={n: z[f"c{i}.out{j}"] for j, n in enumerate(e["outputs"])},
                        **frame,
                    ))
        except ArtifactError:
            raise
        except Exception as exc:  # zip/JSON/key errors: all mean "not a golden file"
            raise ArtifactError(f"cannot read golden inputs {path} ({type(exc).__name__}: {exc}); the file "
                                "is corrupt or not a psdrt golden file: regenerate it") from None
        return cls(cases=tuple(cases), meta=header.get("meta", {}))


# ------------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class TensorRow:
    """Comparison of one output tensor of one case."""

    case: str
    tensor: str
    shape: tuple
    rel_l2: float
    max_rel: float
    max_abs: float
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class DepthRow:
    """End-to-end depth of one case: artefact pipeline vs FP32 pipeline."""

    case: str
    rmse_mm: float
    rmse_limit_mm: float
    absrel_pct: float
    d1_pct: float
    ok: bool
    reason: str = ""


def compare_tensor(case: str, name: str, out: Any, ref: np.ndarray, limits: Thresholds) -> TensorRow:
    """Compare one artefact output with its reference (float64 arithmetic)."""
    ref64 = np.asarray(ref, dtype=np.float64)
    if out is None:
        return TensorRow(case, name, tuple(ref64.shape), math.inf, math.inf, math.inf, False, "missing output")
    y = np.asarray(out, dtype=np.float64)
    if y.shape != ref64.shape:
        if y.size == ref64.size and y.squeeze().shape == ref64.squeeze().shape:
            y = y.reshape(ref64.shape)  # (1, H, W) vs (1, 1, H, W): a layout detail, not an error
        else:
            return TensorRow(case, name, tuple(y.shape), math.inf, math.inf, math.inf, False,
                             f"shape {tuple(y.shape)} != reference {tuple(ref64.shape)}")
    if not np.isfinite(y).all():
        bad = int(y.size - np.isfinite(y).sum())
        return TensorRow(case, name, tuple(y.shape), math.inf, math.inf, math.inf, False, f"{bad} non-finite values")
    d = y - ref64
    rel_l2 = float(np.linalg.norm(d) / max(float(np.linalg.norm(ref64)), _TINY))
    max_abs = float(np.abs(d).max()) if d.size else 0.0
    max_rel = max_abs / max(float(np.abs(ref64).max()) if d.size else 0.0, _TINY)
    reasons = []
    if rel_l2 > limits.tensor_rel_l2:
        reasons.append(f"rel-L2 > {limits.tensor_rel_l2:g}")
    if max_rel > limits.tensor_max_rel:
        reasons.append(f"max-rel > {limits.tensor_max_rel:g}")
    return TensorRow(case, name, tuple(y.shape), rel_l2, max_rel, max_abs, not reasons, "; ".join(reasons))


def compare_depth(case: str, depth: Any, ref_depth: np.ndarray, limits: Thresholds) -> DepthRow:
    """Compare the artefact pipeline's depth with the FP32 pipeline's (``depth_metrics``, ref as GT)."""
    ref = np.asarray(ref_depth, dtype=np.float64)
    y = np.asarray(depth, dtype=np.float64).reshape(-1, *ref.shape[-2:])[0] if np.size(depth) == ref.size else None
    if y is None:
        return DepthRow(case, math.inf, 0.0, math.inf, 0.0, False,
                        f"depth shape {np.shape(depth)} != reference {ref.shape}")
    if not np.isfinite(y).all():
        return DepthRow(case, math.inf, 0.0, math.inf, 0.0, False, "non-finite depth")
    valid = ref > 0
    m = depth_metrics(y, ref, valid)
    limit_mm = limits.depth_rmse_rel * 1000.0 * float(ref[valid].mean()) if valid.any() else 0.0
    reasons = []
    if not m["rmse"] <= limit_mm:
        reasons.append(f"RMSE > {limits.depth_rmse_rel:g} x mean depth")
    if not m["rel"] <= limits.depth_absrel_pct:
        reasons.append(f"AbsRel > {limits.depth_absrel_pct:g} %")
    if not m["d1"] >= limits.depth_d1_pct:
        reasons.append(f"delta1 < {limits.depth_d1_pct:g} %")
    return DepthRow(case, m["rmse"], limit_mm, m["rel"], m["d1"], not reasons, "; ".join(reasons))


@dataclass(frozen=True)
class GateReport:
    """Outcome of the gate for one artefact; ``to_dict()``/``to_json()`` give plain JSON."""

    artifact: str
    precision: str
    passed: bool
    thresholds: Thresholds
    tensors: tuple[TensorRow, ...]
    depth: tuple[DepthRow, ...]
    golden_sha256: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean({
            "artifact": self.artifact, "precision": self.precision, "passed": self.passed,
            "thresholds": asdict(self.thresholds),
            "tensors": [asdict(r) for r in self.tensors],
            "depth": [asdict(r) for r in self.depth],
            "golden_sha256": self.golden_sha256, "notes": list(self.notes),
        })

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        t = self.thresholds
        lines = [
            f"Correctness gate: {self.artifact} ({self.precision}) **{'PASS' if self.passed else 'FAIL'}**",
            "",
            f"| case | tensor | shape | rel-L2 (<= {t.tensor_rel_l2:g}) | max-rel (<= {t.tensor_max_rel:g}) "
            "| max-abs | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.tensors:
            lines.append(f"| {r.case} | {r.tensor} | {'x'.join(map(str, r.shape))} | {r.rel_l2:.3g} | "
                         f"{r.max_rel:.3g} | {r.max_abs:.3g} | {'yes' if r.ok else 'NO: ' + r.reason} |")
        if self.depth:
            lines += [
                "",
                f"| case | depth RMSE mm (limit) | AbsRel % (<= {t.depth_absrel_pct:g}) | "
                f"delta1 % (>= {t.depth_d1_pct:g}) | ok |",
                "|---|---|---|---|---|",
            ]
            for r in self.depth:
                lines.append(f"| {r.case} | {r.rmse_mm:.4g} ({r.rmse_limit_mm:.4g}) | {r.absrel_pct:.4g} | "
                             f"{r.d1_pct:.4g} | {'yes' if r.ok else 'NO: ' + r.reason} |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _input_dtypes(backend) -> dict[str, np.dtype]:
    """Input dtypes declared by the backend (``input_specs()`` as a list or a name->spec mapping)."""
    try:
        specs = backend.input_specs()
    except Exception:  # a minimal backend may not declare specs; feeds then go as stored
        return {}
    items = specs.values() if isinstance(specs, Mapping) else specs
    out = {}
    for s in items:
        name, dtype = getattr(s, "name", None), getattr(s, "dtype", None)
        if name is not None and dtype is not None:
            try:
                out[name] = np.dtype(dtype)
            except TypeError:
                pass
    return out


def check_backend(
    backend,
    golden: GoldenInputs,
    precision: str,
    *,
    depth_fn: Optional[Callable[[GoldenCase], np.ndarray]] = None,
    thresholds: Optional[Thresholds] = None,
    artifact: Optional[str] = None,
    raise_on_fail: bool = True,
) -> GateReport:
    """Run ``backend`` on every golden case and compare with the FP32 reference.

    Args:
        backend (Backend): anything with ``run(feeds) -> dict[str, ndarray]`` (and optionally
            ``input_specs()``, whose dtypes the feeds are cast to, e.g. FP16 inputs).
        golden (GoldenInputs): golden inputs and FP32 reference outputs.
        precision (str): ``"fp32"``, ``"fp16"`` or ``"int8"``: selects the row of :data:`THRESHOLDS`.
        depth_fn (callable, optional): the artefact's pipeline, ``depth_fn(case) -> (H, W) depth``;
            when given, each case's depth is compared with ``case.depth``. Defaults to None (tensors only).
        thresholds (Thresholds, optional): override the table row. Defaults to ``THRESHOLDS[precision]``.
        artifact (str, optional): name shown in the report. Defaults to the backend's class name.
        raise_on_fail (bool): raise on failure (the gate); False returns the failing report. Defaults to True.

    Returns:
        GateReport: ``passed`` is True (unless ``raise_on_fail`` is False).

    Raises:
        ArtifactError: the artefact fails; the message holds the comparison table (markdown).
    """
    p = _precision(precision)
    limits = thresholds or THRESHOLDS[p]
    name = artifact or type(backend).__name__
    dtypes = _input_dtypes(backend)
    tensors: list[TensorRow] = []
    depths: list[DepthRow] = []
    notes: list[str] = []
    for case in golden.cases:
        feeds = {k: np.ascontiguousarray(v, dtype=dtypes.get(k, np.asarray(v).dtype)) for k, v in case.feeds.items()}
        outs = backend.run(feeds)
        for tname, ref in case.expected.items():
            tensors.append(compare_tensor(case.name, tname, outs.get(tname), ref, limits))
        if depth_fn is not None:
            if case.depth is None:
                notes.append(f"{case.name}: no reference depth stored; end-to-end check skipped")
            else:
                depths.append(compare_depth(case.name, depth_fn(case), case.depth, limits))
    if depth_fn is None:
        notes.append("end-to-end depth not checked (no pipeline given)")
    passed = all(r.ok for r in tensors) and all(r.ok for r in depths)
    report = GateReport(name, p, passed, limits, tuple(tensors), tuple(depths), golden.sha256(), tuple(notes))
    if not passed and raise_on_fail:
        raise ArtifactError(
            f"{name} failed the {p} correctness gate against the FP32 reference; do not deploy it. "
            "Rebuild it (for TensorRT 10.3 on JetPack 6.1/6.2, use TensorRT >= 10.13 or build FP32), or "
            "check the export.\n\n" + report.to_markdown()
        )
    return report
