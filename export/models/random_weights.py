"""Deterministic, test-friendly random weights for the PSD correction head.

References: shenglunch/PSD network/submodules.py and network/resnet_cbam.py (initialisation of
Conv2D / Deconv2D and of the CBAM blocks); docs/psd_method.md section 12.4.

With the official initialisation (Kaiming-normal convolutions, ReZero gains and bin scalars at 0)
the head is a poor test subject: the ReZero branches contribute nothing, and the un-normalised
residual stacks blow up activations (stage-2 logits near 1e4 at KITTI size, stage-3 offsets of
thousands of metres). ``randomize_head_`` keeps the official weight distributions but scales the
last convolution of every prediction head and gives the gains small non-zero values, so every
branch contributes and the outputs stay within a few metres of the input depth.

Every tensor is drawn from its own generator seeded by ``(seed, qualified name)``, so the result
depends only on the checkpoint key names, not on module registration order: the official
``DCNet`` and our ``CorrectionHead`` get identical weights from the same seed.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn as nn

__all__ = ["PREDICTION_CONVS", "BRANCHES", "BIN_SCALARS", "randomize_head_"]

#: the convolutions whose outputs are predictions (residual, confidences, bin logits, offset);
#: scaling them bounds what each stage adds to the depth
PREDICTION_CONVS = (
    "rb.regressor.1.conv",
    "rb.confhead.1.conv",
    "ib.classifier.1.conv",
    "ib.confhead.1.conv",
    "pb.predict_global.1.conv",
)
#: learnable sub-networks of the head (``sds`` is a frozen ones kernel and stays untouched)
BRANCHES = ("rb", "ib", "pb")
#: the stage-2 bin stretch/shift scalars
BIN_SCALARS = ("alpha1", "beta1", "alpha2", "beta2")


def _generator(seed: int, name: str) -> torch.Generator:
    # crc32 is stable across processes (unlike hash()). The seed is hashed together with the name
    # because the CPU generator keeps only 32 bits of its seed: ``seed << 32`` would be dropped.
    return torch.Generator().manual_seed(zlib.crc32(f"{int(seed)}/{name}".encode()))


def _fan_in(weight: torch.Tensor) -> int:
    # nn.init's convention: dim 1 times the kernel size (for ConvTranspose2d that is out_channels,
    # exactly what PyTorch's own default initialisation uses).
    return weight.shape[1] * math.prod(weight.shape[2:])


def _init_conv(conv: nn.Module, g: torch.Generator) -> None:
    if conv.bias is not None:
        # PSD's Conv2D / Deconv2D wrappers (the only convolutions with a bias here):
        # Kaiming-normal weights, PyTorch's default bias.
        nn.init.kaiming_normal_(conv.weight, generator=g)
        bound = 1.0 / math.sqrt(_fan_in(conv.weight))
        conv.bias.uniform_(-bound, bound, generator=g)
    else:
        # the bias-free torchvision-style convolutions of BasicBlockReZero / CBAM keep PyTorch's
        # default initialisation upstream
        nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=g)


def _init_batch_norm(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    # Non-trivial affine and running statistics, so that a test notices a BatchNorm that is
    # dropped, run in training mode, or folded incorrectly.
    bn.weight.uniform_(0.75, 1.25, generator=g)
    bn.bias.uniform_(-0.1, 0.1, generator=g)
    bn.running_mean.normal_(0.0, 0.1, generator=g)
    bn.running_var.uniform_(0.5, 1.5, generator=g)
    bn.num_batches_tracked.fill_(1000)


def _small(shape: torch.Size, gain: float, g: torch.Generator) -> torch.Tensor:
    """Values of magnitude in [gain/2, gain] with random sign (never near zero)."""
    magnitude = torch.empty(shape).uniform_(0.5 * gain, gain, generator=g)
    sign = torch.randint(0, 2, shape, generator=g).mul(2).sub(1)
    return magnitude * sign


@torch.no_grad()
def randomize_head_(head: nn.Module, seed: int, head_scale: float = 0.01, gain: float = 0.1) -> nn.Module:
    """Give a PSD correction head deterministic random weights in place (method notes 12.4).

    Works on ``CorrectionHead`` and on the official ``DCNet`` alike: it touches only ``rb``,
    ``ib``, ``pb`` and the four bin scalars (never ``mde`` or ``sds``) and addresses everything by
    checkpoint key name.

    Args:
        head (nn.Module): module with ``rb``, ``ib``, ``pb``, ``alpha1``, ``beta1``, ``alpha2``,
            ``beta2`` attributes.
        seed (int): seed; the same seed gives the same weights for the same key names.
        head_scale (float): factor applied to the weight and bias of each prediction convolution
            (:data:`PREDICTION_CONVS`). Defaults to 0.01.
        gain (float): magnitude of the ReZero ``alpha`` gains (positive, in [gain/2, gain]) and of
            the bin scalars (random sign, magnitude in [gain/2, gain]). Defaults to 0.1.

    Returns:
        nn.Module: ``head``, which is also put in eval mode.
    """
    for branch in BRANCHES:
        for name, module in getattr(head, branch).named_modules():
            qualified = f"{branch}.{name}" if name else branch
            g = _generator(seed, qualified)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                _init_conv(module, g)
            elif isinstance(module, nn.BatchNorm2d):
                _init_batch_norm(module, g)
            alpha = getattr(module, "alpha", None)  # None also where Conv2D has no gate
            if isinstance(alpha, nn.Parameter):
                alpha.uniform_(0.5 * gain, gain, generator=g)

    for name in PREDICTION_CONVS:
        conv = head.get_submodule(name)
        conv.weight.mul_(head_scale)
        conv.bias.mul_(head_scale)

    for name in BIN_SCALARS:
        param = getattr(head, name)
        param.copy_(_small(param.shape, gain, _generator(seed, name)))

    return head.eval()
