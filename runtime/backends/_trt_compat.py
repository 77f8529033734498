"""Every TensorRT version difference psdrt cares about, decided once by feature detection (style G3).

One code path serves TensorRT 8.5 through 10.x: the name-based tensor API (``num_io_tensors``,
``get_tensor_name``, ``set_input_shape``, ``set_tensor_address``) and ``execute_async_v3`` on a
stream (docs/platform.md §1). What still differs between 8.x and 10.x is decided here from the
module's attributes, never from its version string, and callers branch on the named flags of
:class:`TrtFeatures`. Forked code is named ``_v1`` (8.x) / ``_v2`` (10.x) and lives only here.

Every function takes the ``tensorrt`` module as an argument (``trt=None`` means the lazily imported
real one), so the branches are tested against fake module trees without TensorRT installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psdrt.runtime._lazy import lazy_import
from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError

__all__ = [
    "INSTALL_HINT",
    "TrtFeatures",
    "import_trt",
    "features",
    "unavailable",
    "network_flags",
    "builder_flags",
    "set_workspace",
    "io_tensor_names",
    "is_input",
    "execute",
]

INSTALL_HINT = ("TensorRT is not on PyPI for your platform: install it from JetPack or NVIDIA's "
                "TensorRT packages")

# No min_version: what matters is the API, checked by feature detection in import_trt().
_trt_module = lazy_import("tensorrt", extra="trt")
_TRT: Any = None


def import_trt() -> Any:
    """Import ``tensorrt`` on first use (style G2) and check it has the API psdrt needs.

    Raises:
        BackendUnavailable: not importable, or older than the name-based API (TensorRT 8.5).
    """
    global _TRT
    if _TRT is None:
        try:
            mod = _trt_module.load()
        except BackendUnavailable as exc:  # ImportError, or the PyPI stub's RuntimeError/OSError
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise BackendUnavailable(f"tensorrt not importable: {type(cause).__name__}: {cause}; "
                                     f"{INSTALL_HINT}") from None
        feat = features(mod)
        if not (feat.has_tensor_api and feat.has_enqueue_v3):
            raise unavailable("the name-based tensor API and execute_async_v3 (TensorRT >= 8.5)", mod)
        _TRT = mod
    return _TRT


def _trt(trt: Any) -> Any:
    return import_trt() if trt is None else trt


@dataclass(frozen=True)
class TrtFeatures:
    """Capability flags of one ``tensorrt`` module; see :func:`features` for where each comes from."""

    version: str
    has_tensor_api: bool
    has_enqueue_v3: bool
    has_strongly_typed: bool
    has_implicit_batch: bool
    has_memory_pools: bool
    has_fp16_flag: bool
    has_int8_flag: bool
    has_timing_cache: bool
    has_dla: bool


def features(trt: Any = None) -> TrtFeatures:
    """Compute the flags by looking at the module's attributes.

    Args:
        trt (module, optional): a ``tensorrt`` module (or a fake with the same attribute tree).
            Defaults to the installed one.
    """
    trt = _trt(trt)
    ctx = getattr(trt, "IExecutionContext", None)
    eng = getattr(trt, "ICudaEngine", None)
    cfg = getattr(trt, "IBuilderConfig", None)
    ncf = getattr(trt, "NetworkDefinitionCreationFlag", None)
    bflag = getattr(trt, "BuilderFlag", None)
    return TrtFeatures(
        version=str(getattr(trt, "__version__", "unknown")),
        # num_io_tensors/get_tensor_name/set_input_shape/set_tensor_address: added 8.5; bindings removed 10.0
        has_tensor_api=all(hasattr(eng, a) for a in ("num_io_tensors", "get_tensor_name"))
        and all(hasattr(ctx, a) for a in ("set_input_shape", "set_tensor_address")),
        # execute_async_v3: added 8.5; execute_async_v2 removed 10.0
        has_enqueue_v3=hasattr(ctx, "execute_async_v3"),
        # STRONGLY_TYPED network flag: added 9.1 (first public release 10.0)
        has_strongly_typed=hasattr(ncf, "STRONGLY_TYPED"),
        # implicit batch (IBuilder.max_batch_size) removed 10.0; before that EXPLICIT_BATCH must be set
        has_implicit_batch=hasattr(getattr(trt, "IBuilder", None), "max_batch_size"),
        # set_memory_pool_limit: added 8.4 (max_workspace_size removed 10.0)
        has_memory_pools=hasattr(cfg, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"),
        # BuilderFlag.FP16/INT8: deprecated 10.12 in favour of strongly typed networks
        has_fp16_flag=hasattr(bflag, "FP16"),
        has_int8_flag=hasattr(bflag, "INT8"),
        # create_timing_cache/set_timing_cache: added 8.0
        has_timing_cache=hasattr(cfg, "create_timing_cache") and hasattr(cfg, "set_timing_cache"),
        # DLA device type and GPU fallback: Xavier/Orin only at run time, present in every desktop build too
        has_dla=hasattr(getattr(trt, "DeviceType", None), "DLA") and hasattr(bflag, "GPU_FALLBACK"),
    )


def unavailable(feature: str, trt: Any = None) -> BackendUnavailable:
    """The error for a feature this TensorRT lacks: names the feature and the installed version."""
    version = getattr(trt, "__version__", None) if trt is not None else (
        getattr(_TRT, "__version__", None) if _TRT is not None else None)
    return BackendUnavailable(
        f"{feature} is not available in the installed TensorRT {version or '(unknown version)'}; "
        "upgrade TensorRT (JetPack 6.1+ / TensorRT 10.x) or choose an option this version supports"
    )


# ------------------------------------------------------------------------------------------------
# Network creation


def _network_flags_v1(trt: Any, strongly_typed: bool) -> int:
    # 8.x: explicit batch must be requested; strongly typed networks do not exist yet.
    if strongly_typed:
        raise unavailable("strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED, TensorRT 10.0)", trt)
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _network_flags_v2(trt: Any, strongly_typed: bool) -> int:
    # 10.x: explicit batch is the only mode (the flag is deprecated and ignored).
    if strongly_typed and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise unavailable("strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED)", trt)
    return (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly_typed else 0


def network_flags(strongly_typed: bool, trt: Any = None) -> int:
    """Flags for ``IBuilder.create_network``.

    Args:
        strongly_typed (bool): request a strongly typed network (types come from the ONNX).
    """
    trt = _trt(trt)
    f = features(trt)
    return (_network_flags_v1 if f.has_implicit_batch else _network_flags_v2)(trt, strongly_typed)


def builder_flags(precision: str, strongly_typed: bool, dla: bool = False, trt: Any = None) -> list:
    """``BuilderFlag`` members to set for a precision.

    * strongly typed (10.x, FP16/Q-DQ ONNX): none; the ONNX's types decide (the FP16/INT8 flags
      are deprecated since 10.12 and are rejected on strongly typed networks);
    * weakly typed (8.x): ``fp16`` -> FP16; ``int8`` (a Q/DQ ONNX: explicit quantization, no
      calibrator) -> INT8 plus FP16 so the unquantized layers do not fall back to FP32;
    * ``dla``: GPU_FALLBACK, so layers DLA cannot run go to the GPU.
    """
    trt = _trt(trt)
    f = features(trt)
    p = str(precision).lower()
    if p not in ("fp32", "fp16", "int8"):
        raise InputError(f"unknown precision {precision!r}; use fp32, fp16 or int8")
    flags = []
    if not strongly_typed:
        if p in ("fp16", "int8"):
            if not f.has_fp16_flag:
                raise unavailable("BuilderFlag.FP16 (removed after its 10.12 deprecation): build strongly typed "
                                  "from an FP16 ONNX", trt)
            flags.append(trt.BuilderFlag.FP16)
        if p == "int8":
            if not f.has_int8_flag:
                raise unavailable("BuilderFlag.INT8: build strongly typed from a Q/DQ ONNX", trt)
            flags.append(trt.BuilderFlag.INT8)
    if dla:
        if not f.has_dla:
            raise unavailable("DLA (DeviceType.DLA with BuilderFlag.GPU_FALLBACK)", trt)
        flags.append(trt.BuilderFlag.GPU_FALLBACK)
    return flags


def set_workspace(config: Any, nbytes: int, trt: Any = None) -> None:
    """Limit the builder's workspace pool to ``nbytes``."""
    trt = _trt(trt)
    if not features(trt).has_memory_pools:
        raise unavailable("IBuilderConfig.set_memory_pool_limit (TensorRT 8.4)", trt)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))


# ------------------------------------------------------------------------------------------------
# Engines and execution (8.5+ only: one path)


def io_tensor_names(engine: Any) -> list[str]:
    """Names of the engine's I/O tensors in engine order."""
    return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]


def is_input(engine: Any, name: str, trt: Any = None) -> bool:
    """Whether ``name`` is an input tensor of ``engine``."""
    trt = _trt(trt)
    return engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT


def execute(context: Any, stream_handle: int) -> None:
    """Enqueue inference on a CUDA stream (``execute_async_v3``); addresses must already be set.

    Raises:
        ArtifactError: TensorRT refused to enqueue (a shape or address was not set).
    """
    if not context.execute_async_v3(int(stream_handle)):
        raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log above); check that every "
                            "input shape is inside the engine's optimisation profile")

