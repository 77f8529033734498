"""The Python pipeline: (RGB, sparse depth, K) -> dense metric depth, one call per frame.

preprocess -> encoder -> alignment + dual-space propagation -> correction head -> post-processing,
with the networks behind any ``Backend`` (ONNX Runtime, TensorRT, the PyTorch reference) and
everything else in the kernel library (``psdrt.kernels`` through ``runtime._capi``). This module
never imports torch.

Deployment runs the C session (``psdrt.runtime.session.CSession``, ``psd_session_*`` in the kernel
library): ``Pipeline.from_artifacts(dir)`` returns one, so a build directory is run by the same
code from Python, C and C++, on the CPU and the GPU. This class's own orchestration stays only
where C cannot go: the guided mode on NumPy frames, the PyTorch reference backends
(``from_checkpoint``), single ONNX files (``from_onnx``), custom Python backends and other ONNX
Runtime providers for experiments (``from_artifacts(..., engine="python")``), and intermediate
stages (``return_stages=True``). Both use the same kernels, the same preprocessing kernel and the
C library's artefact checks (``psd_artifacts_read``); their outputs over the same artefacts are
bit-identical (tests/capi/test_session_parity.py).
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Union

import numpy as np

from . import _capi
from .errors import InputError, PsdError, ShapeError
from .guided import GuidedParams
from .inputs import validate_frame
from .preprocess import DEFAULT_PREPROCESS, PREPROCESS_METHODS, fm_input_size, preprocess_rgb
from .presets import PropagationPreset, get_preset
from .result import DepthResult

log = logging.getLogger(__name__)

MODES = ("psd", "propagate", "guided")
#: how ``Pipeline.from_artifacts`` runs a build directory: the C session (deployment) or this class
ENGINES = ("c", "python")


class Pipeline:
    """Dense metric depth from RGB + sparse depth + K.

    Args:
        mode (str): ``'psd'``, ``'propagate'`` or ``'guided'``. Defaults to ``'guided'``.
        encoder (Backend, optional): foundation model (``rgb`` -> ``rel_inv``, ``feat0..3``);
            needed by ``psd`` and ``propagate``.
        head (Backend, optional): correction head (``sparse``, ``depth_diff``, ``feat0..3`` ->
            ``depth_pix``, ``fd0``); needed by ``psd``.
        preset (str | PropagationPreset): dataset preset. Defaults to ``'NYUv2'``.
        guided (GuidedParams): parameters of the ``guided`` mode.
        kernels (KernelLibrary, optional): defaults to ``runtime._capi.load()``.
        fm_lower (int): lower bound of the encoder input size (PSD: 392).
        seed (int): seed of the kNN's random subsets (presets with rate < 1 or a candidate cap).
        preprocess (str): the encoder input's preprocessing, ``"official"`` (scikit-image resize
            order=3, as the official loaders; the default) or ``"bicubic"`` (runtime.preprocess).
            ``from_artifacts`` takes the manifest's.

    Thread safety: a Pipeline may be called from several threads at once: it keeps no per-call
    state (the kernel library's workspaces are per thread; ONNX Runtime's Run is thread-safe).
    """

    def __init__(
        self,
        mode: str = "guided",
        encoder=None,
        head=None,
        preset: Union[str, PropagationPreset] = "NYUv2",
        guided: GuidedParams = GuidedParams(),
        kernels=None,
        fm_lower: int = 392,
        seed: int = 0,
        preprocess: str = DEFAULT_PREPROCESS,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; use one of {MODES}")
        if mode in ("psd", "propagate") and encoder is None:
            raise InputError(f"mode {mode!r} needs an encoder backend (or use mode 'guided', which needs none)")
        if mode == "psd" and head is None:
            raise InputError("mode 'psd' needs a head backend; without one use mode 'propagate'")
        self.mode = mode
        self.encoder, self.head = encoder, head
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.guided = guided
        self.kernels = kernels or _capi.load()
        self.fm_lower = fm_lower
        self.seed = seed
        if preprocess not in PREPROCESS_METHODS:
            raise InputError(f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESS_METHODS)}")
        #: the foundation model's input preprocessing (runtime.preprocess): "official" or "bicubic"
        self.preprocess = preprocess
        #: (H, W) the artefacts were built for (``from_artifacts``); None accepts any frame size
        self.working_size: Optional[tuple] = None
        #: False for a latency-only pipeline over artefacts that failed the correctness gate
        self.gate_approved = True

    # --------------------------------------------------------------------------------------------
    @classmethod
    def from_onnx(cls, encoder: str, head: Optional[str] = None, mode: Optional[str] = None, **kwargs):
        """Pipeline over ONNX Runtime sessions of exported graphs (``psdrt.export.onnx_export``)."""
        from .backends.ort import OrtBackend

        providers = kwargs.pop("providers", None)
        threads = kwargs.pop("threads", None)
        enc = OrtBackend(encoder, providers=providers, threads=threads)
        hd = OrtBackend(head, providers=providers, threads=threads) if head else None
        return cls(mode or ("psd" if hd else "propagate"), enc, hd, **kwargs)

    @classmethod
    def from_artifacts(cls, directory, precision: str = "fp32", providers=None, engine: str = "auto",
                       latency_only: bool = False, **kwargs):
        """The deployment pipeline over a directory written by ``psdrt build`` (``build.build_artifacts``).

        By default this is the C session (``psdrt.runtime.session.CSession``, ``psd_session_*``): the one
        orchestrator for deployment, the same code a C/C++ program links, on the CPU and on the GPU.
        It reads and checks ``manifest.json`` (format, files present, SHA-256 of each file, the
        correctness gate), opens the ``precision`` artefacts and runs frames with the manifest's mode,
        preset, encoder input and preprocessing. Frames must have the working size the directory was
        built for (``__call__`` raises ``ShapeError`` otherwise). Its output equals this class's over
        the same artefacts bit for bit (tests/capi/test_session_parity.py).

        ``engine="python"`` returns this class instead (ONNX Runtime sessions opened from Python):
        for experiments only, where C cannot go: other ONNX Runtime ``providers``, intermediate
        stages (``return_stages=True``), swapping a backend for a custom Python one.

        Args:
            directory (path): the directory holding ``manifest.json``.
            precision (str): ``"fp32"``, ``"fp16"``, ``"int8"``, or ``"ENC+HEAD"`` for the encoder
                and the head apart, e.g. ``"int8+fp32"`` (an INT8 encoder with the FP32 head: the
                measured recommendation where the INT8 head does not pass the gate). Defaults to "fp32".
            providers (Sequence, optional): ONNX Runtime providers (``OrtBackend``). Defaults to None.
            engine (str): ``"c"`` (the C session), ``"python"`` (this class), or ``"auto"``: ``"c"``
                unless ``providers`` is given. Defaults to "auto".
            latency_only (bool): load artefacts that failed the correctness gate, to time them only:
                a warning is logged and every result's ``info['gate_approved']`` is False. Never
                deploy such a pipeline. Defaults to False.
            **kwargs: ``threads`` (ORT), ``seed``, ``preset``, ``mode`` (``"propagate"`` over a psd
                directory drops the head), ``kernels`` (the library to use); the C session also takes
                ``device`` (``"cuda"``: the CUDA library, ``_capi.load("cuda")``, unless ``kernels``
                names one), ``device_id``, ``ort_library`` and the other ``CSession`` arguments, this
                class ``preprocess`` and ``fm_lower`` overrides.

        With ``device="cuda"`` the returned ``CSession`` also takes frames in CUDA memory:
        ``enqueue(rgb, sparse, K, out=None, stream=None)`` (PyTorch / CuPy arrays through
        ``__cuda_array_interface__`` or DLPack) enqueues the frame on ``stream`` without a host
        round trip and returns a ``DeviceArray``; its docstring states the stream and lifetime rules.

        The directory's rules are the C library's ``psd_artifacts_read`` (listed in ``psd.h``), the
        ones the C session applies: the manifest, every file inside the directory with its SHA-256,
        the gate, the working size and ``fm_lower`` bounds.

        Raises:
            ArtifactError: missing/corrupt manifest or files, a file outside the directory, a
                checksum mismatch, an artefact that failed the gate, or no artefact of ``precision``;
                the message names the fix.
            BackendUnavailable: the C session cannot run here (a kernel library built without the
                session API, or without ONNX Runtime); the message names the rebuild.
        """
        if engine not in ENGINES + ("auto",):
            raise InputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)} (or 'auto')")
        if engine == "auto":
            engine = "python" if providers is not None else "c"
        if engine == "c":
            return _c_session(directory, precision, providers, latency_only, kwargs)
        mode_override = kwargs.pop("mode", None)
        from .backends.ort import OrtBackend
        from .session import read_artifacts

        # the directory's rules are the C library's (psd_artifacts_read): one implementation, the
        # mode override included (propagate over a psd directory takes the encoder alone)
        sel = read_artifacts(directory, precision, mode=mode_override, latency_only=latency_only)
        mode = sel["mode"]
        if not sel["gate_approved"]:
            log.warning("LATENCY-ONLY pipeline over %s: artefacts that FAILED the correctness gate are loaded "
                        "(%s); their output is not checked and must not be used", directory, sel["gate_failures"])
        threads = kwargs.pop("threads", None)
        kwargs.setdefault("preset", sel["preset"])
        kwargs.setdefault("fm_lower", sel["fm_lower"])
        kwargs.setdefault("preprocess", sel["preprocess"])
        enc = OrtBackend(sel["encoder"], providers=providers, threads=threads) if sel["encoder"] else None
        hd = OrtBackend(sel["head"], providers=providers, threads=threads) if mode == "psd" else None
        pipe = cls(mode, enc, hd, **kwargs)
        pipe.working_size = sel["size"]
        pipe.gate_approved = sel["gate_approved"]
        return pipe

    @classmethod
    def from_checkpoint(cls, path, mode: Optional[str] = None, **kwargs):
        """Pipeline with the PyTorch reference backends (for experiments; needs torch)."""
        from .backends.torch_ref import backends_from_checkpoint

        enc, head = backends_from_checkpoint(path)
        return cls(mode or ("psd" if head else "propagate"), enc, head, **kwargs)

    # --------------------------------------------------------------------------------------------
    def _guided(self, frame):
        """The weight-free mode in one kernel call (psd_guided, kernels/guided): colour features,
        nearest fill, coarse-to-fine CSPN and the clamp, with the workspace cached by the library."""
        return self.kernels.guided(frame.rgb, frame.sparse, self.guided)

    def __call__(self, rgb, sparse, K, bgr: bool = False, return_stages: bool = False) -> DepthResult:
        """Complete one frame (see ``ReferencePipeline.__call__`` for the contract).

        Returns:
            DepthResult: ``depth`` float32 metres (finite); ``info['timings_ms']`` per stage.
        """
        t = {}
        t0 = time.perf_counter()
        frame = validate_frame(rgb, sparse, K, bgr=bgr, mode=self.mode)
        if self.working_size is not None and tuple(frame.sparse.shape) != tuple(self.working_size):
            hw = f"{frame.sparse.shape[0]}x{frame.sparse.shape[1]}"
            raise ShapeError(f"frame is {hw} but the artefacts were built for "
                             f"{self.working_size[0]}x{self.working_size[1]}; resize the frame, or rebuild "
                             f"with `psdrt build --size {hw}`")
        info = {"points": frame.points, "alignment": "ok" if frame.interior >= 2 else "degenerate",
                "preset": self.preset.name, "gate_approved": self.gate_approved}
        stages = {}
        if self.mode == "guided":
            depth = self._guided(frame)
            t["guided"] = time.perf_counter() - t0
        else:
            x = encoder_input(frame, self.fm_lower, self.preprocess)
            t1 = time.perf_counter()
            t["preprocess"] = t1 - t0
            enc = self.encoder.run({"rgb": x})
            t2 = time.perf_counter()
            t["encoder"] = t2 - t1
            diff = propagate_stage(self.kernels, self.preset, frame, enc["rel_inv"], enc["feat0"], self.seed)
            t3 = time.perf_counter()
            t["propagation"] = t3 - t2
            stages["depth_diff"] = diff
            depth = diff
            if self.mode == "psd":
                out = self.head.run(head_feeds(frame, diff, enc))
                t4 = time.perf_counter()
                t["head"] = t4 - t3
                stages["depth_pix"] = out["depth_pix"][0, 0]
                depth = post_stage(self.kernels, self.preset, frame, out["depth_pix"], out["fd0"])
                t["post"] = time.perf_counter() - t4
        depth, info["clamped"] = finish_depth(frame, depth)
        info["rejected"] = frame.rejected()
        info["timings_ms"] = {k: v * 1000.0 for k, v in t.items()}
        return DepthResult(depth=depth, mode=self.mode,
                           stages={k: np.array(v) for k, v in stages.items()} if return_stages else {},
                           info=info)


# ------------------------------------------------------------------------------------------------ stages
# The stages of psd / propagate between and after the networks, one definition each: Pipeline.__call__
# runs them in one process; the Triton model repository (runtime.triton) runs them as separate models
# of an ensemble around the networks. Network tensors are the networks' own (batch 1).


def encoder_input(frame, fm_lower: int = 392, preprocess: str = DEFAULT_PREPROCESS) -> np.ndarray:
    """The encoder's ``rgb`` input (1, 3, Hm, Wm) float32 of a validated frame (``psd_preprocess``)."""
    h, w = frame.sparse.shape
    return preprocess_rgb(frame.rgb, size=fm_input_size(h, w, lower=fm_lower), method=preprocess)


