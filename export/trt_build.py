"""Build a TensorRT engine from ONNX as a chain of small plain functions (style G5).

``load_onnx(path)`` -> ``parse_network(onnx_bytes, flags)`` -> ``build_serialized(parsed, BuildConfig)``
-> ``deserialize(plan)``; :func:`build_engine` strings them together, names the engine by its
fingerprint, writes the sidecar manifest and (given golden inputs) runs the correctness gate.

Precision (docs/platform.md §1):
* ``fp16``: on TensorRT >= 10 (feature-detected: ``STRONGLY_TYPED``) a strongly typed network
  built from an **FP16 ONNX** (types come from the graph; the FP16 flag is deprecated since
  10.12); on 8.x the FP16 builder flag on the FP32 ONNX;
* ``int8``: explicit quantization from a **Q/DQ ONNX** (``psdrt.calibration``), strongly typed on
  10.x, INT8+FP16 flags on 8.x; never INT8 flags without Q/DQ;
* ``fp32``: no flags (TF32 stays TensorRT's default on Ampere+; gate it as such).

No torch here: this module runs on the target (Jetson) where engines must be built.
Nothing is interactive; an existing engine with the same fingerprint and a valid manifest is reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from psdrt.runtime import _cuda
from psdrt.runtime.backends import _trt_compat as compat
from psdrt.runtime.errors import ArtifactError, InputError
from psdrt.runtime.manifest import (
    PRECISIONS,
    EngineManifest,
    engine_file_name,
    fingerprint,
    read_manifest,
    sha256_file,
    validate_manifest,
    write_manifest,
)

__all__ = [
    "PRECISIONS",
    "DEFAULT_WORKSPACE",
    "ShapeRange",
    "BuildConfig",
    "OnnxModel",
    "ParsedNetwork",
    "TargetInfo",
    "load_onnx",
    "target_info",
    "parse_network",
    "build_serialized",
    "deserialize",
    "build_engine",
]

log = logging.getLogger(__name__)

#: builder workspace when BuildConfig.workspace is None: 1 GiB fits Orin Nano 8 GB and ViT-L at 518
DEFAULT_WORKSPACE = 1 << 30

Shape = Tuple[int, ...]
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimisation-profile range (``min <= opt <= max`` axis by axis)."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for f in ("min", "opt", "max"):
            object.__setattr__(self, f, tuple(int(d) for d in getattr(self, f)))
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise InputError(f"profile ranks differ: {self.min} / {self.opt} / {self.max}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)) or min(self.min, default=1) < 1:
            raise InputError(f"profile needs 1 <= min <= opt <= max per axis, got {self.min} / {self.opt} / {self.max}")

    @classmethod
    def fixed(cls, shape: Sequence[int]) -> "ShapeRange":
        return cls(tuple(shape), tuple(shape), tuple(shape))

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildConfig:
    """Everything the builder is told. Fields left None resolve in :meth:`resolved` (one place).

    Args:
        precision (str, optional): ``"fp32"``, ``"fp16"`` or ``"int8"``. Defaults to ``"fp16"``.
        workspace (int, optional): workspace pool limit in bytes. Defaults to 1 GiB.
        profiles (tuple, optional): optimisation profiles, each a mapping input name -> ShapeRange.
            Needed when the ONNX has dynamic axes. Defaults to none (static ONNX).
        timing_cache (path, optional): timing cache file, loaded if present and saved after the
            build. Keep one per TensorRT version and GPU (TensorRT rejects a foreign one here).
            Defaults to None (no cache).
        dla_core (int, optional): build for this DLA core (Xavier/Orin) with GPU fallback. DLA
            needs fp16 or int8. Defaults to None (GPU).
        strongly_typed (bool, optional): types come from the ONNX. Defaults to True for fp16/int8
            when this TensorRT supports it (>= 10), else False.
    """

    precision: Optional[str] = None
    workspace: Optional[int] = None
    profiles: Tuple[Mapping[str, ShapeRange], ...] = ()
    timing_cache: Optional[PathLike] = None
    dla_core: Optional[int] = None
    strongly_typed: Optional[bool] = None

    def resolved(self, feat: "compat.TrtFeatures") -> "BuildConfig":
        """A copy with every None default filled in for the TensorRT described by ``feat``."""
        p = (self.precision or "fp16").lower()
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.dla_core is not None and p == "fp32":
            raise InputError("DLA runs fp16 or int8 only; pass precision='fp16' (or 'int8' with a Q/DQ ONNX)")
        st = self.strongly_typed
        if st is None:
            st = p in ("fp16", "int8") and feat.has_strongly_typed
        profiles = tuple({k: (v if isinstance(v, ShapeRange) else ShapeRange(*v)) for k, v in prof.items()}
                         for prof in self.profiles)
        return BuildConfig(precision=p, workspace=int(self.workspace or DEFAULT_WORKSPACE), profiles=profiles,
                           timing_cache=self.timing_cache, dla_core=self.dla_core, strongly_typed=bool(st))

    def shapes(self) -> dict:
        """Profiles as JSON (manifest and fingerprint)."""
        return {"profiles": [{k: v.as_dict() for k, v in sorted(prof.items())} for prof in self.profiles]}

    def builder_options(self) -> dict:
        """The settings that change the plan (fingerprint input); the timing cache path is not one."""
        return {"workspace": self.workspace, "dla_core": self.dla_core, "strongly_typed": self.strongly_typed}


class OnnxModel(NamedTuple):
    """ONNX bytes with their SHA-256 and where they came from."""

    data: bytes
    sha256: str
    path: str


class ParsedNetwork(NamedTuple):
    """The builder, network and parser of one parse; the parser owns the weights, so keep all three."""

    builder: Any
    network: Any
    parser: Any
    strongly_typed: bool


class TargetInfo(NamedTuple):
    """The TensorRT and GPU an engine is built for."""

    trt_version: str
    gpu_name: str
    compute_capability: str


def load_onnx(path: PathLike) -> OnnxModel:
    """Read an ONNX file (weights must be inside it: TensorRT's parser gets bytes, not a folder).

    Raises:
        ArtifactError: missing file, or the model keeps its weights in external data files.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"ONNX file not found: {p}; export it with psdrt.export.onnx_export")
    data = p.read_bytes()
    if not data:
        raise ArtifactError(f"ONNX file {p} is empty; re-export it")
    if os.path.exists(str(p) + ".data") or os.path.exists(p.with_suffix(".onnx.data")):
        raise ArtifactError(f"{p} stores its weights in an external .data file; re-export with "
                            "external_data=False so the engine builder sees one self-contained file")
    return OnnxModel(data, hashlib.sha256(data).hexdigest(), str(p))


