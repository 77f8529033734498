"""A Triton Inference Server model repository of a ``psdrt build`` directory (``psdrt build --triton``).

``write_model_repository`` writes one entry model (default name ``psd``) that takes ``RGB``
(H, W, 3) uint8, ``SPARSE`` (H, W) float32 metres (0 = missing) and ``K`` (3, 3) float64 and
returns ``DEPTH`` (H, W) float32 metres, with its parts beside it:

* ``guided``: the entry is one Python-backend model (``psd_guided``, one kernel call).
* ``propagate`` / ``psd``: the entry is an ensemble of ``<name>_preprocess`` (Python: frame checks
  and the encoder input, ``psd_preprocess``) -> ``<name>_encoder`` (the network) ->
  ``<name>_propagate`` (Python: alignment + propagation, the kernel library) -> ``<name>_head``
  (the network, ``psd``) -> ``<name>_post`` (Python: post-processing and the output guard).

Variants: ``"production"``: the networks are ``onnxruntime_onnx`` (``model.onnx``) or
``tensorrt_plan`` (``model.plan``: the directory's engine, valid only for the TensorRT version
and GPU it was built with) models; ``"python"``: the networks too are Python-backend models that run
ONNX Runtime in the stub (the variant a server with only the Python backend serves, as the
CPU ``tritonserver`` of the ``nvidia-pytriton`` wheel; the tests serve it). Every Python model's
``model.py`` is one import of :class:`TritonPythonModel` of this module: the stages are
``runtime.pipeline``'s own (``encoder_input``, ``propagate_stage``, ``post_stage``,
``finish_depth``), so psdrt must be installed in the Python backend's environment.

Batching: the networks that ``psdrt build`` exports are static batch-1 graphs, so their models
have ``max_batch_size: 0`` and explicit (1, ...) dims, and so have the ensemble and its Python
stages (a frame per request; concurrency comes from ``instance_group`` counts). A network whose ONNX
input has a symbolic first dimension takes batches: then every model of the ensemble gets
``max_batch_size`` and ``dynamic_batching``, the networks run the batch at once and the Python
stages frame by frame. The ``guided`` model always batches (frame by frame). Instance groups: the
networks ``KIND_GPU`` (one group over every GPU) or ``KIND_CPU`` (``kind="cpu"``); the Python
stages are ``KIND_CPU`` (they compute on host arrays) in both.

``check_model_repository`` checks a repository against Triton's documented rules (the configs
parsed with ``tritonclient``'s own ``model_config_pb2``), ``TritonClient`` queries a server.
tritonclient is imported lazily: the ``triton`` extra (``pip install 'psdrt[triton]'``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ._lazy import lazy_import
from .errors import ArtifactError, BackendUnavailable, InputError, PsdError

__all__ = ["write_model_repository", "check_model_repository", "TritonRepository", "TritonClient",
           "TritonPythonModel", "model_config_pb2", "VARIANTS", "BACKENDS", "KINDS", "FRAME_INPUTS",
           "FRAME_OUTPUT"]

log = logging.getLogger(__name__)

VARIANTS = ("production", "python")
BACKENDS = ("onnxruntime", "tensorrt")
KINDS = ("gpu", "cpu")
#: the entry model's inputs: name -> (Triton data type, dims at working size H x W)
FRAME_INPUTS = {"RGB": "TYPE_UINT8", "SPARSE": "TYPE_FP32", "K": "TYPE_FP64"}
FRAME_OUTPUT = "DEPTH"
#: the file each platform / backend loads from the version directory
_MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "onnxruntime": "model.onnx", "tensorrt_plan": "model.plan",
                "tensorrt": "model.plan", "python": "model.py"}
_STAGES = ("guided", "preprocess", "propagate", "post", "onnx")
_NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8,
             "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_}
_TRITON_FIX = "pip install 'psdrt[triton]'"

# The python backend finds the class by this name in model.py; it must not import anything else
MODEL_PY = '''\
# Written by psdrt (psdrt.runtime.triton, `psdrt build --triton`): one psdrt stage for Triton's
# python backend. The stage and its settings are this model's config.pbtxt parameters; psdrt (with
# its kernel library) must be installed in the python backend's environment.
from psdrt.runtime.triton import TritonPythonModel  # noqa: F401
'''


def model_config_pb2():
    """tritonclient's ``model_config_pb2`` (Triton's ``model_config.proto``), loaded from the
    ``tritonclient`` installation (``tritonclient/grpc/model_config_pb2.py``) without importing
    ``tritonclient.grpc`` itself (which needs grpcio; only protobuf is needed here).

    Raises:
        BackendUnavailable: tritonclient or protobuf is missing (names ``pip install 'psdrt[triton]'``).
    """
    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec("tritonclient")
    except (ImportError, ValueError):
        spec = None
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py" if spec else None
    if path is None or not path.is_file():
        raise BackendUnavailable(f"tritonclient (with grpc/model_config_pb2.py) not importable; {_TRITON_FIX}")
    try:
        mspec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
    except Exception as exc:  # protobuf missing or too old for the generated code
        raise BackendUnavailable(f"{path} does not load ({type(exc).__name__}: {exc}); {_TRITON_FIX}") from exc
    sys.modules[name] = module
    return module


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class _Tensor:
    name: str
    dtype: str  # TYPE_*
    dims: list  # per request (the batch dimension left out when the model batches)


@dataclass
class _Model:
    name: str
    platform: str = ""  # onnxruntime_onnx, tensorrt_plan, ensemble
    backend: str = ""  # python
    max_batch_size: int = 0
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    kind: Optional[str] = None  # KIND_GPU / KIND_CPU; None: no instance group (ensemble)
    count: int = 1
    params: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)  # ensemble: (model, {model input: tensor}, {model output: tensor})
    file: Optional[Path] = None  # copied into 1/ under its platform's name
    stage: str = ""


@dataclass
class TritonRepository:
    """What ``write_model_repository`` wrote.

    Attributes:
        repo (Path): the model repository (``tritonserver --model-repository``).
        entry (str): the model to query (``TritonClient(model=entry)``).
        models (dict): model name -> one line describing it (platform/backend, batching, instances).
        checked (list | None): ``check_model_repository``'s problems (empty = OK), None when
            tritonclient is not installed to check it.
    """

    repo: Path
    entry: str
    models: dict
    checked: Optional[list] = None

    def summary(self) -> str:
        lines = [f"Triton model repository {self.repo} (query model {self.entry!r}):"]
        lines += [f"  {name}: {desc}" for name, desc in self.models.items()]
        if self.checked is None:
            lines.append(f"  layout not checked: tritonclient is not installed ({_TRITON_FIX})")
        else:
            lines.append("  layout checked against Triton's rules: OK" if not self.checked
                         else "  layout problems:\n" + "\n".join(f"    {p}" for p in self.checked))
        return "\n".join(lines) + "\n"


def _onnx_io(path: Path) -> tuple:
    """(inputs, outputs) of an ONNX file as [(name, TYPE_*, dims with None for symbolic)], read with
    ``onnx`` (no weights loaded) or else ONNX Runtime."""
    types = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
             9: "TYPE_BOOL"}
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        model = onnx.load(str(path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}

        def one(v):
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            return v.name, types.get(t.elem_type, "TYPE_INVALID"), dims

        return ([one(v) for v in model.graph.input if v.name not in inits], [one(v) for v in model.graph.output])
    from .backends.ort import ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_types = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64",
                 "tensor(uint8)": "TYPE_UINT8", "tensor(int32)": "TYPE_INT32", "tensor(int64)": "TYPE_INT64"}

    def conv(v):
        return v.name, ort_types.get(v.type, "TYPE_INVALID"), [d if isinstance(d, int) and d > 0 else None
                                                               for d in v.shape]

    return [conv(v) for v in sess.get_inputs()], [conv(v) for v in sess.get_outputs()]


def _network(name, path: Path, batch: int, variant, platform, file, kind, count, what) -> _Model:
    """A network's model: its tensors exactly as in the ONNX file (the batch dimension dropped when
    the model batches)."""
    ins, outs = _onnx_io(path)
    for n, dt, dims in ins + outs:
        rest = dims[1:] if batch else dims
        if dt == "TYPE_INVALID" or not dims or any(d is None for d in rest):
            raise ArtifactError(f"{what} {path.name}: tensor {n!r} has an unsupported type or a symbolic "
                                f"dimension {dims}; Triton configs here need static shapes: rebuild it with "
                                "`psdrt build --force` (static exports)")

    def tensors(lst):
        return [_Tensor(n, dt, list(dims[1:] if batch else dims)) for n, dt, dims in lst]

    if variant == "python":
        return _Model(name, backend="python", max_batch_size=batch, inputs=tensors(ins), outputs=tensors(outs),
                      kind="KIND_CPU", count=count, stage="onnx", file=path,
                      params={"psdrt_stage": "onnx", "onnx_file": "model.onnx"})
    return _Model(name, platform=platform, max_batch_size=batch, inputs=tensors(ins), outputs=tensors(outs),
                  kind=kind, count=count, file=file)


def _batchable(path: Path) -> bool:
    """True when every input of the ONNX file has a symbolic first (batch) dimension."""
    ins, _ = _onnx_io(path)
    return bool(ins) and all(dims and dims[0] is None for _, _, dims in ins)


def _net_dims(m: _Model, tensor: str, out: bool) -> list:
    for t in (m.outputs if out else m.inputs):
        if t.name == tensor:
            return list(t.dims)
    raise ArtifactError(f"the network {m.name} has no {'output' if out else 'input'} {tensor!r}; rebuild the "
                        "directory with `psdrt build` (psdrt's encoder/head tensor names)")


def write_model_repository(artifact_dir, repo, variant: str = "production", mode: Optional[str] = None,
                           precision: str = "fp32", backend: str = "onnxruntime", kind: str = "gpu",
                           max_batch_size: int = 8, *, name: str = "psd", size=None, instances: int = 1,
                           seed: int = 0, preset: Optional[str] = None, check: bool = True) -> TritonRepository:
    """Write a Triton model repository for a ``psdrt build`` directory (or the guided mode).

    Args:
        artifact_dir (path | None): the directory holding ``manifest.json``; None for ``mode="guided"``
            (then ``size`` is required).
        repo (path): the model repository folder (created). Only this entry's model folders
            (``name`` and ``name_*``) are replaced; other models in it stay.
        variant (str): ``"production"`` (networks on Triton's ONNX Runtime or TensorRT backend) or
            ``"python"`` (every model on the Python backend; the networks run ONNX Runtime in the
            stub). Defaults to "production".
        mode (str, optional): ``"psd"``, ``"propagate"`` (over a psd directory: no head) or
            ``"guided"``. Defaults to the manifest's.
        precision (str): ``"fp32"``, ``"fp16"``, ``"int8"`` or ``"ENC+HEAD"`` as ``Pipeline.from_artifacts``.
        backend (str): the production networks' backend, ``"onnxruntime"`` (``onnxruntime_onnx``,
            the directory's ONNX files) or ``"tensorrt"`` (``tensorrt_plan``, its engines).
        kind (str): ``"gpu"`` (networks ``KIND_GPU``) or ``"cpu"`` (every model ``KIND_CPU``).
        max_batch_size (int): the batch limit of the models that batch (guided; networks with a
            symbolic batch dimension); 0 turns batching off. Defaults to 8.
        name (str): the entry model's name (the others are ``name_<part>``). Defaults to "psd".
        size (tuple, optional): (H, W) of the guided mode without artefacts; else the directory's.
        instances (int): instances per group (per GPU for ``KIND_GPU``). Defaults to 1.
        seed (int): the kNN's seed (as ``Pipeline``'s). Defaults to 0.
        preset (str, optional): the propagation preset. Defaults to the manifest's.
        check (bool): check the written repository (``check_model_repository``, strict) when
            tritonclient is installed. Defaults to True.

    Returns:
        TritonRepository: the folder, the entry model's name, one line per model.

    Raises:
        InputError: an unknown variant/backend/kind/mode, a bad size or name, guided without a size.
        ArtifactError: the directory breaks a rule of ``psd_artifacts_read`` (the message names it),
            or has no engine of ``precision`` for ``backend="tensorrt"``; or the written repository
            fails its check.
    """
    from .presets import get_preset
    from .preprocess import DEFAULT_PREPROCESS

    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if kind not in KINDS:
        raise InputError(f"unknown instance kind {kind!r}; use one of {', '.join(KINDS)}")
    if variant == "python" and backend == "tensorrt":
        raise InputError("the python variant runs the networks with ONNX Runtime in the Python backend; use "
                         "backend='onnxruntime' with it, or variant='production' for TensorRT plans")
    if mode not in (None, "psd", "propagate", "guided"):
        raise InputError(f"unknown mode {mode!r}; use psd, propagate or guided")
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise InputError(f"model name {name!r} must be letters, digits, '_' or '-'")
    if int(max_batch_size) < 0 or int(instances) < 1:
        raise InputError("max_batch_size must be >= 0 and instances >= 1")
    if artifact_dir is None and mode not in (None, "guided"):
        raise InputError(f"mode {mode!r} needs a `psdrt build` directory; without one only mode 'guided' runs")
    sel = None
    if artifact_dir is not None:
        from .session import read_artifacts

        sel = read_artifacts(artifact_dir, precision, mode=mode)
        mode = sel["mode"] if mode is None else mode
    mode = mode or "guided"
    if size is None:
        if sel is None:
            raise InputError("the guided repository needs the frame size: pass size=(H, W) (`--size HxW`)")
        size = sel["size"]
    h, w = int(size[0]), int(size[1])
    from . import _capi

    _capi.load().check_frame_size(h, w, mode)
    preset_name = preset or (sel["preset"] if sel else "NYUv2")
    get_preset(preset_name)  # InputError for an unknown one
    net_kind = "KIND_GPU" if kind == "gpu" else "KIND_CPU"
    common = {"mode": mode, "height": str(h), "width": str(w), "preset": preset_name, "seed": str(int(seed)),
              "fm_lower": str(sel["fm_lower"] if sel else 392),
              "preprocess": sel["preprocess"] if sel else DEFAULT_PREPROCESS}
    frame_in = [_Tensor("RGB", "TYPE_UINT8", [h, w, 3]), _Tensor("SPARSE", "TYPE_FP32", [h, w]),
                _Tensor("K", "TYPE_FP64", [3, 3])]
    depth_out = [_Tensor(FRAME_OUTPUT, "TYPE_FP32", [h, w])]

    def stage(stage_name, model_name, batch, inputs, outputs, extra=None):
        return _Model(model_name, backend="python", max_batch_size=batch, inputs=inputs, outputs=outputs,
                      kind="KIND_CPU", count=int(instances), stage=stage_name,
                      params={"psdrt_stage": stage_name, **common, **(extra or {})})

    models = []
    if mode == "guided":
        models.append(stage("guided", name, int(max_batch_size), frame_in, depth_out))
    else:
        enc_path = sel["encoder"]
        head_path = sel["head"] if mode == "psd" else None
        batch = int(max_batch_size) if all(_batchable(p) for p in (enc_path, head_path) if p) else 0
        if max_batch_size and not batch:
            log.info("the networks are static batch-1 exports: the %s ensemble does not batch (max_batch_size 0)",
                     mode)
        files = {"encoder": enc_path, "head": head_path}
        if variant == "production" and backend == "tensorrt":
            from .session import read_artifacts

            trt = read_artifacts(artifact_dir, precision, mode=mode, backend="tensorrt")
            files = {"encoder": trt["encoder"], "head": trt["head"] if mode == "psd" else None}
        platform = "tensorrt_plan" if backend == "tensorrt" else "onnxruntime_onnx"
        enc = _network(f"{name}_encoder", enc_path, batch, variant, platform, files["encoder"], net_kind,
                       int(instances), "the encoder")
        enc_rgb = _net_dims(enc, "rgb", False)
        pre = stage("preprocess", f"{name}_preprocess", batch, frame_in, [_Tensor("rgb", "TYPE_FP32", enc_rgb)])
        prop_in = [frame_in[1], frame_in[2], _Tensor("rel_inv", "TYPE_FP32", _net_dims(enc, "rel_inv", True)),
                   _Tensor("feat0", "TYPE_FP32", _net_dims(enc, "feat0", True))]
        # Triton refuses an ensemble tensor that no step consumes: propagate maps rel_inv and feat0 only
        used = ("rel_inv", "feat0") if mode == "propagate" else ("rel_inv", "feat0", "feat1", "feat2", "feat3")
        steps = [(pre.name, {"RGB": "RGB", "SPARSE": "SPARSE", "K": "K"}, {"rgb": "encoder_rgb"}),
                 (enc.name, {"rgb": "encoder_rgb"}, {t: t for t in used})]
        if mode == "propagate":
            prop = stage("propagate", f"{name}_propagate", batch, prop_in, depth_out)
            steps.append((prop.name, {"SPARSE": "SPARSE", "K": "K", "rel_inv": "rel_inv", "feat0": "feat0"},
                          {FRAME_OUTPUT: FRAME_OUTPUT}))
            parts = [pre, enc, prop]
        else:
            head = _network(f"{name}_head", head_path, batch, variant, platform, files["head"], net_kind,
                            int(instances), "the head")
            prop = stage("propagate", f"{name}_propagate", batch, prop_in,
                         [_Tensor("sparse", "TYPE_FP32", _net_dims(head, "sparse", False)),
                          _Tensor("depth_diff", "TYPE_FP32", _net_dims(head, "depth_diff", False))])
            post = stage("post", f"{name}_post", batch,
                         [frame_in[1], frame_in[2],
                          _Tensor("depth_pix", "TYPE_FP32", _net_dims(head, "depth_pix", True)),
                          _Tensor("fd0", "TYPE_FP32", _net_dims(head, "fd0", True))], depth_out)
            steps += [(prop.name, {"SPARSE": "SPARSE", "K": "K", "rel_inv": "rel_inv", "feat0": "feat0"},
                       {"sparse": "head_sparse", "depth_diff": "depth_diff"}),
                      (head.name, {"sparse": "head_sparse", "depth_diff": "depth_diff",
                                   **{f"feat{i}": f"feat{i}" for i in range(4)}},
                       {"depth_pix": "depth_pix", "fd0": "fd0"}),
                      (post.name, {"SPARSE": "SPARSE", "K": "K", "depth_pix": "depth_pix", "fd0": "fd0"},
                       {FRAME_OUTPUT: FRAME_OUTPUT})]
            parts = [pre, enc, prop, head, post]
        models.append(_Model(name, platform="ensemble", max_batch_size=batch, inputs=frame_in, outputs=depth_out,
                             steps=steps))
        models += parts
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(f"{repo} is a file; pass a folder for the model repository")
    repo.mkdir(parents=True, exist_ok=True)
    for old in [repo / name, *repo.glob(f"{name}_*")]:
        if old.is_dir() and (old / "config.pbtxt").is_file():
            shutil.rmtree(old)
    desc = {}
    for m in models:
        d = repo / m.name
        (d / "1").mkdir(parents=True)
        (d / "config.pbtxt").write_text(_config_text(m))
        if m.backend == "python":
            (d / "1" / "model.py").write_text(MODEL_PY)
        if m.file is not None:
            shutil.copyfile(m.file, d / "1" / (_MODEL_FILES[m.platform] if m.platform else "model.onnx"))
        what = m.platform or f"{m.backend} ({m.stage})"
        batching = f"max_batch_size {m.max_batch_size}" + (", dynamic batching" if m.max_batch_size else "")
        inst = f", {m.count} x {m.kind}" if m.kind else ""
        desc[m.name] = f"{what}, {batching}{inst}"
    checked = None
    if check:
        try:
            model_config_pb2()
        except BackendUnavailable:
            checked = None
        else:
            checked = check_model_repository(repo, strict=True)
    return TritonRepository(repo, name, desc, checked)


def _dims(dims) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def _tensors(key: str, tensors) -> list:
    if not tensors:
        return []
    rows = [f"  {{ name: {json.dumps(t.name)} data_type: {t.dtype} dims: {_dims(t.dims)} }}" for t in tensors]
    return [f"{key} ["] + [r + ("," if i < len(rows) - 1 else "") for i, r in enumerate(rows)] + ["]"]


def _config_text(m: _Model) -> str:
    """config.pbtxt of one model (protobuf text format of Triton's ModelConfig)."""
    lines = [f"# written by psdrt (psdrt.runtime.triton); {m.stage or m.platform or m.backend}",
             f"name: {json.dumps(m.name)}"]
    lines.append(f"platform: {json.dumps(m.platform)}" if m.platform else f"backend: {json.dumps(m.backend)}")
    lines.append(f"max_batch_size: {int(m.max_batch_size)}")
    lines += _tensors("input", m.inputs) + _tensors("output", m.outputs)
    if m.steps:
        lines.append("ensemble_scheduling {")
        for model, ins, outs in m.steps:
            lines.append(f"  step {{\n    model_name: {json.dumps(model)}\n    model_version: -1")
            lines += [f"    input_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in ins.items()]
            lines += [f"    output_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in outs.items()]
            lines.append("  }")
        lines.append("}")
    if m.kind:
        lines.append(f"instance_group [ {{ kind: {m.kind} count: {int(m.count)} }} ]")
    if m.max_batch_size and not m.steps:
        lines.append("dynamic_batching { max_queue_delay_microseconds: 500 }")
    for k, v in m.params.items():
        lines.append(f"parameters {{ key: {json.dumps(k)} value: {{ string_value: {json.dumps(str(v))} }} }}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ checking


def _load_config(path: Path, pb2):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def check_model_repository(repo, strict: bool = False) -> list:
    """Check a model repository against Triton's documented rules.

    The rules (Triton's model_repository.md, model_configuration.md, ensemble_models.md): every
    model folder holds ``config.pbtxt`` (parsed as ``ModelConfig`` by protobuf's text format) whose
    ``name`` is the folder's; a platform or backend Triton knows; a numeric version folder (``1/``)
    holding the platform's file (``model.onnx``, ``model.plan``, ``model.py``; an ensemble's stays
    empty); ``max_batch_size`` >= 0, dynamic batching only with ``max_batch_size`` > 0; every tensor
    with a data type and explicit dims (all > 0: this repository's models are built for one size);
    an ONNX file's tensors as the config says; instance groups on non-ensembles only; an ensemble's
    steps name models of the repository, map every input of a step to an ensemble input or a
    step's output (and every output to a new tensor, consumed by some step or an ensemble output:
    Triton refuses unused ones) with the same data type and shape, and produce every ensemble output; an ensemble's ``max_batch_size`` at most each step model's.

    Args:
        repo (path): the model repository.
        strict (bool): raise instead of returning the problems. Defaults to False.

    Returns:
        list[str]: the problems, one line each naming the model; empty = OK.

    Raises:
        BackendUnavailable: tritonclient is not installed (``pip install 'psdrt[triton]'``).
        ArtifactError: ``strict`` and some rule is broken (the message lists them).
    """
    pb2 = model_config_pb2()
    from google.protobuf import text_format

    repo = Path(repo)
    problems = []
    if not repo.is_dir():
        problems.append(f"{repo}: not a folder")
        configs = {}
    else:
        configs = {}
        for d in sorted(p for p in repo.iterdir() if p.is_dir()):
            cfg_path = d / "config.pbtxt"
            if not cfg_path.is_file():
                problems.append(f"{d.name}: no config.pbtxt")
                continue
            try:
                cfg = _load_config(cfg_path, pb2)
            except text_format.ParseError as exc:
                problems.append(f"{d.name}: config.pbtxt does not parse as a ModelConfig: {exc}")
                continue
            configs[d.name] = cfg
            problems += _check_model(d, cfg, pb2)
        if not configs and not problems:
            problems.append(f"{repo}: no model folder")
    for name, cfg in configs.items():
        if cfg.platform == "ensemble":
            problems += _check_ensemble(name, cfg, configs, pb2)
    if strict and problems:
        raise ArtifactError(f"the Triton model repository {repo} breaks Triton's rules: " + "; ".join(problems)
                            + "; rewrite it with `psdrt build --triton`")
    return problems


def _full_shape(cfg, t) -> tuple:
    return ((-1,) if cfg.max_batch_size > 0 else ()) + tuple(int(d) for d in t.dims)


def _check_model(d: Path, cfg, pb2) -> list:
    name, out = d.name, []
    if cfg.name != name:
        out.append(f"{name}: config name {cfg.name!r} differs from its folder name (Triton requires them equal)")
    kind = cfg.platform or cfg.backend
    if kind not in _MODEL_FILES and kind != "ensemble":
        out.append(f"{name}: unknown platform/backend {kind!r}")
    if cfg.platform and cfg.backend and (cfg.platform, cfg.backend) not in (("onnxruntime_onnx", "onnxruntime"),
                                                                             ("tensorrt_plan", "tensorrt")):
        out.append(f"{name}: platform {cfg.platform!r} and backend {cfg.backend!r} disagree")
    versions = [p for p in d.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
    if not versions:
        out.append(f"{name}: no version folder (Triton loads <model>/<version>/, e.g. {name}/1/)")
    fname = cfg.default_model_filename or _MODEL_FILES.get(kind)
    for v in versions:
        if kind != "ensemble" and fname and not (v / fname).is_file():
            out.append(f"{name}: version {v.name} has no {fname} (the file the {kind} {'backend' if cfg.backend else 'platform'} loads)")
    if cfg.max_batch_size < 0:
        out.append(f"{name}: max_batch_size {cfg.max_batch_size} < 0")
    if cfg.HasField("dynamic_batching") and cfg.max_batch_size == 0:
        out.append(f"{name}: dynamic_batching needs max_batch_size > 0")
    if not cfg.input or not cfg.output:
        out.append(f"{name}: no {'input' if not cfg.input else 'output'} declared")
    seen = set()
    for t in list(cfg.input) + list(cfg.output):
        if t.name in seen:
            out.append(f"{name}: tensor {t.name!r} declared twice")
        seen.add(t.name)
        if t.data_type == pb2.TYPE_INVALID:
            out.append(f"{name}: tensor {t.name!r} has no data_type")
        if not t.dims or any(int(x) <= 0 for x in t.dims):
            out.append(f"{name}: tensor {t.name!r} dims {list(t.dims)} are not explicit (every dim > 0)")
    if kind == "ensemble":
        if cfg.instance_group:
            out.append(f"{name}: an ensemble takes no instance_group")
        if not cfg.ensemble_scheduling.step:
            out.append(f"{name}: ensemble without ensemble_scheduling steps")
    if kind in ("onnxruntime_onnx", "onnxruntime") or (kind == "python" and _param(cfg, "psdrt_stage") == "onnx"):
        for v in versions:
            if (v / "model.onnx").is_file():
                out += _check_onnx(name, cfg, v / "model.onnx", pb2)
    if kind == "python":
        stage = _param(cfg, "psdrt_stage")
        if stage is not None and stage not in _STAGES:
            out.append(f"{name}: unknown psdrt_stage {stage!r}")
    return out


def _param(cfg, key):
    return cfg.parameters[key].string_value if key in cfg.parameters else None


def _check_onnx(name, cfg, path: Path, pb2) -> list:
    try:
        ins, outs = _onnx_io(path)
    except Exception as exc:  # neither onnx nor onnxruntime here: the file cannot be compared
        return [] if isinstance(exc, BackendUnavailable) else [f"{name}: {path.name} does not load: {exc}"]
    out = []
    have = {n: (dt, dims) for n, dt, dims in ins + outs}
    for t in list(cfg.input) + list(cfg.output):
        if t.name not in have:
            out.append(f"{name}: tensor {t.name!r} is not in {path.name} (it has {', '.join(have)})")
            continue
        dt, dims = have[t.name]
        want = ([None] if cfg.max_batch_size > 0 else []) + [int(x) for x in t.dims]
        got = [None if (cfg.max_batch_size > 0 and i == 0) else d for i, d in enumerate(dims)]
        if pb2.DataType.Name(t.data_type) != dt or got != want:
            out.append(f"{name}: tensor {t.name!r} is {pb2.DataType.Name(t.data_type)} {list(t.dims)} in the "
                       f"config but {dt} {dims} in {path.name}")
    names = {t.name for t in cfg.input}
    for n, _, _ in ins:
        if n not in names:
            out.append(f"{name}: {path.name} input {n!r} is not in the config")
    return out


def _check_ensemble(name, cfg, configs, pb2) -> list:
    out = []
    tensors = {t.name: (t.data_type, _full_shape(cfg, t)) for t in cfg.input}
    produced_by = {}
    steps = list(cfg.ensemble_scheduling.step)
    # Triton runs steps as their inputs become ready; the inputs must be ensemble inputs or outputs of a step
    for step in steps:
        sub = configs.get(step.model_name)
        if sub is None:
            out.append(f"{name}: step model {step.model_name!r} is not in the repository")
            continue
        if cfg.max_batch_size > 0 and sub.max_batch_size < cfg.max_batch_size:
            out.append(f"{name}: max_batch_size {cfg.max_batch_size} exceeds step {step.model_name}'s "
                       f"{sub.max_batch_size}")
        sub_out = {t.name: t for t in sub.output}
        for key, value in step.output_map.items():
            if key not in sub_out:
                out.append(f"{name}: step {step.model_name} output_map key {key!r} is not an output of it")
                continue
            if value in tensors or value in produced_by:
                out.append(f"{name}: tensor {value!r} is produced twice")
            produced_by[value] = (step.model_name, sub_out[key].data_type, _full_shape(sub, sub_out[key]))
    for step in steps:
        sub = configs.get(step.model_name)
        if sub is None:
            continue
        sub_in = {t.name: t for t in sub.input}
        for key, value in step.input_map.items():
            if key not in sub_in:
                out.append(f"{name}: step {step.model_name} input_map key {key!r} is not an input of it")
                continue
            if value in tensors:
                dt, shape = tensors[value]
            elif value in produced_by:
                _, dt, shape = produced_by[value]
            else:
                out.append(f"{name}: step {step.model_name} input {key!r} maps to {value!r}, which is neither an "
                           "ensemble input nor any step's output")
                continue
            want = (sub_in[key].data_type, _full_shape(sub, sub_in[key]))
            if (dt, shape) != want:
                out.append(f"{name}: step {step.model_name} input {key!r} is {pb2.DataType.Name(want[0])} "
                           f"{list(want[1])} but {value!r} is {pb2.DataType.Name(dt)} {list(shape)}")
        for key, t in sub_in.items():
            if key not in step.input_map and not t.optional:
                out.append(f"{name}: step {step.model_name} input {key!r} is not mapped")
    consumed = {v for step in steps for v in step.input_map.values()} | {t.name for t in cfg.output}
    for value, (model, _, _) in produced_by.items():
        if value not in consumed:
            out.append(f"{name}: tensor {value!r} (from step {model}) is unused: Triton refuses unused ensemble "
                       "tensors; drop it from the output_map")
    for t in cfg.output:
        if t.name not in produced_by:
            out.append(f"{name}: ensemble output {t.name!r} is produced by no step")
            continue
        _, dt, shape = produced_by[t.name]
        if (dt, shape) != (t.data_type, _full_shape(cfg, t)):
            out.append(f"{name}: ensemble output {t.name!r} is {pb2.DataType.Name(t.data_type)} {list(t.dims)} but "
                       f"its step produces {pb2.DataType.Name(dt)} {list(shape)}")
    return out


# ------------------------------------------------------------------------------------------------ serving


class _Stage:
    """One Python model's work on host arrays: the stages of ``runtime.pipeline`` over the model's
    config parameters (no Triton types: ``TritonPythonModel`` is the glue)."""

    def __init__(self, params: dict, version_dir: Path) -> None:
        self.stage = params.get("psdrt_stage")
        if self.stage not in _STAGES:
            raise ArtifactError(f"unknown psdrt_stage {self.stage!r}; rewrite the repository with `psdrt build --triton`")
        if self.stage == "onnx":
            from .backends.ort import OrtBackend

            self.net = OrtBackend(version_dir / params.get("onnx_file", "model.onnx"), providers=["cpu"])
            return
        from . import _capi
        from .presets import get_preset

        self.mode = params["mode"]
        self.size = (int(params["height"]), int(params["width"]))
        self.kernels = _capi.load()
        self.preset = get_preset(params["preset"])
        self.seed = int(params["seed"])
        self.fm_lower = int(params["fm_lower"])
        self.preprocess = params["preprocess"]

    def _frame(self, a: dict):
        from .errors import ShapeError
        from .inputs import validate_frame

        frame = validate_frame(a.get("RGB"), a["SPARSE"], a["K"], need_rgb="RGB" in a, mode=self.mode)
        if tuple(frame.sparse.shape) != self.size:
            raise ShapeError(f"frame is {frame.sparse.shape[0]}x{frame.sparse.shape[1]} but the repository was "
                             f"written for {self.size[0]}x{self.size[1]}; resize the frame, or rewrite it with "
                             "`psdrt build --triton` for that size")
        return frame

    def run_one(self, a: dict) -> dict:
        """One frame (network tensors with their batch dimension of 1)."""
        from .pipeline import encoder_input, finish_depth, post_stage, propagate_stage

        if self.stage == "onnx":
            return self.net.run(a)
        if self.stage == "guided":
            from .guided import GuidedParams

            frame = self._frame(a)
            return {FRAME_OUTPUT: finish_depth(frame, self.kernels.guided(frame.rgb, frame.sparse, GuidedParams()))[0]}
        if self.stage == "preprocess":
            return {"rgb": encoder_input(self._frame(a), self.fm_lower, self.preprocess)}
        frame = self._frame(a)
        if self.stage == "propagate":
            diff = propagate_stage(self.kernels, self.preset, frame, a["rel_inv"], a["feat0"], self.seed)
            if self.mode == "propagate":
                return {FRAME_OUTPUT: finish_depth(frame, diff)[0]}
            return {"sparse": frame.sparse[None, None], "depth_diff": np.asarray(diff, np.float32)[None, None]}
        depth = post_stage(self.kernels, self.preset, frame, a["depth_pix"], a["fd0"])
        return {FRAME_OUTPUT: finish_depth(frame, depth)[0]}

    def run(self, a: dict, batched: bool) -> dict:
        """A request's tensors; with ``batched`` their first dimension is the batch: the networks
        run it at once, the other stages frame by frame."""
        if not batched or self.stage == "onnx":
            return self.run_one(a)
        n = len(next(iter(a.values())))
        rows = [self.run_one({k: (v[i] if k in FRAME_INPUTS else v[i:i + 1]) for k, v in a.items()})
                for i in range(n)]
        return {k: (np.stack([r[k] for r in rows]) if k == FRAME_OUTPUT else np.concatenate([r[k] for r in rows]))
                for k in rows[0]}


class TritonPythonModel:
    """The Python-backend model of every psdrt stage (``model.py`` imports it): reads its stage from
    the config's parameters, answers each request with the stage's output, or with an error
    ``"<psdrt error class>: <message>"`` (the message names the fix; ``TritonClient`` raises it as
    that class)."""

    def initialize(self, args) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        self.inputs = [t["name"] for t in cfg["input"]]
        self.outputs = {t["name"]: _NP_TYPES[t["data_type"]] for t in cfg["output"]}
        self.stage = _Stage(params, Path(args["model_repository"]) / str(args["model_version"]))

    def execute(self, requests):
        pb = self._pb
        responses = []
        for request in requests:
            try:
                # DLPack both ways, not as_numpy() / Tensor(name, ndarray): those go through the stub's
                # pybind11 NumPy bindings, which in older stubs (pybind11 < 2.12, e.g. nvidia-pytriton
                # 0.7.0's) read NumPy 2 arrays wrongly (measured: zeros, a repeated first element).
                # Copied out of the shared memory: ONNX Runtime's output on the views differed from the
                # in-process one by 1 ulp (measured on the tiny test head); on a copy it is bit-identical
                arrays = {n: np.array(np.from_dlpack(pb.get_input_tensor_by_name(request, n)))
                          for n in self.inputs}
                out = self.stage.run(arrays, self.batched)
                tensors = [pb.Tensor.from_dlpack(n, np.ascontiguousarray(out[n], dtype=dt))
                           for n, dt in self.outputs.items()]
                responses.append(pb.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # a bad frame answers its request with the typed message
                responses.append(pb.InferenceResponse(output_tensors=[],
                                                      error=pb.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses

    def finalize(self) -> None:
        self.stage = None


httpclient = lazy_import("tritonclient.http", extra="triton")


class TritonClient:
    """Depth from a Triton server serving a repository of ``write_model_repository`` (HTTP).

    Args:
        url (str): the server's HTTP endpoint, ``host:port``. Defaults to "localhost:8000".
        model (str): the entry model. Defaults to "psd".
        timeout_s (float): connection and network timeout per request. Defaults to 60.

    Raises:
        BackendUnavailable: tritonclient is not installed (``pip install 'psdrt[triton]'``).

    Thread safety: one client per thread (tritonclient's HTTP client is not shared safely).
    """

    def __init__(self, url: str = "localhost:8000", model: str = "psd", timeout_s: float = 60.0) -> None:
        self.url, self.model = url, model
        self._client = httpclient.InferenceServerClient(url=url, connection_timeout=timeout_s,
                                                        network_timeout=timeout_s)
        self._batched = None

    def ready(self) -> bool:
        """True when the server answers and the entry model is ready (never raises)."""
        try:
            return bool(self._client.is_server_live() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def _batch(self) -> bool:
        if self._batched is None:
            try:
                cfg = self._client.get_model_config(self.model)
            except Exception as exc:
                raise BackendUnavailable(f"the Triton server at {self.url} does not serve model {self.model!r} "
                                         f"({exc}); start it with --model-repository=REPO (psdrt build --triton "
                                         "REPO), or pass model= the entry's name") from exc
            self._batched = int(cfg.get("max_batch_size", 0)) > 0
        return self._batched

    def infer(self, rgb, sparse, K) -> np.ndarray:
        """Complete one frame on the server.

        Args:
            rgb (ndarray): (H, W, 3) uint8 RGB.
            sparse (ndarray): (H, W) metres, 0 = missing (sent as float32).
            K (ndarray): 3 x 3 intrinsics (sent as float64).

        Returns:
            ndarray: depth (H, W) float32 metres, as ``Pipeline`` returns it.

        Raises:
            InputError, ShapeError, ...: the server's psdrt error, as its class (the message names the fix).
            BackendUnavailable: no server or no such model at ``url``.
        """
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        arrays = {"RGB": np.ascontiguousarray(rgb), "SPARSE": np.ascontiguousarray(sparse, dtype=np.float32),
                  "K": np.ascontiguousarray(K, dtype=np.float64)}
        if arrays["RGB"].dtype != np.uint8:
            raise InputError(f"RGB image must be uint8, got {arrays['RGB'].dtype}; convert with "
                             "np.clip(img * 255, 0, 255).astype(np.uint8)")
        batched = self._batch()
        inputs = []
        for n, a in arrays.items():
            a = a[None] if batched else a
            t = httpclient.InferInput(n, list(a.shape), np_to_triton_dtype(a.dtype))
            t.set_data_from_numpy(a)
            inputs.append(t)
        try:
            res = self._client.infer(self.model, inputs, outputs=[httpclient.InferRequestedOutput(FRAME_OUTPUT)])
        except InferenceServerException as exc:
            raise _server_error(exc) from exc
        depth = res.as_numpy(FRAME_OUTPUT)
        return depth[0] if batched else depth

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _server_error(exc) -> Exception:
    """A tritonclient error as the psdrt error the model raised (``"<class>: <message>"``)."""
    from . import errors

    text = str(exc.message() if hasattr(exc, "message") else exc) or str(exc)
    for word in text.replace("[", " ").split():
        cls = getattr(errors, word.rstrip(":"), None)
        if word.endswith(":") and isinstance(cls, type) and issubclass(cls, PsdError):
            return cls(text[text.index(word) + len(word):].strip())
    return PsdError(f"the Triton server failed the request: {text}")
