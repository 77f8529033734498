"""Engine fingerprints and sidecar manifests (stdlib + NumPy only; runs on the target without torch).

A TensorRT engine is only valid for the TensorRT version, GPU and builder options it was built with,
and a stale engine or timing cache fails silently or runs slowly (docs/platform.md §1). Every engine
therefore gets

* a **fingerprint**: a stable SHA-256 of exactly the inputs that determine the engine (ONNX bytes,
  precision, shapes/profiles, TensorRT version, compute capability, builder options), in its file
  name ``<stem>-<precision>-<fp16hex>.engine``, so different builds never overwrite each other;
* a **sidecar manifest** ``<engine>.manifest.json`` with those inputs plus the GPU name, the engine's
  own SHA-256 and the correctness-gate report, checked before the engine is deserialised.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from psdrt.runtime.errors import ArtifactError, InputError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "EngineManifest",
    "canonical_json",
    "fingerprint",
    "engine_file_name",
    "manifest_path",
    "sha256_file",
    "write_manifest",
    "read_manifest",
    "validate_manifest",
    "PRECISIONS",
    "precision_parts",
]

#: artefact precisions, everywhere (build, gate, engines, run/bench/eval)
PRECISIONS = ("fp32", "fp16", "int8")


def precision_parts(spec: str) -> dict:
    """``"int8"`` -> {"encoder": "int8", "head": "int8"}; ``"int8+fp32"`` (ENC+HEAD) ->
    {"encoder": "int8", "head": "fp32"}: the spelling of ``psd_artifacts_read`` and
    ``Pipeline.from_artifacts``.

    Raises:
        InputError: an unknown precision (names the accepted spellings).
    """
    enc, plus, head = str(spec).strip().lower().partition("+")
    head = head if plus else enc
    if enc not in PRECISIONS or head not in PRECISIONS:
        raise InputError(f"unknown precision {spec!r}; use {', '.join(PRECISIONS)}, or ENC+HEAD such as "
                         "int8+fp32 (an INT8 encoder with the FP32 head)")
    return {"encoder": enc, "head": head}

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
_REBUILD = "rebuild it on the target with `psdrt build` (engines are not portable across TensorRT versions or GPUs)"

PathLike = Union[str, Path]


def _normalise(value: Any) -> Any:
    """Map to JSON-native values so that equal inputs hash equally (tuples->lists, paths->str)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"fingerprint keys must be strings, got {k!r}; convert them with str()")
            out[k] = _normalise(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"fingerprint inputs must be finite, got {value}")
        return value
    if hasattr(value, "item") and callable(value.item):  # NumPy scalar
        return _normalise(value.item())
    raise InputError(f"cannot fingerprint {type(value).__name__} {value!r}; pass JSON-like values")


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists; the input of every fingerprint."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(
    *,
    onnx_sha256: str,
    precision: str,
    shapes: Mapping[str, Any],
    trt_version: str,
    compute_capability: str,
    builder_options: Mapping[str, Any],
) -> str:
    """Stable hex SHA-256 of exactly the inputs that determine an engine.

    Args:
        onnx_sha256 (str): SHA-256 of the ONNX bytes.
        precision (str): ``"fp32"``, ``"fp16"`` or ``"int8"``.
        shapes (Mapping): input name -> fixed shape, or ``{"min", "opt", "max"}`` of a profile.
        trt_version (str): ``tensorrt.__version__`` of the builder.
        compute_capability (str): e.g. ``"8.7"``.
        builder_options (Mapping): every other builder setting that changes the plan (workspace,
            DLA core, strongly typed, flags...). The timing cache path is not one (it changes
            tactic timing, not validity) and must not be passed.

    Returns:
        str: 64 hex characters. Dict key order does not matter; any value change does.
    """
    doc = {
        "onnx_sha256": str(onnx_sha256), "precision": str(precision).lower(), "shapes": shapes,
        "trt_version": str(trt_version), "compute_capability": str(compute_capability),
        "builder_options": builder_options,
    }
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def engine_file_name(stem: str, precision: str, fp: str) -> str:
    """``<stem>-<precision>-<first 16 hex of the fingerprint>.engine``."""
    return f"{stem}-{str(precision).lower()}-{fp[:16]}.engine"


