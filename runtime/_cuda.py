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
(``build.py --cuda-emulation``), whose CUDA runtime runs on the CPU. ``runtime_for(path)`` is the
runtime a given kernel library's memory and streams belong to, without rebinding the module.

:class:`DeviceArray` is device memory that speaks ``__cuda_array_interface__`` v3 and DLPack, the
output of ``CSession.enqueue`` (device frames from Python).

Ownership: :class:`Stream`, :class:`DeviceBuffer` and :class:`DeviceArray` free their CUDA
resources on ``close()``, on ``with`` exit, and when they are garbage-collected.

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

from psdrt.runtime import _capi
from psdrt.runtime.errors import BackendUnavailable

__all__ = ["CudaError", "load_cudart", "use_runtime", "runtime_for", "Stream", "DeviceBuffer", "DeviceArray",
           "device_count", "device_name", "compute_capability", "stream_synchronize", "memcpy_htod_async",
           "memcpy_dtoh_async"]

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
    # cudaError_t cudaGetDevice(int* device)
    lib.cudaGetDevice.argtypes = [ctypes.POINTER(i)]
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
               "cudaGetDevice", "cudaStreamCreate", "cudaStreamSynchronize", "cudaStreamDestroy", "cudaMalloc", "cudaFree",
               "cudaMemcpyAsync"):
        getattr(lib, fn).restype = i


_RUNTIMES: dict = {}


def runtime_for(library) -> ctypes.CDLL:
    """The CUDA runtime whose device memory and streams the kernel library at ``library`` uses:
    the library itself when it exports the runtime calls (the emulated build, whose runtime is
    its own), else ``libcudart`` (``load_cudart``; on a GPU every CUDA runtime of a process shares
    the device's primary context, so memory and streams pass between them). Does not rebind the
    module (``use_runtime`` does).

    Raises:
        CudaError: no CUDA runtime could be loaded.
    """
    key = str(library)
    with _LOCK:
        if key in _RUNTIMES:
            return _RUNTIMES[key]
    try:
        lib = ctypes.CDLL(key)
        _declare(lib)
    except (OSError, AttributeError):
        lib = load_cudart()
    with _LOCK:
        _RUNTIMES[key] = lib
    return lib


def _check(status: int, what: str, lib: Optional[ctypes.CDLL] = None) -> None:
    if status != 0:
        msg = (lib or load_cudart()).cudaGetErrorString(status)
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


# ------------------------------------------------------------------------------ DeviceArray
_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _capi._DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]


#: DLManagedTensor address -> (DeviceArray, the struct, its shape): alive until the consumer's deleter
_EXPORTS: dict = {}
_CAPSULE_NAME = ctypes.create_string_buffer(b"dltensor")  # PyCapsule keeps the pointer, not a copy


def _release(managed: int) -> None:
    try:
        _EXPORTS.pop(int(managed or 0), None)
    except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to release
        pass


_deleter = _DELETER(_release)
_capsule_new = ctypes.pythonapi["PyCapsule_New"]
_capsule_new.restype, _capsule_new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
# the destructor gets the capsule as a raw pointer: these take it as void* (no reference counting
# on an object being destroyed)
_capsule_valid = ctypes.pythonapi["PyCapsule_IsValid"]
_capsule_valid.restype, _capsule_valid.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
_capsule_pointer = ctypes.pythonapi["PyCapsule_GetPointer"]
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]


def _capsule_destructor(capsule: int) -> None:
    # a capsule nobody consumed (still named "dltensor"): its tensor is released here; a consumer
    # renames it "used_dltensor" and calls the deleter itself when done
    try:
        if _capsule_valid(capsule, _CAPSULE_NAME):
            _release(_capsule_pointer(capsule, _CAPSULE_NAME))
    except Exception:  # noqa: BLE001 - interpreter shutdown
        pass


_capsule_dtor = _DELETER(_capsule_destructor)


