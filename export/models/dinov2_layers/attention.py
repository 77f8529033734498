"""Multi-head self-attention of the DINOv2 blocks, on ``F.scaled_dot_product_attention``.

References: facebookresearch/dinov2 dinov2/layers/attention.py, as vendored in
DepthAnything/Depth-Anything-V2 depth_anything_v2/dinov2_layers/attention.py.

Upstream tries xFormers at import time and logs a warning when it is missing; nothing is probed
here (G2, G7). Eager (the FP32 reference) computes upstream's non-xFormers path op for op
(``(q * scale) @ k^T``, softmax, ``@ v``), so that it rounds as the official model does on the same
machine; an exported graph uses SDPA, which exports to plain MatMul/Softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._trace import tracing


class Attention(nn.Module):
    """Fused-QKV multi-head self-attention.

    Args:
        dim (int): Token width.
        num_heads (int): Number of heads; must divide ``dim``.
        qkv_bias (bool): Bias on the fused QKV projection. Defaults to True (DINOv2).
        proj_bias (bool): Bias on the output projection. Defaults to True.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # upstream's Python float
        # Checkpoint keys: attn.qkv.* (rows ordered q, k, v, each head-major) and attn.proj.*.
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over all tokens.

        Args:
            x (torch.Tensor): B x N x dim.

        Returns:
            torch.Tensor: B x N x dim.
        """
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if tracing():
            out = F.scaled_dot_product_attention(q, k, v)  # its default scale is head_dim ** -0.5 too
        else:
            out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
