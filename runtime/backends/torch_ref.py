"""PyTorch modules as ``Backend`` objects: the reference backend (the only runtime file that
imports torch and the model definitions in ``psdrt.export``, lazily, inside functions).

The encoder backend takes ``rgb`` and returns ``rel_inv``, ``feat0..feat3``; the head backend
takes ``sparse``, ``depth_diff``, ``feat0..feat3`` and returns ``depth_pix`` and ``fd0``: the same
names as the exported ONNX graphs, so a pipeline can swap one for the other.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..errors import BackendUnavailable
from .base import TensorSpec, check_feeds

ENCODER_INPUTS = ("rgb",)
ENCODER_OUTPUTS = ("rel_inv", "feat0", "feat1", "feat2", "feat3")
HEAD_INPUTS = ("sparse", "depth_diff", "feat0", "feat1", "feat2", "feat3")
HEAD_OUTPUTS = ("depth_pix", "fd0")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(
            f"the PyTorch reference backend needs torch ({exc}); install the CPU build: pip install torch"
        ) from None
    return torch


class TorchBackend:
    """Run a Depth Anything V2 encoder (``kind='encoder'``) or a PSD head (``kind='head'``) in
    FP32 PyTorch on the CPU.

    Args:
        module (nn.Module): ``DepthAnythingV2`` for the encoder; ``CorrectionHead``/``PSDModel``
            for the head.
        kind (str): ``'encoder'`` or ``'head'``.

    Ownership: ``run`` returns fresh NumPy arrays. Thread safety: not safe to ``run`` concurrently.
    """

    def __init__(self, module, kind: str) -> None:
        self._torch = _torch()
        if kind not in ("encoder", "head"):
            raise ValueError("kind must be 'encoder' or 'head'")
        self.kind = kind
        self.module = module.eval()
        names = ENCODER_INPUTS if kind == "encoder" else HEAD_INPUTS
        self._inputs = tuple(TensorSpec(n, np.float32, (1, None, None, None)) for n in names)
        outs = ENCODER_OUTPUTS if kind == "encoder" else HEAD_OUTPUTS
        self._outputs = tuple(TensorSpec(n, np.float32, (1, None, None, None)) for n in outs)

    def input_specs(self):
        return self._inputs

    def output_specs(self):
        return self._outputs

    def run(self, feeds: Mapping[str, Any], stream: Optional[Any] = None) -> Dict[str, np.ndarray]:
        check_feeds(feeds, self._inputs)
        torch = self._torch
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
        with torch.no_grad():
            if self.kind == "encoder":
                rel, feats = self.module(t["rgb"])
                outs = (rel, *feats)
            else:
                feats = [t[f"feat{i}"] for i in range(4)]
                res = self.module(t["sparse"], t["depth_diff"], feats)
                outs = (res["depth_pix"], res["fd0"])
        return {spec.name: o.numpy() for spec, o in zip(self._outputs, outs)}

    def close(self) -> None:
        self.module = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def backends_from_checkpoint(path):
    """(encoder backend, head backend or None) for a PSD or Depth Anything V2 checkpoint."""
    _torch()
    from ...export.checkpoints import load_model
    from ...export.models.psd import PSDModel

    model, _info = load_model(path)
    if isinstance(model, PSDModel):
        return TorchBackend(model.foundation, "encoder"), TorchBackend(model, "head")
    return TorchBackend(model, "encoder"), None
