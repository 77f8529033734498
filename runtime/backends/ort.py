"""ONNX Runtime backend: the numerical reference for every ONNX artefact, and a deployment path.

``onnxruntime`` is imported lazily (style G2): importing this module costs nothing, and a missing
package raises ``BackendUnavailable`` naming the ``[cpu]`` / ``[gpu]`` extra when a backend is built.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from psdrt.runtime._lazy import lazy_import
from psdrt.runtime.backends.base import TensorSpec, check_feeds
from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError, PsdError

__all__ = ["OrtBackend", "available_providers", "PROVIDER_ALIASES", "ORT_DTYPES"]

log = logging.getLogger(__name__)

# 1.17: first release with the TensorRT 10 EP options used below and CUDA 12 wheels
ort = lazy_import("onnxruntime", "1.17", extra="cpu")

#: short provider names accepted by ``OrtBackend(providers=...)``
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: automatic choice, best first
_AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

#: ONNX Runtime's type strings -> NumPy dtypes
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(bool)": np.bool_,
}

ProviderArg = Union[str, Tuple[str, Dict[str, Any]]]


def available_providers() -> List[str]:
    """Execution providers the installed ONNX Runtime offers.

    Returns:
        list[str]: e.g. ``["CPUExecutionProvider"]``; empty when onnxruntime is not installed.
    """
    if not ort.available():
        return []
    return list(ort.get_available_providers())


def _stream_handle(stream: Any) -> int:
    """A raw ``cudaStream_t`` as int from an int, a CuPy/PyTorch/cuda-python stream object."""
    if isinstance(stream, int):
        return stream
    for attr in ("ptr", "cuda_stream", "handle"):
        value = getattr(stream, attr, None)
        if value is not None:
            return int(value)
    try:
        return int(stream)  # cuda-python's CUstream / cudaStream_t support int()
    except (TypeError, ValueError):
        raise InputError(
            f"cannot read a CUDA stream handle from {type(stream).__name__}; pass the cudaStream_t as int"
        ) from None


def _spec(node: Any) -> TensorSpec:
    dtype = ORT_DTYPES.get(node.type)
    if dtype is None:
        raise ArtifactError(
            f"tensor {node.name!r} has unsupported type {node.type}; re-export with float32 inputs and outputs"
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None) for d in node.shape)
    return TensorSpec(node.name, dtype, shape)


class OrtBackend:
    """Run an ONNX model with ONNX Runtime (TensorRT EP, CUDA EP or CPU EP).

    Args:
        path (str | os.PathLike | bytes): the ``.onnx`` file (external data next to it), or the
            serialized model bytes.
        providers (Sequence, optional): execution providers in priority order: short names
            (``"tensorrt"``/``"trt"``, ``"cuda"``, ``"cpu"``), full ORT names, or
            ``(name, options)`` pairs whose options override the ones built from the arguments
            below. A requested provider that this onnxruntime build lacks raises. Defaults to
            None: every available provider of TensorRT, CUDA, CPU, in that order (CPU is always last).
        threads (int, optional): CPU intra-op threads. Defaults to None (ONNX Runtime's choice,
            one per physical core).
        device_id (int): CUDA device for the GPU providers. Defaults to 0.
        cuda_stream (optional): a CUDA stream (int handle, or an object with ``.ptr`` /
            ``.cuda_stream`` / ``.handle``) that the CUDA and TensorRT providers compute on
            (``user_compute_stream``). ORT fixes the stream per session, so ``run(stream=...)``
            must then pass the same stream or None. Defaults to None (ORT's own stream).
        trt_cache_dir (str | os.PathLike, optional): TensorRT EP engine cache directory (enables the
            cache; engines are reused across processes when the ONNX, shapes, flags, TensorRT version
            and GPU agree). Defaults to None (no cache: the engine is rebuilt for every session).
        trt_fp16 (bool): allow FP16 kernels in the TensorRT EP. Defaults to False.
        trt_int8 (bool): allow INT8 kernels in the TensorRT EP (needs a Q/DQ model or
            ``trt_int8_calibration_table``). Defaults to False.
        trt_int8_calibration_table (str, optional): legacy calibration cache file name (relative to
            ``trt_cache_dir``, TensorRT 8.5/8.6 only). Defaults to None.
        trt_timing_cache (str | os.PathLike, optional): directory of the TensorRT timing cache.
            Keep one per graph and TensorRT version (a stale cache can slow engines down).
            Defaults to None (no timing cache).
        trt_workspace_bytes (int, optional): TensorRT builder workspace limit. Defaults to None
            (ORT's default).
        graph_optimization (str): ``"all"``, ``"extended"``, ``"basic"`` or ``"disabled"``.
            Defaults to "all".

    Raises:
        BackendUnavailable: onnxruntime is missing/too old, or a requested provider is not in this
            build (message names ``pip install 'psdrt[cpu]'`` / ``'psdrt[gpu]'``).
        ArtifactError: the model file is missing, not an ONNX model, or an invalid graph.

    Thread safety: ``run`` may be called from several threads on one backend (ONNX Runtime
    sessions are thread-safe); ``close`` must not race with ``run``.
    Ownership: ``run`` returns fresh NumPy arrays owned by the caller.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike, bytes],
        providers: Optional[Sequence[ProviderArg]] = None,
        threads: Optional[int] = None,
        *,
        device_id: int = 0,
        cuda_stream: Any = None,
        trt_cache_dir: Union[str, os.PathLike, None] = None,
        trt_fp16: bool = False,
        trt_int8: bool = False,
        trt_int8_calibration_table: Optional[str] = None,
        trt_timing_cache: Union[str, os.PathLike, None] = None,
        trt_workspace_bytes: Optional[int] = None,
        graph_optimization: str = "all",
    ) -> None:
        self._session = None
        if isinstance(path, (bytes, bytearray)):
            model: Union[str, bytes] = bytes(path)
            self.path: Optional[Path] = None
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise ArtifactError(f"ONNX model not found: {self.path}; build it with `psdrt build --checkpoint CKPT --out DIR` (then load DIR with `psdrt run --artifacts DIR`) or fix the path")
            model = str(self.path)
        ort.load()  # BackendUnavailable with the extra's name when missing

        self._stream = None if cuda_stream is None else _stream_handle(cuda_stream)
        resolved = self._resolve_providers(
            providers,
            device_id=device_id,
            trt_cache_dir=trt_cache_dir,
            trt_fp16=trt_fp16,
            trt_int8=trt_int8,
            trt_int8_calibration_table=trt_int8_calibration_table,
            trt_timing_cache=trt_timing_cache,
            trt_workspace_bytes=trt_workspace_bytes,
        )

        so = ort.SessionOptions()
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if graph_optimization not in levels:
            raise ValueError(f"graph_optimization must be one of {sorted(levels)}, got {graph_optimization!r}")
        so.graph_optimization_level = levels[graph_optimization]
        if threads is not None:
            from ..config import MAX_THREADS

            if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
                raise InputError(f"threads must be an integer in 1..{MAX_THREADS} (ONNX Runtime intra-op threads), "
                                 f"got {threads!r}; leave it unset for ONNX Runtime's default")
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: EP fallback notices go through our logger
        # Idle intra-op threads must not spin between runs: spinning took the cores from the OpenMP
        # kernels that run between the two networks (measured in bm_runtime: the propagation call
        # inside a psd frame took 45.8 ms with spinning, 2.6 ms without, 2 cores).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")

        names = [p[0] for p in resolved]
        opts = [p[1] for p in resolved]
        try:
            self._session = ort.InferenceSession(model, sess_options=so, providers=names, provider_options=opts)
        except Exception as exc:
            raise self._classify_load_error(exc) from exc
        active = self._session.get_providers()
        if names and names[0] != "CPUExecutionProvider" and names[0] not in active:
            log.warning("%s failed to initialise; running on %s", names[0], active)
        self._inputs = tuple(_spec(n) for n in self._session.get_inputs())
        self._outputs = tuple(_spec(n) for n in self._session.get_outputs())

    # -- construction helpers ---------------------------------------------------------------
    def _resolve_providers(self, providers, **kw) -> List[Tuple[str, Dict[str, str]]]:
        have = ort.get_available_providers()
        if providers is None:
            wanted: List[Tuple[str, Dict[str, Any]]] = [(p, {}) for p in _AUTO_ORDER if p in have]
        else:
            if isinstance(providers, (str, tuple)):
                providers = [providers]
            wanted = []
            for p in providers:
                name, extra = (p, {}) if isinstance(p, str) else (p[0], dict(p[1]))
                full = PROVIDER_ALIASES.get(name.lower(), name)
                if full not in have:
                    extra_name = "gpu" if full in _GPU_PROVIDERS else "cpu"
                    raise BackendUnavailable(
                        f"execution provider {full} is not available in this onnxruntime build "
                        f"(available: {have}); install the [{extra_name}] extra: pip install 'psdrt[{extra_name}]' "
                        "(onnxruntime and onnxruntime-gpu are mutually exclusive), or pick another provider"
                    )
                wanted.append((full, extra))
            if not wanted:
                raise ValueError("providers is empty; pass None for the automatic choice")
        return [(name, {**self._default_options(name, **kw), **{k: str(v) for k, v in extra.items()}}) for name, extra in wanted]

    def _default_options(
        self,
        name: str,
        *,
        device_id,
        trt_cache_dir,
        trt_fp16,
        trt_int8,
        trt_int8_calibration_table,
        trt_timing_cache,
        trt_workspace_bytes,
    ) -> Dict[str, str]:
        o: Dict[str, str] = {}
        if name == "CUDAExecutionProvider":
            o["device_id"] = str(int(device_id))
            if self._stream is not None:
                o["has_user_compute_stream"] = "1"
                o["user_compute_stream"] = str(self._stream)
        elif name == "TensorrtExecutionProvider":
            o["device_id"] = str(int(device_id))
            o["trt_fp16_enable"] = "1" if trt_fp16 else "0"
            o["trt_int8_enable"] = "1" if trt_int8 else "0"
            if trt_int8_calibration_table:
                o["trt_int8_calibration_table_name"] = str(trt_int8_calibration_table)
                o["trt_int8_use_native_calibration_table"] = "1"
            if trt_cache_dir is not None:
                Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                o["trt_engine_cache_enable"] = "1"
                o["trt_engine_cache_path"] = str(trt_cache_dir)
            if trt_timing_cache is not None:
                Path(trt_timing_cache).mkdir(parents=True, exist_ok=True)
                o["trt_timing_cache_enable"] = "1"
                o["trt_timing_cache_path"] = str(trt_timing_cache)
            if trt_workspace_bytes is not None:
                o["trt_max_workspace_size"] = str(int(trt_workspace_bytes))
            if self._stream is not None:
                o["has_user_compute_stream"] = "1"
                o["user_compute_stream"] = str(self._stream)
        return o

    def _classify_load_error(self, exc: Exception) -> PsdError:
        where = str(self.path) if self.path is not None else "<model bytes>"
        pybind = getattr(getattr(ort.load(), "capi", None), "onnxruntime_pybind11_state", None)
        artifact_types = tuple(
            t for t in (getattr(pybind, n, None) for n in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "InvalidArgument")) if isinstance(t, type)
        )
        text = str(exc)
        if (artifact_types and isinstance(exc, artifact_types)) or "protobuf" in text.lower() or "Load model" in text:
            return ArtifactError(
                f"{where} is not a valid ONNX model ({type(exc).__name__}: {text.strip()[:300]}); "
                "rebuild it with `psdrt build --checkpoint CKPT --out DIR` or re-download the artefact"
            )
        return BackendUnavailable(
            f"onnxruntime could not create a session for {where}: {type(exc).__name__}: {text.strip()[:300]}; "
            "check the provider installation or use providers=['cpu']"
        )

    # -- Backend protocol -------------------------------------------------------------------
    @property
    def providers(self) -> List[str]:
        """Execution providers the session actually uses, best first."""
        return list(self._live().get_providers())

    def input_specs(self) -> Tuple[TensorSpec, ...]:
        """Model inputs in model order (FP16 models exported with FP32 I/O report float32)."""
        self._live()
        return self._inputs

    def output_specs(self) -> Tuple[TensorSpec, ...]:
        """Model outputs in model order."""
        self._live()
        return self._outputs

    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> Dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feeds (Mapping[str, np.ndarray]): every input by name, host arrays of the spec dtype.
            stream (optional): CUDA stream; must be None or the ``cuda_stream`` given at
                construction (ORT binds the stream per session). Ignored on the CPU provider, whose
                runs are synchronous. Defaults to None.

        Returns:
            dict[str, np.ndarray]: every output by name. Returned arrays may be reused by the next
            ``run``; copy to keep (this backend currently returns fresh arrays).

        Raises:
            InputError: wrong input names or dtype, or a stream other than the session's.
            ShapeError: an input shape that does not fit the model.
        """
        session = self._live()
        check_feeds(feeds, self._inputs)
        if stream is not None and any(p in _GPU_PROVIDERS for p in session.get_providers()):
            if self._stream is None or _stream_handle(stream) != self._stream:
                raise InputError(
                    "ONNX Runtime binds the CUDA stream per session; create the backend with "
                    "OrtBackend(..., cuda_stream=stream) and pass that stream (or None) to run()"
                )
        arrays = {name: np.ascontiguousarray(value) for name, value in feeds.items()}
        try:
            values = session.run(None, arrays)
        except Exception as exc:
            raise PsdError(f"onnxruntime failed to run {self.path or '<model bytes>'}: {exc}") from exc
        return {spec.name: value for spec, value in zip(self._outputs, values)}

    def close(self) -> None:
        """Release the session (idempotent)."""
        self._session = None

    def _live(self):
        if self._session is None:
            raise PsdError("this OrtBackend is closed; create a new one")
        return self._session

    def __enter__(self) -> "OrtBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._session is None else ",".join(self._session.get_providers())
        return f"OrtBackend({str(self.path) if self.path else '<bytes>'!r}, {state})"
