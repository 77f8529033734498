"""DINOv2 ViT encoder as configured by Depth Anything V2 (patch 14, 518 px, LayerScale, no registers).

References: DepthAnything/Depth-Anything-V2 depth_anything_v2/dinov2.py (itself from
facebookresearch/dinov2 dinov2/models/vision_transformer.py).

Attribute names equal the released checkpoint keys below ``pretrained.``: ``cls_token``,
``pos_embed``, ``mask_token``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._trace import tracing
from .dinov2_layers import Block, PatchEmbed


def _cubic_weights(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys cubic-convolution weights of the four taps around a sample point.

    Args:
        t (torch.Tensor): Fractional offsets in [0, 1] from the left-centre tap, shape (n,).
        a (float): Kernel parameter; -0.75 is PyTorch's (and ONNX ``cubic_coeff_a``) bicubic.
            Defaults to -0.75.

    Returns:
        torch.Tensor: (n, 4) weights for taps at offsets -1, 0, +1, +2.
    """

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    s = 1.0 - t
    return torch.stack((far(t + 1.0), near(t), near(s), far(s + 1.0)), dim=-1)


def _bicubic_matrix(n_in: int, n_out: int, inv_scale: float, like: torch.Tensor) -> torch.Tensor:
    """Dense (n_out, n_in) matrix of 1-D bicubic resampling with a given source step.

    Output sample ``i`` reads source coordinate ``(i + 0.5) * inv_scale - 0.5`` (half-pixel
    centres), four taps with border indices clamped: the sampling of PyTorch's
    ``upsample_bicubic2d`` with ``align_corners=False``.

    Args:
        n_in (int): Source length.
        n_out (int): Output length.
        inv_scale (float): Source step per output sample.
        like (torch.Tensor): Supplies dtype and device of the result.

    Returns:
        torch.Tensor: (n_out, n_in) weights, rows summing to 1.
    """
    dev = like.device
    # Reproduce the kernel's float32 arithmetic: it holds the step as a float and (as measured
    # on the CPU build) rounds step * (i + 0.5) - 0.5 once, like a fused multiply-add. Evaluating
    # in float64 and rounding once gives that result; two float32 roundings would move the taps'
    # fractional offsets by up to 4e-6 at 133 columns, i.e. ~1e-5 on unit-variance embeddings.
    step = (torch.ones((), dtype=torch.float64, device=dev) * inv_scale).float().double()
    centres = torch.arange(n_out, dtype=torch.float64, device=dev) + 0.5
    src = (centres * step - 0.5).float().double()
    left = torch.floor(src).clamp(max=n_in - 1)
    # Weights in float64, rounded once at the end; the kernel's float32 polynomial loses a few
    # ulps to cancellation in the outer taps, this stays within ~1 ulp of the exact value.
    weights = _cubic_weights((src - left).clamp(0.0, 1.0))
    taps = (left.to(torch.int64)[:, None] + torch.arange(-1, 3, device=dev)).clamp(0, n_in - 1)
    # Border taps clamp onto the same source index; the one-hot sum adds their weights up.
    onehot = (taps[..., None] == torch.arange(n_in, device=dev)).to(torch.float64)
    return (weights[..., None] * onehot).sum(dim=1).to(like.dtype)


