"""ctypes binding of the kernels' C ABI (``runtime/capi/include/psd/psd.h``), G13.

Python calls exactly the functions a C/C++ embedder calls; there is no second binding layer.
Stdlib ctypes + NumPy only (``runtime`` never imports torch).

Library search order (first hit wins):
    1. ``$PSD_KERNEL_LIB``: path of a library file (CPU or CUDA build) - used as is;
    2. ``kernels/_build/`` of this package (``python build.py`` writes there): the CUDA library
       when it loads and ``cudaGetDeviceCount`` (probed through the library) reports a device,
       else the CPU library.
``load()`` raises ``BackendUnavailable`` naming the fix when nothing is found.

Arrays:
    * NumPy arrays run on the CPU kernels (``PSD_DEVICE_CPU``); inputs are converted to C-contiguous
      float32 (uint8 for images) when needed; outputs and the workspace are allocated here and the
      workspace is cached per size (no allocation per call once warm).
    * Objects exposing DLPack on a CUDA device (``__dlpack__``; preferred, its stream handshake
      orders any producer) or ``__cuda_array_interface__`` run on the CUDA kernels of the CUDA
      library; the caller passes the output(s) and a device workspace
      of at least the ``*_workspace_size`` bytes (``workspace=``) and optionally ``stream=`` (an
      int cudaStream_t). Calls then return without synchronising (psd.h).

Thread safety: the loaded library is shared; each call uses a per-thread cached workspace.
"""

from __future__ import annotations

import ctypes as C
import os
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import BackendUnavailable, InputError, OutOfMemoryError, PsdError, ShapeError

__all__ = [
    "KernelLibrary",
    "load",
    "find_library_candidates",
    "STATUS",
    "MODES",
    "CAMERAS",
]

ABI_VERSION = 1
BUILD_DIR = Path(__file__).resolve().parents[1] / "kernels" / "_build"
CPU_LIB = "libpsd_kernels_cpu.so"
CUDA_LIB = "libpsd_kernels_cuda.so"
#: the CUDA library on the emulated CUDA runtime (`build.py --cuda-emulation`; tests only)
CUDA_EMU_LIB = "libpsd_kernels_cuda_emu.so"

#: psd_status_t values (psd.h)
STATUS = {
    0: "PSD_OK",
    1: "PSD_E_INVALID_ARGUMENT",
    2: "PSD_E_NULL_POINTER",
    3: "PSD_E_SHAPE_MISMATCH",
    4: "PSD_E_WORKSPACE_TOO_SMALL",
    5: "PSD_E_OUT_OF_MEMORY",
    6: "PSD_E_NOT_BUILT_WITH_CUDA",
    7: "PSD_E_CUDA",
    8: "PSD_E_INTERNAL",
}
DEVICE_CPU, DEVICE_CUDA = 0, 1
#: psd_mode_t / psd_camera_t by the preset spellings (runtime/presets.py)
MODES = {"3D-2D": 0, "3D+2D": 1, "2D-3D": 2}
CAMERAS = {"pinhole": 0, "360": 1, "MEI": 2}
FLAG_KNN_BRUTE_FORCE = 1
BUILD_CUDA, BUILD_OPENMP, BUILD_SANITIZE, BUILD_CUDA_EMULATION = 1, 2, 4, 8
CUDA_ERROR_NO_DRIVER = 35

_i64, _u32, _i32, _sz = C.c_int64, C.c_uint32, C.c_int32, C.c_size_t
_fp, _vp = C.POINTER(C.c_float), C.c_void_p
_dp = C.POINTER(C.c_double)


class FrameDesc(C.Structure):
    """psd_frame_desc."""

    _fields_ = [("struct_size", _u32), ("reserved", _u32), ("height", _i64), ("width", _i64),
                ("rel_height", _i64), ("rel_width", _i64), ("feat_channels", _i64),
                ("feat_height", _i64), ("feat_width", _i64)]


class PropagationParams(C.Structure):
    """psd_propagation_params."""

    _fields_ = [("struct_size", _u32), ("mode", _i32), ("camera", _i32), ("k", _i32),
                ("rate", C.c_double), ("candidates", _i64), ("seed", C.c_uint64),
                ("iters_quarter", _i32), ("iters_full", _i32), ("flags", _u32), ("reserved", _u32)]


class SparseStats(C.Structure):
    """psd_sparse_stats."""

    _fields_ = [("struct_size", _u32), ("reserved", _u32), ("points", _i64), ("interior", _i64),
                ("rejected_range", _i64), ("rejected_outliers", _i64), ("dmin", C.c_double), ("dmax", C.c_double),
                ("median", C.c_double)]


class GuidedParamsC(C.Structure):
    """psd_guided_params."""

    _fields_ = [("struct_size", _u32), ("channels", _i32), ("colour_scale", C.c_float), ("levels", _i32),
                ("iterations", _i32), ("flags", _u32), ("projection_w", _fp), ("projection_b", _fp),
                ("method", _i32), ("kind", _i32), ("lambda", C.c_float), ("sigma_s", C.c_float),
                ("sigma_s_scan", C.c_float), ("sigma_r", C.c_float), ("beta", C.c_float),
                ("dt_iterations", _i32), ("rounds", _i32), ("occl_rx", _i32), ("occl_ry", _i32),
                ("occl_rel", C.c_float)]


GUIDED_FLAG_GENERIC, GUIDED_FLAG_BASELINE_ISA = 1, 2

