"""Output formats of calibration: Q/DQ ONNX (default) and the legacy TensorRT calibration cache.

* :func:`write_qdq_ort`: Q/DQ ONNX for **ONNX Runtime CPU** through ``onnxruntime.quantization``
  (``quantize_static``, QDQ, per-channel INT8 weights), with *our* ranges handed over as ORT's
  calibration cache. The default op set, :data:`ORT_CPU_OP_TYPES`, is the one measured to make ORT
  CPU faster (``benchmarks/results/onnx_precision_cpu.md``): Conv, Gemm and MatMul with a constant
  weight; attention's activation x activation MatMuls and Softmax stay FP32 (ORT's QLinearSoftmax
  made the ViT-S encoder slower than FP32).
* :func:`write_qdq_modelopt`: Q/DQ ONNX placed the way **TensorRT** wants, by NVIDIA Model
  Optimizer's ONNX PTQ (``pip install 'psdrt[calibration]'``). Raises ``BackendUnavailable`` when
  modelopt cannot be imported.
* :func:`write_trt_cache`: the text calibration cache of TensorRT's implicit INT8 calibrators, for
  TensorRT 8.5/8.6 (JetPack 5 / 6.0) only: TensorRT deprecated implicit INT8 calibration in 10.1.

onnx, onnxruntime and modelopt are imported inside the functions (style G2).
"""

from __future__ import annotations

import logging
import re
import struct
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from psdrt.runtime.errors import BackendUnavailable, CalibrationError, InputError

from .collectors import TensorRanges

__all__ = [
    "ORT_CPU_OP_TYPES",
    "TRT_CACHE_VERSIONS",
    "write_trt_cache",
    "read_trt_cache",
    "prepare_for_ort",
    "quantizable_nodes",
    "quantizable_tensors",
    "write_qdq_ort",
    "write_qdq_modelopt",
    "modelopt_available",
]

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

#: op types quantized for ONNX Runtime CPU (MatMul only with a constant weight, see module docstring)
ORT_CPU_OP_TYPES = ("Conv", "Gemm", "MatMul")
#: TensorRT releases whose implicit INT8 calibrator reads a legacy cache, and their header codes
TRT_CACHE_VERSIONS = {"8.5": "8502", "8.6": "8602"}


# --------------------------------------------------------------------------------------------
# legacy TensorRT calibration cache


def _trt_code(trt_version: str) -> str:
    v = str(trt_version).strip()
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", v)
    if m and f"{m.group(1)}.{m.group(2)}" in TRT_CACHE_VERSIONS:
        major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 2)
        return f"{major}{minor}{patch:02d}"
    if re.fullmatch(r"8[56]\d\d", v):
        return v
    raise CalibrationError(
        f"a legacy calibration cache is only for TensorRT 8.5/8.6 (JetPack 5 / 6.0), not {trt_version!r}: "
        "TensorRT 10 deprecated implicit INT8 calibration; build from the Q/DQ ONNX instead"
    )


