"""Non-overlapping patch embedding of the DINOv2 encoder.

References: facebookresearch/dinov2 dinov2/layers/patch_embed.py, as vendored in
DepthAnything/Depth-Anything-V2 depth_anything_v2/dinov2_layers/patch_embed.py.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Cut the image into ``patch_size`` squares and project each to one token.

    Args:
        patch_size (int): Side of a square patch. Defaults to 14.
        in_chans (int): Input channels. Defaults to 3.
        embed_dim (int): Token width. Defaults to 384.
    """

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 384) -> None:
        super().__init__()
        self.patch_size = patch_size
        # Checkpoint key: pretrained.patch_embed.proj.{weight,bias}. Upstream's `norm` is an
        # nn.Identity with no parameters, so it is not reproduced.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches.

        Args:
            x (torch.Tensor): B x C x H x W, H and W multiples of ``patch_size`` (a remainder would
                be silently cropped by the strided convolution).

        Returns:
            torch.Tensor: B x (H/p * W/p) x embed_dim, patches in row-major order.
        """
        return self.proj(x).flatten(2).transpose(1, 2)
