"""FP32 PyTorch reference of PSD's alignment and parameter-free dual-space propagation.

References: shenglunch/PSD network/ipde_5c_l1_rezero_un_3.py (DCNet.align_inverse_depth,
align_depth, depth2point, knnv1, compute_affinity, affinity_normalization, CSPN, dual_diffusion,
post_processing), reimplemented from the behaviour described in docs/psd_method.md §3-§5.6.

This module is the oracle that the kernels (``psdrt.kernels``) and every exported artefact are
compared with. It keeps the official arithmetic, quirks included:

* the kNN keeps the *least* cosine-similar k of the 2k nearest candidates (§4.2);
* the channel compression is a trilinear interpolation over (channel, y, x) (§4.1);
* resampling is PyTorch bicubic (a = -0.75, half-pixel, no antialias);
* CSPN normalises affinities by the sum of their absolute values with no epsilon (§4.3).

Where the official code yields NaN (all-zero affinities, a median over an empty selection, k > 1
weights summing to zero) or crashes (fewer than 2k candidates), every function takes
``safe=True`` to apply the fallback defined below; ``safe=False`` reproduces the official
arithmetic for parity tests. The pipeline API always uses ``safe=True``.

Defined fallbacks (``safe=True``):
    * ``align_median``: no sparse depth strictly between min and max -> the median ratio is taken
      over all valid sparse pixels instead (official: NaN everywhere, §12.1).
    * ``knn_propagate``: fewer than 2k candidates -> all m candidates are ranked and
      min(k, m) are kept (official: crash, §12.2); k > 1 cosines summing to 0 -> equal weights.
    * ``cspn``: a pixel whose 8 affinities are all zero keeps its injected initial value
      (weights 0, centre weight 1) instead of 0/0.

Tensors are float32 NCHW; batch size 1 is the deployment case, larger batches follow the
official batch semantics (global min/max over the batch in the alignment).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ...runtime.errors import InputError
from ...runtime.presets import PropagationPreset

__all__ = [
    "align_inverse_ls",
    "align_median",
    "sparse_pool",
    "backproject",
    "resize_bicubic",
    "resize_bilinear",
    "compress_channels",
    "knn_propagate",
    "cspn_weights",
    "cspn",
    "dual_propagation",
    "post_process",
    "NEIGHBOUR_OFFSETS",
]

#: (dy, dx) of the 8 neighbours in F.unfold order (3x3 kernel without its centre). The official
#: code's padding scheme gives, for unfold channel k with offset o_k, the neighbour p - o_k of
#: pixel p; cosine is symmetric, so a plain 3x3 stencil over these offsets is exact (§4.3).
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


# ------------------------------------------------------------------------------------------------
# alignment (§3)
# ------------------------------------------------------------------------------------------------


def _valid_range(sparse: torch.Tensor):
    valid = sparse > 0
    if not bool(valid.any()):
        raise InputError("sparse depth has no valid (> 0) point; provide at least one measurement")
    return sparse[valid].min(), sparse[valid].max()


def align_inverse_ls(rel_inv: torch.Tensor, sparse: torch.Tensor, arithmetic: str = "official") -> torch.Tensor:
    """Least-squares scale and shift of a relative inverse depth to sparse metric depth (§3.1).

    Args:
        rel_inv (Tensor): B x 1 x H x W relative inverse depth, already resized to H x W.
        sparse (Tensor): B x 1 x H x W metric depth, 0 = missing.
        arithmetic (str): ``"official"`` (float32 normal equations, as the official code) or
            ``"kernels"`` (float64 sums and solve, as the kernel library). Defaults to "official".

    Returns:
        Tensor: ``depth_polyfit``, B x 1 x H x W metres, clamped to the sparse [min, max].
        With fewer than 2 points strictly inside (min, max) the system is singular and the
        output is the constant max (official behaviour, never NaN).

    Raises:
        InputError: no valid sparse point.
    """
    dmin, dmax = _valid_range(sparse)
    mask = ((sparse > dmin) & (sparse < dmax)).float()
    target = torch.zeros_like(sparse)
    inside = mask > 0
    target[inside] = 1.0 / sparse[inside]
    r, y, m = rel_inv.squeeze(1), target.squeeze(1), mask.squeeze(1)
    _check_arithmetic(arithmetic)
    # "kernels": the float32 products summed and solved in float64, with the kernels' relative
    # singularity guard. The official float32 normal equations are ill-conditioned (det cancels):
    # one ulp of a sum moves s, t by ~1e-5 relative, so their float32 result depends on the order
    # in which a device adds; float64 is that spread's centre and the same on every device.
    d = torch.float64 if arithmetic == "kernels" else rel_inv.dtype
    a00 = (m * r * r).to(d).sum((1, 2))
    a01 = (m * r).to(d).sum((1, 2))
    a11 = m.to(d).sum((1, 2))
    b0 = (m * r * y).to(d).sum((1, 2))
    b1 = (m * y).to(d).sum((1, 2))
    det = a00 * a11 - a01 * a01
    ok = det > 0 if arithmetic == "official" else (det > 1e-9 * a00 * a11) & (a11 >= 2)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    s = torch.where(ok, (a11 * b0 - a01 * b1) / safe_det, torch.zeros_like(det)).to(rel_inv.dtype)
    t = torch.where(ok, (-a01 * b0 + a00 * b1) / safe_det, torch.zeros_like(det)).to(rel_inv.dtype)
    inv = s.view(-1, 1, 1, 1) * rel_inv + t.view(-1, 1, 1, 1)
    # masked assignment, like the official code (a NaN would pass through; none can arise here)
    lo, hi = 1.0 / dmax, 1.0 / dmin
    inv = torch.where(inv < lo, lo, inv)
    inv = torch.where(inv > hi, hi, inv)
    return 1.0 / inv


def _lower_median(x: torch.Tensor) -> torch.Tensor:
    # torch.median returns the lower of the two middle values for even counts
    return torch.median(x)


def align_median(ip: torch.Tensor, sparse: torch.Tensor, safe: bool = True) -> torch.Tensor:
    """Median scale of the IP-Basic fill to the sparse depth, clamped to its range (§3.2).

    Args:
        ip (Tensor): B x 1 x H x W classical dense fill (metres).
        sparse (Tensor): B x 1 x H x W metric depth, 0 = missing.
        safe (bool): apply the defined fallback when no sparse depth lies strictly between
            min and max. Defaults to True; False reproduces the official NaN.

    Returns:
        Tensor: ``ip_median``, B x 1 x H x W.
    """
    dmin, dmax = _valid_range(sparse)
    mask = (sparse > dmin) & (sparse < dmax)
    if safe and not bool(mask.any()):
        mask = sparse > 0
    if bool(mask.any()):
        scale = _lower_median(sparse[mask]) / (_lower_median(ip[mask]) + 1e-8)
    else:  # official arithmetic: median of an empty selection
        scale = torch.tensor(float("nan"), dtype=ip.dtype)
    out = ip * scale
    out = torch.where(out < dmin, dmin, out)
    out = torch.where(out > dmax, dmax, out)
    return out


# ------------------------------------------------------------------------------------------------
# resampling and geometry (§4.1)
# ------------------------------------------------------------------------------------------------


def resize_bicubic(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """PyTorch bicubic (a = -0.75, half-pixel centres, no antialias)."""
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)


def resize_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """PyTorch bilinear with align_corners=False."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def sparse_pool(sparse: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Average of the valid depths in each scale x scale cell: sum / (count + 1e-5) (§4.1.4).

    Rows/columns beyond a multiple of ``scale`` are dropped, as by the official stride-`scale`
    convolution without padding.
    """
    ones = torch.ones(1, 1, scale, scale, dtype=sparse.dtype, device=sparse.device)
    total = F.conv2d(sparse, ones, stride=scale)
    count = F.conv2d((sparse > 0).to(sparse.dtype), ones, stride=scale)
    return total / (count + 1e-5)


def backproject(depth: torch.Tensor, K: torch.Tensor, cam: str = "pinhole") -> torch.Tensor:
    """Back-project a depth map to a B x 3 x H x W point map (§4.1.1).

    Args:
        depth (Tensor): B x 1 x H x W metres.
        K (Tensor): B x 3 x 3 pinhole intrinsics at H x W (``cam='pinhole'``); for ``'MEI'`` a
            B x 9 tensor of unified-camera parameters (xi, k1, k2, p1, p2, gamma1, gamma2, u0, v0);
            ignored for ``'360'`` (equirectangular).
        cam (str): ray model: ``'pinhole'``, ``'360'`` or ``'MEI'``.

    Returns:
        Tensor: points ``ray(u, v) * depth`` with u = column, v = row (0-based).
    """
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=depth.device),
        torch.arange(w, dtype=torch.float32, device=depth.device),
        indexing="ij",
    )
    if cam == "pinhole":
        pix = torch.stack([u, v, torch.ones_like(u)], 0).reshape(1, 3, -1).expand(b, 3, h * w)
        rays = torch.matmul(torch.inverse(K.float()), pix).reshape(b, 3, h, w)
        return rays * depth
    if cam == "360":
        theta = 2 * math.pi * u / w
        phi = math.pi * v / h
        rays = torch.stack(
            [torch.sin(phi) * torch.cos(theta), torch.sin(phi) * torch.sin(theta), torch.cos(phi)], 0
        )
        return rays.unsqueeze(0) * depth
    if cam == "MEI":
        M = K.float().reshape(b, 9, 1, 1)
        xi, k1, k2, p1, p2, g1, g2, u0, v0 = (M[:, i : i + 1] for i in range(9))
        x = (u - u0) / g1
        y = (v - v0) / g2
        r2 = x * x + y * y
        dist = (1 + k1 * r2 + k2 * r2 * r2) / (1 + xi * r2) - xi
        xu = x * dist + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yu = y * dist + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
        z = torch.sqrt(1 / (1 + xi * r2)) * depth
        return torch.cat([xu * z, yu * z, z], 1)
    raise InputError(f"unknown camera model {cam!r}; use 'pinhole', '360' or 'MEI'")


def compress_channels(feat: torch.Tensor, channels: int, size: Sequence[int]) -> torch.Tensor:
    """The official channel compression: trilinear interpolation over (channel, y, x) (§4.1.5).

    Args:
        feat (Tensor): B x C x h x w features.
        channels (int): output channel count C'.
        size (tuple): output (H', W').

    Returns:
        Tensor: B x C' x H' x W'.
    """
    out = F.interpolate(
        feat.unsqueeze(1), size=(channels, *tuple(size)), mode="trilinear", align_corners=False
    )
    return out.squeeze(1)


# ------------------------------------------------------------------------------------------------
# 3D kNN propagation (§4.2)
# ------------------------------------------------------------------------------------------------


#: the two arithmetics of the reference: "official" (the official code op for op: the official
#: DCNet's output bit for bit where the foundation model is too) and "kernels" (the kernel
#: library's: float64 alignment sums, unfused squared kNN distances, sums in order, exact ties to
#: the lower candidate cell; the kernels' output up to float rounding of the continuous stages)
ARITHMETICS = ("official", "kernels")


def _check_arithmetic(arithmetic: str) -> None:
    if arithmetic not in ARITHMETICS:
        raise InputError(f"unknown arithmetic {arithmetic!r}; use one of {', '.join(ARITHMETICS)}")


def _sum_seq(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension, element by element from the first (float32 rounding each step)."""
    acc = torch.zeros_like(x[..., 0])
    for j in range(x.shape[-1]):
        acc = acc + x[..., j]
    return acc