def target_info(device: int = 0, trt: Any = None) -> TargetInfo:
    """TensorRT version, GPU name and compute capability of this machine."""
    trt = trt or compat.import_trt()
    return TargetInfo(str(trt.__version__), _cuda.device_name(device), _cuda.compute_capability(device))


def _trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def parse_network(onnx_bytes: bytes, flags: int, *, trt: Any = None, strongly_typed: bool = False) -> ParsedNetwork:
    """Parse ONNX bytes into a new network created with ``flags`` (from ``_trt_compat.network_flags``).

    Raises:
        ArtifactError: the parser rejects the model; the message lists the parser's errors.
    """
    trt = trt or compat.import_trt()
    builder = trt.Builder(_trt_logger(trt))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _trt_logger(trt))
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ArtifactError("TensorRT's ONNX parser rejected the model:\n  " + "\n  ".join(errors) +
                            "\nre-export with opset 17 / IR 8 for TensorRT 8.5 (JetPack 5), or check the op list")
    return ParsedNetwork(builder, network, parser, strongly_typed)


def _network_dtypes(network: Any) -> set:
    return {str(network.get_layer(i).get_output(j).dtype)
            for i in range(network.num_layers) for j in range(network.get_layer(i).num_outputs)}


def _network_has_qdq(network: Any, trt: Any) -> bool:
    return any(network.get_layer(i).type == trt.LayerType.QUANTIZE for i in range(network.num_layers))


