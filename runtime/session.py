"""The C session API (``psd_session_*`` in ``runtime/capi/include/psd/psd.h``) from Python.

``CSession`` runs the whole pipeline (preprocess -> encoder -> alignment + propagation -> head ->
post-processing, or the weight-free guided mode) inside the kernel library, exactly what a C/C++
embedder calls, through ctypes: no torch, and no onnxruntime Python package at run time (the
library dlopens ``libonnxruntime.so`` itself). Results match ``Pipeline`` (same artefacts, same
frame): ``tests/capi/test_session_parity.py`` states the tolerance.

    from psdrt.runtime.session import CSession
    sess = CSession.from_artifacts("psd_nyu")      # checks manifest.json like Pipeline.from_artifacts
    depth = sess(rgb, sparse, K).depth             # DepthResult, float32 metres

Device frames (a session created with ``device="cuda"`` on the CUDA library): ``enqueue(rgb,
sparse, K)`` takes CUDA arrays (``__cuda_array_interface__`` or DLPack: PyTorch, CuPy, ...) and
returns a ``DeviceArray`` without a host round trip and without synchronising
(``psd_session_enqueue``); see ``CSession.enqueue`` for the stream and lifetime rules.

Errors: the C statuses become the usual exceptions (``ArtifactError``, ``InputError``,
``ShapeError``, ``BackendUnavailable``, ``PsdError``) with the library's message.

Thread safety: a CSession may be called from several threads; the C session serialises calls on
one session (it reuses its buffers), and distinct sessions run in parallel.

CUDA graphs: ``CSession(..., device="cuda", cuda_graph=True)`` captures the device frames of
``CSession.enqueue`` into a CUDA graph and replays them (psd.h, "CUDA graphs");
``graph_info()`` says what happened. Tested under the emulated CUDA runtime only.

Tests only: ``test_fixture_backend()`` (the ``PSD_BACKEND_TEST_FIXTURE`` environment variable)
replaces the networks of the sessions created inside it by a fixed function of their inputs
(``runtime/capi/test_backend.cpp``), so the psd and propagate paths run where no ONNX Runtime
provider can (the CUDA emulator). Never in deployment: its output means nothing.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import os
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import _capi, _cuda
from .errors import ArtifactError, BackendUnavailable, InputError, OutOfMemoryError, PsdError, ShapeError
from .guided import GuidedParams
from .result import DepthResult

__all__ = ["CSession", "DeviceArray", "SESSION_ABI_VERSION", "STATUS_NAMES", "session_library", "preset_from_c",
           "projection_header", "test_fixture_backend", "GRAPH_STATES"]

SESSION_ABI_VERSION = 1

#: psd_status_t (psd.h), including the session statuses
STATUS_NAMES = dict(_capi.STATUS)
STATUS_NAMES.update({9: "PSD_E_UNSUPPORTED", 10: "PSD_E_ARTIFACT", 11: "PSD_E_BACKEND_UNAVAILABLE",
                     12: "PSD_E_BACKEND"})
_ERRORS = {1: InputError, 2: InputError, 3: ShapeError, 5: OutOfMemoryError, 6: BackendUnavailable,
           9: BackendUnavailable, 10: ArtifactError, 11: BackendUnavailable}

MODES = {"auto": 0, "psd": 1, "propagate": 2, "guided": 3}
MODE_NAMES = {v: k for k, v in MODES.items()}
PRECISIONS = {"fp32": 0, "fp16": 1, "int8": 2}
DEVICES = {"cpu": 0, "cuda": 1}
STAGES = ("validate", "preprocess", "encoder", "propagation", "head", "post", "guided", "total")
FRAME_BGR = 1
DTYPE_FLOAT64, DTYPE_FLOAT32 = 0, 1
#: psd_cuda_graph_state_t
GRAPH_STATES = ("off", "armed", "ready", "fallback")
#: the test fixture backend's variants (PSD_BACKEND_TEST_FIXTURE, runtime/capi/test_backend.cpp)
TEST_FIXTURE_VARIANTS = ("1", "refuse-capture", "sync-in-run")

_i64, _u32, _i32, _u64, _f64 = C.c_int64, C.c_uint32, C.c_int32, C.c_uint64, C.c_double


class Preset(C.Structure):
    """psd_preset."""

    _fields_ = [("struct_size", _u32), ("mode", _i32), ("camera", _i32), ("k", _i32), ("rate", _f64),
                ("candidates", _i64), ("post_iters", _i32), ("iters_quarter", _i32), ("iters_full", _i32),
                ("reserved", _i32), ("min_depth", _f64), ("max_depth", _f64), ("name", C.c_char * 32)]


class SessionOptions(C.Structure):
    """psd_session_options."""

    _fields_ = [("struct_size", _u32), ("device", _i32), ("precision", _i32), ("mode", _i32),
                ("backend", _i32), ("intra_op_threads", _i32), ("device_id", _i32), ("fm_lower", _i32),
                ("seed", _u64), ("precision_name", C.c_char_p), ("ort_library", C.c_char_p),
                ("preset", C.c_char_p), ("preset_override", C.POINTER(Preset)),
                ("guided_levels", _i32), ("guided_iterations", _i32), ("guided_colour_scale", _f64),
                ("guided_channels", _i32), ("artifact_flags", _u32),
                ("guided_projection_w", C.POINTER(C.c_float)), ("guided_projection_b", C.POINTER(C.c_float)),
                ("guided_params", C.POINTER(_capi.GuidedParamsC)),
                ("cuda_graph", _i32), ("reserved_options", _i32)]


class SessionInfo(C.Structure):
    """psd_session_info."""

    _fields_ = [("struct_size", _u32), ("mode", _i32), ("device", _i32), ("precision", _i32),
                ("height", _i64), ("width", _i64), ("fm_height", _i64), ("fm_width", _i64),
                ("preset", Preset), ("backend", C.c_char_p), ("artifact_dir", C.c_char_p),
                ("gate_approved", _i32), ("head_precision", _i32),
                ("cuda_graph", _i32), ("graph_nodes", _i32), ("graph_captures", _i64), ("graph_replays", _i64),
                ("graph_fallback", C.c_char_p)]


#: psd_artifacts_read flags
ARTIFACTS_SKIP_SHA256, ARTIFACTS_ALLOW_UNGATED = 1, 2


class ArtifactInfo(C.Structure):
    """psd_artifact_info."""

    _fields_ = [("struct_size", _u32), ("mode", _i32), ("height", _i64), ("width", _i64), ("fm_lower", _i64),
                ("gate_approved", _i32), ("preprocess", _i32), ("preset", C.c_char * 32),
                ("encoder_precision", C.c_char * 8), ("head_precision", C.c_char * 8),
                ("encoder_path", C.c_char * 4096), ("head_path", C.c_char * 4096), ("gate_failures", C.c_char * 1024)]


class FrameIn(C.Structure):
    """psd_frame_in."""

    _fields_ = [("struct_size", _u32), ("flags", _u32), ("height", _i64), ("width", _i64),
                ("rgb", C.c_void_p), ("rgb_stride", _i64), ("sparse", C.c_void_p), ("sparse_stride", _i64),
                ("K", C.c_void_p), ("K_dtype", _i32), ("reserved", _i32)]


class FrameOut(C.Structure):
    """psd_frame_out."""

    _fields_ = [("struct_size", _u32), ("reserved", _u32), ("depth", C.c_void_p), ("depth_stride", _i64),
                ("depth_mm", C.c_void_p), ("depth_mm_stride", _i64), ("points", _i64),
                ("alignment_degenerate", _i32), ("reserved2", _i32), ("timings_ms", _f64 * len(STAGES)),
                ("rejected_range", _i64), ("rejected_outliers", _i64), ("clamped", _i64)]


_vp = C.c_void_p
_SIGNATURES = {
    "psd_session_abi_version": (_u32, []),
    "psd_last_error": (C.c_char_p, []),
    "psd_status_string": (C.c_char_p, [_i32]),
    "psd_preset_get": (_i32, [C.c_char_p, C.POINTER(Preset)]),
    "psd_session_options_init": (_i32, [C.POINTER(SessionOptions)]),
    "psd_session_create": (_i32, [C.c_char_p, C.POINTER(SessionOptions), C.POINTER(_vp)]),
    "psd_session_destroy": (None, [_vp]),
    "psd_session_input_shape": (_i32, [_vp, C.POINTER(_i64), C.POINTER(_i64)]),
    "psd_session_output_shape": (_i32, [_vp, C.POINTER(_i64), C.POINTER(_i64)]),
    "psd_session_get_info": (_i32, [_vp, C.POINTER(SessionInfo)]),
    "psd_session_run": (_i32, [_vp, C.POINTER(FrameIn), C.POINTER(FrameOut)]),
    "psd_session_enqueue": (_i32, [_vp, C.POINTER(FrameIn), C.POINTER(FrameOut), _vp]),
    "psd_session_timings": (_i32, [_vp, C.POINTER(_f64), _i32]),
    "psd_artifacts_read": (_i32, [C.c_char_p, C.c_char_p, _i32, _i32, _u32, C.POINTER(ArtifactInfo)]),
    "psd_cuda_stream_wait": (_i32, [_vp, _vp]),
}

_LOCK = threading.Lock()
_LIBS: dict = {}
_KERNELS: dict = {}

#: the device-memory output of CSession.enqueue (runtime._cuda.DeviceArray)
DeviceArray = _cuda.DeviceArray

_HOST_HINT = ("pass host frames to session(rgb, sparse, K) instead, or move them to the GPU first (PyTorch "
              "t.cuda(), cupy.asarray)")
_DEVICE_HINT = ("device frames go to session.enqueue(rgb, sparse, K) on a session created with device='cuda', "
                "or copy them to the host first (t.cpu(), cupy.asnumpy)")


def _kernel_library(path: str) -> "_capi.KernelLibrary":
    """The kernel binding over the session's library file (its device-array parsing and
    psd_cuda_stream_wait), one per file."""
    with _LOCK:
        if path not in _KERNELS:
            _KERNELS[path] = _capi.KernelLibrary(path)
        return _KERNELS[path]


def session_library(path: Union[str, os.PathLike, None] = None) -> C.CDLL:
    """The kernel library with the session API bound (``runtime._capi.load()``'s by default).

    Raises:
        BackendUnavailable: no library, or one built without the session API (``--no-session``)
            or with another session ABI; the message names the fix.
    """
    p = str(Path(path) if path is not None else _capi.load().path)
    with _LOCK:
        if p in _LIBS:
            return _LIBS[p]
        try:
            lib = C.CDLL(p)
        except OSError as e:
            raise BackendUnavailable(f"cannot load {p}: {e}; rebuild it with `python build.py`") from e
        if not hasattr(lib, "psd_session_create"):
            raise BackendUnavailable(f"{p} was built without the session API; rebuild it with `python build.py` "
                                     "(without --no-session)")
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        ver = int(lib.psd_session_abi_version())
        if ver != SESSION_ABI_VERSION:
            raise BackendUnavailable(f"{p} has session ABI version {ver}, this binding needs "
                                     f"{SESSION_ABI_VERSION}; rebuild with `python build.py`")
        _LIBS[p] = lib
        return lib


@contextlib.contextmanager
def test_fixture_backend(variant: str = "1"):
    """TESTS ONLY: sessions created inside this block run the test fixture backend instead of
    their networks (``PSD_BACKEND_TEST_FIXTURE``, read by ``psd_session_create``): a fixed
    function of the inputs with the ONNX files' tensor shapes, on the session's device. Not
    thread-safe (it sets a process environment variable); restores the previous value.

    Args:
        variant (str): ``"1"`` (capturable), ``"refuse-capture"`` (reports that it cannot be
            captured into a CUDA graph) or ``"sync-in-run"`` (synchronises the stream inside its
            run, which breaks a capture). Defaults to "1".

    Raises:
        InputError: an unknown variant.
    """
    if variant not in TEST_FIXTURE_VARIANTS:
        raise InputError(f"unknown test fixture variant {variant!r}; use one of {', '.join(TEST_FIXTURE_VARIANTS)}")
    old = os.environ.get("PSD_BACKEND_TEST_FIXTURE")
    os.environ["PSD_BACKEND_TEST_FIXTURE"] = variant
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PSD_BACKEND_TEST_FIXTURE", None)
        else:
            os.environ["PSD_BACKEND_TEST_FIXTURE"] = old


def _raise(lib, status: int, what: str = "") -> None:
    if status == 0:
        return
    msg = (lib.psd_last_error() or b"").decode("utf-8", "replace")
    if status in _ERRORS:  # the exception's type says what the status name would: the message as read_artifacts'
        raise _ERRORS[status](f"{what}{msg}")
    raise PsdError(f"{what}{STATUS_NAMES.get(status, f'status {status}')}: {msg}")


#: psd_backend_t of psd_artifacts_read's selection
_ARTIFACT_BACKENDS = {"onnxruntime": 1, "tensorrt": 2}


def read_artifacts(directory, precision: str = "fp32", mode: Optional[str] = None, latency_only: bool = False,
                   library=None, backend: str = "onnxruntime") -> dict:
    """``psd_artifacts_read``: the checks of a ``psdrt build`` directory (the rules in psd.h, the
    same the C sessions apply) and what it selects for ``precision`` (``"fp32"``, ``"fp16"``,
    ``"int8"`` or ``"ENC+HEAD"`` such as ``"int8+fp32"``).

    Args:
        latency_only (bool): also take artefacts that failed the correctness gate (for timing
            only; ``gate_approved`` is then False and ``gate_failures`` says what failed).
        backend (str): which artefacts to select, ``"onnxruntime"`` (ONNX files, the default) or
            ``"tensorrt"`` (the manifest's engines).

    Returns:
        dict: mode, size (H, W), fm_lower, preset, preprocess (``runtime.preprocess`` method),
        encoder/head precision and path (Path or None), gate_approved, gate_failures.

    Raises:
        ArtifactError: the directory breaks a rule (the message names it and the fix).
        BackendUnavailable: the library was built without the session API.
    """
    lib = session_library(library)
    info = ArtifactInfo()
    info.struct_size = C.sizeof(ArtifactInfo)
    if mode is not None and mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use one of psd, propagate, guided")
    if backend not in _ARTIFACT_BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(_ARTIFACT_BACKENDS)}")
    flags = ARTIFACTS_ALLOW_UNGATED if latency_only else 0
    st = lib.psd_artifacts_read(str(directory).encode(), str(precision).encode(), _ARTIFACT_BACKENDS[backend],
                                MODES[mode or "auto"], flags, C.byref(info))
    if st:  # the library's message as is: it names the rule and the fix
        raise _ERRORS.get(st, PsdError)((lib.psd_last_error() or b"").decode("utf-8", "replace"))
    head = info.head_path.decode()
    return {"mode": MODE_NAMES[info.mode], "size": (int(info.height), int(info.width)), "fm_lower": int(info.fm_lower),
            "preset": info.preset.decode(), "encoder_precision": info.encoder_precision.decode(),
            "head_precision": info.head_precision.decode() or None,
            "encoder": Path(info.encoder_path.decode()) if info.encoder_path else None,
            "head": Path(head) if head else None, "gate_approved": bool(info.gate_approved),
            "preprocess": ("official", "bicubic")[info.preprocess],
            "gate_failures": info.gate_failures.decode()}


def preset_from_c(name: str, library=None) -> dict:
    """``psd_preset_get(name)`` as a dict of the ``PropagationPreset`` fields (mode/cam spelled as in Python)."""
    lib = session_library(library)
    p = Preset()
    p.struct_size = C.sizeof(Preset)
    _raise(lib, lib.psd_preset_get(str(name).encode(), C.byref(p)))
    modes = {v: k for k, v in _capi.MODES.items()}
    cams = {v: k for k, v in _capi.CAMERAS.items()}
    return dict(name=p.name.decode(), k=p.k, rate=p.rate, candidates=p.candidates, mode=modes[p.mode],
                post_iters=p.post_iters, cam=cams[p.camera], iters_quarter=p.iters_quarter,
                iters_full=p.iters_full, min_depth=p.min_depth, max_depth=p.max_depth)


def projection_header() -> str:
    """Text of ``runtime/capi/guided_projection.h``: ``rff_projection(GuidedParams())`` as exact
    float32 hex literals (the projection sessions use by default). Regenerate the file with
    ``python -c "from psdrt.runtime.session import projection_header as p; print(p(), end='')"
    > runtime/capi/guided_projection.h`` if the defaults of ``GuidedParams`` change."""
    from .guided import rff_projection

    p = GuidedParams()
    w, b = rff_projection(p)

    def rows(values):
        vals = [float(np.float32(v)).hex() + "f" for v in np.asarray(values, np.float32).reshape(-1)]
        return ["    " + ", ".join(vals[i:i + 4]) + "," for i in range(0, len(vals), 4)]

    lines = [
        "// The default random-Fourier projection of the guided mode: psdrt.runtime.guided.rff_projection(",
        f"// GuidedParams()) (seed {p.seed}, {p.channels} channels; W ~ N(0, 1) then b ~ U(0, 2 pi) from "
        "numpy.random.default_rng),",
        "// as exact float32 hex literals. Sessions use it when psd_session_options carries no projection.",
        "// Generated by psdrt.runtime.session.projection_header(); tests/capi/test_session_guided.py checks",
        "// that this file is its current output.",
        "#pragma once", "", "namespace psd {", "namespace capi {", "",
        f"constexpr int kGuidedDefaultChannels = {p.channels};", "", "// W: 3 x C, row-major",
        f"constexpr float kGuidedDefaultW[3 * {p.channels}] = {{", *rows(w), "};", "",
        f"constexpr float kGuidedDefaultB[{p.channels}] = {{", *rows(b), "};", "",
        "}  // namespace capi", "}  // namespace psd", ""]
    return "\n".join(lines)


class CSession:
    """One ``psd_session``: the whole pipeline in the C library.

    Args:
        artifact_dir (path, optional): a ``psdrt build`` directory; None for the guided mode.
        mode (str, optional): ``"psd"``, ``"propagate"`` or ``"guided"``. Defaults to None: the
            manifest's mode, or guided without a directory.
        precision (str): ``"fp32"``, ``"fp16"``, ``"int8"``, or ``"ENC+HEAD"`` for the encoder and
            the head apart (``"int8+fp32"``). Defaults to "fp32".
        preset (str, optional): preset name overriding the manifest's. Defaults to None.
        seed (int): seed of the kNN subsets. Defaults to 0.
        threads (int, optional): ONNX Runtime intra-op threads. Defaults to None (its default).
        device (str): ``"cpu"`` or ``"cuda"`` (the ORT CUDA provider and the CUDA kernels; then
            ``enqueue`` takes device frames). Defaults to "cpu".
        device_id (int): CUDA device ordinal of a ``"cuda"`` session. Defaults to 0.
        ort_library (path, optional): ``libonnxruntime.so*`` to load. Defaults to None (the
            library's search: ``$PSD_ONNXRUNTIME_LIB``, the wheel recorded at build time, the system).
        fm_lower (int, optional): encoder input lower bound. Defaults to None (the manifest's).
        guided (GuidedParams): guided-mode parameters. The defaults use the projection built into
            the library; other channels/seeds pass ``rff_projection(guided)``.
        library (path, optional): the kernel library. Defaults to ``runtime._capi.load()``'s, the
            CUDA build (``load("cuda")``) for ``device="cuda"``.
        latency_only (bool): load artefacts that failed the correctness gate, for timing only
            (``gate_approved`` is False, a warning is logged, ``info['gate_approved']`` says it).
            Defaults to False.
        cuda_graph (bool): capture ``enqueue``'s device frames into a CUDA graph and replay them
            (``device="cuda"`` only; psd.h "CUDA graphs"; ``graph_info()`` reports). Defaults to
            False.

    Raises:
        ArtifactError, BackendUnavailable, InputError: as ``psd_session_create`` reports them.
    """

    def __init__(self, artifact_dir=None, *, mode: Optional[str] = None, precision: str = "fp32",
                 preset: Optional[str] = None, seed: int = 0, threads: Optional[int] = None,
                 device: str = "cpu", ort_library=None, fm_lower: Optional[int] = None,
                 guided: GuidedParams = GuidedParams(), library=None, latency_only: bool = False,
                 device_id: int = 0, cuda_graph: bool = False) -> None:
        self._handle = None
        if mode is not None and mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; use one of psd, propagate, guided")
        if device not in DEVICES:
            raise InputError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
        if library is None and device == "cuda":
            library = _capi.load("cuda").path
        self._lib = session_library(library)
        self._path = str(Path(library) if library is not None else _capi.load().path)
        o = SessionOptions()
        _raise(self._lib, self._lib.psd_session_options_init(C.byref(o)))
        o.device = DEVICES[device]
        o.device_id = int(device_id)
        o.mode = MODES[mode or "auto"]
        self._keep = [str(precision).encode()]
        o.precision_name = self._keep[0]
        o.seed = int(seed) & (2**64 - 1)
        o.intra_op_threads = int(threads or 0)
        o.fm_lower = int(fm_lower or 0)
        o.artifact_flags = ARTIFACTS_ALLOW_UNGATED if latency_only else 0
        o.cuda_graph = 1 if cuda_graph else 0
        if ort_library is not None:
            self._keep.append(str(ort_library).encode())
            o.ort_library = self._keep[-1]
        if preset is not None:
            self._keep.append(str(preset).encode())
            o.preset = self._keep[-1]
        if not isinstance(guided, GuidedParams):
            raise InputError(f"guided must be a psdrt.runtime.guided.GuidedParams, got {type(guided).__name__}")
        # the kernel binding's one translation of GuidedParams to psd_guided_params
        prm, keep = _capi.KernelLibrary._guided_params(guided, None, 0)
        self._keep += [prm, keep]
        o.guided_params = C.pointer(prm)
        handle = _vp()
        d = None if artifact_dir is None else str(artifact_dir).encode()
        _raise(self._lib, self._lib.psd_session_create(d, C.byref(o), C.byref(handle)))
        self._handle = handle
        info = SessionInfo()
        info.struct_size = C.sizeof(SessionInfo)
        _raise(self._lib, self._lib.psd_session_get_info(self._handle, C.byref(info)))
        self.mode = MODE_NAMES[info.mode]
        #: "cpu" or "cuda" (then ``enqueue`` takes device frames) and the CUDA device ordinal
        self.device = {v: k for k, v in DEVICES.items()}[info.device]
        self.device_id = int(device_id)
        names = {v: k for k, v in PRECISIONS.items()}
        self.precision = names[info.precision]
        if self.mode == "psd" and info.head_precision != info.precision:
            self.precision = f"{self.precision}+{names[info.head_precision]}"
        #: False for a latency-only session over artefacts that failed the correctness gate
        self.gate_approved = bool(info.gate_approved)
        if not self.gate_approved:
            import logging

            logging.getLogger(__name__).warning(
                "LATENCY-ONLY session over %s: artefacts that FAILED the correctness gate are loaded; "
                "their output is not checked and must not be used", artifact_dir)
        self.backend = (info.backend or b"").decode()
        self.preset_name = info.preset.name.decode()
        #: seed of the kNN subsets (presets with rate < 1 or a candidate cap)
        self.seed = int(seed)
        self.fm_size = (int(info.fm_height), int(info.fm_width)) if info.fm_height else None
        #: (H, W) the artefacts were built for; None accepts any frame size (guided)
        self.working_size = (int(info.height), int(info.width)) if info.height else None

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_artifacts(cls, directory, precision: str = "fp32", **kwargs) -> "CSession":
        """Session over a ``psdrt build`` directory (checks as ``Pipeline.from_artifacts``)."""
        return cls(directory, precision=precision, **kwargs)

    @classmethod
    def guided(cls, params: GuidedParams = GuidedParams(), **kwargs) -> "CSession":
        """Weight-free guided mode, any frame size (``Pipeline('guided')``)."""
        return cls(None, mode="guided", guided=params, **kwargs)

    @property
    def preset(self):
        """The session's propagation preset (``psdrt.runtime.presets.PropagationPreset``)."""
        from .presets import get_preset

        return get_preset(self.preset_name)

    def close(self) -> None:
        """Destroy the C session (idempotent)."""
        if self._handle:
            self._lib.psd_session_destroy(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _rgb(rgb) -> np.ndarray:
        im = _capi.host_array(rgb, "RGB image", _DEVICE_HINT)
        if im.ndim != 3 or im.shape[2] != 3:
            raise ShapeError(f"RGB image must be H x W x 3, got shape {im.shape}"
                             + ("; drop the alpha channel (img[..., :3])" if im.ndim == 3 and im.shape[2] == 4 else ""))
        if im.dtype != np.uint8:
            raise InputError(f"RGB image must be uint8, got {im.dtype}; convert with "
                             "np.clip(img * 255, 0, 255).astype(np.uint8) for [0, 1] floats")
        # rows may be strided (crops, views); pixels must be packed
        if not (im.strides[2] == 1 and im.strides[1] == 3 and im.strides[0] > 0):
            im = np.ascontiguousarray(im)
        return im

    @staticmethod
    def _sparse(sparse) -> np.ndarray:
        sp = _capi.host_array(sparse, "sparse depth", _DEVICE_HINT)
        if sp.ndim == 3 and 1 in (sp.shape[0], sp.shape[-1]):
            sp = sp.reshape(sp.shape[1:] if sp.shape[0] == 1 else sp.shape[:2])
        if sp.ndim != 2:
            raise ShapeError(f"sparse depth must be H x W, got shape {sp.shape}")
        if not np.issubdtype(sp.dtype, np.floating):
            raise InputError(f"sparse depth must be float metres, got dtype {sp.dtype}; for a 16-bit PNG divide "
                             "by its scale first (e.g. psdrt.runtime.io.read_depth(path, scale=256))")
        if sp.dtype != np.float32 or not (sp.strides[1] == 4 and sp.strides[0] > 0):
            sp = np.ascontiguousarray(sp, dtype=np.float32)
        return sp

    @staticmethod
    def _K(K) -> np.ndarray:
        """K as the C-contiguous 3x3 float64 host matrix psd_frame_in takes (its values are checked
        by the library: psd_check_intrinsics)."""
        try:
            Kd = np.ascontiguousarray(_capi.host_array(K, "intrinsics K", "K is host memory in every call: pass a "
                                                       "NumPy 3x3 array"), dtype=np.float64)
        except (TypeError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError("intrinsics K must be a numeric 3x3 matrix [[fx,0,cx],[0,fy,cy],[0,0,1]]") from None
        if Kd.shape != (3, 3):
            raise InputError(f"intrinsics K must be 3x3, got shape {Kd.shape}; build it with "
                             "intrinsics_matrix(fx, fy, cx, cy)")
        return Kd

    @staticmethod
    def _same_size(rgb_shape, hw) -> None:
        h, w = hw
        if tuple(rgb_shape[:2]) != (h, w):
            raise ShapeError(f"RGB is {rgb_shape[1]}x{rgb_shape[0]} but sparse depth is {w}x{h}; project the sparse "
                             "points into the image at the image's resolution (or resize the image and scale K)")

    def __call__(self, rgb, sparse, K, bgr: bool = False, return_stages: bool = False) -> DepthResult:
        """Complete one frame of host memory (``Pipeline.__call__``'s contract; ``return_stages``
        is not supported). ``rgb`` and ``sparse`` are NumPy arrays or CPU DLPack objects (a
        PyTorch CPU tensor: read in place through ``np.from_dlpack``, no copy when the rows are
        packed); device arrays go to ``enqueue``.

        Returns:
            DepthResult: ``depth`` float32 metres (finite); ``info``: points, alignment, preset,
            ``timings_ms`` per stage as measured inside the library.
        """
        if not self._handle:
            raise PsdError("this CSession is closed")
        if return_stages:
            raise InputError("CSession does not return intermediate stages; open the directory with "
                             "Pipeline.from_artifacts(dir, engine='python') and call it with return_stages=True")
        im, sp = self._rgb(rgb), self._sparse(sparse)
        Kd = self._K(K)
        h, w = sp.shape
        self._same_size(im.shape, (h, w))
        depth = np.empty((h, w), np.float32)
        fin = FrameIn(C.sizeof(FrameIn), FRAME_BGR if bgr else 0, h, w, im.ctypes.data, im.strides[0],
                      sp.ctypes.data, sp.strides[0], Kd.ctypes.data, DTYPE_FLOAT64, 0)
        fout = FrameOut()
        fout.struct_size = C.sizeof(FrameOut)
        fout.depth, fout.depth_stride = depth.ctypes.data, depth.strides[0]
        _raise(self._lib, self._lib.psd_session_run(self._handle, C.byref(fin), C.byref(fout)))
        t = {name: float(fout.timings_ms[i]) for i, name in enumerate(STAGES)}
        keep = {"guided": ("guided",), "propagate": ("preprocess", "encoder", "propagation"),
                "psd": ("preprocess", "encoder", "propagation", "head", "post")}[self.mode]
        timings = {k: t[k] for k in ("validate",) + keep + ("total",)}
        info = {"points": int(fout.points), "alignment": "degenerate" if fout.alignment_degenerate else "ok",
                "preset": self.preset_name, "timings_ms": timings, "engine": "c", "gate_approved": self.gate_approved,
                "rejected": {"range": int(fout.rejected_range), "outliers": int(fout.rejected_outliers)},
                "clamped": int(fout.clamped)}
        return DepthResult(depth=depth, mode=self.mode, stages={}, info=info)

    def _info(self) -> SessionInfo:
        if not self._handle:
            raise PsdError("this CSession is closed")
        info = SessionInfo()
        info.struct_size = C.sizeof(SessionInfo)
        _raise(self._lib, self._lib.psd_session_get_info(self._handle, C.byref(info)))
        return info

    def timings(self) -> dict:
        """Per-stage times of the session's last call, ms (``psd_session_timings``): for a CUDA
        session this waits until that call's device work has run (that work only) and reads its
        CUDA events, so it is how ``enqueue``'s stage times are read. Stages the mode does not run
        are 0; a replayed CUDA graph fills only ``validate`` and ``total`` (the graph runs as one).

        Returns:
            dict: ``{stage: ms}`` over ``STAGES``.
        """
        if not self._handle:
            raise PsdError("this CSession is closed")
        buf = (C.c_double * len(STAGES))()
        _raise(self._lib, self._lib.psd_session_timings(self._handle, buf, len(STAGES)))
        return {name: float(buf[i]) for i, name in enumerate(STAGES)}

    def graph_info(self) -> dict:
        """The session's CUDA graph (``psd_session_info``): ``state`` (``"off"``, ``"armed"``: no
        graph yet, ``"ready"``: frames of its geometry replay it, ``"fallback"``: plain launches),
        ``nodes`` of the current graph, ``captures``, ``replays`` (frames that replayed an already
        captured graph) and ``fallback`` (why plain launches, else "")."""
        i = self._info()
        return {"state": GRAPH_STATES[i.cuda_graph], "nodes": int(i.graph_nodes), "captures": int(i.graph_captures),
                "replays": int(i.graph_replays), "fallback": (i.graph_fallback or b"").decode()}

    def enqueue(self, rgb, sparse, K, out=None, stream=None, bgr: bool = False):
        """Complete one frame held in CUDA device memory, asynchronously (``psd_session_enqueue``):
        no copy through the host and no host synchronisation; the call returns once the work is
        enqueued.

        Args:
            rgb: (H, W, 3) uint8 CUDA array (RGB, or BGR with ``bgr=True``): any object with
                ``__cuda_array_interface__`` (CuPy, Numba, PyTorch, a ``DeviceArray``) or DLPack
                on a CUDA device. Rows may be padded (a pitched allocation, a crop of a larger
                image): the row pitch is passed to the library; pixels within a row must be packed.
            sparse: (H, W) float32 CUDA array, metres, 0 = missing (rows may be padded).
            K: 3x3 pinhole intrinsics at H x W, host memory (NumPy), as for ``__call__``.
            out (optional): (H, W) float32 writable CUDA array for the depth (rows may be
                padded). Defaults to None: a new ``DeviceArray``.
            stream (optional): the stream to enqueue on: a cudaStream_t (int), a
                ``torch.cuda.Stream`` or a CuPy stream. Defaults to None: the calling thread's
                per-thread default stream (cudaStreamPerThread, the protocols' 2).
            bgr (bool): ``rgb`` holds B, G, R. Defaults to False.

        Streams: the inputs' producers are waited on, on the device: a CUDA array interface v3
        ``stream`` makes ``stream`` wait for it (psd_cuda_stream_wait); DLPack producers are asked
        for ``stream`` (the DLPack handshake) and order their work before it. The frame then runs
        after the session's previous call (psd.h, "Streams and ordering"). The result is valid
        once ``stream`` has run the work: ``DeviceArray.copy_to_host()`` synchronises that stream,
        and consumers through DLPack (``torch.from_dlpack``) or the CUDA array interface (its
        ``stream`` key) are ordered after it on the device. Data-dependent checks (NaN, no sparse
        point) are not made on this path (they would need a host sync), and no point count or
        timings are returned (``psd_session_timings``). With ``stream=None`` the output's stream
        is 2, the per-thread default stream of the thread that called ``enqueue``: consume it
        from that thread, or pass an explicit stream.

        Lifetime: ``rgb``, ``sparse`` and ``out`` must stay alive until ``stream`` has run the
        work; the returned ``DeviceArray`` keeps ``rgb`` and ``sparse`` alive for its own
        lifetime. Without ``out`` every call returns fresh device memory (never reused by the
        session), owned by the ``DeviceArray`` and freed with it; pass ``out=`` to reuse your
        own buffer across frames.

        Returns:
            DeviceArray: the (H, W) float32 depth (metres), ``stream`` set to the stream the work
            is on; or ``out`` itself when given.

        Raises:
            BackendUnavailable: a CPU session (create it with ``device="cuda"`` on the CUDA
                library), or a CUDA error.
            InputError: host arrays (use ``session(rgb, sparse, K)``), wrong dtypes, arrays on
                another device than the session's, a read-only ``out``, a bad K or stream.
            ShapeError: shapes that do not match each other or the working size, or rows that
                are not packed (the message names ``.contiguous()`` / ``cupy.ascontiguousarray``).
        """
        if not self._handle:
            raise PsdError("this CSession is closed")
        if self.device != "cuda":
            raise BackendUnavailable("enqueue takes CUDA device frames and needs a session created with "
                                     "device='cuda' on the CUDA library (CSession(..., device='cuda') or "
                                     "Pipeline.from_artifacts(dir, device='cuda')); for host frames call "
                                     "session(rgb, sparse, K)")
        klib = _kernel_library(self._path)
        a = klib._arg(rgb, "rgb", np.uint8, stream=stream, row_dim=-3, host_hint=_HOST_HINT)
        sp = klib._arg(sparse, "sparse", np.float32, stream=stream, row_dim=-2, host_hint=_HOST_HINT)
        if len(a.shape) != 3 or a.shape[2] != 3:
            raise ShapeError(f"rgb must be (H, W, 3) uint8, got shape {tuple(a.shape)}"
                             + ("; drop the alpha channel (img[..., :3])" if len(a.shape) == 3 and a.shape[2] == 4
                                else ""))
        h, w = _capi._plane(sp, "sparse")
        self._same_size(a.shape, (h, w))
        Kd = self._K(K)
        o = None
        if out is not None:
            o = klib._arg(out, "out", np.float32, writable=True, stream=stream, row_dim=-2, host_hint=_HOST_HINT)
            if _capi._plane(o, "out") != (h, w):
                raise ShapeError(f"out must be ({h}, {w}) float32 like sparse, got shape {tuple(o.shape)}")
        where = {x.device_id for x in (a, sp, o) if x is not None and x.device_id is not None}
        if where - {self.device_id}:
            raise InputError(f"the frame's arrays are on CUDA device(s) {sorted(where)} but this session runs on "
                             f"device {self.device_id}; move them there (t.to('cuda:{self.device_id}')) or create "
                             f"the session with device_id={min(where - {self.device_id})}")
        if o is None:
            res = DeviceArray((h, w), _capi.consumer_stream(stream), _cuda.runtime_for(self._path), klib.stream_wait,
                              self.device_id, keep=(a.keep, sp.keep))
            optr, opitch = res.ptr, 4 * w
        else:
            res, optr, opitch = out, o.ptr, o.pitch
        fin = FrameIn(C.sizeof(FrameIn), FRAME_BGR if bgr else 0, h, w, a.ptr, a.pitch, sp.ptr, sp.pitch,
                      Kd.ctypes.data, DTYPE_FLOAT64, 0)
        fout = FrameOut()
        fout.struct_size = C.sizeof(FrameOut)
        fout.depth, fout.depth_stride = optr, opitch
        st = self._lib.psd_session_enqueue(self._handle, C.byref(fin), C.byref(fout), _capi.stream_handle(stream))
        if st and o is None:
            res.close()
        _raise(self._lib, st)
        return res

    def __repr__(self) -> str:
        size = "any size" if self.working_size is None else f"{self.working_size[0]}x{self.working_size[1]}"
        return f"CSession(mode={self.mode!r}, {size}, preset={self.preset_name!r}, backend={self.backend!r})"