def _dot_seq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last dimension, accumulated channel by channel."""
    acc = torch.zeros(torch.broadcast_shapes(a.shape, b.shape)[:-1], dtype=a.dtype)
    for j in range(a.shape[-1]):
        acc = acc + a[..., j] * b[..., j]
    return acc


def _normalize_seq(x: torch.Tensor) -> torch.Tensor:
    """x / max(|x|, 1e-12) over the last dimension (F.normalize) with the sequential sum of squares."""
    return x / torch.sqrt(_dot_seq(x, x)).clamp_min(1e-12).unsqueeze(-1)


def _knn_select_kernels(q_pts, c_pts, q_feat_raw, c_feat, cand, k2: int, kk: int):
    """The kernels' neighbour choice: (picked positions into the candidates (nq, kk), their
    affinities). Squared distances ((dx dx + dy dy) + dz dz), sequential dot products, and exact
    ties (distance, then affinity) to the lower candidate cell."""
    d = q_pts.unsqueeze(1) - c_pts.unsqueeze(0)  # nq, m, 3
    d2 = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]
    near = torch.sort(d2, dim=1, stable=True).indices[:, :k2]  # candidates are in cell order
    aff = _dot_seq(c_feat[near], _normalize_seq(q_feat_raw).unsqueeze(1))  # nq, 2k
    by_cell = torch.sort(cand[near], dim=1, stable=True).indices
    order = torch.sort(aff.gather(1, by_cell), dim=1, stable=True).indices[:, :kk]
    pick = by_cell.gather(1, order)
    return near.gather(1, pick), aff.gather(1, pick)


def knn_propagate(
    feat: torch.Tensor,
    points: torch.Tensor,
    init: torch.Tensor,
    sparse: torch.Tensor,
    k: int,
    rate: float = 1.0,
    candidates: int = 0,
    generator: Optional[torch.Generator] = None,
    safe: bool = True,
    chunk: int = 4096,
    arithmetic: str = "official",
) -> torch.Tensor:
    """3D kNN propagation at 1/4 resolution with the official re-ranking quirk (§4.2).

    For each empty cell (``sparse <= 0``) selected as a query, find the 2k candidate cells
    (``sparse > 1e-4``) nearest in Euclidean distance between ``points``, keep the k of them
    with the *smallest* cosine similarity of ``feat``, and write the affinity-weighted mean of
    their sparse values. Other cells keep ``init``.

    ``arithmetic="official"`` (the default) is the official code op for op (``torch.norm``
    distances, ``torch.topk``, ``F.normalize``) with the candidates in cell order, i.e. the official
    run whose ``torch.randperm`` draws the identity (tests/parity). Exact ties then go where
    ``torch.topk`` puts them, which PyTorch does not specify. ``arithmetic="kernels"`` is the
    kernel library's (``kernels/knn``): squared unfused distances, sums in order, and exact ties
    resolved to the lower candidate cell (tests/kernels/test_knn.py). Neighbour choices are a
    discontinuous function of rounding, so the two differ at near-ties, by as much as the official
    output moves with its own thread count or one ulp of its input (tests/parity measures both).

    Args:
        feat (Tensor): B x C x h x w features for the cosine (C = 12: xyz + 9 FM channels).
        points (Tensor): B x 3 x h x w point map.
        init (Tensor): B x 1 x h x w initial values (the median-aligned IP-Basic fill).
        sparse (Tensor): B x 1 x h x w pooled sparse depth.
        k (int): neighbours kept.
        rate (float): fraction of empty cells updated; < 1 draws a random subset.
        candidates (int): random cap on the candidate count (0 = all).
        generator (torch.Generator, optional): RNG for the random subsets; needed for
            reproducible output when ``rate < 1`` or ``candidates > 0``.
        safe (bool): fallbacks for < 2k candidates and zero weight sums (module docstring).
        chunk (int): queries processed at once (memory bound: chunk x m x C floats).
        arithmetic (str): ``"official"`` or ``"kernels"`` (above). Defaults to "official".

    Returns:
        Tensor: B x 1 x h x w.
    """
    _check_arithmetic(arithmetic)
    b, c, h, w = feat.shape
    flat_feat = feat.reshape(b, c, h * w).transpose(1, 2)  # b, hw, c
    flat_pts = points.reshape(b, 3, h * w).transpose(1, 2)  # b, hw, 3
    flat_sparse = sparse.reshape(b, h * w)
    out = init.reshape(b, h * w).clone().float()

    cand_masks = flat_sparse > 1e-4
    if candidates == 0:
        candidates = int(cand_masks.sum(1).min())  # official: min over the batch
    # official: same query count n for every sample, from the densest sample
    n_sparse_max = int((flat_sparse > 1e-6).sum(1).max())
    n_query = int((h * w - n_sparse_max) * rate)

    for i in range(b):
        cand = torch.nonzero(cand_masks[i]).squeeze(1)
        if candidates < cand.numel():
            perm = torch.randperm(cand.numel(), generator=generator)[:candidates]
            cand = cand[perm]
            if arithmetic == "kernels":
                cand = torch.sort(cand).values  # the kernels keep the subset in cell order
        query = torch.nonzero(flat_sparse[i] <= 0).squeeze(1)
        if n_query < query.numel():
            perm = torch.randperm(query.numel(), generator=generator)[:n_query]
            query = query[perm]
        m = cand.numel()
        if m == 0 or query.numel() == 0:
            if m == 0 and query.numel() > 0 and not safe:
                raise RuntimeError("kNN with no candidate cells (official code crashes)")
            continue
        k2 = 2 * k
        kk = k
        if m < k2:
            if not safe:
                raise RuntimeError(f"kNN needs at least 2k = {k2} candidate cells, got {m}")
            k2 = m
            kk = min(k, m)
        c_pts = flat_pts[i, cand]  # m, 3
        c_val = flat_sparse[i, cand]  # m
        if arithmetic == "kernels":
            c_feat = _normalize_seq(flat_feat[i, cand])
            for s in range(0, query.numel(), chunk):
                q = query[s : s + chunk]
                pos, k_aff = _knn_select_kernels(flat_pts[i, q], c_pts, flat_feat[i, q], c_feat, cand, k2, kk)
                total = _sum_seq(k_aff).unsqueeze(1)
                wts = k_aff / total
                if safe:
                    bad = ~torch.isfinite(wts).all(1, keepdim=True) | (total == 0)
                    wts = torch.where(bad, torch.full_like(wts, 1.0 / kk), wts)
                out[i, q] = _sum_seq(c_val[pos] * wts)
            continue
        c_feat = F.normalize(flat_feat[i, cand], p=2, dim=-1)  # m, c
        for s in range(0, query.numel(), chunk):
            q = query[s : s + chunk]
            dist = torch.norm(flat_pts[i, q].unsqueeze(1) - c_pts.unsqueeze(0), p=2, dim=-1)
            _, near = torch.topk(dist, k=k2, dim=1, largest=False)  # nq, 2k
            q_feat = F.normalize(flat_feat[i, q], p=2, dim=-1)  # nq, c
            aff = (c_feat[near] * q_feat.unsqueeze(1)).sum(-1)  # nq, 2k
            k_aff, k_idx = torch.topk(aff, k=kk, dim=1, largest=False)
            k_val = c_val[near.gather(1, k_idx)]  # nq, k
            total = k_aff.sum(1, keepdim=True)
            wts = k_aff / total
            if safe:
                bad = ~torch.isfinite(wts).all(1, keepdim=True) | (total == 0)
                wts = torch.where(bad, torch.full_like(wts, 1.0 / kk), wts)
            out[i, q] = (k_val * wts).sum(1)
    return out.reshape(b, 1, h, w)


# ------------------------------------------------------------------------------------------------
# CSPN with fixed cosine affinities (§4.3)
# ------------------------------------------------------------------------------------------------


def _neighbour(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """y[p] = x[p + (dy, dx)] with zeros outside the image."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    return xp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def cspn_weights(feat: torch.Tensor, safe: bool = True):
    """Normalised neighbour weights and centre weight of the fixed-affinity CSPN.

    Args:
        feat (Tensor): B x C x H x W guidance features.
        safe (bool): where all 8 affinities vanish, use weights 0 and centre 1 (else 0/0 = NaN).

    Returns:
        tuple: (weights B x 8 x H x W, centre B x 1 x H x W) with ``w = a / sum|a|`` and
        ``centre = 1 - sum(w)``. Weight j belongs to the neighbour ``p - NEIGHBOUR_OFFSETS[j]``
        (the official unfold/padding order).
    """
    f = F.normalize(feat, p=2, dim=1)  # x / max(|x|, 1e-12), as the official F.normalize
    # neighbour n = p - o for unfold offset o (see NEIGHBOUR_OFFSETS)
    aff = torch.cat([(f * _neighbour(f, -dy, -dx)).sum(1, keepdim=True) for dy, dx in NEIGHBOUR_OFFSETS], 1)
    abs_sum = aff.abs().sum(1, keepdim=True)
    if safe:
        zero = abs_sum == 0
        wts = torch.where(zero, torch.zeros_like(aff), aff / torch.where(zero, torch.ones_like(abs_sum), abs_sum))
    else:
        wts = aff / abs_sum
    centre = 1.0 - wts.sum(1, keepdim=True)
    return wts, centre