def propagate_stage(kernels, preset: PropagationPreset, frame, rel_inv, feat0, seed: int = 0) -> np.ndarray:
    """Alignment + dual-space propagation (psd_propagate) of one frame.

    Args:
        kernels (KernelLibrary): the kernel library.
        preset (PropagationPreset): the propagation preset.
        frame (FrameInputs): the validated frame (``validate_frame``).
        rel_inv, feat0 (ndarray): the encoder's outputs, (1, 1, Hm, Wm) and (1, C, h, w).
        seed (int): seed of the kNN's random subsets.

    Returns:
        ndarray: ``depth_diff`` (H, W) float32 metres.
    """
    # IP-Basic only changes the output when some empty cells keep their initial value:
    # rate < 1, a candidate cap, or the 3D+2D / 2D-3D modes (docs §1.4); the kernel
    # (psd_ip_basic, what the C session runs) equals classical.ip_basic_fill bit for bit
    ip = kernels.ip_basic(frame.sparse) if not (preset.deterministic and preset.mode == "3D-2D") else None
    return kernels.propagate(np.asarray(rel_inv)[0, 0], frame.sparse, np.asarray(feat0)[0], frame.K, ip=ip,
                             seed=seed, **_capi.preset_kwargs(preset))


def head_feeds(frame, depth_diff, enc) -> dict:
    """The head's inputs: ``sparse`` and ``depth_diff`` (1, 1, H, W), ``feat0..3`` from ``enc``."""
    return {"sparse": frame.sparse[None, None], "depth_diff": np.asarray(depth_diff)[None, None],
            **{f"feat{i}": enc[f"feat{i}"] for i in range(4)}}


