"""Feed-forward layers of the DINOv2 blocks: GELU MLP (ViT-S/B/L) and SwiGLU (ViT-g).

References: facebookresearch/dinov2 dinov2/layers/{mlp.py, swiglu_ffn.py}, as vendored in
DepthAnything/Depth-Anything-V2 depth_anything_v2/dinov2_layers/{mlp.py, swiglu_ffn.py}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them.

    Args:
        dim (int): Input and output width.
        hidden (int): Hidden width (4 * dim in DINOv2).
        bias (bool): Linear biases. Defaults to True.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP.

        Args:
            x (torch.Tensor): ... x dim.

        Returns:
            torch.Tensor: ... x dim.
        """
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden_width(hidden: int) -> int:
    """Hidden width of DINOv2's "swiglufused" FFN for a nominal MLP width.

    SwiGLU has three weight matrices instead of two, so DINOv2 shrinks the width to 2/3 and rounds
    up to a multiple of 8; the checkpoint shapes depend on this exact rule (ViT-g: 6144 -> 4096).

    Args:
        hidden (int): Nominal hidden width (mlp_ratio * dim).

    Returns:
        int: The width actually used by ``w12`` (twice this) and ``w3``.
    """
    return (int(hidden * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: ``w3(silu(a) * b)`` with ``a, b`` the halves of ``w12(x)``.

    This is the plain-PyTorch form of DINOv2's ``SwiGLUFFNFused``; the xFormers fused kernel it
    would use when installed computes the same function with the same parameters.

    Args:
        dim (int): Input and output width.
        hidden (int): Nominal hidden width; shrunk by :func:`swiglu_hidden_width`.
        bias (bool): Linear biases. Defaults to True.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        width = swiglu_hidden_width(hidden)
        self.w12 = nn.Linear(dim, 2 * width, bias=bias)
        self.w3 = nn.Linear(width, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated FFN.

        Args:
            x (torch.Tensor): ... x dim.

        Returns:
            torch.Tensor: ... x dim.
        """
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)