def cspn(
    sparse: torch.Tensor, dense: torch.Tensor, feat: torch.Tensor, iterations: int, safe: bool = True
) -> torch.Tensor:
    """Jacobi CSPN with sparse re-injection before each sweep (§4.3).

    Args:
        sparse (Tensor): B x 1 x H x W, 0 = missing.
        dense (Tensor): B x 1 x H x W initial dense map.
        feat (Tensor): B x C x H x W guidance features.
        iterations (int): sweeps T (0 returns the injected initial map).
        safe (bool): see ``cspn_weights``.

    Returns:
        Tensor: the last iterate (sparse not re-injected after the last sweep).
    """
    mask = (sparse > 0).to(dense.dtype)
    raw = (1 - mask) * dense + mask * sparse
    wts, centre = cspn_weights(feat, safe=safe)
    d = raw
    for _ in range(iterations):
        d = (1 - mask) * d + mask * sparse
        acc = torch.zeros_like(d)
        for j, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
            acc = acc + wts[:, j : j + 1] * _neighbour(d, -dy, -dx)
        d = centre * raw + acc
    return d


# ------------------------------------------------------------------------------------------------
# composed dual-space propagation (§4.4) and post-processing (§5.6)
# ------------------------------------------------------------------------------------------------


def dual_propagation(
    feat0: torch.Tensor,
    ip_median: torch.Tensor,
    depth_polyfit: torch.Tensor,
    sparse: torch.Tensor,
    K: torch.Tensor,
    preset: PropagationPreset,
    generator: Optional[torch.Generator] = None,
    safe: bool = True,
    arithmetic: str = "official",
) -> torch.Tensor:
    """The parameter-free dual-space propagation in the preset's mode (§4.4); ``arithmetic`` is
    the kNN's (``knn_propagate``).

    Args:
        feat0 (Tensor): B x C x hf x wf guidance features (``path_feats[0]`` of the FM).
        ip_median (Tensor): B x 1 x H x W median-aligned classical fill.
        depth_polyfit (Tensor): B x 1 x H x W aligned FM depth (geometry for the kNN).
        sparse (Tensor): B x 1 x H x W sparse metric depth.
        K (Tensor): B x 3 x 3 intrinsics (B x 9 MEI parameters for ``cam='MEI'``).
        preset (PropagationPreset): k, rate, candidates, mode, camera, iterations.
        generator (torch.Generator, optional): RNG for ``rate < 1`` / candidate caps.
        safe (bool): NaN/crash fallbacks (module docstring).

    Returns:
        Tensor: ``depth_diff``, B x 1 x H x W.
    """
    _, _, H, W = sparse.shape
    hq, wq = H // preset.scale, W // preset.scale
    points = backproject(depth_polyfit, K, cam=preset.cam)
    p4 = resize_bicubic(points, (hq, wq))
    i4 = resize_bicubic(ip_median, (hq, wq))
    s4 = sparse_pool(sparse, preset.scale)
    e4 = torch.cat([p4, compress_channels(feat0, 9, (hq, wq))], 1)
    g1 = compress_channels(feat0, 16, (H, W))

    def knn(init):
        return knn_propagate(
            e4, p4, init, s4, preset.k, preset.rate, preset.candidates, generator, safe=safe, arithmetic=arithmetic
        )

    if preset.mode == "3D-2D":
        d4 = cspn(s4, knn(i4), e4, preset.iters_quarter, safe=safe)
        return cspn(sparse, resize_bicubic(d4, (H, W)), g1, preset.iters_full, safe=safe)
    if preset.mode == "3D+2D":
        dk = knn(i4)
        d4 = cspn(s4, i4, e4, preset.iters_quarter, safe=safe)
        dc = cspn(sparse, resize_bicubic(d4, (H, W)), g1, preset.iters_full, safe=safe)
        return (dc + resize_bicubic(dk, (H, W))) / 2
    # "2D-3D"
    d4 = cspn(s4, i4, e4, preset.iters_quarter, safe=safe)
    d1 = cspn(sparse, resize_bicubic(d4, (H, W)), g1, preset.iters_full, safe=safe)
    dk = knn(resize_bicubic(d1, (hq, wq)))
    return resize_bicubic(dk, (H, W))


def post_process(
    fd0: torch.Tensor, depth_pix: torch.Tensor, sparse: torch.Tensor, iterations: int, safe: bool = True
) -> torch.Tensor:
    """Dataset-specific post-processing of the head output (§5.6).

    Args:
        fd0 (Tensor): B x 128 x H/2 x W/2 decoder features of the image branch.
        depth_pix (Tensor): B x 1 x H x W stage-3 depth.
        sparse (Tensor): B x 1 x H x W sparse depth.
        iterations (int): < 0 returns ``depth_pix``; 0 re-injects the sparse pixels; > 0 runs
            that many CSPN sweeps on fd0 compressed to 32 channels at H x W.
        safe (bool): see ``cspn_weights``.
    """
    if iterations < 0:
        return depth_pix
    if iterations == 0:
        return depth_pix * (1 - (sparse > 0).to(depth_pix.dtype)) + sparse
    _, _, H, W = depth_pix.shape
    feat = compress_channels(fd0, 32, (H, W))
    return cspn(sparse, depth_pix, feat, iterations, safe=safe)