def post_stage(kernels, preset: PropagationPreset, frame, depth_pix, fd0) -> np.ndarray:
    """Post-processing (psd_post_process, ``preset.post_iters`` sweeps; < 0: the head's depth as is).

    Args:
        depth_pix, fd0 (ndarray): the head's outputs, (1, 1, H, W) and (1, C, h, w).

    Returns:
        ndarray: depth (H, W) float32 metres, before the output guard.
    """
    if preset.post_iters < 0:
        return np.asarray(depth_pix)[0, 0]
    return kernels.post_process(np.asarray(fd0)[0], np.asarray(depth_pix)[0, 0], frame.sparse, preset.post_iters)


def finish_depth(frame, depth) -> tuple:
    """The output of every mode: a float32 C-contiguous copy clamped by the frame's guard.

    Returns:
        tuple: (depth (H, W) float32, how many pixels the guard clamped).

    Raises:
        PsdError: non-finite depth (never returned).
    """
    depth = np.array(depth, dtype=np.float32, order="C")  # a copy: the guard writes in place
    clamped = frame.guard(depth)
    if not np.isfinite(depth).all():
        raise PsdError("the pipeline produced non-finite depth; check the artefacts with the "
                       "correctness gate (psdrt.export.gate) and report the inputs")
    return depth, clamped


#: Pipeline arguments the C session takes under its own name
_C_RENAMED = {"kernels": "library"}
#: Pipeline-only arguments of from_artifacts (the C session takes the manifest's)
_PYTHON_ONLY = ("preprocess", "guided")


def _c_session(directory, precision, providers, latency_only, kwargs):
    """``Pipeline.from_artifacts(engine="c")``: the C session over ``directory``."""
    from .session import CSession

    if providers is not None:
        raise InputError("the C session chooses its ONNX Runtime provider from device= ('cpu' or 'cuda'); drop "
                         "providers=, or pass engine='python' to open the graphs with other providers from Python")
    bad = [k for k in _PYTHON_ONLY if k in kwargs]
    if bad:
        raise InputError(f"{', '.join(bad)}= is an argument of the Python pipeline; the C session takes the "
                         "manifest's preprocessing; drop it, or pass engine='python'")
    kw = {}
    for k, v in kwargs.items():
        if k == "kernels":
            v = v.path if v is not None else None
        kw[_C_RENAMED.get(k, k)] = v
    return CSession.from_artifacts(directory, precision=precision, latency_only=latency_only, **kw)
