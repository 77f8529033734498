"""TensorRT backend: a serialized engine behind the ``Backend`` protocol, one path for TensorRT 8.5-10.x.

``tensorrt`` and ``libcudart`` are loaded lazily, when a backend is built (style G2). Before the
engine is deserialised, its sidecar manifest (``psdrt.runtime.manifest``) is read and checked against
the installed TensorRT and the GPU: an engine from another TensorRT version or GPU is refused with an
``ArtifactError`` naming both and the fix (``psdrt build`` on the target), instead of TensorRT's
deserialisation failure or, worse, a silently slow or wrong engine.

Execution uses the name-based API only: ``set_input_shape`` / ``set_tensor_address`` per tensor, then
``execute_async_v3`` on a CUDA stream (``_trt_compat.execute``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from psdrt.runtime import _cuda
from psdrt.runtime.backends import _trt_compat as compat
from psdrt.runtime.backends.base import TensorSpec, check_feeds
from psdrt.runtime.errors import ArtifactError, ShapeError
from psdrt.runtime.manifest import EngineManifest, read_manifest, validate_manifest

__all__ = ["TrtBackend", "stream_handle"]

log = logging.getLogger(__name__)


def stream_handle(stream: Any) -> int:
    """A ``cudaStream_t`` as an int, from an int or an object with ``.handle``/``.ptr``/``.cuda_stream``."""
    if isinstance(stream, int):
        return stream
    for attr in ("handle", "ptr", "cuda_stream"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise TypeError(f"cannot get a CUDA stream handle from {type(stream).__name__}; pass an int cudaStream_t")


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


class TrtBackend:
    """Run a serialized TensorRT engine.

    Args:
        engine_path (str | Path): ``.engine`` file written by ``psdrt.export.trt_build``.
        device (int): CUDA device index. Defaults to 0.
        check_manifest (bool): read and validate ``<engine>.manifest.json`` first. Defaults to True;
            False loads engines of unknown origin (TensorRT itself still refuses a foreign version).

    Raises:
        ArtifactError: missing engine or manifest, a manifest for another TensorRT/GPU, or an engine
            TensorRT cannot deserialise.
        BackendUnavailable: TensorRT or the CUDA runtime is missing, or there is no GPU.

    Ownership: the backend owns the engine, the context, its stream and its device buffers;
    ``close()`` frees them. Returned arrays are reused by the next ``run``; copy to keep.

    Thread safety: not safe to ``run`` concurrently on one backend (one execution context).
    """

    def __init__(self, engine_path: Union[str, Path], *, device: int = 0, check_manifest: bool = True) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ArtifactError(f"engine not found: {self.path}; build it on this machine with `psdrt build`")
        self.manifest: Optional[EngineManifest] = read_manifest(self.path) if check_manifest else None
        trt = compat.import_trt()
        self._trt = trt
        if self.manifest is not None:
            validate_manifest(self.manifest, trt_version=trt.__version__, gpu_name=_cuda.device_name(device),
                              compute_capability=_cuda.compute_capability(device), engine_path=self.path)
        self._runtime = trt.Runtime(_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} could not deserialise {self.path} (see its log above); "
                                "rebuild it on this machine with `psdrt build`")
        self._context = self._engine.create_execution_context()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        for name in compat.io_tensor_names(self._engine):
            shape = tuple(int(d) if int(d) >= 0 else None for d in self._engine.get_tensor_shape(name))
            spec = TensorSpec(name, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))), shape)
            (self._inputs if compat.is_input(self._engine, name, trt) else self._outputs).append(spec)
        self._stream = _cuda.Stream()
        self._buffers = {s.name: _cuda.DeviceBuffer() for s in self._inputs + self._outputs}
        self._host_out: Dict[str, np.ndarray] = {}

    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def run(self, feeds: Mapping[str, Any], stream: Optional[Any] = None) -> Dict[str, np.ndarray]:
        """Copy ``feeds`` in, enqueue the engine on ``stream``, copy the outputs out and synchronise.

        Args:
            feeds (Mapping[str, ndarray]): host arrays for every input (see ``input_specs()``).
            stream (optional): a CUDA stream (int handle or an object with ``.handle``/``.ptr``).
                Defaults to the backend's own stream; the call synchronises it before returning.

        Returns:
            dict[str, ndarray]: host outputs (reused by the next call).
        """
        check_feeds(feeds, self._inputs)
        s = self._stream.handle if stream is None else stream_handle(stream)
        keep = []  # host inputs must outlive the async copies
        for spec in self._inputs:
            arr = np.ascontiguousarray(feeds[spec.name])
            if not self._context.set_input_shape(spec.name, tuple(arr.shape)):
                raise ShapeError(f"input {spec.name!r} shape {arr.shape} is outside the engine's optimisation "
                                 "profile; rebuild with a profile that covers it (`psdrt build --shapes`)")
            ptr = self._buffers[spec.name].ensure(arr.nbytes)
            _cuda.memcpy_htod_async(ptr, arr, s)
            self._context.set_tensor_address(spec.name, ptr)
            keep.append(arr)
        outs = {}
        for spec in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"output {spec.name!r} has a data-dependent shape {shape}; psdrt engines have "
                                    "shape-determined outputs: re-export the model")
            host = self._host_out.get(spec.name)
            if host is None or host.shape != shape:
                host = self._host_out[spec.name] = np.empty(shape, dtype=spec.dtype)
            self._context.set_tensor_address(spec.name, self._buffers[spec.name].ensure(host.nbytes))
            outs[spec.name] = host
        compat.execute(self._context, s)
        for name, host in outs.items():
            _cuda.memcpy_dtoh_async(host, self._buffers[name].ptr, s)
        _cuda.stream_synchronize(s)
        del keep
        return outs

    def close(self) -> None:
        """Free buffers, stream, context and engine (idempotent)."""
        for buf in getattr(self, "_buffers", {}).values():
            buf.close()
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
            self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None

    def __enter__(self) -> "TrtBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
