"""PSD learnable correction head: residual, bin-classification and pixel-offset stages.

References: shenglunch/PSD network/ipde_5c_l1_rezero_un_3.py (ResidualBranchRes, ImgBranchRes,
PixBranchRes, GateFusion, SparseDownSample, DCNet.forward), network/submodules.py (Conv2D,
Deconv2D, BasicBlock), network/resnet_cbam.py (BasicBlockReZero, CBAM attention); snapshot 5816c92.
Re-implemented from docs/psd_method.md sections 5, 9 and 10; only the attribute names that form
checkpoint keys follow upstream.

The head consumes the propagated depth ``depth_diff`` (section 4 of the method notes), the sparse
input and the four DPT fusion features of the depth foundation model (FM), and refines the depth in
three stages. Attribute names equal the keys of the official ``DCNet.state_dict()`` below ``rb.``,
``ib.``, ``pb.``, ``alpha*``, ``beta*`` and ``sds.``, so a released checkpoint (minus ``mde.*``) loads
strictly. Inference only: the training losses and the epoch-dependent detach points have no effect
on forward values and are not reproduced.

Widths are the effective ``configs/cfg.yml`` values of the released models (resnet18 variants);
the only free width is the FM's DPT ``features`` (64 ViT-S, 128 ViT-B, 256 ViT-L, 384 ViT-G), which
sets the input width of the four 1x1 adapter convolutions.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from psdrt.runtime.errors import ShapeError

__all__ = [
    "NUM_BINS",
    "MIN_SPATIAL",
    "Conv2D",
    "Deconv2D",
    "BasicBlock",
    "BasicBlockReZero",
    "ChannelAttention",
    "SpatialAttention",
    "GateFusion",
    "SparseDownSample",
    "ResidualBranch",
    "ImageBranch",
    "PixelBranch",
    "CorrectionHead",
    "masked_residual",
    "make_bins",
    "bin_labels",
]

#: number of residual bins of stage 2 (cfg ``Net.bin_num``)
NUM_BINS = 5
#: smallest H and W the head accepts: the image branch bottoms out at ceil(H/16), and its
#: reflect-padded 3x3 convolutions need at least 2 pixels there (16 -> 1 pixel fails)
MIN_SPATIAL = 17
#: DPT adapter output width (cfg ``RegressBranch.midas_dim`` / ``CSLBranch.ImgBranch.midas_dim``)
_ADAPTER_WIDTH = 16
#: LeakyReLU slope used by every 'lrelu' activation of the head
_LRELU_SLOPE = 0.2
#: the bin edges are kept at least this far from zero (metres)
_MIN_HALF_WIDTH = 0.05


def _activate(x: torch.Tensor, act: Optional[str]) -> torch.Tensor:
    if act is None:
        return x
    if act == "lrelu":
        return F.leaky_relu(x, _LRELU_SLOPE)
    if act == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown activation {act!r}; use 'lrelu', 'sigmoid' or None")


def _resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to ``size``.

    Upstream skips the resize when the sizes already agree; we always resize because a bilinear
    resize to the same size is an exact identity, and an unconditional op keeps an exported graph
    valid for every input size instead of freezing the branch taken at trace time.
    """
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _cat_resized(decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Concatenate ``[decoder resized to skip, skip]`` (upstream ``_concat``; order matters)."""
    return torch.cat((_resize_to(decoder, skip.shape[-2:]), skip), dim=1)


def masked_residual(sparse: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """``(sparse - depth)`` where sparse depth exists, 0 elsewhere.

    Args:
        sparse (torch.Tensor): B x 1 x H x W sparse metric depth, 0 = missing.
        depth (torch.Tensor): B x 1 x H x W dense depth estimate.

    Returns:
        torch.Tensor: B x 1 x H x W residual.
    """
    return (sparse - depth) * (sparse > 0).to(sparse.dtype)


def make_bins(
    residual: torch.Tensor,
    confidence: torch.Tensor,
    alpha1: torch.Tensor,
    beta1: torch.Tensor,
    alpha2: torch.Tensor,
    beta2: torch.Tensor,
    num_bins: int = NUM_BINS,
) -> torch.Tensor:
    """Per-pixel residual bins of stage 2 (method notes section 5.3).

    The half width ``|residual| * (2 - confidence) + 0.05`` grows where stage 1 moved the depth a
    lot or is unsure; the learnt scalars stretch and shift both ends, which are then kept at least
    5 cm away from zero so that the bins always straddle "no correction".

    Args:
        residual (torch.Tensor): B x 1 x H x W stage-1 residual (metres).
        confidence (torch.Tensor): B x 1 x H x W stage-1 confidence in [0, 1].
        alpha1 (torch.Tensor): shape [1], stretch of the upper edge.
        beta1 (torch.Tensor): shape [1], shift of the upper edge.
        alpha2 (torch.Tensor): shape [1], stretch of the lower edge.
        beta2 (torch.Tensor): shape [1], shift of the lower edge.
        num_bins (int): number of bins. Defaults to 5.

    Returns:
        torch.Tensor: B x num_bins x H x W, evenly spaced from the lower to the upper edge.
    """
    width = residual.abs() * (2.0 - confidence) + _MIN_HALF_WIDTH
    upper = torch.clamp((1.0 + alpha1) * width + beta1, min=_MIN_HALF_WIDTH)
    lower = torch.clamp((-1.0 + alpha2) * width + beta2, max=-_MIN_HALF_WIDTH)
    step = (upper - lower) / (num_bins - 1)
    # Inner bins as lower + k * step, and the upper edge taken as is rather than lower + (N-1) *
    # step: the same arithmetic as upstream, so the edges match it bit for bit.
    k = torch.arange(1, num_bins - 1, dtype=residual.dtype, device=residual.device)
    inner = lower + step * k.reshape(1, -1, 1, 1)
    return torch.cat((lower, inner, upper), dim=1)


def bin_labels(sparse: torch.Tensor, sparse_residual: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Soft assignment of the measured sparse residual to the bins, zero where there is no sample.

    Args:
        sparse (torch.Tensor): B x 1 x H x W sparse depth, 0 = missing.
        sparse_residual (torch.Tensor): B x 1 x H x W ``masked_residual(sparse, depth_residual)``.
        bins (torch.Tensor): B x N x H x W bins from :func:`make_bins`.

    Returns:
        torch.Tensor: B x N x H x W; ``softmax(-|r - bin|)`` over the bins at sparse pixels, else 0.
    """
    label = torch.softmax(-(sparse_residual - bins).abs(), dim=1)
    # Upstream zeroes the masked entries by boolean index assignment; a multiply gives the same
    # values for finite inputs and exports as an elementwise op instead of a scatter.
    return label * (sparse > 0).to(label.dtype)


class Conv2D(nn.Module):
    """Reflect-padded convolution with an optional ReZero gate or BatchNorm, then an activation.

    With ``norm='rezero'`` and a shape-preserving convolution (``in == out`` and stride 1) the output
    is ``alpha * conv(x) + x`` with a learnt scalar ``alpha`` (0 at initialisation, so the layer
    starts as the identity); otherwise 'rezero' means a plain convolution: there is no normalisation.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): square kernel size; padding is ``kernel_size // 2``. Defaults to 3.
        stride (int): stride. Defaults to 1.
        act (str | None): 'lrelu' (slope 0.2), 'sigmoid' or None. Defaults to None.
        norm (str | None): 'rezero', 'batch' or None. Defaults to 'rezero'.

    Checkpoint keys: ``conv.{weight,bias}``, plus ``bn.*`` ('batch') or ``alpha`` (0-d, gated).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: Optional[str] = None,
        norm: Optional[str] = "rezero",
    ) -> None:
        super().__init__()
        if norm not in ("rezero", "batch", None):
            raise ValueError(f"unknown norm {norm!r}; use 'rezero', 'batch' or None")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=True,
            padding_mode="reflect",
        )
        self.bn = nn.BatchNorm2d(out_channels) if norm == "batch" else None
        gated = norm == "rezero" and in_channels == out_channels and stride == 1
        # 0-d parameter, exactly as stored in the released checkpoints (not shape [1])
        self.alpha = nn.Parameter(torch.tensor(0.0)) if gated else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        if self.alpha is not None:
            y = self.alpha * y + x
        return _activate(y, self.act)


class Deconv2D(nn.Module):
    """Transposed 3x3 convolution that doubles H and W (stride 2, padding 1, output_padding 1).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        act (str | None): 'lrelu', 'sigmoid' or None. Defaults to 'lrelu'.
        batch_norm (bool): BatchNorm after the convolution. Defaults to False (upstream 'rezero',
            which means no normalisation for a transposed convolution).

    Checkpoint keys: ``deconv.{weight,bias}``, plus ``bn.*`` with ``batch_norm``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, act: Optional[str] = "lrelu", batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=True
        )
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.deconv(x)
        if self.bn is not None:
            y = self.bn(y)
        return _activate(y, self.act)