def write_trt_cache(ranges: TensorRanges, path: PathLike, trt_version: str = "8.6",
                    algorithm: str = "EntropyCalibration2") -> Path:
    """Write a TensorRT legacy INT8 calibration cache.

    Format: a header line ``TRT-<code>-<algorithm>`` (e.g. ``TRT-8602-EntropyCalibration2``), then one
    ``<tensor name>: <scale>`` line per tensor, the scale being the big-endian float32 bits of
    ``amax / 127`` as 8 hex digits. TensorRT's INT8 is symmetric, so asymmetric ranges are written
    with amax = max(|low|, |high|).

    Args:
        ranges (TensorRanges): ranges of the network's tensors (names as in the ONNX graph).
        path (str | Path): output file.
        trt_version (str): target TensorRT, ``"8.5"``/``"8.6"`` (or ``"8.6.1"``, or a code like ``"8602"``).
            Defaults to "8.6".
        algorithm (str): ``EntropyCalibration2``, ``MinMaxCalibration`` ... (only a label for
            TensorRT, which checks it against the calibrator that reads the cache).
            Defaults to "EntropyCalibration2".

    Returns:
        Path: ``path``.

    Raises:
        CalibrationError: a TensorRT version other than 8.5/8.6, or a tensor name with ": " or a newline.
    """
    code = _trt_code(trt_version)
    lines = [f"TRT-{code}-{algorithm}"]
    for name in ranges:
        if ": " in name or "\n" in name:
            raise CalibrationError(f"tensor name {name!r} cannot be written to a calibration cache")
        scale = max(ranges.amax(name), 1e-12) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def read_trt_cache(path: PathLike) -> Tuple[str, Dict[str, float]]:
    """Read a TensorRT legacy calibration cache.

    Returns:
        tuple[str, dict[str, float]]: the header line and ``{tensor name: scale}``.

    Raises:
        CalibrationError: a malformed line.
    """
    text = Path(path).read_text(encoding="ascii").splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise CalibrationError(f"{path} is not a TensorRT calibration cache (no 'TRT-' header)")
    scales = {}
    for line in text[1:]:
        if not line.strip():
            continue
        name, sep, hexval = line.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", hexval):
            raise CalibrationError(f"malformed calibration cache line in {path}: {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval))[0]
    return text[0], scales


# --------------------------------------------------------------------------------------------
# ONNX Runtime Q/DQ


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise BackendUnavailable(f"{module} not importable ({type(exc).__name__}: {exc}); "
                                 f"install the [{extra}] extra: pip install 'psdrt[{extra}]'") from exc


def prepare_for_ort(model_path: PathLike, out_path: PathLike) -> Path:
    """ORT's quantization pre-processing (graph optimisation + shape inference) of an FP32 model.

    Calibrate and quantize the *prepared* model: ORT's fusions (MatMul+Add -> Gemm ...) rename
    tensors, so ranges must be collected on the same graph the quantizer rewrites. The prepared
    model is also the fair FP32 baseline of the INT8 one (same fusions, no Q/DQ).

    Returns:
        Path: ``out_path``.
    """
    _require("onnx", "export")
    quant = _require("onnxruntime.quantization.shape_inference", "cpu")
    quant.quant_pre_process(str(model_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def _initializer_names(model) -> set:
    names = {i.name for i in model.graph.initializer}
    names |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return names


def quantizable_nodes(model, op_types: Sequence[str] = ORT_CPU_OP_TYPES,
                      nodes_to_exclude: Iterable[str] = ()) -> List[str]:
    """Names of the nodes ORT should quantize: ``op_types``, MatMul only with a constant weight.

    Args:
        model (onnx.ModelProto | str | Path): the (prepared) model.
        op_types (Sequence[str]): op types. Defaults to :data:`ORT_CPU_OP_TYPES`.
        nodes_to_exclude (Iterable[str]): names kept in FP32.

    Returns:
        list[str]: node names in graph order.
    """
    model = _load(model)
    consts = _initializer_names(model)
    skip = set(nodes_to_exclude)
    out = []
    for n in model.graph.node:
        if n.op_type not in op_types or n.name in skip:
            continue
        if n.op_type == "MatMul" and n.input[1] not in consts:
            continue  # activation x activation (attention): slower and less accurate in INT8 on ORT CPU
        out.append(n.name)
    return out


def _load(model):
    if isinstance(model, (str, Path)):
        onnx = _require("onnx", "export")
        return onnx.load(str(model), load_external_data=False)
    return model


def quantizable_tensors(model, nodes: Sequence[str]) -> List[str]:
    """Float activation tensors that the quantizer needs ranges for: inputs and outputs of ``nodes``.

    Weights and biases (initializers) are quantized from their values and are left out.
    """
    model = _load(model)
    consts = _initializer_names(model)
    wanted = set(nodes)
    names: Dict[str, None] = {}
    for n in model.graph.node:
        if n.name in wanted:
            for t in list(n.input[:1]) + list(n.output[:1]):
                if t and t not in consts:
                    names[t] = None
    return list(names)


_ORT_TYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}


def _ort_tensors_data(ranges: TensorRanges):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.items()}
    return TensorsData(CalibrationMethod.MinMax, data)


def write_qdq_ort(
    prepared_path: PathLike,
    out_path: PathLike,
    ranges: TensorRanges,
    *,
    op_types: Sequence[str] = ORT_CPU_OP_TYPES,
    nodes_to_exclude: Iterable[str] = (),
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
) -> Path:
    """Q/DQ ONNX for ONNX Runtime CPU from our ranges (``onnxruntime.quantization.quantize_static``).

    Args:
        prepared_path (str | Path): FP32 model after :func:`prepare_for_ort`.
        out_path (str | Path): output ``.onnx``.
        ranges (TensorRanges): activation ranges (at least :func:`quantizable_tensors`).
        op_types (Sequence[str]): op types to quantize. Defaults to :data:`ORT_CPU_OP_TYPES`.
        nodes_to_exclude (Iterable[str]): nodes kept in FP32 (e.g. from the sensitivity report).
        per_channel (bool): per-output-channel weight scales. Defaults to True.
        activation_type (str): ``"uint8"`` (U8S8: the fast VNNI path on x86) or ``"int8"``.
            Defaults to "uint8" (measured: S8S8 Q/DQ was slower on this CPU).
        weight_type (str): ``"int8"`` or ``"uint8"``. Defaults to "int8".

    Returns:
        Path: ``out_path``.

    Raises:
        BackendUnavailable: onnxruntime/onnx missing.
        CalibrationError: ranges are missing for a tensor the quantizer needs.
    """
    q = _require("onnxruntime.quantization", "cpu")
    model = _load(prepared_path)
    nodes = quantizable_nodes(model, op_types, nodes_to_exclude)
    if not nodes:
        raise CalibrationError(f"no node of {list(op_types)} to quantize in {prepared_path}")
    missing = [t for t in quantizable_tensors(model, nodes) if t not in ranges]
    if missing:
        raise CalibrationError(f"no range for {len(missing)} tensors the quantizer needs (first: {missing[:3]}); "
                               "collect ranges on the prepared model with calibrate.collect_ranges")
    try:
        act, wt = getattr(q.QuantType, _ORT_TYPES[activation_type]), getattr(q.QuantType, _ORT_TYPES[weight_type])
    except KeyError:
        raise InputError(f"activation/weight type must be one of {sorted(_ORT_TYPES)}") from None
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="psdrt_q_") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(_ort_tensors_data(ranges), cache)
        q.quantize_static(
            str(prepared_path), str(out_path), None,
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            nodes_to_quantize=nodes,
            per_channel=per_channel,
            activation_type=act,
            weight_type=wt,
            calibrate_method=q.CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
        )
    return Path(out_path)


