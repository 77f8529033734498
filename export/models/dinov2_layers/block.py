"""Pre-norm transformer block with LayerScale, as used by the DINOv2 encoders.

References: facebookresearch/dinov2 dinov2/layers/{block.py, layer_scale.py}, as vendored in
DepthAnything/Depth-Anything-V2 depth_anything_v2/dinov2_layers/{block.py, layer_scale.py}.

Inference only: stochastic depth (drop path) is a training-time identity and has no parameters,
so it is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .ffn import Mlp, SwiGLUFFN

#: ``ffn_layer`` name (as in DINOv2's config strings) -> FFN class.
FFN_LAYERS = {"mlp": Mlp, "swiglufused": SwiGLUFFN, "swiglu": SwiGLUFFN}


class LayerScale(nn.Module):
    """Per-channel learnable residual-branch scale.

    Args:
        dim (int): Channels.
        init_value (float): Initial scale. Defaults to 1.0 (Depth Anything V2's ``init_values``).
    """

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the last axis.

        Args:
            x (torch.Tensor): ... x dim.

        Returns:
            torch.Tensor: ``x * gamma`` (never in place, so hooks and exports see a pure op).
        """
        return x * self.gamma


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` followed by ``x + ls2(mlp(norm2(x)))``.

    Args:
        dim (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN hidden width / dim. Defaults to 4.0.
        ffn_layer (str): A :data:`FFN_LAYERS` key. Defaults to "mlp".
        init_value (float): LayerScale initial value. Defaults to 1.0.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ffn_layer: str = "mlp",
        init_value: float = 1.0,
    ) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"unknown ffn_layer {ffn_layer!r}; expected one of {sorted(FFN_LAYERS)}")
        # DINOv2 uses LayerNorm eps 1e-6, not PyTorch's 1e-5 default.
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FFN_LAYERS[ffn_layer](dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block.

        Args:
            x (torch.Tensor): B x N x dim.

        Returns:
            torch.Tensor: B x N x dim.
        """
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))
