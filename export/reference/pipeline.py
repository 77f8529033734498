"""The FP32 PyTorch reference pipeline: one API, three modes (docs/psd_method.md §10).

* ``psd``: foundation model -> inverse-depth alignment -> dual-space propagation -> correction
  head (3 stages) -> dataset post-processing. Needs a PSD checkpoint.
* ``propagate``: foundation model -> alignment -> dual-space propagation; no head, so it runs
  from a Depth Anything V2 checkpoint alone (e.g. the Apache-2.0 ViT-S weights).
* ``guided``: no foundation model and no weights (``psdrt.runtime.guided``): by default the
  ``dt`` method (colour-geodesic fill + edge-aware domain-transform filter; its NumPy
  reference, ``reference_guided_dt``); ``method="cspn"``: nearest-neighbour fill, random Fourier
  colour features for the affinities, coarse-to-fine CSPN (torch, ``reference/guided.py``).

Every optimised path (kernels, ONNX, TensorRT) is checked against this. It uses the official
arithmetic with the ``safe`` fallbacks of ``propagation.py``, so its output never contains NaN.

The foundation model's input is the official loaders' by default (``preprocess="official"``:
scikit-image ``resize(order=3)``, computed by the kernel library's ``psd_preprocess``, equal to
scikit-image in every tested float32 value); ``preprocess="bicubic"`` gives the exported graph's
definition instead (docs/preprocessing.md measures the difference).

Differences from the official evaluation loaders, by design:
* IP-Basic is computed here from the sparse input (the official datasets precompute it the same
  way, ``fill_in_fast`` with ``max_depth = sparse.max()``).
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import numpy as np
import torch

from ...runtime.classical import ip_basic_fill, nearest_fill
from ...runtime.errors import InputError, PsdError
from ...runtime.guided import GuidedParams, guided_features, reference_guided_dt
from ...runtime.inputs import validate_frame
from ...runtime.preprocess import DEFAULT_PREPROCESS, PREPROCESS_METHODS, fm_input_size, preprocess_rgb
from ...runtime.presets import PropagationPreset, get_preset
from ...runtime.result import DepthResult
from . import propagation as P
from .guided import guided_propagation

log = logging.getLogger(__name__)

MODES = ("psd", "propagate", "guided")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


class ReferencePipeline:
    """FP32 reference of PSD and its two weight-light variants.

    Args:
        mode (str): ``'psd'``, ``'propagate'`` or ``'guided'``. Defaults to ``'guided'``.
        model (nn.Module, optional): a ``PSDModel`` (``psd``; ``propagate`` uses its foundation
            model) or a ``DepthAnythingV2`` (``propagate``). Not used by ``guided``.
        preset (str | PropagationPreset): dataset preset of the propagation and post-processing
            (``'NYUv2'``, ``'KITTI'``, ``'MIDDLEBURY'``...). Defaults to ``'NYUv2'``.
        guided (GuidedParams): parameters of the ``guided`` mode.
        fm_lower (int): lower bound of the foundation model's input size (PSD uses 392).
        seed (int): seed of the random subsets used when ``preset.rate < 1`` or a candidate cap
            is set; each call reseeds, so the same frame always gives the same output.
        preprocess (str): the foundation model input's preprocessing (``runtime.preprocess``):
            ``"official"`` (scikit-image resize order=3, what the official loaders feed it; the
            default) or ``"bicubic"``.
        arithmetic (str): ``"official"`` (the official code's float32 alignment and kNN, op for
            op: the official DCNet's output; the default) or ``"kernels"`` (the kernel library's:
            float64 alignment sums, its kNN arithmetic and tie rule), to compare the kernels with
            float rounding only (``propagation.ARITHMETICS``).

    Thread safety: not safe to call concurrently on one instance (PyTorch modules are shared).
    """

    def __init__(
        self,
        mode: str = "guided",
        model: Optional[torch.nn.Module] = None,
        preset: Union[str, PropagationPreset] = "NYUv2",
        guided: GuidedParams = GuidedParams(),
        fm_lower: int = 392,
        seed: int = 0,
        preprocess: str = DEFAULT_PREPROCESS,
        arithmetic: str = "official",
    ) -> None:
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; use one of {MODES}")
        if preprocess not in PREPROCESS_METHODS:
            raise InputError(f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESS_METHODS)}")
        self.preprocess = preprocess
        if arithmetic not in P.ARITHMETICS:
            raise InputError(f"unknown arithmetic {arithmetic!r}; use one of {', '.join(P.ARITHMETICS)}")
        self.arithmetic = arithmetic
        self.mode = mode
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.guided = guided
        self.fm_lower = fm_lower
        self.seed = seed
        self.head = None
        self.fm = None
        if mode in ("psd", "propagate"):
            if model is None:
                raise InputError(
                    f"mode {mode!r} needs a model: load one with psdrt.export.checkpoints.load_model "
                    "(a PSD checkpoint for 'psd'; a PSD or Depth Anything V2 checkpoint for "
                    "'propagate'), or use mode 'guided', which needs no weights"
                )
            from ..models.psd import PSDModel

            if isinstance(model, PSDModel):
                self.fm = model.foundation
                self.head = model
            else:
                self.fm = model
            if mode == "psd" and self.head is None:
                raise InputError(
                    "mode 'psd' needs a PSD checkpoint (foundation model + correction head); this "
                    "model has no head: use mode 'propagate'"
                )
            self.fm.eval()
            if self.head is not None:
                self.head.eval()

    @classmethod
    def from_checkpoint(cls, path, mode: Optional[str] = None, **kwargs) -> "ReferencePipeline":
        """Build from a checkpoint file; ``mode`` defaults to ``'psd'`` for PSD checkpoints and
        ``'propagate'`` for Depth Anything V2 files."""
        from ..checkpoints import load_model

        model, info = load_model(path)
        return cls(mode=mode or ("psd" if info.kind == "psd" else "propagate"), model=model, **kwargs)

    # --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def run_foundation(self, rgb: np.ndarray):
        """Foundation model on one RGB frame: (relative inverse depth at H x W, features)."""
        h, w = rgb.shape[:2]
        x = torch.from_numpy(preprocess_rgb(rgb, size=fm_input_size(h, w, lower=self.fm_lower), method=self.preprocess))
        rel, feats = self.fm(x)
        return P.resize_bicubic(rel, (h, w)), feats

    def _propagate(self, frame, S):
        """Foundation model, alignment and dual-space propagation of a validated frame."""
        gen = torch.Generator().manual_seed(self.seed)
        Kt = torch.from_numpy(frame.K).float()[None]
        rel, feats = self.run_foundation(frame.rgb)
        ip = _t(ip_basic_fill(frame.sparse))
        polyfit = P.align_inverse_ls(rel, S, arithmetic=self.arithmetic)
        ip_median = P.align_median(ip, S, safe=True)
        diff = P.dual_propagation(feats[0], ip_median, polyfit, S, Kt, self.preset, gen, safe=True,
                                  arithmetic=self.arithmetic)
        return ip, polyfit, diff, feats

    @torch.no_grad()
    def head_feeds(self, rgb, sparse, K, bgr: bool = False) -> dict:
        """The correction head's inputs for one frame, as float32 NumPy arrays named like the
        exported head graph: ``sparse``, ``depth_diff`` (1 x 1 x H x W) and ``feat0..feat3``.
        Used by calibration and the correctness gate. Needs mode ``psd`` or ``propagate``."""
        if self.fm is None:
            raise InputError("head_feeds needs the foundation model: use mode 'psd' or 'propagate'")
        frame = validate_frame(rgb, sparse, K, bgr=bgr, mode="psd")  # feeds the head: its size rule
        S = _t(frame.sparse)
        _, _, diff, feats = self._propagate(frame, S)
        out = {"sparse": S.numpy(), "depth_diff": diff.numpy().astype(np.float32)}
        out.update({f"feat{i}": f.numpy().astype(np.float32) for i, f in enumerate(feats)})
        return out

    @torch.no_grad()
    def __call__(self, rgb, sparse, K, bgr: bool = False, return_stages: bool = False) -> DepthResult:
        """Complete one frame.

        Args:
            rgb (ndarray): H x W x 3 uint8 image (RGB unless ``bgr``).
            sparse (ndarray): H x W float32 metres, 0 = missing.
            K (ndarray): 3 x 3 intrinsics at H x W.
            bgr (bool): the image is BGR (OpenCV order).
            return_stages (bool): also return the intermediate maps.

        Returns:
            DepthResult: ``depth`` (H x W float32 metres, finite), ``info`` and optional stages.

        Raises:
            InputError / ShapeError: invalid inputs (see ``psdrt.runtime.inputs``).
        """
        frame = validate_frame(rgb, sparse, K, bgr=bgr, mode=self.mode)
        info = {
            "points": frame.points,
            "alignment": "ok" if frame.interior >= 2 else "degenerate",
            "preset": self.preset.name,
        }
        S = _t(frame.sparse)
        stages = {}
        if self.mode == "guided" and self.guided.method == "dt":
            depth = _t(reference_guided_dt(frame.rgb, frame.sparse, self.guided))
        elif self.mode == "guided":
            init = _t(nearest_fill(frame.sparse))
            feat = torch.from_numpy(guided_features(frame.rgb, self.guided))[None]
            depth = guided_propagation(S, init, feat, self.guided)
            stages["nearest_fill"] = init
        else:
            ip, polyfit, diff, feats = self._propagate(frame, S)
            stages.update(ip=ip, depth_polyfit=polyfit, depth_diff=diff)
            if self.mode == "propagate":
                depth = diff
            else:
                out = self.head(S, diff, feats)
                post = P.post_process(out["fd0"], out["depth_pix"], S, self.preset.post_iters, safe=True)
                stages.update(
                    depth_residual=out["depth_residual"], depth_img=out["depth_img"],
                    depth_pix=out["depth_pix"], depth_post=post,
                )
                depth = post
        result = depth[0, 0].numpy().astype(np.float32, copy=True)
        info["rejected"] = frame.rejected()
        info["clamped"] = frame.guard(result)  # the output guard of every pipeline (psd_guard_depth)
        if not np.isfinite(result).all():
            raise PsdError(
                "the reference produced non-finite depth; this is a bug (or an overflowing model: "
                "check the checkpoint), please report it with the inputs"
            )
        return DepthResult(
            depth=result,
            mode=self.mode,
            stages={k: v[0, 0].numpy().copy() for k, v in stages.items()} if return_stages else {},
            info=info,
        )
