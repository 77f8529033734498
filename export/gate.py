"""The correctness gate, torch side: golden inputs from the FP32 reference, and the artefact's pipeline.

:func:`make_golden_inputs` runs the FP32 :class:`ReferencePipeline` on fixed frames (the Middlebury
2014 Motorcycle frame that ships with scikit-image, plus the shared KITTI/NYU frames when present),
cropped to the artefact's aspect ratio and resized to its shapes, and records exactly what the
pipeline feeds the foundation model (``kind="encoder"``) or the correction head (``kind="head"``),
what the FP32 modules return, and the pipeline's final depth. The result is saved as ``.npz``
(``GoldenInputs.save``) and read on the target by ``psdrt.runtime.gate_check`` without torch.

:func:`pipeline_depth_fn` gives the artefact's pipeline: the same reference pipeline with the FP32
encoder (or head) replaced by the artefact's backend, for the gate's end-to-end depth check.
:func:`gate_artifact` runs the whole gate.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import nn

from psdrt.export.models.psd import PSDModel
from psdrt.export.onnx_export import ENCODER_INPUTS, ENCODER_OUTPUTS, HEAD_INPUTS, HEAD_OUTPUTS
from psdrt.export.reference.pipeline import ReferencePipeline
from psdrt.runtime.preprocess import DEFAULT_PREPROCESS
from psdrt.runtime.errors import InputError
from psdrt.runtime.gate_check import THRESHOLDS, GateReport, GoldenCase, GoldenInputs, Thresholds, check_backend
from psdrt.runtime.inputs import fit_to_size
from psdrt.runtime.io import Frame, list_shared_frames, load_middlebury, load_shared_frame
from psdrt.runtime.patterns import make_sparse

__all__ = [
    "KINDS",
    "GoldenInputs",
    "GoldenCase",
    "THRESHOLDS",
    "golden_frames",
    "fit_frame",
    "make_golden_inputs",
    "pipeline_depth_fn",
    "gate_artifact",
]

KINDS = ("encoder", "head")


def golden_frames(shared: Optional[bool] = None, max_shared: Optional[int] = None) -> list[Frame]:
    """The fixed frames: Middlebury Motorcycle first, then the shared KITTI/NYU frames in sorted order.

    Args:
        shared (bool, optional): include the shared frames. Defaults to None: when they are present.
        max_shared (int, optional): at most this many shared frames per dataset. Defaults to all.
    """
    frames = [load_middlebury()]
    if shared is False:
        return frames
    try:
        listed = list_shared_frames()
    except InputError:
        if shared:
            raise
        return frames
    taken: dict[str, int] = {}
    for dataset, frame_id in listed:
        if max_shared is not None and taken.get(dataset, 0) >= max_shared:
            continue
        taken[dataset] = taken.get(dataset, 0) + 1
        frames.append(load_shared_frame(None, dataset, frame_id))
    return frames


def fit_frame(frame: Frame, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frame`` at exactly ``size`` (``runtime.inputs.fit_to_size``: scale to cover, centre-crop,
    K adjusted; depth by nearest sampling).

    Returns:
        tuple: ``(rgb uint8 (H, W, 3), gt float32 (H, W), K float64 (3, 3))``.
    """
    rgb, K, gt = fit_to_size(frame.rgb, frame.K, size, frame.depth)
    return rgb, np.ascontiguousarray(gt, dtype=np.float32), K


