"""Depth Anything V2 (DINOv2 encoder + DPT head) returning inverse depth and the fusion features.

References: DepthAnything/Depth-Anything-V2 depth_anything_v2/dpt.py (``DepthAnythingV2``);
PSD network/depanyv2/depth_anything_v2/dpt.py (which also returns the fusion features).

``state_dict()`` keys equal those of the released ``depth_anything_v2_vit{s,b,l,g}.pth``, so they
load with ``strict=True``; PSD checkpoints hold the same keys under ``mde.net.``.
"""

from __future__ import annotations

import torch
from torch import nn

from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead
from .registry import IMG_SIZE, MODEL_CONFIGS, PATCH_SIZE


class DepthAnythingV2(nn.Module):
    """Relative inverse depth and DPT fusion features from one normalised RGB image batch.

    Args:
        encoder (str): A ``registry.MODEL_CONFIGS`` key: "vits", "vitb", "vitl" or "vitg".
            Defaults to "vits" (the Apache-2.0 weights; the others are CC BY-NC 4.0).

    Construct under ``torch.device("meta")`` to inspect shapes of the large variants without
    allocating their weights.
    """

    def __init__(self, encoder: str = "vits") -> None:
        super().__init__()
        if encoder not in MODEL_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(MODEL_CONFIGS)}")
        cfg = MODEL_CONFIGS[encoder]
        self.encoder = encoder
        self.layer_idx = cfg.layer_idx
        self.pretrained = DinoVisionTransformer(
            cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.ffn_layer, patch_size=PATCH_SIZE, img_size=IMG_SIZE
        )
        self.depth_head = DPTHead(cfg.embed_dim, cfg.features, cfg.out_channels, patch_size=PATCH_SIZE)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Predict relative inverse depth.

        Args:
            x (torch.Tensor): B x 3 x Hm x Wm, ImageNet-normalised RGB; Hm and Wm multiples of 14
                (PSD: 392 x 518 for NYU, 392 x 1862 for KITTI).

        Returns:
            tuple: ``(rel_inv, feats)``. ``rel_inv`` is B x 1 x Hm x Wm, >= 0 (upstream returns
            B x Hm x Wm; the channel axis is kept for the pipeline). ``feats`` is
            ``(path_4, path_3, path_2, path_1)``, each B x features, at Hm/14, Hm/7, 2Hm/7 and
            4Hm/7 (e.g. 28x37, 56x74, 112x148, 224x296 for 392 x 518).
        """
        patch_h, patch_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = self.pretrained(x, self.layer_idx)
        return self.depth_head(tokens, patch_h, patch_w)


__all__ = ["DepthAnythingV2"]