class DeviceArray:
    """Device memory of a float32 or uint8 array (``CSession.enqueue``'s output; ``from_host``
    copies of frames) for any CUDA library:
    ``__cuda_array_interface__`` v3 and DLPack (``torch.from_dlpack``, ``cupy.asarray``,
    ``cupy.from_dlpack``, ``jax.dlpack``...), ``shape``, ``dtype``, ``ptr``, ``stream`` and
    ``copy_to_host()``.

    Args:
        shape (tuple): C-contiguous shape.
        stream (int | None): the stream (a cudaStream_t, or the protocols' 1 = legacy default,
            2 = per-thread default) the work that writes the array is enqueued on: the CUDA array
            interface's ``stream``, what DLPack consumers are ordered after. None: the contents
            are complete already (no ``stream`` key, consumers need not wait).
        runtime (ctypes.CDLL): the CUDA runtime the memory comes from (``runtime_for``).
        stream_wait (callable): ``stream_wait(consumer, producer)``, the kernel library's
            ``psd_cuda_stream_wait`` (an event on ``producer`` waited on by ``consumer``, no host
            sync).
        device_id (int): the CUDA device to allocate on. Defaults to 0.
        keep (tuple): objects kept alive as long as the array (the inputs of the work that writes
            it, so that their memory cannot be reused before that work has run).
        dtype: ``np.float32`` (default) or ``np.uint8``.

    Lifetime: the memory is the array's own: freed by ``close()``, ``with`` exit or garbage
    collection, never while a DLPack consumer still holds it (the export keeps the array alive
    until the consumer's deleter runs; ``close()`` then refuses). ``cudaFree`` waits for the
    device, so freeing never races with pending work. A CUDA-array-interface consumer (CuPy,
    Numba) does not keep it alive: keep the DeviceArray as long as its view is used.

    Raises:
        CudaError: the allocation failed.
    """

    _DL_CODES = {np.dtype(np.float32): 2, np.dtype(np.uint8): 1}  # DLPack kDLFloat, kDLUInt

    def __init__(self, shape, stream: Optional[int], runtime: ctypes.CDLL, stream_wait, device_id: int = 0, keep=(),
                 dtype=np.float32) -> None:
        self.ptr = 0
        self.dtype = np.dtype(dtype)
        if self.dtype not in self._DL_CODES:
            raise TypeError(f"DeviceArray holds float32 or uint8, not {self.dtype}")
        self._rt, self._wait, self.device_id = runtime, stream_wait, int(device_id)
        self.shape = tuple(int(d) for d in shape)
        self.stream = None if stream is None else int(stream)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._keep = tuple(keep)
        p = ctypes.c_void_p()
        with self._on_device():
            _check(runtime.cudaMalloc(ctypes.byref(p), max(self.nbytes, 1)), "cudaMalloc", runtime)
        self.ptr = int(p.value or 0)

    @classmethod
    def from_host(cls, host: np.ndarray, runtime: ctypes.CDLL, stream_wait, device_id: int = 0) -> "DeviceArray":
        """A device copy of a float32 / uint8 host array, complete on return (copied on the legacy
        stream, which is then synchronised), so its ``stream`` is None."""
        host = np.ascontiguousarray(host)
        arr = cls(host.shape, None, runtime, stream_wait, device_id, dtype=host.dtype)
        legacy = ctypes.c_void_p(0)
        with arr._on_device():
            _check(runtime.cudaMemcpyAsync(ctypes.c_void_p(arr.ptr), ctypes.c_void_p(host.ctypes.data), host.nbytes,
                                           _H2D, legacy), "cudaMemcpyAsync(H2D)", runtime)
            _check(runtime.cudaStreamSynchronize(legacy), "cudaStreamSynchronize", runtime)
        return arr

    def _on_device(self):
        rt, dev = self._rt, self.device_id

        class _Scope:
            def __enter__(self_):
                cur = ctypes.c_int(0)
                _check(rt.cudaGetDevice(ctypes.byref(cur)), "cudaGetDevice", rt)
                self_.prev = cur.value
                if cur.value != dev:
                    _check(rt.cudaSetDevice(dev), "cudaSetDevice", rt)

            def __exit__(self_, *exc):
                if self_.prev != dev:
                    rt.cudaSetDevice(self_.prev)

        return _Scope()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def __cuda_array_interface__(self) -> dict:
        if not self.ptr:
            raise AttributeError("this DeviceArray is closed")
        cai = {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
               "strides": None}
        if self.stream is not None:
            cai["stream"] = self.stream
        return cai

    def __dlpack_device__(self) -> tuple:
        return (_capi.DL_CUDA, self.device_id)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule of the array (the unversioned ``dltensor`` one, which every consumer
        takes). ``stream`` is the consumer's (the protocol's: None = the legacy default stream, 1
        legacy, 2 per-thread, -1 no synchronisation, else a cudaStream_t): it is made to wait, on
        the device, for the work that writes the array (psd_cuda_stream_wait; no host sync).

        Raises:
            BufferError: a copy or another device asked for (this array only hands itself out).
            InputError: stream 0 (the protocol forbids it: ambiguous).
        """
        if not self.ptr:
            raise BufferError("this DeviceArray is closed")
        if copy:
            raise BufferError("DeviceArray exports its own memory only (copy=True is not supported); copy "
                              "it in the consumer")
        if dl_device is not None and tuple(int(v) for v in dl_device) != self.__dlpack_device__():
            raise BufferError(f"DeviceArray lives on CUDA device {self.device_id}; it cannot be exported to "
                              f"{tuple(dl_device)}")
        if stream != -1 and self.stream is not None:
            self._wait(_capi.STREAM_LEGACY if stream is None else stream, self.stream)
        shape = (ctypes.c_int64 * len(self.shape))(*self.shape)
        t = _capi._DLTensor(self.ptr, _capi._DLDevice(_capi.DL_CUDA, self.device_id), len(self.shape),
                            _capi._DLDataType(self._DL_CODES[self.dtype], 8 * self.dtype.itemsize, 1), shape, None, 0)
        managed = _DLManagedTensor(t, None, _deleter)
        _EXPORTS[ctypes.addressof(managed)] = (self, managed, shape)
        return _capsule_new(ctypes.addressof(managed), _CAPSULE_NAME, ctypes.cast(_capsule_dtor, ctypes.c_void_p))

    def __array__(self, *args, **kwargs):
        raise TypeError("DeviceArray is CUDA device memory; use .copy_to_host() for a NumPy copy, or hand it "
                        "to torch.from_dlpack / cupy.asarray")

    def copy_to_host(self) -> np.ndarray:
        """A NumPy copy: copied on ``stream`` (after the work that writes the array), then that
        stream only is synchronised."""
        if not self.ptr:
            raise BufferError("this DeviceArray is closed")
        out = np.empty(self.shape, self.dtype)
        rt = self._rt
        with self._on_device():
            s = ctypes.c_void_p(self.stream or 0)  # None: complete, the legacy stream serves
            _check(rt.cudaMemcpyAsync(ctypes.c_void_p(out.ctypes.data), ctypes.c_void_p(self.ptr), self.nbytes, _D2H, s),
                   "cudaMemcpyAsync(D2H)", rt)
            _check(rt.cudaStreamSynchronize(s), "cudaStreamSynchronize", rt)
        return out

    def close(self) -> None:
        """Free the memory (cudaFree, which waits for the device). Idempotent.

        Raises:
            BufferError: a DLPack consumer still holds the memory (drop its tensor first; the
                array is then freed when collected).
        """
        if self.ptr and any(v[0] is self for v in list(_EXPORTS.values())):
            raise BufferError("this DeviceArray is still held by a DLPack consumer (torch.from_dlpack, ...); drop "
                              "that tensor first")
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            with self._on_device():
                _check(self._rt.cudaFree(ctypes.c_void_p(ptr)), "cudaFree", self._rt)
            self._keep = ()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown or a dead context
            pass

    def __enter__(self) -> "DeviceArray":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DeviceArray(shape={self.shape}, dtype=float32, device=cuda:{self.device_id}, ptr={self.ptr:#x}, "
                f"stream={self.stream})")