def resample_pos_grid(grid: torch.Tensor, size: tuple[int, int], offset: float = 0.1) -> torch.Tensor:
    """Bicubically resample a square grid of position embeddings to an explicit ``size``.

    Numerically this is DINOv2's ``interpolate_pos_encoding``: ``F.interpolate(mode="bicubic",
    antialias=False, scale_factor=((h + offset) / n, (w + offset) / n))``. That call derives the
    output size from the scale, and PyTorch's kernel then maps output to source coordinates with
    the *given* scale, i.e. a step of ``n / (h + offset)``, not ``n / h``. The released weights were
    trained with that mapping, and ``F.interpolate(size=(h, w))`` (step ``n / h``) differs from it
    by up to ~1 on unit-variance embeddings, so it cannot be used. A scale-factor call, on the other
    hand, is traced by the ONNX exporter into a constant that is only right for the traced size.
    Writing the resampling as two small matrix products built from the explicit size keeps both
    properties: upstream's numerics and an output size (static or symbolic) that is stated. With
    static shapes the exporter folds the matrices into constants (two MatMuls remain, no Resize
    whose cubic mode TensorRT would have to match); with symbolic sizes they are built in-graph
    by a few float64 vector ops. Measured against the scale-factor call: <= 1e-6 on embeddings of
    DINOv2's init scale, ~2e-6 (a few float32 ulps) on unit-variance ones.

    Args:
        grid (torch.Tensor): 1 x C x n x n position embeddings (n = 37 for 518 px / patch 14).
        size (tuple[int, int]): Output grid (h, w) in patches.
        offset (float): DINOv2's ``interpolate_offset`` added to the output size when forming the
            scale. Defaults to 0.1 (Depth Anything V2; DINOv2 with registers uses 0.0).

    Returns:
        torch.Tensor: 1 x C x h x w, in ``grid``'s dtype.
    """
    n_h, n_w = grid.shape[-2], grid.shape[-1]
    h, w = size
    # Python floats on purpose: upstream forms scale = (h + offset) / n in double and the kernel
    # inverts it in double before rounding to float; the same sequence here gives the same steps.
    rows = _bicubic_matrix(n_h, h, 1.0 / ((h + offset) / n_h), grid)
    cols = _bicubic_matrix(n_w, w, 1.0 / ((w + offset) / n_w), grid)
    return rows @ grid @ cols.transpose(0, 1)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT returning normalised patch tokens of selected blocks.

    Args:
        embed_dim (int): Token width. Defaults to 384 (ViT-S).
        depth (int): Number of blocks. Defaults to 12.
        num_heads (int): Attention heads. Defaults to 6.
        ffn_layer (str): ``"mlp"`` or ``"swiglufused"``. Defaults to "mlp".
        patch_size (int): Patch side. Defaults to 14.
        img_size (int): Training image side; fixes the ``pos_embed`` grid. Defaults to 518.
        mlp_ratio (float): FFN width / embed_dim. Defaults to 4.0.
        interpolate_offset (float): See :func:`resample_pos_grid`. Defaults to 0.1.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        ffn_layer: str = "mlp",
        patch_size: int = 14,
        img_size: int = 518,
        mlp_ratio: float = 4.0,
        interpolate_offset: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        self.grid_size = img_size // patch_size

        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, embed_dim))
        # Used only by DINOv2's masked-image training; kept so that strict loading succeeds.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, ffn_layer) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation in DINOv2's scheme (only meaningful for tests without weights)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (class token first) for an ``h`` x ``w`` patch grid.

        Args:
            h (int): Patch rows.
            w (int): Patch columns.

        Returns:
            torch.Tensor: 1 x (1 + h*w) x embed_dim, in ``pos_embed``'s dtype.
        """
        n = self.grid_size
        # Upstream returns the stored table untouched at the training size (its resampling with
        # offset 0.1 would not be the identity there). This compares shapes, not data, so it is
        # resolved at trace time.
        if (h, w) == (n, n):
            return self.pos_embed
        table = self.pos_embed.float()
        grid = table[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
        if tracing():
            grid = resample_pos_grid(grid, (h, w), self.interpolate_offset)
        else:
            # eager (the reference): upstream's own call, so that the FP32 reference is the official
            # model bit for bit (the matrix form above rounds differently by a few ulps, which the
            # inverse-depth alignment and the kNN amplify to centimetres at KITTI size)
            grid = F.interpolate(grid, scale_factor=((h + self.interpolate_offset) / n,
                                                     (w + self.interpolate_offset) / n),
                                 mode="bicubic", antialias=False)
            if tuple(grid.shape[-2:]) != (h, w):  # never for offset 0.1; guards another offset
                raise ValueError(f"position-embedding resampling gave {tuple(grid.shape[-2:])}, not {(h, w)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((table[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor, layer_idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Encode an image and return the normalised patch tokens after the chosen blocks.

        Args:
            x (torch.Tensor): B x 3 x H x W normalised RGB, H and W multiples of ``patch_size``.
            layer_idx (Sequence[int]): Block indices to return, ascending.

        Returns:
            tuple[torch.Tensor, ...]: One B x (H/p * W/p) x embed_dim tensor per index, class
            token removed.
        """
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.pos_embed_for(h, w)
        wanted = set(layer_idx)
        outputs = []
        # Blocks after the last requested index cannot affect the outputs; skip them.
        for i, block in enumerate(self.blocks[: max(layer_idx) + 1]):
            tokens = block(tokens)
            if i in wanted:
                outputs.append(self.norm(tokens)[:, 1:])
        return tuple(outputs)


__all__ = ["DinoVisionTransformer", "resample_pos_grid"]