# --------------------------------------------------------------------------------------------
# NVIDIA Model Optimizer (TensorRT Q/DQ placement)


def modelopt_available() -> Tuple[bool, str]:
    """Whether ``modelopt.onnx.quantization`` imports here, and why not."""
    try:
        _require("modelopt.onnx.quantization", "calibration")
    except BackendUnavailable as exc:
        return False, str(exc)
    return True, ""


def write_qdq_modelopt(
    model_path: PathLike,
    out_path: PathLike,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    ranges: Optional[TensorRanges] = None,
    calibration_method: str = "entropy",
    nodes_to_exclude: Iterable[str] = (),
    high_precision_dtype: str = "fp16",
) -> Path:
    """Q/DQ ONNX for TensorRT by NVIDIA Model Optimizer's ONNX PTQ (``modelopt.onnx.quantization``).

    Model Optimizer places Q/DQ as TensorRT fuses them (Conv/MatMul/Gemm inputs quantized,
    LayerNorm/Softmax/GELU/Resize left in ``high_precision_dtype``) and raises the opset to 19.
    Calibration runs on ORT CPU (``calibration_eps=["cpu"]``).

    Args:
        model_path (str | Path): the FP32 ONNX (not the ORT-prepared one: TensorRT does its own fusions).
        out_path (str | Path): output ``.onnx``.
        feeds (Sequence[Mapping[str, np.ndarray]]): calibration feeds (batch 1 each).
        ranges (TensorRanges, optional): our ranges; written as a TensorRT cache that Model
            Optimizer applies over its own scales (symmetric amax). Defaults to None (its own).
        calibration_method (str): ``"entropy"`` or ``"max"``. Defaults to "entropy".
        nodes_to_exclude (Iterable[str]): nodes kept in high precision.
        high_precision_dtype (str): ``"fp16"`` (for TensorRT) or ``"fp32"`` (to run on ORT CPU).
            Defaults to "fp16".

    Returns:
        Path: ``out_path``.

    Raises:
        BackendUnavailable: modelopt is not installed or not importable (install ``psdrt[calibration]``).
    """
    mq = _require("modelopt.onnx.quantization", "calibration")
    if not feeds:
        raise CalibrationError("write_qdq_modelopt needs at least one calibration feed")
    data = {k: np.concatenate([np.asarray(f[k]) for f in feeds], axis=0) for k in feeds[0]}
    with tempfile.TemporaryDirectory(prefix="psdrt_mo_") as tmp:
        cache = None
        if ranges is not None:
            cache = str(write_trt_cache(ranges, Path(tmp) / "calib.cache"))
        mq.quantize(
            str(model_path),
            quantize_mode="int8",
            calibration_data=data,
            calibration_method=calibration_method,
            calibration_cache_path=cache,
            calibration_eps=["cpu"],
            nodes_to_exclude=list(nodes_to_exclude) or None,
            high_precision_dtype=high_precision_dtype,
            output_path=str(out_path),
            log_level="WARNING",
        )
    if not Path(out_path).is_file():
        raise CalibrationError(f"Model Optimizer wrote no model to {out_path}")
    return Path(out_path)