class BasicBlock(nn.Module):
    """Two ReZero 3x3 convolutions plus a shortcut, with no activation after the sum.

    ``y = conv2(conv1(x)) + shortcut(x)``; the shortcut is ``x`` itself, or a 1x1 strided
    convolution (``downsample``) when the block changes the channel count or the resolution.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): stride of the first convolution. Defaults to 1.

    Checkpoint keys: ``conv1.*``, ``conv2.*`` and, when the shape changes, ``downsample.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2D(in_channels, out_channels, 3, stride, act="lrelu")
        self.conv2 = Conv2D(out_channels, out_channels, 3, 1, act=None)
        reshapes = stride != 1 or in_channels != out_channels
        self.downsample = Conv2D(in_channels, out_channels, 1, stride, act=None) if reshapes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + shortcut


class ChannelAttention(nn.Module):
    """CBAM channel gate: ``sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))``, shape B x C x 1 x 1.

    Args:
        channels (int): channels C.
        ratio (int): bottleneck reduction of the shared MLP. Defaults to 4 (PSD's value).

    Checkpoint keys: ``fc.0.weight``, ``fc.2.weight`` (1x1 convolutions without bias).
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = channels // ratio
        # the parameterless ReLU at index 1 keeps the second conv at fc.2 = released checkpoint
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc(F.adaptive_avg_pool2d(x, 1))
        peak = self.fc(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``sigmoid(conv7x7([mean_c(x), max_c(x)]))``, shape B x 1 x H x W.

    Checkpoint keys: ``conv1.weight`` (no bias, zero padding).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv1(pooled))


class BasicBlockReZero(nn.Module):
    """Residual block with a ReZero gate and CBAM attention, used by the image-branch decoder.

    ``t = alpha * conv2(relu(conv1(x))) + x``, then ``t = CA(t) * t``, ``t = SA(t) * t`` and
    finally ``relu(t + x)``. The input is added **twice** (once inside the gate, once after the
    attention); that is how upstream computes it and how the released weights were trained, so it
    is kept. Convolutions are zero-padded and bias-free (torchvision ``conv3x3`` style).

    Args:
        channels (int): input and output channels.
        ratio (int): channel-attention reduction. Defaults to 4.

    Checkpoint keys: ``conv1.weight``, ``conv2.weight``, ``alpha`` (0-d), ``ca.fc.{0,2}.weight``,
    ``sa.conv1.weight``.
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.alpha = nn.Parameter(torch.tensor(0.0))
        self.ca = ChannelAttention(channels, ratio)
        self.sa = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.alpha * self.conv2(F.relu(self.conv1(x))) + x
        t = self.ca(t) * t
        t = self.sa(t) * t
        return F.relu(t + x)


class GateFusion(nn.Module):
    """Two lrelu ReZero convolutions gated elementwise by a sigmoid convolution of the same input.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.

    Checkpoint keys: ``conv1.{0,1}.*``, ``gate.0.*``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            Conv2D(in_channels, out_channels, act="lrelu"),
            Conv2D(out_channels, out_channels, act="lrelu"),
        )
        self.gate = nn.Sequential(Conv2D(in_channels, out_channels, act="sigmoid"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x) * self.conv1(x)


class SparseDownSample(nn.Module):
    """Average of the valid sparse samples in each ``scale`` x ``scale`` cell (frozen ones kernel).

    Owned by the head only because the released checkpoints store ``sds.conv.weight``; the
    correction stages do not call it (the propagation step that does lives elsewhere).

    Args:
        scale (int): cell size. Defaults to 4 (cfg ``Net.scale``).
    """

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, scale, stride=scale, padding=0, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
        self.conv.weight.requires_grad_(False)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        total = self.conv(sparse)
        count = self.conv((sparse > 0).to(sparse.dtype))
        return total / (count + 1e-5)


class _FMAdapterMixin(nn.Module):
    """Registers the FM adapter layers directly on the branch (keys ``mconv1..4``, ``mconv``).

    Each of the four DPT features goes through its own 1x1 convolution to 16 channels, is resized
    to the branch's 1/2-resolution stem and the four are fused by two 3x3 convolutions. The layers
    must sit on the branch itself, not in a child module, to keep the released key names.
    """

    def _init_adapter(self, fm_channels: int) -> None:
        w = _ADAPTER_WIDTH
        self.mconv1 = nn.Sequential(Conv2D(fm_channels, w, 1, norm=None))
        self.mconv2 = nn.Sequential(Conv2D(fm_channels, w, 1, norm=None))
        self.mconv3 = nn.Sequential(Conv2D(fm_channels, w, 1, norm=None))
        self.mconv4 = nn.Sequential(Conv2D(fm_channels, w, 1, norm=None))
        self.mconv = nn.Sequential(Conv2D(4 * w, w, act="lrelu"), Conv2D(w, w, act="lrelu"))

    def _adapt_fm(self, feats: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        projections = (self.mconv1, self.mconv2, self.mconv3, self.mconv4)
        resized = [_resize_to(proj(f), size) for proj, f in zip(projections, feats)]
        return self.mconv(torch.cat(resized, dim=1))


class ResidualBranch(_FMAdapterMixin):
    """Stage 1 (upstream ``ResidualBranchRes``): regress a depth residual and its confidence.

    A U-Net over ``[sparse, depth_diff, masked residual]`` fused with the FM adapter at 1/2
    resolution. Despite upstream's "1/16, 1/32" comments, conv4 and conv5 have stride 1, so the
    encoder bottoms out at 1/8 and the decoder bounces between 1/4 and 1/8: every transposed
    convolution doubles its input, and the next skip concatenation resizes it back down to the 1/8
    skip. The predictions leave at 1/4 and are resized bilinearly to H x W.

    Args:
        fm_channels (int): channels of each FM feature map.
    """

    def __init__(self, fm_channels: int) -> None:
        super().__init__()
        self._init_adapter(fm_channels)
        stem, width, last = 16, 32, 16  # cfg RegressBranch.dim, .resnet.dim, .last_dim
        self.conv1 = nn.Sequential(
            Conv2D(3, stem, stride=2, act="lrelu"),
            Conv2D(stem, stem, act="lrelu"),
            Conv2D(stem, width, act="lrelu"),
        )
        self.all_fuse = GateFusion(width + _ADAPTER_WIDTH, width)
        self.conv2 = nn.Sequential(
            Conv2D(width, width, stride=2, act="lrelu"), Conv2D(width, width, act="lrelu")
        )
        self.conv3 = nn.Sequential(
            Conv2D(width, 2 * width, stride=2, act="lrelu"), Conv2D(2 * width, 2 * width, act="lrelu")
        )
        self.conv4 = nn.Sequential(BasicBlock(2 * width, 4 * width), BasicBlock(4 * width, 4 * width))
        self.conv5 = nn.Sequential(BasicBlock(4 * width, 8 * width), BasicBlock(8 * width, 8 * width))
        # decoder widths: cfg RegressBranch.resnet.de_ch = [_, _, 16, 32, 64]
        self.deconv5 = nn.Sequential(Deconv2D(8 * width, 64), Conv2D(64, 64, act="lrelu"))
        self.deconv4 = nn.Sequential(Deconv2D(64 + 4 * width, 32), Conv2D(32, 32, act="lrelu"))
        self.deconv3 = nn.Sequential(Deconv2D(32 + 2 * width, 16), Conv2D(16, 16, act="lrelu"))
        self.regressor = nn.Sequential(Conv2D(16, last, act="lrelu"), Conv2D(last, 1, norm=None))
        self.confhead = nn.Sequential(
            Conv2D(16, last // 2, act="lrelu", norm="batch"), Conv2D(last // 2, 1, norm=None)
        )

    def forward(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run stage 1.

        Args:
            x (torch.Tensor): B x 3 x H x W ``[sparse, depth_diff, masked residual]``.
            feats (Sequence[torch.Tensor]): the four FM features, coarse to fine.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: residual and sigmoid confidence, both B x 1 x H x W.
        """
        out_size = x.shape[-2:]
        x1 = self.conv1(x)
        x1 = self.all_fuse(torch.cat((x1, self._adapt_fm(feats, x1.shape[-2:])), dim=1))
        x3 = self.conv3(self.conv2(x1))
        x4 = self.conv4(x3)
        d = self.deconv5(self.conv5(x4))
        d = self.deconv4(_cat_resized(d, x4))
        d = self.deconv3(_cat_resized(d, x3))
        residual = _resize_to(self.regressor(d), out_size)
        confidence = torch.sigmoid(_resize_to(self.confhead(d), out_size))
        return residual, confidence


class ImageBranch(_FMAdapterMixin):
    """Stage 2 (upstream ``ImgBranchRes``): classify the remaining residual into the bins.

    Takes ``[sparse, depth_residual, masked residual, 5 bin labels, stage-1 confidence]`` (no RGB
    despite the upstream name). A 1/2 -> 1/16 ResNet-style encoder and a CBAM decoder back to 1/2
    give ``fd0`` (128 channels at 1/2), from which a transposed convolution predicts the bin logits
    and a confidence at about full resolution.

    Dead parts: ``mconv1..4``, ``mconv`` and ``all_fuse`` (the FM adapter) are computed upstream but
    their output is never used, so they are never executed here; they exist only so that released
    checkpoints load strictly.

    Args:
        fm_channels (int): channels of each FM feature map (dead adapter input width).
    """

    def __init__(self, fm_channels: int) -> None:
        super().__init__()
        self._init_adapter(fm_channels)  # dead at inference, see class docstring
        stem, width, last = 16, 64, 24  # cfg CSLBranch.ImgBranch.dim, CSLBranch.resnet.dim, last_dim
        self.conv = nn.Sequential(
            Conv2D(4 + NUM_BINS, stem, stride=2, act="lrelu"),
            Conv2D(stem, stem, act="lrelu"),
            Conv2D(stem, width, act="lrelu"),
        )
        self.all_fuse = GateFusion(width + _ADAPTER_WIDTH, width)  # dead at inference
        self.conv1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.conv2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))
        self.conv3 = nn.Sequential(BasicBlock(2 * width, 4 * width, 2), BasicBlock(4 * width, 4 * width))
        self.conv4 = nn.Sequential(BasicBlock(4 * width, 8 * width, 2), BasicBlock(8 * width, 8 * width))
        self.deconv4 = nn.Sequential(Deconv2D(8 * width, 4 * width), BasicBlockReZero(4 * width))
        self.deconv3 = nn.Sequential(Deconv2D(8 * width, 2 * width), BasicBlockReZero(2 * width))
        self.deconv2 = nn.Sequential(Deconv2D(4 * width, width), BasicBlockReZero(width))
        self.classifier = nn.Sequential(Deconv2D(2 * width, last), Conv2D(last, NUM_BINS, norm=None))
        self.confhead = nn.Sequential(
            Deconv2D(2 * width, last // 3, batch_norm=True), Conv2D(last // 3, 1, norm=None)
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run stage 2.

        Args:
            x (torch.Tensor): B x 9 x H x W stacked stage-2 input.

        Returns:
            tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ``sim`` (B x 5 x H x W, softmax over
            the bins), ``conf_i`` (B x 1 x H x W, sigmoid) and ``fd0`` (B x 128 x H/2 x W/2).
        """
        out_size = x.shape[-2:]
        fe1 = self.conv1(self.conv(x))
        fe2 = self.conv2(fe1)
        fe3 = self.conv3(fe2)
        fd = self.deconv4(self.conv4(fe3))
        fd = self.deconv3(_cat_resized(fd, fe3))
        fd = self.deconv2(_cat_resized(fd, fe2))
        fd0 = _cat_resized(fd, fe1)
        sim = torch.softmax(_resize_to(self.classifier(fd0), out_size), dim=1)
        confidence = torch.sigmoid(_resize_to(self.confhead(fd0), out_size))
        return sim, confidence, fd0


class PixelBranch(nn.Module):
    """Stage 3 (upstream ``PixBranchRes``): a per-pixel depth offset from the stage-2 decoder.

    Dead part: ``predict_conf`` only feeds a training loss; it is never executed here and exists so
    that released checkpoints load strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        stem, fuse, feat, last = 16, 24, 128, 16  # cfg CSLBranch.PixBranch.resnet.*
        self.conv1 = nn.Sequential(
            Conv2D(4, stem, stride=2, act="lrelu"),
            Conv2D(stem, stem, act="lrelu"),
            Conv2D(stem, fuse, act="lrelu"),
            Conv2D(fuse, fuse, act="lrelu"),
        )
        self.feat2global = nn.Sequential(Conv2D(feat, fuse, 1, norm=None), Conv2D(fuse, fuse, act="lrelu"))
        self.fuse_global = GateFusion(2 * fuse, fuse)
        self.predict_global = nn.Sequential(Deconv2D(fuse, last), Conv2D(last, 1, norm=None))
        self.predict_conf = nn.Sequential(Deconv2D(fuse, last // 2), Conv2D(last // 2, 1, norm=None))  # dead

    def forward(self, x: torch.Tensor, fd0: torch.Tensor) -> torch.Tensor:
        """Run stage 3.

        Args:
            x (torch.Tensor): B x 4 x H x W ``[sparse, depth_img, masked residual, conf_i]``.
            fd0 (torch.Tensor): B x 128 x H/2 x W/2 stage-2 decoder feature.

        Returns:
            torch.Tensor: B x 1 x H x W offset (metres).
        """
        stem = self.conv1(x)
        fused = self.fuse_global(_cat_resized(self.feat2global(fd0), stem))
        return _resize_to(self.predict_global(fused), x.shape[-2:])


class CorrectionHead(nn.Module):
    """The learnable part of PSD: stages 1-3 of ``DCNet.forward`` at inference.

    Top-level attributes equal upstream ``DCNet``'s (``rb``, ``ib``, ``pb``, ``alpha1``, ``beta1``,
    ``alpha2``, ``beta2``, ``sds``), so ``{k: v for k, v in ckpt['model'].items() if not
    k.startswith('mde.')}`` loads with ``strict=True``.

    Args:
        fm_channels (int): DPT ``features`` of the foundation model: 64 (ViT-S), 128 (ViT-B),
            256 (ViT-L, the released PSD models) or 384 (ViT-G). Defaults to 256.
    """

    def __init__(self, fm_channels: int = 256) -> None:
        super().__init__()
        if int(fm_channels) != fm_channels or fm_channels < 1:
            raise ValueError(f"fm_channels must be a positive integer, got {fm_channels!r}")
        self.fm_channels = int(fm_channels)
        self.rb = ResidualBranch(self.fm_channels)
        self.ib = ImageBranch(self.fm_channels)
        self.pb = PixelBranch()
        # bin stretch/shift scalars, shape [1] as in the checkpoints; 0 at upstream initialisation
        self.alpha1 = nn.Parameter(torch.zeros(1))
        self.beta1 = nn.Parameter(torch.zeros(1))
        self.alpha2 = nn.Parameter(torch.zeros(1))
        self.beta2 = nn.Parameter(torch.zeros(1))
        self.sds = SparseDownSample(4)

    def _check_inputs(self, sparse: torch.Tensor, depth_diff: torch.Tensor, feats: Sequence[torch.Tensor]) -> None:
        if sparse.dim() != 4 or sparse.shape[1] != 1:
            raise ShapeError(f"sparse must be B x 1 x H x W, got {tuple(sparse.shape)}")
        if depth_diff.shape != sparse.shape:
            raise ShapeError(
                f"depth_diff {tuple(depth_diff.shape)} must have the shape of sparse {tuple(sparse.shape)}"
            )
        h, w = sparse.shape[-2:]
        if h < MIN_SPATIAL or w < MIN_SPATIAL:
            raise ShapeError(f"H and W must be at least {MIN_SPATIAL} for the 1/16 encoder level, got {h}x{w}")
        if len(feats) != 4:
            raise ShapeError(f"feats must hold the 4 DPT fusion features (coarse to fine), got {len(feats)}")
        for i, f in enumerate(feats):
            if f.dim() != 4 or f.shape[0] != sparse.shape[0] or f.shape[1] != self.fm_channels:
                raise ShapeError(
                    f"feats[{i}] must be B x {self.fm_channels} x h x w with B = {sparse.shape[0]}, got "
                    f"{tuple(f.shape)}; build CorrectionHead(fm_channels=...) for this foundation model"
                )

    def forward(
        self, sparse: torch.Tensor, depth_diff: torch.Tensor, feats: Sequence[torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Refine the propagated depth.

        Args:
            sparse (torch.Tensor): B x 1 x H x W sparse metric depth (m), 0 = missing.
            depth_diff (torch.Tensor): B x 1 x H x W propagated depth (m).
            feats (Sequence[torch.Tensor]): the four FM DPT fusion features, coarse to fine, each
                B x fm_channels x h_i x w_i.

        Returns:
            dict[str, torch.Tensor]: ``residual``, ``conf_r``, ``depth_residual`` (stage 1);
            ``bins`` (B x 5 x H x W), ``label``, ``sim`` (B x 5 x H x W), ``conf_i``, ``fd0``
            (B x 128 x H/2 x W/2, for post-processing), ``depth_img`` (stage 2); ``offset``,
            ``depth_pix`` (stage 3). Maps without a stated shape are B x 1 x H x W.

        Raises:
            ShapeError: on inconsistent or too small inputs, or features of the wrong width.
        """
        self._check_inputs(sparse, depth_diff, feats)

        residual, conf_r = self.rb(torch.cat((sparse, depth_diff, masked_residual(sparse, depth_diff)), 1), feats)
        depth_residual = residual + depth_diff

        bins = make_bins(residual, conf_r, self.alpha1, self.beta1, self.alpha2, self.beta2)
        sres = masked_residual(sparse, depth_residual)
        label = bin_labels(sparse, sres, bins)
        sim, conf_i, fd0 = self.ib(torch.cat((sparse, depth_residual, sres, label, conf_r), 1))
        depth_img = (bins * sim).sum(dim=1, keepdim=True) + depth_residual

        offset = self.pb(torch.cat((sparse, depth_img, masked_residual(sparse, depth_img), conf_i), 1), fd0)
        # Upstream weighs the single offset channel by the bin probabilities and sums; that equals
        # offset * sum(sim) = offset up to rounding. The product is kept for bitwise parity.
        depth_pix = (offset * sim).sum(dim=1, keepdim=True) + depth_img

        return {
            "residual": residual,
            "conf_r": conf_r,
            "depth_residual": depth_residual,
            "bins": bins,
            "label": label,
            "sim": sim,
            "conf_i": conf_i,
            "fd0": fd0,
            "depth_img": depth_img,
            "offset": offset,
            "depth_pix": depth_pix,
        }