def manifest_path(engine_path: PathLike) -> Path:
    """The sidecar manifest of an engine file: ``<engine>.manifest.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineManifest:
    """Everything needed to decide whether an engine may be loaded here.

    Args:
        fingerprint (str): :func:`fingerprint` of the fields below.
        trt_version (str): TensorRT that built the engine.
        gpu_name (str): e.g. ``"Orin"``, ``"NVIDIA H100 80GB HBM3"``.
        compute_capability (str): e.g. ``"8.7"``.
        precision (str): ``"fp32"``, ``"fp16"`` or ``"int8"``.
        shapes (Mapping): input shapes / optimisation profiles.
        onnx_sha256 (str): SHA-256 of the source ONNX.
        builder_options (Mapping): builder settings that entered the fingerprint.
        engine_sha256 (str): SHA-256 of the engine file (catches truncated copies).
        onnx_path (str): where the ONNX was read from (information only).
        gate (Mapping | None): ``GateReport.to_dict()`` of the engine, once gated.
        created (str): UTC build time, ISO 8601.
        format (int): manifest format version.
    """

    fingerprint: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shapes: Mapping[str, Any]
    onnx_sha256: str
    builder_options: Mapping[str, Any]
    engine_sha256: str = ""
    onnx_path: str = ""
    gate: Optional[Mapping[str, Any]] = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format: int = MANIFEST_FORMAT

    def expected_fingerprint(self) -> str:
        """Recompute the fingerprint from the manifest's own fields."""
        return fingerprint(onnx_sha256=self.onnx_sha256, precision=self.precision, shapes=self.shapes,
                           trt_version=self.trt_version, compute_capability=self.compute_capability,
                           builder_options=self.builder_options)

    def to_dict(self) -> dict:
        return _normalise(asdict(self))

    def with_gate(self, gate: Mapping[str, Any]) -> "EngineManifest":
        """A copy with the gate report attached."""
        return EngineManifest(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "gate": dict(gate)})


def write_manifest(engine_path: PathLike, manifest: EngineManifest) -> Path:
    """Write the sidecar of ``engine_path`` atomically (temp file + rename) and return its path."""
    path = manifest_path(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_manifest(engine_path: PathLike) -> EngineManifest:
    """Read and self-check the sidecar of ``engine_path``.

    Raises:
        ArtifactError: missing, unreadable, of another format, or its fingerprint does not match its fields.
    """
    path = manifest_path(engine_path)
    if not path.is_file():
        raise ArtifactError(f"engine {engine_path} has no manifest ({path.name}); psdrt does not load engines of "
                            f"unknown origin: {_REBUILD}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"manifest {path} has format {data.get('format')}, this psdrt reads "
                                f"{MANIFEST_FORMAT}; {_REBUILD}")
        names = {f.name for f in fields(EngineManifest)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ArtifactError(f"manifest {path} has unknown fields {unknown}; it was written by another psdrt "
                                f"version: {_REBUILD}")
        m = EngineManifest(**data)
    except ArtifactError:
        raise
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"manifest {path} is corrupt ({exc}); {_REBUILD}") from None
    if m.expected_fingerprint() != m.fingerprint:
        raise ArtifactError(f"manifest {path} was edited: its fingerprint does not match its fields; {_REBUILD}")
    return m


def validate_manifest(
    manifest: EngineManifest,
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    engine_path: Optional[PathLike] = None,
) -> None:
    """Check that an engine may be loaded with this TensorRT on this GPU.

    Args:
        manifest (EngineManifest): the engine's sidecar.
        trt_version (str): the installed ``tensorrt.__version__``.
        gpu_name (str): name of the GPU that will run the engine.
        compute_capability (str): its compute capability, e.g. ``"8.7"``.
        engine_path (path, optional): when given, its bytes must hash to ``manifest.engine_sha256``.

    Raises:
        ArtifactError: a mismatch; the message names both sides and the fix.
    """
    problems = []
    if str(manifest.trt_version) != str(trt_version):
        problems.append(f"it was built with TensorRT {manifest.trt_version}, this is TensorRT {trt_version}")
    if str(manifest.compute_capability) != str(compute_capability):
        problems.append(f"it was built for compute capability {manifest.compute_capability} "
                        f"({manifest.gpu_name}), this GPU is {compute_capability} ({gpu_name})")
    elif str(manifest.gpu_name) != str(gpu_name):
        problems.append(f"it was built on {manifest.gpu_name}, this GPU is {gpu_name}")
    if engine_path is not None and manifest.engine_sha256:
        actual = sha256_file(engine_path)
        if actual != manifest.engine_sha256:
            problems.append(f"the engine file's SHA-256 {actual[:16]}... differs from the manifest's "
                            f"{manifest.engine_sha256[:16]}... (truncated or replaced copy)")
    if problems:
        where = f"engine {engine_path}" if engine_path is not None else "this engine"
        raise ArtifactError(f"cannot load {where}: " + "; ".join(problems) + f". Fix: {_REBUILD}.")
