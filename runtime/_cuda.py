"""A tiny ctypes wrapper over ``libcudart`` for the handful of calls the TensorRT backend needs.

References: NVIDIA/TensorRT tools/Polygraphy/polygraphy/cuda/cuda.py (the same idea: ctypes over the
runtime library instead of a heavyweight dependency; style G2).

Nothing is loaded at import time. The library is searched on first use: ``$CUDA_HOME``-free
defaults (``ctypes.util.find_library``, the versioned sonames of CUDA 11-13, ``/usr/local/cuda``,
the ``nvidia-cuda-runtime`` wheel). Every call checks the status and raises :class:`CudaError`
(a ``BackendUnavailable``) with ``cudaGetErrorString``; without a driver (our CI machines) the
first device call fails with error 35, ``cudaErrorInsufficientDriver``.

``use_runtime(path)`` binds the module to another library that exports the same calls instead,
by explicit choice only: the tests bind it to the emulated CUDA build of the kernel library
(``build.py --cuda-emulation``), whose CUDA runtime runs on the CPU.

Ownership: :class:`Stream` and :class:`DeviceBuffer` free their CUDA resources on ``close()``, on
``with`` exit, and when they are garbage-collected.

Thread safety: the library handle is loaded once under a lock; the calls themselves are CUDA's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from typing import Optional

import numpy as np

from psdrt.runtime.errors import BackendUnavailable

__all__ = ["CudaError", "load_cudart", "use_runtime", "Stream", "DeviceBuffer", "device_count", "device_name",
           "compute_capability", "stream_synchronize", "memcpy_htod_async", "memcpy_dtoh_async"]

# cudaMemcpyKind
_H2D, _D2H = 1, 2
# cudaDeviceAttr
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
# cudaDeviceProp starts with char name[256] in every CUDA release; the struct is < 2 KiB, 8 KiB is ample.
_PROP_BYTES = 8192

_LIB: Optional[ctypes.CDLL] = None
_LOCK = threading.Lock()


class CudaError(BackendUnavailable):
    """A CUDA runtime call failed (or the runtime library is missing)."""


def _candidates() -> list[str]:
    names = []
    found = ctypes.util.find_library("cudart")
    if found:
        names.append(found)
    names += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "cudart64_12.dll",
              "cudart64_110.dll"]
    for pattern in ("/usr/local/cuda/lib64/libcudart.so*", "/usr/local/cuda/lib/libcudart.so*",
                    "/usr/local/cuda-*/lib*/libcudart.so*", "/usr/lib/aarch64-linux-gnu/libcudart.so*"):
        names += sorted(glob.glob(pattern), reverse=True)
    try:  # the nvidia-cuda-runtime-cu12 wheel
        import nvidia.cuda_runtime as _rt  # noqa: PLC0415 (optional, probed lazily)

        names += sorted(glob.glob(os.path.join(list(_rt.__path__)[0], "lib", "libcudart.so*")), reverse=True)
    except Exception:
        pass
    return names


def use_runtime(path) -> ctypes.CDLL:
    """Bind this module to the CUDA runtime calls exported by the library at ``path`` instead of
    ``libcudart`` (e.g. the emulated CUDA kernel library; tests only). Returns the library.

    Raises:
        CudaError: it does not load or lacks one of the calls.
    """
    global _LIB
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise CudaError(f"cannot load {path}: {exc}") from exc
    with _LOCK:
        try:
            _declare(lib)
        except AttributeError as exc:
            raise CudaError(f"{path} does not export the CUDA runtime calls psdrt uses ({exc})") from exc
        _LIB = lib
    return lib


def load_cudart() -> ctypes.CDLL:
    """Load ``libcudart`` once (or return the library of ``use_runtime``) and declare the
    signatures used here.

    Raises:
        CudaError: no CUDA runtime library could be loaded.
    """
    global _LIB
    with _LOCK:
        if _LIB is not None:
            return _LIB
        errors = []
        for name in _candidates():
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(f"{name}: {exc}")
        else:
            raise CudaError("the CUDA runtime library (libcudart) was not found; install the CUDA toolkit or "
                            "JetPack, or add its lib folder to LD_LIBRARY_PATH")
        _declare(lib)
        _LIB = lib
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the calls used here (raises AttributeError for a missing one)."""
    vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    # Signatures (cuda_runtime_api.h):
    # cudaError_t cudaGetDeviceCount(int* count)
    lib.cudaGetDeviceCount.argtypes = [ctypes.POINTER(i)]
    # cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)
    lib.cudaDeviceGetAttribute.argtypes = [ctypes.POINTER(i), i, i]
    # cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device)
    lib.cudaGetDeviceProperties.argtypes = [vp, i]
    # cudaError_t cudaSetDevice(int device)
    lib.cudaSetDevice.argtypes = [i]
    # cudaError_t cudaStreamCreate(cudaStream_t* stream)
    lib.cudaStreamCreate.argtypes = [ctypes.POINTER(vp)]
    # cudaError_t cudaStreamSynchronize(cudaStream_t stream)
    lib.cudaStreamSynchronize.argtypes = [vp]
    # cudaError_t cudaStreamDestroy(cudaStream_t stream)
    lib.cudaStreamDestroy.argtypes = [vp]
    # cudaError_t cudaMalloc(void** ptr, size_t size)
    lib.cudaMalloc.argtypes = [ctypes.POINTER(vp), sz]
    # cudaError_t cudaFree(void* ptr)
    lib.cudaFree.argtypes = [vp]
    # cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t s)
    lib.cudaMemcpyAsync.argtypes = [vp, vp, sz, i, vp]
    # const char* cudaGetErrorString(cudaError_t error)
    lib.cudaGetErrorString.argtypes = [i]
    lib.cudaGetErrorString.restype = ctypes.c_char_p
    for fn in ("cudaGetDeviceCount", "cudaDeviceGetAttribute", "cudaGetDeviceProperties", "cudaSetDevice",
               "cudaStreamCreate", "cudaStreamSynchronize", "cudaStreamDestroy", "cudaMalloc", "cudaFree",
               "cudaMemcpyAsync"):
        getattr(lib, fn).restype = i


