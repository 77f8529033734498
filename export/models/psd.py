"""The whole PSD network in the official checkpoint layout: frozen foundation model + head.

The official ``DCNet.state_dict()`` holds the foundation model under ``mde.net.*`` and the
correction head's ``rb.*``, ``ib.*``, ``pb.*``, ``alpha1/beta1/alpha2/beta2`` and ``sds.*`` at the
top level (docs/psd_method.md §9). ``PSDModel`` reproduces exactly that layout so an official
checkpoint loads with ``strict=True``; it is a container, the inference order lives in the
reference pipeline (``psdrt.export.reference.pipeline``).
"""

from __future__ import annotations

import torch
from torch import nn

from .completion_head import CorrectionHead
from .depth_anything_v2 import DepthAnythingV2
from .registry import MODEL_CONFIGS


class FoundationModel(nn.Module):
    """Holds the frozen foundation model as ``net`` (key prefix ``mde.net.``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor):
        return self.net(x)


class PSDModel(CorrectionHead):
    """PSD with a Depth Anything V2 foundation model.

    Args:
        encoder (str): foundation-model size, ``"vits"``, ``"vitb"``, ``"vitl"`` (the released
            PSD-Dv2 checkpoints) or ``"vitg"``. The head's FM adapter width follows the DPT
            ``features`` of that size.
    """

    def __init__(self, encoder: str = "vitl") -> None:
        if encoder not in MODEL_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(MODEL_CONFIGS)}")
        super().__init__(fm_channels=MODEL_CONFIGS[encoder].features)
        self.encoder = encoder
        self.mde = FoundationModel(DepthAnythingV2(encoder))

    @property
    def foundation(self) -> DepthAnythingV2:
        """The Depth Anything V2 network (``mde.net``)."""
        return self.mde.net

    def head_state_dict(self) -> dict:
        """The correction head's entries only (no ``mde.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("mde.")}