# name: (restype, argtypes) - each mirrors the C signature in psd.h
_SIGNATURES = {
    # uint32_t psd_abi_version(void)
    "psd_abi_version": (_u32, []),
    "psd_cpu_isa": (C.c_char_p, []),
    # const char* psd_last_error(void)
    "psd_last_error": (C.c_char_p, []),
    # psd_status_t psd_build_info(uint32_t* flags)
    "psd_build_info": (_i32, [C.POINTER(_u32)]),
    # psd_status_t psd_cuda_device_count(int32_t* device_count, int32_t* cuda_error)
    "psd_cuda_device_count": (_i32, [C.POINTER(_i32), C.POINTER(_i32)]),
    # psd_status_t psd_check_intrinsics(const double* K, int64_t height, int64_t width)
    "psd_check_intrinsics": (_i32, [C.POINTER(C.c_double), _i64, _i64]),
    # psd_status_t psd_prepare_sparse(int64_t height, int64_t width, const float* sparse, int64_t stride, float* scratch, float* out, psd_sparse_stats* stats)
    "psd_prepare_sparse": (_i32, [_i64, _i64, _vp, _i64, _vp, _vp, C.c_void_p]),
    # psd_status_t psd_guard_depth(int64_t height, int64_t width, double dmin, double dmax, float* depth, int64_t* clamped)
    "psd_guard_depth": (_i32, [_i64, _i64, C.c_double, C.c_double, _vp, C.POINTER(_i64)]),
    # psd_status_t psd_check_frame_size(int32_t mode, int64_t height, int64_t width)
    "psd_check_frame_size": (_i32, [_i32, _i64, _i64]),
    # psd_status_t psd_cuda_stream_wait(psd_stream_t consumer, psd_stream_t producer)
    "psd_cuda_stream_wait": (_i32, [_vp, _vp]),
    # psd_status_t psd_fm_input_size(int64_t h, int64_t w, int64_t lower, int64_t multiple, int64_t* out_h, int64_t* out_w)
    "psd_fm_input_size": (_i32, [_i64, _i64, _i64, _i64, C.POINTER(_i64), C.POINTER(_i64)]),
    # psd_status_t psd_propagate_workspace_size(psd_device_t, const psd_frame_desc*, const psd_propagation_params*, int32_t has_ip, size_t* bytes)
    "psd_propagate_workspace_size": (_i32, [_i32, C.POINTER(FrameDesc), C.POINTER(PropagationParams), _i32, C.POINTER(_sz)]),
    # psd_status_t psd_propagate(psd_device_t, desc, params, rel_inv, sparse, ip, cam_params, feat, workspace, workspace_bytes, stream, depth_diff, depth_polyfit)
    "psd_propagate": (_i32, [_i32, C.POINTER(FrameDesc), C.POINTER(PropagationParams), _vp, _vp, _vp, _fp, _vp, _vp, _sz, _vp, _vp, _vp]),
    # psd_status_t psd_post_process_workspace_size(psd_device_t, const psd_frame_desc*, int64_t channels, int32_t iterations, size_t* bytes)
    "psd_post_process_workspace_size": (_i32, [_i32, C.POINTER(FrameDesc), _i64, _i32, C.POINTER(_sz)]),
    # psd_status_t psd_post_process(psd_device_t, desc, channels, iterations, fd0, dense, sparse, workspace, workspace_bytes, stream, out)
    "psd_post_process": (_i32, [_i32, C.POINTER(FrameDesc), _i64, _i32, _vp, _vp, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_align_workspace_size(psd_device_t, int64_t height, int64_t width, size_t* bytes)
    "psd_align_workspace_size": (_i32, [_i32, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_align_inverse_ls(psd_device_t, height, width, rel_inv, sparse, workspace, workspace_bytes, stream, out)
    "psd_align_inverse_ls": (_i32, [_i32, _i64, _i64, _vp, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_align_median(psd_device_t, height, width, ip, sparse, workspace, workspace_bytes, stream, out)
    "psd_align_median": (_i32, [_i32, _i64, _i64, _vp, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_ip_basic_workspace_size(psd_device_t, int64_t height, int64_t width, size_t* bytes)
    "psd_ip_basic_workspace_size": (_i32, [_i32, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_ip_basic(psd_device_t, height, width, sparse, workspace, workspace_bytes, stream, out)
    "psd_ip_basic": (_i32, [_i32, _i64, _i64, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_resize(psd_device_t, int32_t mode, channels, in_h, in_w, out_h, out_w, in, stream, out)
    "psd_resize": (_i32, [_i32, _i32, _i64, _i64, _i64, _i64, _i64, _vp, _vp, _vp]),
    # psd_status_t psd_project_points(psd_device_t, n, stride, points, T, K, height, width, min_depth, max_depth, stream, out)
    "psd_project_points": (_i32, [_i32, _i64, _i64, _vp, _dp, _dp, _i64, _i64, C.c_double, C.c_double, _vp, _vp]),
    # psd_status_t psd_occlusion_filter(psd_device_t, height, width, sparse, int32_t rx, int32_t ry, double rel, stream, out)
    "psd_occlusion_filter": (_i32, [_i32, _i64, _i64, _vp, _i32, _i32, C.c_double, _vp, _vp]),
    # psd_status_t psd_sparse_pool(psd_device_t, height, width, sparse, stream, out)
    "psd_sparse_pool": (_i32, [_i32, _i64, _i64, _vp, _vp, _vp]),
    # psd_status_t psd_backproject(psd_device_t, int32_t camera, height, width, depth, cam_params, stream, out)
    "psd_backproject": (_i32, [_i32, _i32, _i64, _i64, _vp, _fp, _vp, _vp]),
    # psd_status_t psd_compress_workspace_size(psd_device_t, in_h, in_w, out_channels, size_t* bytes)
    "psd_compress_workspace_size": (_i32, [_i32, _i64, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_compress_channels(psd_device_t, in_channels, in_h, in_w, out_channels, out_h, out_w, in, workspace, workspace_bytes, stream, out)
    "psd_compress_channels": (_i32, [_i32, _i64, _i64, _i64, _i64, _i64, _i64, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_knn_workspace_size(psd_device_t, channels, height, width, size_t* bytes)
    "psd_knn_workspace_size": (_i32, [_i32, _i64, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_knn_propagate(psd_device_t, params, channels, height, width, feat, points, init, sparse4, workspace, workspace_bytes, stream, out)
    "psd_knn_propagate": (_i32, [_i32, C.POINTER(PropagationParams), _i64, _i64, _i64, _vp, _vp, _vp, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_cspn_workspace_size(psd_device_t, channels, height, width, size_t* bytes)
    "psd_cspn_workspace_size": (_i32, [_i32, _i64, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_cspn(psd_device_t, channels, height, width, int32_t iterations, sparse, dense, feat, workspace, workspace_bytes, stream, out)
    "psd_cspn": (_i32, [_i32, _i64, _i64, _i64, _i32, _vp, _vp, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_preprocess_rgb(psd_device_t, height, width, int32_t bgr, out_h, out_w, const uint8_t* rgb, stream, out)
    "psd_preprocess_rgb": (_i32, [_i32, _i64, _i64, _i32, _i64, _i64, _vp, _vp, _vp]),
    # psd_status_t psd_preprocess_workspace_size(psd_device_t, int32_t method, height, width, out_h, out_w, size_t* bytes)
    "psd_preprocess_workspace_size": (_i32, [_i32, _i32, _i64, _i64, _i64, _i64, C.POINTER(_sz)]),
    # psd_status_t psd_preprocess(psd_device_t, int32_t method, height, width, int32_t bgr, out_h, out_w, rgb, workspace, workspace_bytes, stream, out)
    "psd_preprocess": (_i32, [_i32, _i32, _i64, _i64, _i32, _i64, _i64, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_guided_workspace_size(psd_device_t, height, width, const psd_guided_params*, size_t* bytes)
    "psd_guided_workspace_size": (_i32, [_i32, _i64, _i64, C.POINTER(GuidedParamsC), C.POINTER(_sz)]),
    # psd_status_t psd_guided_params_init(psd_guided_params* params)
    "psd_guided_params_init": (_i32, [C.POINTER(GuidedParamsC)]),
    # psd_status_t psd_guided(psd_device_t, height, width, params, const uint8_t* rgb, int32_t bgr, sparse, workspace, workspace_bytes, stream, out)
    "psd_guided": (_i32, [_i32, _i64, _i64, C.POINTER(GuidedParamsC), _vp, _i32, _vp, _vp, _sz, _vp, _vp]),
    # psd_status_t psd_guided_features(psd_device_t, height, width, params, const uint8_t* rgb, int32_t bgr, stream, out)
    "psd_guided_features": (_i32, [_i32, _i64, _i64, C.POINTER(GuidedParamsC), _vp, _i32, _vp, _vp]),
}


def _env_kernel_lib() -> Optional[Path]:
    # The one PSD_* variable of this module; to be folded into runtime/config.py (G18).
    value = os.environ.get("PSD_KERNEL_LIB", "").strip()
    return Path(value) if value else None


def find_library_candidates() -> list[Path]:
    """Library files in search order (see module docstring); existing files only."""
    env = _env_kernel_lib()
    if env is not None:
        return [env]
    return [p for p in (BUILD_DIR / CUDA_LIB, BUILD_DIR / CPU_LIB) if p.is_file()]


# ------------------------------------------------------------------------------ array plumbing
class _Arg:
    """A pointer plus shape for one array argument, and the object that keeps it alive.

    ``producer``: the CUDA stream (int) whose work the data depends on, from the CUDA array
    interface v3 ``stream`` key (None: none given); the library's stream must wait on it.
    ``pitch``: bytes between the rows of ``row_dim`` (``_layout``); ``device_id``: the CUDA
    device ordinal where the array says it (DLPack), else None.
    """

    def __init__(self, ptr: int, shape: tuple, device: int, keep: Any, dtype: str, itemsize: int = 4,
                 producer: Optional[int] = None, pitch: Optional[int] = None, device_id: Optional[int] = None):
        self.ptr, self.shape, self.device, self.keep, self.dtype = ptr, shape, device, keep, dtype
        self.itemsize, self.producer, self.pitch, self.device_id = itemsize, producer, pitch, device_id

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.itemsize


class _DLDevice(C.Structure):
    _fields_ = [("device_type", C.c_int), ("device_id", C.c_int)]


class _DLDataType(C.Structure):
    _fields_ = [("code", C.c_uint8), ("bits", C.c_uint8), ("lanes", C.c_uint16)]


class _DLTensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("device", _DLDevice), ("ndim", C.c_int),
                ("dtype", _DLDataType), ("shape", C.POINTER(C.c_int64)),
                ("strides", C.POINTER(C.c_int64)), ("byte_offset", C.c_uint64)]


#: the special cudaStream_t handles of the DLPack / CUDA array interface protocols
STREAM_LEGACY, STREAM_PER_THREAD = 1, 2
#: DLPack device types (dlpack.h DLDeviceType)
DL_CPU, DL_CUDA = 1, 2


def stream_handle(stream) -> Optional[int]:
    """A cudaStream_t as an int from what callers pass: None (the library's default,
    cudaStreamPerThread), an int handle, or a framework's stream object (``torch.cuda.Stream``'s
    ``cuda_stream``, a CuPy stream's ``ptr``).

    Raises:
        InputError: anything else.
    """
    if stream is None:
        return None
    if not isinstance(stream, (int, np.integer)):
        for attr in ("cuda_stream", "ptr"):
            if hasattr(stream, attr):
                stream = getattr(stream, attr)
                break
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise InputError(f"stream must be a cudaStream_t (int), a torch.cuda.Stream or a CuPy stream, got "
                         f"{type(stream).__name__}") from None


def consumer_stream(stream) -> int:
    """The stream the library enqueues a call on, as the DLPack protocol spells it: the given
    cudaStream_t, or 2 (cudaStreamPerThread) for None / 0, which the library maps to it (psd.h)."""
    h = stream_handle(stream)
    return STREAM_PER_THREAD if not h else h


def device_kind(x) -> str:
    """Where an array lives, by the protocols it speaks: ``"cuda"`` (``__cuda_array_interface__``,
    or DLPack on a CUDA device), ``"dlpack"`` (DLPack on another device: the CPU, e.g. a PyTorch
    CPU tensor) or ``"host"`` (NumPy and anything ``np.asarray`` takes). The one dispatch rule of
    the array arguments (kernels and sessions)."""
    if isinstance(x, np.ndarray):
        return "host"
    if _dlpack_device(x) == DL_CUDA or _has_cai(x):
        return "cuda"
    return "dlpack" if _dlpack_device(x) is not None else "host"


def host_array(x, name: str, device_hint: str = "") -> np.ndarray:
    """``x`` as a NumPy array, without copying where the producer allows: NumPy arrays as they
    are, CPU DLPack objects (a PyTorch CPU tensor, a JAX CPU array, ...) through
    ``np.from_dlpack`` (zero-copy, strides kept), anything else through ``np.asarray``.

    Raises:
        InputError: ``x`` is CUDA device memory (``device_hint`` says what to do instead), or a
            DLPack producer refused the export (e.g. a tensor that requires grad).
    """
    kind = device_kind(x)
    if kind == "cuda":
        raise InputError(f"{name} is CUDA device memory ({type(x).__name__}), but this call takes host arrays"
                         + (f"; {device_hint}" if device_hint else ""))
    if kind == "dlpack":
        try:
            return np.from_dlpack(x)
        except (RuntimeError, BufferError, TypeError, ValueError) as e:
            raise InputError(f"{name} ({type(x).__name__}) cannot be read through DLPack: {e}; pass a NumPy "
                             "array (for a PyTorch tensor: t.detach().cpu().numpy())") from None
    return np.asarray(x)


def _layout(shape: tuple, strides, itemsize: int, row_dim: Optional[int], what: str) -> int:
    """The one layout rule of device arrays (``strides`` in bytes; None = C-contiguous).

    Without ``row_dim`` (the kernels): C-contiguous; dimensions of size 1 may have any stride.
    With ``row_dim`` (a negative index: the rows of a frame, for the sessions' row pitches): the
    dimensions after it packed, the rows at any positive pitch (a pitched allocation, a crop), and
    the dimensions before it of size 1 (the caller's shape check refuses others).

    Returns:
        int: bytes between rows of ``row_dim`` (the packed pitch when packed); with no
        ``row_dim``, the bytes of one element.

    Raises:
        ShapeError: naming ``.contiguous()`` / ``cupy.ascontiguousarray``.
    """
    n = len(shape)
    packed, s = [0] * n, itemsize
    for i in reversed(range(n)):
        packed[i] = s
        s *= int(shape[i])
    fix = "call .contiguous() (PyTorch) or cupy.ascontiguousarray() first"
    if row_dim is None:
        if strides is not None and any(int(strides[i]) != packed[i] for i in range(n) if shape[i] > 1):
            raise ShapeError(f"{what} must be C-contiguous; {fix}")
        return itemsize
    r = n + row_dim
    if r < 0:
        return itemsize  # too few dimensions: the caller's shape check says so
    if strides is None or int(shape[r]) <= 1:
        pitch = packed[r]
    else:
        pitch = int(strides[r])
    inner_ok = strides is None or all(int(strides[i]) == packed[i] for i in range(r + 1, n) if shape[i] > 1)
    if not inner_ok or pitch <= 0:
        got = None if strides is None else tuple(int(v) for v in strides)
        raise ShapeError(f"{what}: rows may be padded (a row pitch, e.g. a crop) but each row must be packed and "
                         f"the pitch positive (got strides {got} bytes for shape {tuple(shape)}); {fix}")
    return pitch


def _from_dlpack(obj, stream=None, row_dim: Optional[int] = None) -> _Arg:
    # DLPack's stream handshake: the producer makes its pending work visible to the consumer's
    # stream (the one the library will use) before handing over the tensor
    try:
        try:
            capsule = obj.__dlpack__(stream=consumer_stream(stream))
        except TypeError:  # a producer that predates the stream keyword
            capsule = obj.__dlpack__()
    except BufferError as e:  # e.g. torch: a tensor that requires grad
        raise InputError(f"the DLPack producer ({type(obj).__name__}) refused the export: {e}") from None
    get = C.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
    ptr = get(capsule, b"dltensor")
    t = _DLTensor.from_address(ptr)  # DLManagedTensor starts with its DLTensor
    if t.device.device_type != DL_CUDA:
        raise InputError("DLPack tensor is not on a CUDA device; pass a NumPy array for the CPU path")
    shape = tuple(t.shape[i] for i in range(t.ndim))
    itemsize = max(1, t.dtype.bits * max(1, t.dtype.lanes) // 8)
    strides = [t.strides[i] * itemsize for i in range(t.ndim)] if t.strides else None
    pitch = _layout(shape, strides, itemsize, row_dim, "DLPack tensor")
    kind = {(2, 32): "float32", (1, 8): "uint8"}.get((t.dtype.code, t.dtype.bits), "other")
    return _Arg(t.data + t.byte_offset, shape, DEVICE_CUDA, (obj, capsule), kind, itemsize, pitch=pitch,
                device_id=int(t.device.device_id))


def _from_cai(obj, writable: bool = False, row_dim: Optional[int] = None) -> _Arg:
    """An object with ``__cuda_array_interface__`` (versions 0-3): the layout of ``_layout``, no
    mask; a read-only array is refused where the library writes; the v3 ``stream`` key is kept
    as the producer stream to wait on."""
    try:
        cai = obj.__cuda_array_interface__
    except (AttributeError, RuntimeError) as e:  # e.g. torch: a tensor that requires grad
        raise InputError(f"{type(obj).__name__} does not give its __cuda_array_interface__: {e}") from None
    shape = tuple(int(d) for d in cai["shape"])
    typestr = cai["typestr"]
    itemsize = int(typestr[2:])
    if cai.get("mask") is not None:
        raise InputError("__cuda_array_interface__ arrays with a mask are not supported; pass a plain array")
    pitch = _layout(shape, cai.get("strides"), itemsize, row_dim, "__cuda_array_interface__ array")
    ptr, readonly = cai["data"]
    if writable and readonly:
        raise InputError("__cuda_array_interface__ array is read-only, but the library writes to it; pass a "
                         "writable device array")
    producer = cai.get("stream") if int(cai.get("version", 0)) >= 3 else None
    if producer is not None:
        producer = int(producer)
        if producer == 0:
            raise InputError("__cuda_array_interface__ 'stream' is 0, which the protocol forbids (ambiguous); "
                             "the producer must give 1 (legacy default stream), 2 (per-thread) or a stream handle")
    kind = {"<f4": "float32", "|u1": "uint8"}.get(typestr, "other")
    return _Arg(int(ptr or 0), shape, DEVICE_CUDA, obj, kind, itemsize, producer, pitch)


def _as_arg(x, name: str, dtype=np.float32, writable: bool = False, stream=None, row_dim: Optional[int] = None,
            host_hint: Optional[str] = None) -> _Arg:
    """NumPy (CPU) or CUDA array -> _Arg. NumPy inputs are made contiguous float32/uint8;
    ``dtype=None`` accepts any dtype of a device array (workspaces). ``row_dim``: device arrays
    may have padded rows there (``_layout``). ``host_hint``: host arrays are refused with an
    InputError ending in this hint (device-only calls)."""
    if x is None:
        return None
    kind = device_kind(x)
    if kind == "cuda":
        # DLPack first: its handshake orders the producer's work before the library's stream
        # whatever the producer (PyTorch's __cuda_array_interface__ is v2: no stream to wait on)
        try:
            if _dlpack_device(x) == DL_CUDA:
                if writable and _has_cai(x):
                    _from_cai(x, writable, row_dim)  # its read-only flag (DLPack < 1.0 has none)
                arg = _from_dlpack(x, stream, row_dim)
            else:
                arg = _from_cai(x, writable, row_dim)
        except InputError as e:  # ShapeError included: say which argument
            raise type(e)(f"{name}: {e}") from None
    else:
        if host_hint is not None:
            raise InputError(f"{name} is host memory ({type(x).__name__}), but this call takes CUDA device arrays "
                             f"(__cuda_array_interface__ or DLPack on a CUDA device); {host_hint}")
        a = host_array(x, name)
        if a.dtype != dtype:
            if dtype == np.uint8:
                raise InputError(f"{name} must be uint8, got {a.dtype}")
            if not np.issubdtype(a.dtype, np.number):
                raise InputError(f"{name} must be numeric, got {a.dtype}")
        if writable and (a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable):
            raise InputError(f"{name} must be a writable C-contiguous {np.dtype(dtype).name} array")
        a = np.ascontiguousarray(a, dtype=dtype)
        return _Arg(a.ctypes.data, a.shape, DEVICE_CPU, a, np.dtype(dtype).name, a.itemsize)
    if dtype is not None:
        want = np.dtype(dtype).name
        if arg.dtype != want:
            raise InputError(f"{name} must be {want} on the GPU, got {arg.dtype}")
    return arg


def _dlpack_device(x) -> Optional[int]:
    """The DLPack device type ``x`` reports (``__dlpack_device__``), None without DLPack."""
    if isinstance(x, np.ndarray) or not (hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")):
        return None
    return int(x.__dlpack_device__()[0])


def _has_cai(x) -> bool:
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # noqa: BLE001 - the property raised: _from_cai reports it
        return True


def _host_empty(shape, dtype, what: str) -> np.ndarray:
    """np.empty, with a MemoryError turned into OutOfMemoryError naming the size and the fix."""
    try:
        return np.empty(shape, dtype=dtype)
    except MemoryError:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raise OutOfMemoryError(f"{what} needs {nbytes / 2**20:.0f} MiB of host memory, which is not available; "
                               "use a smaller frame (split a large image into tiles) or free memory") from None


def _plane(arg: _Arg, name: str) -> tuple[int, int]:
    """(H, W) of a single-channel map given as (H, W), (1, H, W) or (1, 1, H, W)."""
    s = tuple(arg.shape)
    while len(s) > 2 and s[0] == 1:
        s = s[1:]
    if len(s) != 2:
        raise ShapeError(f"{name} must be (H, W) or (1, 1, H, W) (batch 1), got shape {tuple(arg.shape)}")
    return int(s[0]), int(s[1])


def _chw(arg: _Arg, name: str) -> tuple[int, int, int]:
    s = tuple(arg.shape)
    if len(s) == 4 and s[0] == 1:
        s = s[1:]
    if len(s) == 2:
        s = (1,) + s
    if len(s) != 3:
        raise ShapeError(f"{name} must be (C, H, W) or (1, C, H, W) (batch 1), got shape {tuple(arg.shape)}")
    return int(s[0]), int(s[1]), int(s[2])


def _same_device(*args: _Arg) -> int:
    devs = {a.device for a in args if a is not None}
    if len(devs) != 1:
        raise InputError("all arrays of one call must be on the same device (all NumPy or all CUDA)")
    return devs.pop()


class KernelLibrary:
    """One loaded kernel library (CPU or CUDA build) with Pythonic wrappers of psd.h.

    Args:
        path (str | Path): the shared library.

    Raises:
        BackendUnavailable: it does not load or its ABI version differs.
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._lib = C.CDLL(str(self.path))
        except OSError as e:
            raise BackendUnavailable(f"cannot load kernel library {self.path}: {e}; "
                                     "rebuild it with `python build.py`") from e
        for name, (res, args) in _SIGNATURES.items():
            try:
                fn = getattr(self._lib, name)
            except AttributeError as e:  # a library built from older sources
                raise BackendUnavailable(f"{self.path} lacks {name}; it predates these sources: "
                                         "rebuild it with `python build.py`") from e
            fn.restype, fn.argtypes = res, args
        ver = int(self._lib.psd_abi_version())
        if ver != ABI_VERSION:
            raise BackendUnavailable(f"{self.path} has ABI version {ver}, this binding needs "
                                     f"{ABI_VERSION}; rebuild with `python build.py`")
        flags = _u32()
        self._check(self._lib.psd_build_info(C.byref(flags)))
        self.flags = int(flags.value)
        self._tls = threading.local()

    # ---------------------------------------------------------------- basics
    @property
    def has_cuda(self) -> bool:
        """The library was built with CUDA kernels."""
        return bool(self.flags & BUILD_CUDA)

    @property
    def cpu_isa(self) -> str:
        """The vector ISA of the CPU kernels' run-time variants: ``"avx512"``, ``"avx2"`` or
        ``"baseline"`` (psd_cpu_isa; capped by the environment variable ``PSD_MAX_CPU_ISA``)."""
        return self._lib.psd_cpu_isa().decode()

    @property
    def cuda_emulated(self) -> bool:
        """Its CUDA paths run on the emulated CUDA runtime (``build.py --cuda-emulation``)."""
        return bool(self.flags & BUILD_CUDA_EMULATION)

    def stream_wait(self, consumer, producer) -> None:
        """Make stream ``consumer`` (None = cudaStreamPerThread) wait for the work enqueued on
        ``producer`` so far (psd_cuda_stream_wait)."""
        self._check(self._lib.psd_cuda_stream_wait(self._stream(consumer), int(producer)))

    def cuda_device_count(self) -> tuple[int, int]:
        """(device count, cudaError_t of cudaGetDeviceCount); (0, -1) for a CPU build."""
        n, err = _i32(), _i32()
        self._check(self._lib.psd_cuda_device_count(C.byref(n), C.byref(err)))
        return int(n.value), int(err.value)

    def last_error(self) -> str:
        return (self._lib.psd_last_error() or b"").decode("utf-8", "replace")

    def _check(self, status: int) -> None:
        if status == 0:
            return
        name = STATUS.get(status, f"status {status}")
        msg = f"{name}: {self.last_error()}"
        if status in (2, 3):
            raise ShapeError(msg)
        if status in (1, 4):
            raise InputError(msg)
        if status == 5:
            raise OutOfMemoryError(msg)
        if status == 6:
            raise BackendUnavailable(msg + " (CUDA path; use NumPy arrays for the CPU kernels)")
        if status == 7:
            raise BackendUnavailable(msg)
        raise PsdError(msg)

    def _arg(self, x, name: str, dtype=np.float32, writable: bool = False, stream=None, **layout) -> _Arg:
        """``_as_arg`` (``layout``: its ``row_dim`` / ``host_hint``) plus the CUDA array
        interface's stream handshake: the library's stream waits for the work pending on the
        array's producer stream (``psd_cuda_stream_wait``)."""
        arg = _as_arg(x, name, dtype, writable, stream, **layout)
        if arg is not None and arg.producer is not None:
            self._check(self._lib.psd_cuda_stream_wait(self._stream(stream), arg.producer))
        return arg

    def _workspace(self, nbytes: int, device: int, workspace, stream=None) -> tuple[int, int, Any]:
        """(pointer, size, keep-alive) of a workspace: cached per thread on the CPU."""
        if device == DEVICE_CUDA:
            if workspace is None:
                raise InputError(f"GPU calls need workspace= (a device buffer of >= {nbytes} bytes)")
            arg = self._arg(workspace, "workspace", dtype=None, writable=True, stream=stream)
            if arg.device != DEVICE_CUDA:
                raise InputError("workspace must be device memory for a GPU call")
            return arg.ptr, arg.nbytes, arg
        buf = getattr(self._tls, "ws", None)
        if buf is None or buf.nbytes < nbytes:
            self._tls.ws = None  # let the old one go first
            buf = _host_empty(max(nbytes, 1), np.uint8, "the kernel workspace")
            self._tls.ws = buf
        return buf.ctypes.data, buf.nbytes, buf

    def _out(self, out, shape: tuple, device: int, name: str = "out", stream=None) -> _Arg:
        if out is None:
            if device == DEVICE_CUDA:
                raise InputError(f"GPU calls need {name}= (a device float32 array of shape {shape})")
            out = _host_empty(shape, np.float32, name)
        arg = self._arg(out, name, writable=True, stream=stream)
        if int(np.prod(arg.shape)) != int(np.prod(shape)):
            raise ShapeError(f"{name} must hold {shape} floats, got shape {tuple(arg.shape)}")
        return arg

    @staticmethod
    def _stream(stream) -> Optional[int]:
        return stream_handle(stream)

    # ---------------------------------------------------------------- helpers
    def check_intrinsics(self, K: np.ndarray, shape=None) -> None:
        """psd_check_intrinsics: the one definition of a usable pinhole K (its rules in psd.h);
        ``shape`` (H, W) adds the image-size rules. Raises InputError naming the fix."""
        k = np.ascontiguousarray(K, dtype=np.float64).reshape(9)
        h, w = (0, 0) if shape is None else (int(shape[0]), int(shape[1]))
        status = self._lib.psd_check_intrinsics(k.ctypes.data_as(C.POINTER(C.c_double)), h, w)
        if status:
            raise InputError(self.last_error())

    def prepare_sparse(self, sparse: np.ndarray) -> tuple[np.ndarray, dict]:
        """psd_prepare_sparse: the one definition of acceptable sparse depth (its rules in psd.h):
        errors for NaN/Inf, negative values or no point; points outside [1 mm, 10 km] and beyond
        100x the median are set to 0 and counted.

        Returns:
            (ndarray, dict): the accepted (H, W) float32 map (a new array) and the statistics
            (points, interior, rejected_range, rejected_outliers, dmin, dmax, median).
        """
        sp = np.ascontiguousarray(sparse, dtype=np.float32)
        if sp.ndim != 2:
            raise ShapeError(f"sparse depth must be H x W, got shape {sp.shape}")
        out, scratch = np.empty_like(sp), np.empty_like(sp)
        st = SparseStats()
        st.struct_size = C.sizeof(SparseStats)
        self._check(self._lib.psd_prepare_sparse(sp.shape[0], sp.shape[1], sp.ctypes.data, 0, scratch.ctypes.data,
                                                 out.ctypes.data, C.byref(st)))
        return out, {k: getattr(st, k) for k, _ in SparseStats._fields_[2:]}

    def guard_depth(self, depth: np.ndarray, dmin: float, dmax: float) -> int:
        """psd_guard_depth: clamps a C-contiguous float32 host depth map in place to
        [0.5 dmin, 2 dmax]; returns how many values changed."""
        if not (isinstance(depth, np.ndarray) and depth.dtype == np.float32 and depth.flags.c_contiguous
                and depth.flags.writeable and depth.ndim == 2):
            raise InputError("guard_depth needs a writable C-contiguous (H, W) float32 array")
        k = _i64()
        self._check(self._lib.psd_guard_depth(depth.shape[0], depth.shape[1], float(dmin), float(dmax),
                                              depth.ctypes.data, C.byref(k)))
        return int(k.value)

    #: psd_session_mode_t of the mode names
    SESSION_MODES = {None: 0, "any": 0, "psd": 1, "propagate": 2, "guided": 3}

    def check_frame_size(self, height: int, width: int, mode: Optional[str] = None) -> None:
        """psd_check_frame_size: the one rule for a usable frame size per mode (psd.h lists it).
        Raises ShapeError naming the fix."""
        if mode not in self.SESSION_MODES:
            raise InputError(f"unknown mode {mode!r}; use psd, propagate or guided")
        self._check(self._lib.psd_check_frame_size(self.SESSION_MODES[mode], int(height), int(width)))

    def fm_input_size(self, h: int, w: int, lower: int = 392, multiple: int = 14) -> tuple[int, int]:
        """Foundation-model input size (psd_fm_input_size)."""
        oh, ow = _i64(), _i64()
        self._check(self._lib.psd_fm_input_size(h, w, lower, multiple, C.byref(oh), C.byref(ow)))
        return int(oh.value), int(ow.value)

    @staticmethod
    def _params(k=1, rate=1.0, candidates=0, seed=0, mode="3D-2D", cam="pinhole",
                iters_quarter=3, iters_full=3, brute_force=False) -> PropagationParams:
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; use one of {tuple(MODES)}")
        if cam not in CAMERAS:
            raise InputError(f"unknown camera {cam!r}; use one of {tuple(CAMERAS)}")
        return PropagationParams(C.sizeof(PropagationParams), MODES[mode], CAMERAS[cam], int(k),
                                 float(rate), int(candidates), int(seed) & (2**64 - 1),
                                 int(iters_quarter), int(iters_full),
                                 FLAG_KNN_BRUTE_FORCE if brute_force else 0, 0)

    @staticmethod
    def _cam(params, cam: str):
        if cam == "360" and params is None:
            return None
        p = np.ascontiguousarray(np.asarray(params, dtype=np.float32).reshape(-1))
        if p.size != 9:
            raise ShapeError(f"camera parameters must have 9 values (3x3 K or 9 MEI), got {p.size}")
        return p

    # ---------------------------------------------------------------- building blocks
    def align_inverse_ls(self, rel_inv, sparse, out=None, workspace=None, stream=None):
        """depth_polyfit from rel_inv (H, W, already resized) and sparse (H, W). See psd.h."""
        return self._align("psd_align_inverse_ls", rel_inv, sparse, out, workspace, stream)

    def align_median(self, ip, sparse, out=None, workspace=None, stream=None):
        """ip_median from the IP-Basic fill (H, W) and sparse (H, W). See psd.h."""
        return self._align("psd_align_median", ip, sparse, out, workspace, stream)

    def _align(self, fn, data, sparse, out, workspace, stream):
        a, s = self._arg(data, "data", stream=stream), self._arg(sparse, "sparse", stream=stream)
        dev = _same_device(a, s)
        h, w = _plane(s, "sparse")
        if _plane(a, "data") != (h, w):
            raise ShapeError(f"inputs must have the same H x W, got {a.shape} and {s.shape}")
        if dev == DEVICE_CPU and not (s.keep > 0).any():
            raise InputError("sparse depth has no valid (> 0) point; provide at least one measurement")
        nbytes = _sz()
        self._check(self._lib.psd_align_workspace_size(dev, h, w, C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, dev, workspace, stream=stream)
        o = self._out(out, (h, w), dev, stream=stream)
        self._check(getattr(self._lib, fn)(dev, h, w, a.ptr, s.ptr, wp, wn, self._stream(stream), o.ptr))
        return o.keep

    def ip_basic_workspace_size(self, height: int, width: int, device: int = DEVICE_CPU) -> int:
        """Bytes of workspace ``ip_basic`` needs for an H x W map (psd_ip_basic_workspace_size)."""
        nbytes = _sz()
        self._check(self._lib.psd_ip_basic_workspace_size(device, int(height), int(width), C.byref(nbytes)))
        return int(nbytes.value)

    def ip_basic(self, sparse, out=None, workspace=None, stream=None):
        """IP-Basic fill of a sparse depth map (psd_ip_basic): PSD's ``fill_in_fast``, equal bit for
        bit to ``runtime.classical.ip_basic_fill`` (its docstring lists the steps and the quirks).

        Args:
            sparse: float (H, W) or (1, H, W) metric depth, 0 = missing (NumPy: CPU kernels; a
                CUDA array: the CUDA kernels, with ``out`` and ``workspace`` of at least
                ``ip_basic_workspace_size`` bytes given).

        Returns:
            (H, W) float32 filled depth (``out`` when given).

        Raises:
            InputError: (CPU) no depth > 0.1 m, NaN/Inf or negative values, integer dtype. A CUDA
                call cannot report these (no host sync): its output is then 0 everywhere.
            ShapeError: not a single 2-D map.
        """
        if isinstance(sparse, np.ndarray) and sparse.dtype.kind != "f":
            raise InputError(f"ip_basic needs float depth in metres, got {sparse.dtype}; divide the stored "
                             "integers by their scale (read_depth does)")
        s = self._arg(sparse, "sparse", stream=stream)
        h, w = _plane(s, "sparse")
        wp, wn, _keep = self._workspace(self.ip_basic_workspace_size(h, w, s.device), s.device, workspace,
                                        stream=stream)
        o = self._out(out, (h, w), s.device, stream=stream)
        self._check(self._lib.psd_ip_basic(s.device, h, w, s.ptr, wp, wn, self._stream(stream), o.ptr))
        return o.keep

    def resize(self, x, size, mode: str = "bicubic", out=None, stream=None):
        """(C, H, W) or (H, W) -> same layout at size (h, w); PyTorch align_corners=False."""
        a = self._arg(x, "x", stream=stream)
        c, hi, wi = _chw(a, "x")
        ho, wo = int(size[0]), int(size[1])
        shape = (c, ho, wo) if len(a.shape) >= 3 else (ho, wo)
        o = self._out(out, shape, a.device, stream=stream)
        m = {"bicubic": 0, "bilinear": 1}.get(mode)
        if m is None:
            raise InputError(f"unknown resize mode {mode!r}; use 'bicubic' or 'bilinear'")
        self._check(self._lib.psd_resize(a.device, m, c, hi, wi, ho, wo, a.ptr, self._stream(stream), o.ptr))
        return o.keep

    def sparse_pool(self, sparse, out=None, stream=None):
        """(H, W) -> (H//4, W//4) sparse average."""
        s = self._arg(sparse, "sparse", stream=stream)
        h, w = _plane(s, "sparse")
        o = self._out(out, (h // 4, w // 4), s.device, stream=stream)
        self._check(self._lib.psd_sparse_pool(s.device, h, w, s.ptr, self._stream(stream), o.ptr))
        return o.keep

    def project_points(self, points, K, size, T=None, min_depth: float = 0.1, max_depth: float = float("inf"),
                       out=None, stream=None):
        """(N, S >= 3) float32 points (x, y, z first, sensor frame) -> (H, W) z-buffered sparse depth
        (psd_project_points; ``runtime.points.project_points`` documents the rules)."""
        p = self._arg(points, "points", stream=stream)
        shape = tuple(p.shape)
        if len(shape) != 2 or shape[1] < 3:
            raise ShapeError(f"points must be (N, 3) or (N, S > 3) float32 (x, y, z first), got shape {shape}")
        h, w = int(size[0]), int(size[1])
        Kd = np.ascontiguousarray(np.asarray(K, dtype=np.float64))
        if Kd.shape != (3, 3):
            raise ShapeError(f"K must be 3x3, got shape {Kd.shape}")
        Td = None
        if T is not None:
            Td = np.ascontiguousarray(np.asarray(T, dtype=np.float64))
            if Td.shape != (4, 4):
                raise ShapeError(f"T must be the 4x4 sensor-to-camera transform, got shape {Td.shape}")
        o = self._out(out, (h, w), p.device, stream=stream)
        self._check(self._lib.psd_project_points(
            p.device, shape[0], shape[1], p.ptr if shape[0] else None,
            None if Td is None else Td.ctypes.data_as(_dp), Kd.ctypes.data_as(_dp), h, w, float(min_depth),
            float(max_depth), self._stream(stream), o.ptr))
        return o.keep

    def occlusion_filter(self, sparse, rx: int = 4, ry: int = 8, rel: float = 0.1, out=None, stream=None):
        """(H, W) float32 sparse depth -> the same with occluded (parallax) returns set to 0
        (psd_occlusion_filter; ``runtime.points.filter_occluded`` documents the rule)."""
        s = self._arg(sparse, "sparse", stream=stream)
        h, w = _plane(s, "sparse")
        o = self._out(out, (h, w), s.device, stream=stream)
        self._check(self._lib.psd_occlusion_filter(s.device, h, w, s.ptr, int(rx), int(ry), float(rel),
                                                   self._stream(stream), o.ptr))
        return o.keep

    def backproject(self, depth, cam_params, cam: str = "pinhole", out=None, stream=None):
        """(H, W) depth -> (3, H, W) points; cam_params: 3x3 K or 9 MEI values."""
        d = self._arg(depth, "depth", stream=stream)
        h, w = _plane(d, "depth")
        p = self._cam(cam_params, cam)
        o = self._out(out, (3, h, w), d.device, stream=stream)
        pp = None if p is None else p.ctypes.data_as(_fp)
        self._check(self._lib.psd_backproject(d.device, CAMERAS[cam], h, w, d.ptr, pp, self._stream(stream), o.ptr))
        return o.keep

    def compress_channels(self, feat, channels: int, size, out=None, workspace=None, stream=None):
        """(C, h, w) -> (channels, H, W): trilinear over (channel, y, x)."""
        f = self._arg(feat, "feat", stream=stream)
        c, h, w = _chw(f, "feat")
        ho, wo = int(size[0]), int(size[1])
        nbytes = _sz()
        self._check(self._lib.psd_compress_workspace_size(f.device, h, w, channels, C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, f.device, workspace, stream=stream)
        o = self._out(out, (channels, ho, wo), f.device, stream=stream)
        self._check(self._lib.psd_compress_channels(f.device, c, h, w, channels, ho, wo, f.ptr, wp, wn,
                                                    self._stream(stream), o.ptr))
        return o.keep

    def knn_propagate(self, feat, points, init, sparse4, k: int = 1, rate: float = 1.0,
                      candidates: int = 0, seed: int = 0, brute_force: bool = False, out=None,
                      workspace=None, stream=None):
        """3D kNN propagation at 1/4 resolution (kernels/knn/knn.h)."""
        f, p = self._arg(feat, "feat", stream=stream), self._arg(points, "points", stream=stream)
        i, s = self._arg(init, "init", stream=stream), self._arg(sparse4, "sparse4", stream=stream)
        dev = _same_device(f, p, i, s)
        c, h, w = _chw(f, "feat")
        if _chw(p, "points") != (3, h, w) or _plane(i, "init") != (h, w) or _plane(s, "sparse4") != (h, w):
            raise ShapeError("knn_propagate: points (3, h, w), init and sparse4 (h, w) must match feat (C, h, w)")
        prm = self._params(k=k, rate=rate, candidates=candidates, seed=seed, brute_force=brute_force)
        nbytes = _sz()
        self._check(self._lib.psd_knn_workspace_size(dev, c, h, w, C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, dev, workspace, stream=stream)
        o = self._out(out, (h, w), dev, stream=stream)
        self._check(self._lib.psd_knn_propagate(dev, C.byref(prm), c, h, w, f.ptr, p.ptr, i.ptr, s.ptr,
                                                wp, wn, self._stream(stream), o.ptr))
        return o.keep

    def cspn(self, sparse, dense, feat, iterations: int, out=None, workspace=None, stream=None):
        """Fixed-affinity CSPN (kernels/cspn/cspn.h)."""
        s, d = self._arg(sparse, "sparse", stream=stream), self._arg(dense, "dense", stream=stream)
        f = self._arg(feat, "feat", stream=stream)
        dev = _same_device(s, d, f)
        c, h, w = _chw(f, "feat")
        if _plane(s, "sparse") != (h, w) or _plane(d, "dense") != (h, w):
            raise ShapeError("cspn: sparse and dense (H, W) must match feat (C, H, W)")
        nbytes = _sz()
        self._check(self._lib.psd_cspn_workspace_size(dev, c, h, w, C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, dev, workspace, stream=stream)
        o = self._out(out, (h, w), dev, stream=stream)
        self._check(self._lib.psd_cspn(dev, c, h, w, int(iterations), s.ptr, d.ptr, f.ptr, wp, wn,
                                       self._stream(stream), o.ptr))
        return o.keep

    #: psd_preprocess_t by name
    PREPROCESS_METHODS = {"official": 0, "bicubic": 1}

    def preprocess(self, rgb, size=None, bgr: bool = False, method: str = "official", out=None, workspace=None,
                   stream=None):
        """uint8 (H, W, 3) -> float32 (1, 3, Hm, Wm) FM input (psd_preprocess): ``method``
        ``"official"`` (scikit-image resize order=3, as the official PSD loaders) or ``"bicubic"``
        (PyTorch bicubic, as an exported graph). The kernel library is the one definition."""
        if method not in self.PREPROCESS_METHODS:
            raise InputError(f"unknown preprocessing {method!r}; use 'official' or 'bicubic'")
        m = self.PREPROCESS_METHODS[method]
        a = self._arg(rgb, "rgb", dtype=np.uint8, stream=stream)
        if len(a.shape) != 3 or a.shape[2] != 3:
            raise InputError(f"rgb must be (H, W, 3) uint8, got shape {tuple(a.shape)}")
        h, w = int(a.shape[0]), int(a.shape[1])
        oh, ow = self.fm_input_size(h, w) if size is None else (int(size[0]), int(size[1]))
        nbytes = _sz()
        self._check(self._lib.psd_preprocess_workspace_size(a.device, m, h, w, oh, ow, C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, a.device, workspace, stream=stream) if nbytes.value \
            else (None, 0, None)
        o = self._out(out, (1, 3, oh, ow), a.device, stream=stream)
        self._check(self._lib.psd_preprocess(a.device, m, h, w, int(bool(bgr)), oh, ow, a.ptr, wp, wn,
                                             self._stream(stream), o.ptr))
        return o.keep

    def preprocess_rgb(self, rgb, size=None, bgr: bool = False, out=None, stream=None):
        """uint8 (H, W, 3) -> float32 (1, 3, Hm, Wm) FM input, the bicubic method (psd_preprocess_rgb)."""
        a = self._arg(rgb, "rgb", dtype=np.uint8, stream=stream)
        if len(a.shape) != 3 or a.shape[2] != 3:
            raise InputError(f"rgb must be (H, W, 3) uint8, got shape {tuple(a.shape)}")
        h, w = int(a.shape[0]), int(a.shape[1])
        oh, ow = self.fm_input_size(h, w) if size is None else (int(size[0]), int(size[1]))
        o = self._out(out, (1, 3, oh, ow), a.device, stream=stream)
        self._check(self._lib.psd_preprocess_rgb(a.device, h, w, int(bool(bgr)), oh, ow, a.ptr,
                                                 self._stream(stream), o.ptr))
        return o.keep

    # ---------------------------------------------------------------- guided mode
    @staticmethod
    def _guided_params(params, projection, flags: int, features: bool = False):
        """(psd_guided_params, keep-alive) from a GuidedParams and an optional (W, b); the
        projection is passed for the CSPN method and for the features."""
        from .guided import GuidedParams, rff_projection

        params = GuidedParams() if params is None else params
        if not isinstance(params, GuidedParams):
            raise InputError(f"params must be a psdrt.runtime.guided.GuidedParams, got {type(params).__name__}")
        from .guided import KINDS, METHODS

        if params.method == "cspn" or projection is not None or features:
            w, b = rff_projection(params) if projection is None else projection
            w = np.ascontiguousarray(w, dtype=np.float32)
            b = np.ascontiguousarray(b, dtype=np.float32)
            if w.shape != (3, params.channels) or b.shape != (params.channels,):
                raise ShapeError(f"projection must be W (3, {params.channels}) and b ({params.channels},), "
                                 f"got {w.shape} and {b.shape}; use rff_projection(params)")
            pw, pb = w.ctypes.data_as(_fp), b.ctypes.data_as(_fp)
        else:
            w = b = None
            pw = pb = None
        prm = GuidedParamsC(C.sizeof(GuidedParamsC), int(params.channels), float(params.colour_scale),
                            int(params.levels), int(params.iterations), int(flags), pw, pb,
                            METHODS.index(params.method), KINDS.index(params.kind), float(params.lam),
                            float(params.sigma_s), float(params.sigma_s_scan), float(params.sigma_r),
                            float(params.beta), int(params.dt_iterations), int(params.rounds),
                            int(params.occl_rx), int(params.occl_ry), float(params.occl_rel))
        return prm, (w, b)

    @staticmethod
    def _rgb_hw(a: _Arg) -> tuple[int, int]:
        if len(a.shape) != 3 or a.shape[2] != 3:
            raise InputError(f"rgb must be (H, W, 3) uint8, got shape {tuple(a.shape)}; drop any alpha channel")
        return int(a.shape[0]), int(a.shape[1])

    def guided_workspace_size(self, height: int, width: int, params=None, device: int = DEVICE_CPU,
                              flags: int = 0) -> int:
        """Bytes of workspace ``guided`` needs for an H x W frame (psd_guided_workspace_size)."""
        prm, _keep = self._guided_params(params, None, flags)
        nbytes = _sz()
        self._check(self._lib.psd_guided_workspace_size(device, int(height), int(width), C.byref(prm),
                                                        C.byref(nbytes)))
        return int(nbytes.value)

    def guided(self, rgb, sparse, params=None, *, bgr: bool = False, projection=None, flags: int = 0,
               out=None, workspace=None, stream=None):
        """The whole weight-free ``guided`` mode of one frame in one call (psd_guided).

        Args:
            rgb: (H, W, 3) uint8, RGB (or BGR with ``bgr=True``).
            sparse: (H, W) metric depth, 0 = missing.
            params (GuidedParams, optional): defaults to ``GuidedParams()``.
            projection (tuple, optional): (W (3, C), b (C,)) float32; defaults to
                ``rff_projection(params)``.
            flags (int): ``GUIDED_FLAG_GENERIC`` (CPU: the per-pixel implementation the CUDA
                build runs) and/or ``GUIDED_FLAG_BASELINE_ISA`` (CPU: no AVX2); for tests.

        Returns:
            (H, W) float32 dense depth (``out`` when given).

        Raises:
            InputError: no valid sparse point (CPU arrays), bad parameters or dtypes.
            ShapeError: mismatched shapes.
        """
        a, s = self._arg(rgb, "rgb", dtype=np.uint8, stream=stream), self._arg(sparse, "sparse", stream=stream)
        dev = _same_device(a, s)
        h, w = self._rgb_hw(a)
        if _plane(s, "sparse") != (h, w):
            raise ShapeError(f"sparse must be ({h}, {w}) like rgb, got shape {tuple(s.shape)}")
        if dev == DEVICE_CPU and not (s.keep > 0).any():
            raise InputError("sparse depth has no valid (> 0) point; provide at least one measurement")
        prm, _keep = self._guided_params(params, projection, flags)
        nbytes = _sz()
        self._check(self._lib.psd_guided_workspace_size(dev, h, w, C.byref(prm), C.byref(nbytes)))
        wp, wn, _wkeep = self._workspace(nbytes.value, dev, workspace, stream=stream)
        o = self._out(out, (h, w), dev, stream=stream)
        self._check(self._lib.psd_guided(dev, h, w, C.byref(prm), a.ptr, int(bool(bgr)), s.ptr, wp, wn,
                                         self._stream(stream), o.ptr))
        return o.keep

    def guided_features(self, rgb, params=None, *, bgr: bool = False, projection=None, out=None, stream=None):
        """(C, H, W) guidance features of ``guided`` (psd_guided_features; runtime.guided.guided_features)."""
        a = self._arg(rgb, "rgb", dtype=np.uint8, stream=stream)
        h, w = self._rgb_hw(a)
        prm, _keep = self._guided_params(params, projection, 0, features=True)
        o = self._out(out, (prm.channels, h, w), a.device, stream=stream)
        self._check(self._lib.psd_guided_features(a.device, h, w, C.byref(prm), a.ptr, int(bool(bgr)),
                                                  self._stream(stream), o.ptr))
        return o.keep

    # ---------------------------------------------------------------- composed
    def propagate_workspace_size(self, desc: FrameDesc, params: PropagationParams, has_ip: bool,
                                 device: int = DEVICE_CPU) -> int:
        nbytes = _sz()
        self._check(self._lib.psd_propagate_workspace_size(device, C.byref(desc), C.byref(params),
                                                           int(has_ip), C.byref(nbytes)))
        return int(nbytes.value)

    def propagate(self, rel_inv, sparse, feat, cam_params, *, ip=None, k=1, rate=1.0,
                  candidates=0, seed=0, mode="3D-2D", cam="pinhole", iters_quarter=3,
                  iters_full=3, brute_force=False, return_polyfit=False, out=None,
                  polyfit_out=None, workspace=None, stream=None):
        """Alignment + dual-space propagation of one frame (psd_propagate): one call per frame.

        Args:
            rel_inv: FM relative inverse depth (Hm, Wm) at any size (resized inside).
            sparse: (H, W) metric depth, 0 = missing.
            feat: (C, hf, wf) guidance features (path_feats[0]).
            cam_params: 3x3 K (pinhole), 9 MEI values, or None for '360'.
            ip (optional): (H, W) IP-Basic fill. Defaults to None (the aligned FM depth is used).
            k, rate, candidates, mode, cam, iters_quarter, iters_full: the preset
                (``preset_kwargs(PRESETS[name])``). seed: for rate < 1 / candidate caps.
            return_polyfit (bool): also return depth_polyfit. Defaults to False.

        Returns:
            depth_diff (H, W), or (depth_diff, depth_polyfit).

        Raises:
            InputError: no valid sparse point (CPU), bad parameters. ShapeError: bad shapes.
        """
        r, s = self._arg(rel_inv, "rel_inv", stream=stream), self._arg(sparse, "sparse", stream=stream)
        f = self._arg(feat, "feat", stream=stream)
        ipa = self._arg(ip, "ip", stream=stream)
        dev = _same_device(r, s, f, ipa)
        h, w = _plane(s, "sparse")
        rh, rw = _plane(r, "rel_inv")
        c, fh, fw = _chw(f, "feat")
        if ipa is not None and _plane(ipa, "ip") != (h, w):
            raise ShapeError(f"ip must be {(h, w)} like sparse, got {tuple(ipa.shape)}")
        if dev == DEVICE_CPU and not (s.keep > 0).any():
            raise InputError("sparse depth has no valid (> 0) point; provide at least one measurement")
        desc = FrameDesc(C.sizeof(FrameDesc), 0, h, w, rh, rw, c, fh, fw)
        prm = self._params(k, rate, candidates, seed, mode, cam, iters_quarter, iters_full, brute_force)
        camp = self._cam(cam_params, cam)
        nbytes = self.propagate_workspace_size(desc, prm, ipa is not None, dev)
        wp, wn, _keep = self._workspace(nbytes, dev, workspace, stream=stream)
        o = self._out(out, (h, w), dev, stream=stream)
        po = self._out(polyfit_out, (h, w), dev, "polyfit_out", stream=stream) if return_polyfit else None
        self._check(self._lib.psd_propagate(
            dev, C.byref(desc), C.byref(prm), r.ptr, s.ptr, None if ipa is None else ipa.ptr,
            None if camp is None else camp.ctypes.data_as(_fp), f.ptr, wp, wn,
            self._stream(stream), o.ptr, None if po is None else po.ptr))
        return (o.keep, po.keep) if return_polyfit else o.keep

    def post_process(self, fd0, dense, sparse, iterations: int, channels: int = 32, out=None,
                     workspace=None, stream=None):
        """Post-processing sweeps (psd_post_process, §5.6)."""
        d, s = self._arg(dense, "dense", stream=stream), self._arg(sparse, "sparse", stream=stream)
        f = self._arg(fd0, "fd0", stream=stream) if fd0 is not None else None
        dev = _same_device(d, s, f)
        h, w = _plane(s, "sparse")
        c, fh, fw = _chw(f, "fd0") if f is not None else (0, 0, 0)
        desc = FrameDesc(C.sizeof(FrameDesc), 0, h, w, 0, 0, c, fh, fw)
        nbytes = _sz()
        self._check(self._lib.psd_post_process_workspace_size(dev, C.byref(desc), channels, int(iterations),
                                                              C.byref(nbytes)))
        wp, wn, _keep = self._workspace(nbytes.value, dev, workspace, stream=stream) if nbytes.value else (None, 0, None)
        o = self._out(out, (h, w), dev, stream=stream)
        self._check(self._lib.psd_post_process(dev, C.byref(desc), channels, int(iterations),
                                               None if f is None else f.ptr, d.ptr, s.ptr, wp, wn,
                                               self._stream(stream), o.ptr))
        return o.keep


def preset_kwargs(preset) -> dict:
    """Keyword arguments of ``KernelLibrary.propagate`` for a ``runtime.presets`` preset."""
    return dict(k=preset.k, rate=preset.rate, candidates=preset.candidates, mode=preset.mode,
                cam=preset.cam, iters_quarter=preset.iters_quarter, iters_full=preset.iters_full)


_LOCK = threading.Lock()
_CACHE: dict[str, KernelLibrary] = {}


def load(kind: Optional[str] = None) -> KernelLibrary:
    """The kernel library, loaded once per process.

    Args:
        kind (str | None): "cpu" or "cuda" to insist on one build; None picks the CUDA build
            when it loads and reports a device (cudaGetDeviceCount through the library; error 35
            means no driver), else the CPU build. ``$PSD_KERNEL_LIB`` overrides the search.
            "cuda-emulation" loads the CUDA library built on the emulated CUDA runtime
            (``build.py --cuda-emulation``, a test fixture): only when asked for by name, never by
            the search, and regardless of ``$PSD_KERNEL_LIB``.

    Returns:
        KernelLibrary.

    Raises:
        BackendUnavailable: no usable library; the message names the fix.
    """
    key = kind or "auto"
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        env = _env_kernel_lib()
        if kind == "cuda-emulation":
            path = BUILD_DIR / CUDA_EMU_LIB
            if not path.is_file():
                raise BackendUnavailable(f"no emulated CUDA library {path}; build it with "
                                         "`python build.py --cuda-emulation`")
            lib = KernelLibrary(path)
            if not lib.cuda_emulated:
                raise BackendUnavailable(f"{path} is not an emulated CUDA build; rebuild it with "
                                         "`python build.py --cuda-emulation`")
            _CACHE[key] = lib
            return lib
        if kind not in (None, "cpu", "cuda"):
            raise InputError(f"unknown kernel library kind {kind!r}; use 'cpu', 'cuda' or 'cuda-emulation'")
        if env is not None:
            if not env.is_file():
                raise BackendUnavailable(f"PSD_KERNEL_LIB={env} does not exist; unset it or run `python build.py`")
            lib = KernelLibrary(env)
        else:
            lib = None
            cuda_path, cpu_path = BUILD_DIR / CUDA_LIB, BUILD_DIR / CPU_LIB
            if kind in (None, "cuda") and cuda_path.is_file():
                try:
                    cand = KernelLibrary(cuda_path)
                    if kind == "cuda" or cand.cuda_device_count()[0] > 0:
                        lib = cand
                except BackendUnavailable:
                    if kind == "cuda":
                        raise
            if lib is None and kind in (None, "cpu") and cpu_path.is_file():
                lib = KernelLibrary(cpu_path)
            if lib is None:
                raise BackendUnavailable(f"no psdrt kernel library ({kind or 'cpu or cuda'}) in {BUILD_DIR}; "
                                         "run `python build.py` (or set PSD_KERNEL_LIB)")
        _CACHE[key] = lib
        return lib
