"""DPT decoder head of Depth Anything V2 (relative inverse depth + the four fusion features).

References: DepthAnything/Depth-Anything-V2 depth_anything_v2/dpt.py (``DPTHead``) and
depth_anything_v2/util/blocks.py (``FeatureFusionBlock``, ``ResidualConvUnit``, ``_make_scratch``);
PSD network/depanyv2 (the fusion outputs it consumes).

Attribute names equal the released keys below ``depth_head.``. Only the configuration that all
released DA-V2 checkpoints use is implemented: no BatchNorm in the fusion blocks and no class-token
readout (``use_bn=False``, ``use_clstoken=False`` upstream).

Every resize states its output size, taken from tensor shapes rather than from a scale factor, so
an exported graph stays correct when the input size changes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` resize to an explicit (h, w), as everywhere in the DPT head.

    With ``align_corners=True`` PyTorch maps coordinates by ``(in - 1) / (out - 1)`` whatever scale
    factor is passed, so upstream's ``scale_factor=2`` equals ``size=(2h, 2w)`` exactly.
    """
    return F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions.

    Args:
        features (int): Channels.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit.

        Args:
            x (torch.Tensor): B x features x h x w.

        Returns:
            torch.Tensor: Same shape.
        """
        # Not in place: x is also the skip input and, for resConfUnit1, a tensor PSD keeps.
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """One DPT fusion stage: add the refined skip, refine, resize, 1x1 project.

    Args:
        features (int): Channels of both inputs and of the output.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        # refinenet4 has no skip input and never runs resConfUnit1, but the released checkpoints
        # carry its weights, so every block owns one.
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        """Fuse and resize.

        Args:
            x (torch.Tensor): B x features x h x w, the coarser path (or the deepest layer).
            skip (torch.Tensor | None): Same shape as ``x``, the lateral input; None for the first
                (coarsest) stage. A structural choice, fixed per call site.
            size (Sequence[int]): Output (h, w).

        Returns:
            torch.Tensor: B x features x size.
        """
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_resize(self.resConfUnit2(x), size))


class DPTHead(nn.Module):
    """Reassemble four ViT token maps, fuse them coarse to fine, and regress inverse depth.

    Args:
        in_channels (int): ViT token width.
        features (int): Fusion-path width. Defaults to 256.
        out_channels (Sequence[int]): Widths of the four reassembled maps.
            Defaults to (256, 512, 1024, 1024).
        patch_size (int): Encoder patch side; the depth map is patch_size x the patch grid.
            Defaults to 14.
    """

    def __init__(
        self,
        in_channels: int,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        patch_size: int = 14,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        c1, c2, c3, c4 = out_channels
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels)
        # Reassemble to strides 4, 8, 16 and 32 of the input (the ViT grid is stride 14 ~ 16).
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c1, c1, kernel_size=4, stride=4),
                nn.ConvTranspose2d(c2, c2, kernel_size=2, stride=2),
                nn.Identity(),  # keeps resize_layers.3 index = released checkpoint
                nn.Conv2d(c4, c4, kernel_size=3, stride=2, padding=1),
            ]
        )
        # A bare container: the released keys are depth_head.scratch.<name>.*
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features))
        head_mid, head_hidden = features // 2, 32
        self.scratch.output_conv1 = nn.Conv2d(features, head_mid, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(head_mid, head_hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(head_hidden, 1, kernel_size=1),
            # Inverse depth is non-negative. Upstream applies F.relu once more in
            # DepthAnythingV2.forward; ReLU is idempotent, so that second one is dropped.
            nn.ReLU(),
        )

    def forward(
        self, tokens: Sequence[torch.Tensor], patch_h: int, patch_w: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Decode.

        Args:
            tokens (Sequence[torch.Tensor]): Four B x (patch_h * patch_w) x in_channels token maps,
                shallow to deep.
            patch_h (int): Patch rows.
            patch_w (int): Patch columns.

        Returns:
            tuple: ``(rel_inv, (path_4, path_3, path_2, path_1))``. ``rel_inv`` is
            B x 1 x (patch_size * patch_h) x (patch_size * patch_w), >= 0. The fusion outputs are
            B x features maps at 1x, 2x, 4x and 8x the patch grid (coarse to fine, PSD's order
            for Depth Anything).
        """
        layers = []
        for i, t in enumerate(tokens):
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], patch_h, patch_w)
            layers.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (
            s.layer1_rn(layers[0]), s.layer2_rn(layers[1]), s.layer3_rn(layers[2]), s.layer4_rn(layers[3])
        )
        path_4 = s.refinenet4(l4, None, l3.shape[-2:])
        path_3 = s.refinenet3(path_4, l3, l2.shape[-2:])
        path_2 = s.refinenet2(path_3, l2, l1.shape[-2:])
        path_1 = s.refinenet1(path_2, l1, (2 * l1.shape[-2], 2 * l1.shape[-1]))
        out = _resize(s.output_conv1(path_1), (patch_h * self.patch_size, patch_w * self.patch_size))
        return s.output_conv2(out), (path_4, path_3, path_2, path_1)


__all__ = ["DPTHead", "FeatureFusionBlock", "ResidualConvUnit"]