def _check_precision_source(parsed: ParsedNetwork, precision: str, trt: Any) -> None:
    """Refuse builds that would silently produce the wrong precision."""
    if precision == "int8" and not _network_has_qdq(parsed.network, trt):
        raise ArtifactError("int8 needs a Q/DQ ONNX (explicit quantization); this one has no QuantizeLinear "
                            "nodes: quantize it with psdrt.calibration first (INT8 flags without Q/DQ are refused)")
    if precision == "fp16" and parsed.strongly_typed and not any("HALF" in d.upper() for d in _network_dtypes(parsed.network)):
        raise ArtifactError("a strongly typed fp16 build needs an FP16 ONNX (this one is FP32 throughout): export "
                            "the FP16 ONNX, or pass BuildConfig(strongly_typed=False) to use the FP16 flag")


def _apply_profiles(builder: Any, config: Any, network: Any, build: BuildConfig) -> None:
    dynamic = [network.get_input(i).name for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if dynamic and not build.profiles:
        raise InputError(f"inputs {dynamic} have dynamic axes; pass BuildConfig(profiles=({{name: ShapeRange(min, "
                         "opt, max)}},)) covering the sizes you will run")
    for prof in build.profiles:
        p = builder.create_optimization_profile()
        for name, r in prof.items():
            p.set_shape(name, r.min, r.opt, r.max)
        config.add_optimization_profile(p)


def build_serialized(parsed: ParsedNetwork, build: BuildConfig, *, trt: Any = None) -> bytes:
    """Build a serialized plan from a parsed network.

    Args:
        parsed (ParsedNetwork): from :func:`parse_network` (with matching ``strongly_typed``).
        build (BuildConfig): resolved build settings (``build.resolved(features)``).

    Returns:
        bytes: the plan.

    Raises:
        ArtifactError: the builder failed (its log says why) or the precision source is wrong.
    """
    trt = trt or compat.import_trt()
    _check_precision_source(parsed, build.precision, trt)
    config = parsed.builder.create_builder_config()
    compat.set_workspace(config, build.workspace, trt)
    for flag in compat.builder_flags(build.precision, parsed.strongly_typed, dla=build.dla_core is not None, trt=trt):
        config.set_flag(flag)
    if build.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(build.dla_core)
    _apply_profiles(parsed.builder, config, parsed.network, build)
    cache = None
    if build.timing_cache is not None:
        tc = Path(build.timing_cache)
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: a foreign cache is an error
            raise ArtifactError(f"timing cache {tc} belongs to another TensorRT version or GPU; delete it or pass "
                                "another BuildConfig.timing_cache path")
    plan = parsed.builder.build_serialized_network(parsed.network, config)
    if plan is None:
        raise ArtifactError("TensorRT failed to build the engine (see its log above); check the workspace size and "
                            "the optimisation profiles")
    if build.timing_cache is not None:
        tc = Path(build.timing_cache)
        tmp = tc.with_name(tc.name + ".tmp")
        tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        tmp.replace(tc)
    return bytes(memoryview(plan))


def deserialize(plan: bytes, runtime: Any = None, *, trt: Any = None) -> Any:
    """Deserialize a plan into an ``ICudaEngine`` (with a new runtime unless one is given)."""
    trt = trt or compat.import_trt()
    runtime = runtime or trt.Runtime(_trt_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ArtifactError(f"TensorRT {trt.__version__} could not deserialise the plan; rebuild it here")
    return engine


def build_engine(
    onnx_path: PathLike,
    out_dir: PathLike,
    build: Optional[BuildConfig] = None,
    *,
    stem: Optional[str] = None,
    golden: Any = None,
    depth_fn: Any = None,
    device: int = 0,
    force: bool = False,
) -> Tuple[Path, EngineManifest]:
    """ONNX file -> fingerprinted engine + manifest (+ gate), reusing an identical existing build.

    Args:
        onnx_path (path): the ONNX (FP16 ONNX for strongly typed fp16, Q/DQ ONNX for int8).
        out_dir (path): folder for ``<stem>-<precision>-<fp>.engine`` and its manifest.
        build (BuildConfig, optional): Defaults to ``BuildConfig()`` (fp16, 1 GiB workspace).
        stem (str, optional): engine name prefix. Defaults to the ONNX file stem.
        golden (GoldenInputs, optional): when given, the engine must pass the correctness gate
            (``psdrt.runtime.gate_check.check_backend``); the report goes into the manifest.
        depth_fn (callable, optional): the engine's pipeline for the gate's end-to-end check.
        device (int): CUDA device. Defaults to 0.
        force (bool): rebuild even if a valid engine with the same fingerprint exists. Defaults to False.

    Returns:
        tuple[Path, EngineManifest]: engine path and its manifest.

    Raises:
        BackendUnavailable: no TensorRT, CUDA runtime or GPU here.
        ArtifactError: parse/build failure, or the engine fails the gate (it is then renamed
            ``*.rejected`` beside its manifest, and the message holds the comparison table).
    """
    model = load_onnx(onnx_path)
    trt = compat.import_trt()
    feat = compat.features(trt)
    cfg = (build or BuildConfig()).resolved(feat)
    target = target_info(device, trt)
    shapes = cfg.shapes()
    fp = fingerprint(onnx_sha256=model.sha256, precision=cfg.precision, shapes=shapes,
                     trt_version=target.trt_version, compute_capability=target.compute_capability,
                     builder_options=cfg.builder_options())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    engine_path = out / engine_file_name(stem or Path(onnx_path).stem, cfg.precision, fp)
    if engine_path.is_file() and not force:
        try:
            m = read_manifest(engine_path)
            validate_manifest(m, trt_version=target.trt_version, gpu_name=target.gpu_name,
                              compute_capability=target.compute_capability, engine_path=engine_path)
            if m.fingerprint == fp and (golden is None or (m.gate or {}).get("passed")):
                log.info("reusing %s (same fingerprint)", engine_path)
                return engine_path, m
        except ArtifactError as exc:
            log.warning("rebuilding %s: %s", engine_path, exc)
    parsed = parse_network(model.data, compat.network_flags(cfg.strongly_typed, trt), trt=trt,
                           strongly_typed=cfg.strongly_typed)
    plan = build_serialized(parsed, cfg, trt=trt)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(plan)
    tmp.replace(engine_path)
    manifest = EngineManifest(
        fingerprint=fp, trt_version=target.trt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability, precision=cfg.precision, shapes=shapes,
        onnx_sha256=model.sha256, builder_options=cfg.builder_options(), engine_sha256=sha256_file(engine_path),
        onnx_path=model.path,
    )
    write_manifest(engine_path, manifest)
    if golden is not None:
        from psdrt.runtime.backends.trt import TrtBackend
        from psdrt.runtime.gate_check import check_backend

        with TrtBackend(engine_path, device=device) as backend:
            report = check_backend(backend, golden, cfg.precision, depth_fn=depth_fn, artifact=engine_path.name,
                                   raise_on_fail=False)
        manifest = manifest.with_gate(report.to_dict())
        write_manifest(engine_path, manifest)
        if not report.passed:
            rejected = engine_path.with_name(engine_path.name + ".rejected")
            engine_path.replace(rejected)
            raise ArtifactError(f"{engine_path.name} failed the {cfg.precision} correctness gate and was moved to "
                                f"{rejected.name}; do not deploy it (TensorRT 10.3 is known to miscompile ViT depth "
                                "models: use >= 10.13, or build fp32)\n\n" + report.to_markdown())
    return engine_path, manifest