class _Recorder(nn.Module):
    """Wraps a module and keeps the inputs and outputs of its last call (as NumPy)."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind, self.last = inner, kind, None

    def forward(self, *args):
        out = self.inner(*args)
        if self.kind == "encoder":
            feeds = {ENCODER_INPUTS[0]: args[0]}
            outs = dict(zip(ENCODER_OUTPUTS, (out[0], *out[1])))
        else:
            sparse, diff, feats = args
            feeds = dict(zip(HEAD_INPUTS, (sparse, diff, *feats)))
            outs = {k: out[k] for k in HEAD_OUTPUTS}
        self.last = ({k: v.detach().numpy().copy() for k, v in feeds.items()},
                     {k: v.detach().numpy().copy() for k, v in outs.items()})
        return out


class _BackendEncoder(nn.Module):
    """The encoder artefact as a drop-in for the pipeline's foundation model."""

    def __init__(self, backend) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, x):
        out = self.backend.run({ENCODER_INPUTS[0]: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        t = [torch.from_numpy(np.asarray(out[n], dtype=np.float32).copy()) for n in ENCODER_OUTPUTS]
        return t[0], tuple(t[1:])


class _BackendHead(nn.Module):
    """The head artefact as a drop-in for the pipeline's correction head."""

    def __init__(self, backend) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, sparse, diff, feats):
        feeds = dict(zip(HEAD_INPUTS, (sparse, diff, *feats)))
        out = self.backend.run({k: np.ascontiguousarray(v.numpy(), dtype=np.float32) for k, v in feeds.items()})
        return {n: torch.from_numpy(np.asarray(out[n], dtype=np.float32).copy()) for n in HEAD_OUTPUTS}


def _mode(model: nn.Module, kind: str) -> str:
    if kind == "head" and not isinstance(model, PSDModel):
        raise InputError("golden inputs for the head need a PSDModel (foundation model + head)")
    return "psd" if isinstance(model, PSDModel) else "propagate"


def _pipeline(model: nn.Module, mode: str, preset: str, fm_lower: int,
              preprocess: str = DEFAULT_PREPROCESS) -> ReferencePipeline:
    return ReferencePipeline(mode, model, preset=preset, fm_lower=fm_lower, preprocess=preprocess)


@torch.no_grad()
def make_golden_inputs(
    model: nn.Module,
    kind: str,
    size: Tuple[int, int],
    *,
    frames: Optional[Iterable[Frame]] = None,
    pattern: str = "random1",
    seed: int = 0,
    fm_lower: Optional[int] = None,
    preprocess: str = DEFAULT_PREPROCESS,
) -> GoldenInputs:
    """Golden inputs and FP32 reference outputs for an artefact of ``kind`` at ``size``.

    Args:
        model (nn.Module): ``PSDModel`` (end-to-end mode ``psd``) or ``DepthAnythingV2`` (``propagate``;
            encoder only), with the weights the artefact was exported from.
        kind (str): ``"encoder"`` (``size`` = its input Hm x Wm, multiples of 14) or ``"head"``
            (``size`` = the working resolution H x W).
        size (tuple[int, int]): the artefact's shape.
        frames (Iterable[Frame], optional): Defaults to :func:`golden_frames` (Middlebury + shared).
        pattern (str): sparse pattern (``runtime.patterns.make_sparse``). Defaults to ``"random1"``.
        seed (int): sparse-pattern and pipeline seed. Defaults to 0.
        fm_lower (int, optional): foundation-model input lower bound of the pipeline. Defaults to
            ``min(size)`` for the encoder (so the pipeline feeds exactly ``size``) and 392 (PSD's)
            for the head, whose feature sizes must then match the deployed encoder's.
        preprocess (str): the pipeline's input preprocessing (``runtime.preprocess``), the one
            the artefacts are built for. Defaults to "official".

    Returns:
        GoldenInputs: deterministic for the same weights, frames, size, pattern and seed.
    """
    if kind not in KINDS:
        raise InputError(f"unknown artefact kind {kind!r}; use one of {KINDS}")
    mode = _mode(model, kind)
    size = (int(size[0]), int(size[1]))
    # encoder: frame at Hm x Wm and fm_lower = min(Hm, Wm), so the pipeline feeds exactly Hm x Wm
    if fm_lower is None:
        fm_lower = min(size) if kind == "encoder" else 392
    cases, presets = [], {}
    for frame in (golden_frames() if frames is None else frames):
        rgb, gt, K = fit_frame(frame, size)
        sparse = make_sparse(pattern, rgb, gt, seed)
        name = f"{frame.dataset.lower()}/{frame.name}"
        pipe = _pipeline(model, mode, frame.dataset, fm_lower, preprocess)
        pipe.seed = seed
        rec = _Recorder(pipe.fm if kind == "encoder" else pipe.head, kind)
        if kind == "encoder":
            pipe.fm = rec
        else:
            pipe.head = rec
        depth = pipe(rgb, sparse, K).depth
        feeds, expected = rec.last
        cases.append(GoldenCase(name, feeds, expected, rgb=rgb, sparse=sparse, K=K, depth=depth))
        presets[name] = frame.dataset
    meta = {
        "kind": kind, "size": list(size), "mode": mode, "fm_lower": fm_lower, "pattern": pattern, "seed": seed,
        "preprocess": preprocess,
        "encoder": str(getattr(model, "encoder", "")), "presets": presets,
        "torch": torch.__version__, "reference": "psdrt.export.reference.pipeline.ReferencePipeline (FP32)",
    }
    return GoldenInputs(tuple(cases), meta)


def pipeline_depth_fn(model: nn.Module, golden: GoldenInputs, backend) -> Callable[[GoldenCase], np.ndarray]:
    """The artefact's pipeline: the FP32 reference with its encoder or head replaced by ``backend``."""
    kind, mode, fm_lower = golden.meta["kind"], golden.meta["mode"], int(golden.meta["fm_lower"])
    seed = int(golden.meta.get("seed", 0))

    @torch.no_grad()
    def depth(case: GoldenCase) -> np.ndarray:
        pipe = _pipeline(model, mode, golden.meta["presets"][case.name], fm_lower,
                         golden.meta.get("preprocess", DEFAULT_PREPROCESS))
        pipe.seed = seed
        if kind == "encoder":
            pipe.fm = _BackendEncoder(backend)
        else:
            pipe.head = _BackendHead(backend)
        return pipe(case.rgb, case.sparse, case.K).depth

    return depth


def gate_artifact(
    backend,
    golden: GoldenInputs,
    precision: str,
    *,
    model: Optional[nn.Module] = None,
    thresholds: Optional[Thresholds] = None,
    artifact: Optional[str] = None,
) -> GateReport:
    """Gate an artefact: tensors always, end-to-end depth when ``model`` (the FP32 weights) is given.

    Raises:
        ArtifactError: the artefact fails; the message holds the comparison table.
    """
    depth_fn = pipeline_depth_fn(model, golden, backend) if model is not None else None
    return check_backend(backend, golden, precision, depth_fn=depth_fn, thresholds=thresholds, artifact=artifact)
