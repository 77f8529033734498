"""Device memory, streams and comparisons for the CUDA tests (import as ``_device``).

The CUDA tests run against one library:
  * by default the emulated CUDA build (``python build.py --cuda-emulation``), whose CUDA runtime
    runs on the CPU (kernels/common/cuda_emu): every machine, CI included;
  * with ``PSD_CUDA_TEST_LIB=<libpsd_kernels_cuda.so>`` a real CUDA build on a GPU
    (``python -m psdrt.benchmarks.gpu_check`` sets it).

Device arrays are plain ``__cuda_array_interface__`` (v3) objects over memory from the library's
own CUDA runtime (the emulated one; on a GPU the real runtime, shared by every library of the
process), so the same tests run on both; ``FakeDLPack`` is a minimal DLPack producer over them.
"""

from __future__ import annotations

import ctypes as C
import os
from pathlib import Path
from typing import Optional

import numpy as np

from psdrt.runtime import _capi

#: thread orders of the emulator (psd_cuda_emu.h)
ORDERS = {"serial": 0, "reversed": 1, "shuffled": 2}

H2D, D2H, D2D = 1, 2, 3

_vp, _sz, _i = C.c_void_p, C.c_size_t, C.c_int


def test_library_path() -> Optional[Path]:
    v = os.environ.get("PSD_CUDA_TEST_LIB", "").strip()
    return Path(v) if v else None


def load_library() -> _capi.KernelLibrary:
    """The library under test (see the module docstring); builds the emulated one when missing."""
    path = test_library_path()
    if path is not None:
        return _capi.KernelLibrary(path)
    from psdrt.runtime.errors import BackendUnavailable

    try:
        return _capi.load("cuda-emulation")
    except BackendUnavailable:
        from psdrt import build

        build.build_kernels(cuda=False, cuda_emulation=True)
        return _capi.load("cuda-emulation")