def _check(status: int, what: str) -> None:
    if status != 0:
        msg = load_cudart().cudaGetErrorString(status)
        text = msg.decode(errors="replace") if msg else "unknown error"
        hint = (" (no NVIDIA driver: run on a machine with an NVIDIA GPU and driver)"
                if status in (35, 100) else "")
        raise CudaError(f"{what} failed with CUDA error {status}: {text}{hint}")


def device_count() -> int:
    """Number of CUDA devices (raises CudaError without a driver)."""
    n = ctypes.c_int(0)
    _check(load_cudart().cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
    return n.value


def compute_capability(device: int = 0) -> str:
    """``"major.minor"`` of a device, e.g. ``"8.7"`` for Orin."""
    lib = load_cudart()
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    _check(lib.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device), "cudaDeviceGetAttribute")
    _check(lib.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device), "cudaDeviceGetAttribute")
    return f"{major.value}.{minor.value}"


def device_name(device: int = 0) -> str:
    """Marketing name of a device (``cudaDeviceProp.name``)."""
    buf = ctypes.create_string_buffer(_PROP_BYTES)
    _check(load_cudart().cudaGetDeviceProperties(buf, device), "cudaGetDeviceProperties")
    return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace")


def stream_synchronize(handle: int) -> None:
    """Block until all work on the stream ``handle`` (a ``cudaStream_t`` as int; 0 = legacy default) is done."""
    _check(load_cudart().cudaStreamSynchronize(ctypes.c_void_p(handle)), "cudaStreamSynchronize")


class Stream:
    """An owned CUDA stream (``cudaStreamCreate``); ``handle`` is the ``cudaStream_t`` as an int.

    Ownership: destroyed by :meth:`close` (also on ``with`` exit).
    """

    def __init__(self) -> None:
        h = ctypes.c_void_p()
        _check(load_cudart().cudaStreamCreate(ctypes.byref(h)), "cudaStreamCreate")
        self._h: Optional[int] = h.value or 0

    @property
    def handle(self) -> int:
        return int(self._h or 0)

    def synchronize(self) -> None:
        stream_synchronize(self.handle)

    def close(self) -> None:
        if self._h is not None:
            h, self._h = self._h, None
            _check(load_cudart().cudaStreamDestroy(ctypes.c_void_p(h)), "cudaStreamDestroy")

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown or a dead context: nothing to report to
            pass

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DeviceBuffer:
    """Device memory of ``nbytes`` (``cudaMalloc``); grows with :meth:`ensure`, freed by :meth:`close`."""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.nbytes = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        """Make the buffer at least ``nbytes`` long (contents are not kept) and return its address."""
        if nbytes > self.nbytes:
            self.close()
            p = ctypes.c_void_p()
            _check(load_cudart().cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), "cudaMalloc")
            self.ptr, self.nbytes = int(p.value or 0), int(nbytes)
        return self.ptr

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            _check(load_cudart().cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown or a dead context
            pass

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def memcpy_htod_async(dst: int, src: np.ndarray, stream: int) -> None:
    """Copy a C-contiguous host array to device address ``dst`` on ``stream``.

    Ownership: ``src`` must stay alive until the stream is synchronised.
    """
    _check(load_cudart().cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src.ctypes.data), src.nbytes,
                                         _H2D, ctypes.c_void_p(stream)), "cudaMemcpyAsync(H2D)")


def memcpy_dtoh_async(dst: np.ndarray, src: int, stream: int) -> None:
    """Copy device address ``src`` into a C-contiguous host array on ``stream``; valid after synchronising."""
    _check(load_cudart().cudaMemcpyAsync(ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(src), dst.nbytes,
                                         _D2H, ctypes.c_void_p(stream)), "cudaMemcpyAsync(D2H)")