class Runtime:
    """The CUDA runtime calls the tests need, from one CDLL (the library itself when it exports
    them, as the emulated build does; else libcudart)."""

    def __init__(self, lib: _capi.KernelLibrary):
        self.emulated = lib.cuda_emulated
        cdll = lib._lib
        if not hasattr(cdll, "cudaMalloc"):
            from psdrt.runtime import _cuda

            cdll = _cuda.load_cudart()
        self.c = cdll
        sig = {
            "cudaMalloc": [C.POINTER(_vp), _sz], "cudaFree": [_vp],
            "cudaMemcpy": [_vp, _vp, _sz, _i], "cudaMemcpyAsync": [_vp, _vp, _sz, _i, _vp],
            "cudaMemset": [_vp, _i, _sz], "cudaMemsetAsync": [_vp, _i, _sz, _vp],
            "cudaStreamCreateWithFlags": [C.POINTER(_vp), C.c_uint], "cudaStreamDestroy": [_vp],
            "cudaStreamSynchronize": [_vp], "cudaStreamQuery": [_vp], "cudaDeviceSynchronize": [],
            "cudaSetDevice": [_i], "cudaGetDevice": [C.POINTER(_i)], "cudaGetLastError": [],
            "cudaEventCreateWithFlags": [C.POINTER(_vp), C.c_uint], "cudaEventRecord": [_vp, _vp],
            "cudaEventDestroy": [_vp], "cudaStreamWaitEvent": [_vp, _vp, C.c_uint],
            "cudaEventQuery": [_vp], "cudaEventSynchronize": [_vp],
            # stream capture and graphs
            "cudaStreamBeginCapture": [_vp, _i], "cudaStreamEndCapture": [_vp, C.POINTER(_vp)],
            "cudaStreamIsCapturing": [_vp, C.POINTER(_i)], "cudaThreadExchangeStreamCaptureMode": [C.POINTER(_i)],
            "cudaGraphInstantiateWithFlags": [C.POINTER(_vp), _vp, C.c_ulonglong], "cudaGraphLaunch": [_vp, _vp],
            "cudaGraphExecDestroy": [_vp], "cudaGraphDestroy": [_vp],
            "cudaGraphGetNodes": [_vp, _vp, C.POINTER(_sz)],
        }
        for name, args in sig.items():
            fn = getattr(cdll, name)
            fn.argtypes, fn.restype = args, _i
        cdll.cudaGetErrorString.argtypes, cdll.cudaGetErrorString.restype = [_i], C.c_char_p
        if self.emulated:
            emu = {"psd_emu_set_thread_order": ([_i, C.c_uint64], _i),
                   "psd_emu_thread_order": ([C.POINTER(C.c_uint64)], _i),
                   "psd_emu_inject_fault": ([_i, _i], None), "psd_emu_inject_launch_error": ([_i, _i], None),
                   "psd_emu_clear_sticky_error": ([], None), "psd_emu_stream_sleep": ([_vp, C.c_double], _i),
                   "psd_emu_live_allocations": ([C.POINTER(C.c_int64)], C.c_int64),
                   "psd_emu_live_streams": ([], C.c_int64), "psd_emu_live_events": ([], C.c_int64),
                   "psd_emu_live_host_allocations": ([C.POINTER(C.c_int64)], C.c_int64),
                   "psd_emu_live_graphs": ([C.POINTER(C.c_int64)], C.c_int64),
                   "psd_emu_kernels_executed": ([], C.c_int64),
                   "psd_emu_copies": ([_i, C.POINTER(C.c_int64)], C.c_int64),
                   "psd_emu_is_device_pointer": ([_vp, C.POINTER(_i)], _i)}
            for name, (args, res) in emu.items():
                fn = getattr(cdll, name)
                fn.argtypes, fn.restype = args, res

    def check(self, status: int, what: str = "CUDA call") -> None:
        if status != 0:
            raise AssertionError(f"{what} failed: {status} {self.c.cudaGetErrorString(status).decode()}")

    # ------------------------------------------------------------------ memory and streams
    def malloc(self, nbytes: int) -> int:
        p = _vp()
        self.check(self.c.cudaMalloc(C.byref(p), max(int(nbytes), 1)), "cudaMalloc")
        return int(p.value)

    def empty(self, shape, dtype=np.float32) -> "DeviceArray":
        return DeviceArray(self, tuple(int(s) for s in np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),),
                           np.dtype(dtype))

    def upload(self, a: np.ndarray) -> "DeviceArray":
        a = np.ascontiguousarray(a)
        d = DeviceArray(self, a.shape, a.dtype)
        self.check(self.c.cudaMemcpy(d.ptr, a.ctypes.data, a.nbytes, H2D), "cudaMemcpy H2D")
        self.check(self.c.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
        return d

    def stream(self, non_blocking: bool = True) -> int:
        s = _vp()
        self.check(self.c.cudaStreamCreateWithFlags(C.byref(s), 1 if non_blocking else 0), "cudaStreamCreate")
        return int(s.value)

    def sync(self, stream: Optional[int] = None) -> None:
        if stream is None:
            self.check(self.c.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
        else:
            self.check(self.c.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    # ------------------------------------------------------------------ emulator knobs
    def set_order(self, name: str, seed: int = 0) -> None:
        if self.emulated:
            assert self.c.psd_emu_set_thread_order(ORDERS[name], seed) == 0

    def sleep(self, stream: int, ms: float) -> None:
        """A long-running 'kernel' on the stream (emulator only)."""
        self.check(self.c.psd_emu_stream_sleep(stream, ms), "psd_emu_stream_sleep")

    def copies(self) -> dict:
        """{"H2H" | "H2D" | "D2H" | "D2D": (copies, bytes)} enqueued so far (emulator only)."""
        out = {}
        for kind, name in enumerate(("H2H", "H2D", "D2H", "D2D")):
            b = C.c_int64()
            n = int(self.c.psd_emu_copies(kind, C.byref(b)))
            out[name] = (n, int(b.value))
        return out

    def live(self) -> tuple[int, int, int, int, int]:
        """(allocations, user streams, events, graphs, executable graphs) alive in the emulator."""
        execs = C.c_int64()
        graphs = int(self.c.psd_emu_live_graphs(C.byref(execs)))
        return (int(self.c.psd_emu_live_allocations(None)), int(self.c.psd_emu_live_streams()),
                int(self.c.psd_emu_live_events()), graphs, int(execs.value))


class DeviceArray:
    """Device memory with ``__cuda_array_interface__`` v3 (optionally with a producer ``stream``
    and read-only), freed with the object."""

    def __init__(self, rt: Runtime, shape, dtype, stream: Optional[int] = None, readonly: bool = False):
        self.rt, self.shape, self.dtype = rt, tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = rt.malloc(self.nbytes)
        self.stream, self.readonly = stream, readonly

    @property
    def __cuda_array_interface__(self) -> dict:
        d = {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, self.readonly), "version": 3,
             "strides": None}
        if self.stream is not None:
            d["stream"] = self.stream
        return d

    def get(self) -> np.ndarray:
        """A host copy (after synchronising the device)."""
        self.rt.sync()
        a = np.empty(self.shape, self.dtype)
        self.rt.check(self.rt.c.cudaMemcpy(a.ctypes.data, self.ptr, self.nbytes, D2H), "cudaMemcpy D2H")
        return a

    def fill(self, byte: int) -> "DeviceArray":
        self.rt.check(self.rt.c.cudaMemset(self.ptr, byte, self.nbytes), "cudaMemset")
        return self

    def view(self, shape, dtype=None) -> "DeviceArray":
        """The same memory under another shape/dtype (not owning it)."""
        v = object.__new__(DeviceArray)
        v.rt, v.shape, v.dtype = self.rt, tuple(shape), np.dtype(dtype or self.dtype)
        v.nbytes, v.ptr, v.stream, v.readonly, v._base = self.nbytes, self.ptr, None, False, self
        return v

    def __del__(self):
        if getattr(self, "_base", None) is None and getattr(self, "ptr", 0):
            self.rt.c.cudaFree(self.ptr)
            self.ptr = 0


def assert_cuda_matches(gpu: np.ndarray, cpu: np.ndarray, emulated: bool, rtol: float = 1e-5,
                        atol: float = 1e-5, what: str = "") -> None:
    """Emulated CUDA vs the CPU library: bit-identical (the same source compiled by the same host
    compiler without FMA contraction). A real GPU: within rtol/atol, because nvcc contracts
    multiply-adds into FMAs (--fmad=true, its default), which rounds once instead of twice."""
    assert gpu.shape == cpu.shape, (gpu.shape, cpu.shape)
    if emulated:
        same = (gpu.view(np.uint32) == cpu.view(np.uint32)) if gpu.dtype == np.float32 else gpu == cpu
        assert same.all(), (f"{what}: emulated CUDA differs from the CPU on {int((~same).sum())} of {same.size} "
                            f"values (max abs {np.nanmax(np.abs(gpu.astype(np.float64) - cpu)):.3g})")
    else:
        np.testing.assert_allclose(gpu, cpu, rtol=rtol, atol=atol, err_msg=what)


class _DLManaged(C.Structure):
    _fields_ = [("dl_tensor", _capi._DLTensor), ("manager_ctx", C.c_void_p), ("deleter", C.c_void_p)]


class FakeDLPack:
    """A minimal DLPack producer over device memory that records the stream it is asked for.

    Args:
        dev: the memory (a DeviceArray; its shape unless ``shape`` is given).
        accepts_stream (bool): False: a producer that predates the ``stream`` keyword.
        shape, strides (optional): the tensor's shape and strides (elements; None = compact).
        dtype: float32 or uint8. device_id: the CUDA device it claims.
        producer (int, optional): the stream still writing the memory; with ``lib`` (a
            KernelLibrary) the handshake makes the asked stream wait for it, as PyTorch does.
    """

    def __init__(self, dev, accepts_stream=True, shape=None, strides=None, dtype=np.float32, device_id=0,
                 producer=None, lib=None):
        self.dev, self.accepts_stream, self.asked = dev, accepts_stream, []
        self.producer, self.lib = producer, lib
        shape = tuple(dev.shape if shape is None else shape)
        self._shape = (C.c_int64 * len(shape))(*shape)
        self._strides = None if strides is None else (C.c_int64 * len(strides))(*strides)
        code = {np.dtype(np.float32): (2, 32), np.dtype(np.uint8): (1, 8)}[np.dtype(dtype)]
        t = _capi._DLTensor(dev.ptr, _capi._DLDevice(2, device_id), len(shape), _capi._DLDataType(*code, 1),
                            self._shape, self._strides, 0)
        self._managed = _DLManaged(t, None, None)
        self._device_id = device_id

    def __dlpack_device__(self):
        return (2, self._device_id)

    def __dlpack__(self, **kwargs):
        if not self.accepts_stream and kwargs:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'stream'")
        self.asked.append(kwargs.get("stream", "no keyword"))
        if self.producer is not None and self.lib is not None and kwargs.get("stream") not in (None, -1):
            self.lib.stream_wait(kwargs["stream"], self.producer)
        new = C.pythonapi.PyCapsule_New
        new.restype, new.argtypes = C.py_object, [C.c_void_p, C.c_char_p, C.c_void_p]
        return new(C.addressof(self._managed), b"dltensor", None)
