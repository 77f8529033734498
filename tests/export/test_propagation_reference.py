"""The propagation reference on small hand-computed cases (quirks included)."""

import math

import pytest
import torch

from psdrt.export.reference import propagation as P
from psdrt.runtime.errors import InputError
from psdrt.runtime.presets import get_preset


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_sparse_pool_is_mean_of_valid_with_epsilon():
    s = torch.zeros(1, 1, 4, 8)
    s[0, 0, 0, 0], s[0, 0, 3, 3] = 2.0, 4.0  # first cell: two points
    out = P.sparse_pool(s)
    assert out.shape == (1, 1, 1, 2)
    assert out[0, 0, 0, 0].item() == pytest.approx(6.0 / (2 + 1e-5), rel=1e-7)
    assert out[0, 0, 0, 1].item() == 0.0


def test_compress_channels_blends_two_nearest_channels():
    # channel c holds the constant value c: output channel j = clamp((j+0.5)*C/C' - 0.5, 0, C-1)
    C, Cp = 256, 9
    feat = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1).expand(1, C, 3, 5).contiguous()
    out = P.compress_channels(feat, Cp, (3, 5))
    for j in range(Cp):
        x = min(max((j + 0.5) * C / Cp - 0.5, 0.0), C - 1)
        assert out[0, j, 1, 2].item() == pytest.approx(x, abs=1e-4)


def test_cspn_weights_hand_case():
    # 1 x 3 image: features a=(1,0), b=(1,0), c=(-1,0). Pixel b sees a (cos 1) and c (cos -1).
    feat = torch.tensor([[[[1.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]]])
    w, centre = P.cspn_weights(feat)
    # weight j belongs to neighbour p - NEIGHBOUR_OFFSETS[j]: j = 3 (o = (0,-1)) is the right
    # neighbour, j = 4 (o = (0,1)) the left one
    assert w[0, 4, 0, 1].item() == pytest.approx(0.5)
    assert w[0, 3, 0, 1].item() == pytest.approx(-0.5)
    assert centre[0, 0, 0, 1].item() == pytest.approx(1.0)  # 1 - (0.5 - 0.5)
    # pixel c: only neighbour b with cos -1 -> w = -1, centre = 2
    assert w[0, 4, 0, 2].item() == pytest.approx(-1.0)
    assert centre[0, 0, 0, 2].item() == pytest.approx(2.0)


def test_cspn_one_sweep_hand_case():
    feat = torch.tensor([[[[1.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]]])
    sparse = _t([[5.0, 0.0, 0.0]])
    dense = _t([[1.0, 2.0, 3.0]])
    out = P.cspn(sparse, dense, feat, iterations=1)
    # raw = [5, 2, 3]; a: neighbour b (cos 1) -> w 1, centre 0 -> 2
    # b: 0.5*5 - 0.5*3 + 1*2 = 3 ; c: -1*2 + 2*3 = 4
    assert out.flatten().tolist() == pytest.approx([2.0, 3.0, 4.0])


def test_cspn_zero_affinity_nan_official_and_fallback():
    feat = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # orthogonal: all cosines 0
    sparse = _t([[0.0, 0.0]])
    dense = _t([[1.5, 2.5]])
    assert torch.isnan(P.cspn(sparse, dense, feat, 2, safe=False)).all()
    assert P.cspn(sparse, dense, feat, 2, safe=True).flatten().tolist() == [1.5, 2.5]


def test_knn_keeps_the_less_similar_of_the_two_nearest():
    # 1 x 4 cells: query at 0, candidates at 1 (similar), 2 (dissimilar), 3 (far away).
    pts = torch.zeros(1, 3, 1, 4)
    pts[0, 0, 0] = torch.tensor([0.0, 1.0, 1.1, 50.0])
    feat = torch.zeros(1, 12, 1, 4)
    feat[0, 0, 0] = torch.tensor([1.0, 1.0, 0.2, 1.0])
    feat[0, 1, 0] = torch.tensor([0.0, 0.1, 1.0, 0.0])
    sparse = _t([[0.0, 7.0, 9.0, 11.0]])
    init = _t([[0.0, 0.0, 0.0, 0.0]])
    out = P.knn_propagate(feat, pts, init, sparse, k=1)
    assert out[0, 0, 0, 0].item() == 9.0  # least similar of {1, 2}; cell 3 is not among the 2k
    assert out[0, 0, 0, 1:].tolist() == [0.0, 0.0, 0.0]  # non-query cells keep init


def test_knn_fewer_than_2k_candidates():
    pts = torch.zeros(1, 3, 1, 3)
    pts[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0])
    feat = torch.rand(1, 12, 1, 3) + 0.1
    sparse = _t([[0.0, 4.0, 0.0]])
    init = torch.zeros(1, 1, 1, 3)
    with pytest.raises(RuntimeError):
        P.knn_propagate(feat, pts, init, sparse, k=1, safe=False)
    out = P.knn_propagate(feat, pts, init, sparse, k=3, safe=True)
    assert out.flatten().tolist() == [4.0, 0.0, 4.0]


def test_align_inverse_ls_recovers_scale_and_shift():
    torch.manual_seed(0)
    rel = torch.rand(1, 1, 6, 7) + 0.5
    s, t = 0.3, 0.05
    depth = 1.0 / (s * rel + t)
    sparse = torch.zeros_like(depth)
    idx = torch.randperm(42)[:12]
    sparse.view(-1)[idx] = depth.view(-1)[idx]
    out = P.align_inverse_ls(rel, sparse)
    valid = sparse > 0
    lo, hi = sparse[valid].min(), sparse[valid].max()
    assert torch.allclose(out, depth.clamp(lo, hi), rtol=1e-4)


def test_align_inverse_ls_degenerate_gives_constant_max():
    rel = torch.rand(1, 1, 4, 4)
    sparse = torch.zeros(1, 1, 4, 4)
    sparse[0, 0, 0, 0], sparse[0, 0, 3, 3] = 2.0, 5.0  # no interior point
    assert torch.all(P.align_inverse_ls(rel, sparse) == 5.0)
    with pytest.raises(InputError):
        P.align_inverse_ls(rel, torch.zeros(1, 1, 4, 4))


def test_align_median_lower_median_and_nan_fallback():
    ip = torch.full((1, 1, 2, 4), 2.0)
    ip[0, 0, 0, 1], ip[0, 0, 0, 2] = 1.0, 4.0
    sparse = _t([[1.0, 3.0, 6.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    # interior points: 3 (ip 1) and 6 (ip 4) -> lower medians 3 / 1 -> scale 3
    out = P.align_median(ip, sparse)
    assert out[0, 0, 1, 0].item() == pytest.approx(6.0, rel=1e-6)
    assert out[0, 0, 0, 2].item() == pytest.approx(10.0)  # clamped at max
    two = _t([[1.0, 0.0, 0.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.isnan(P.align_median(ip, two, safe=False)).all()
    assert torch.isfinite(P.align_median(ip, two)).all()


def test_backproject_pinhole():
    depth = torch.full((1, 1, 2, 3), 2.0)
    K = torch.tensor([[[4.0, 0.0, 1.0], [0.0, 5.0, 0.5], [0.0, 0.0, 1.0]]])
    pts = P.backproject(depth, K)
    # pixel (v=1, u=2): ((2-1)/4*2, (1-0.5)/5*2, 2)
    assert pts[0, :, 1, 2].tolist() == pytest.approx([0.5, 0.2, 2.0])


@pytest.mark.parametrize("name", ["NYUv2", "VKITTI2", "DIMLi"])
def test_dual_propagation_modes_finite_and_seeded(name):
    preset = get_preset(name)
    g = torch.Generator().manual_seed(0)
    H, W = 48, 64
    feat0 = torch.randn(1, 8, 7, 9, generator=g)
    sparse = torch.zeros(1, 1, H, W)
    m = torch.rand(1, 1, H, W, generator=g) < 0.03
    sparse[m] = torch.rand(int(m.sum()), generator=g) * 8 + 1
    fill = torch.full((1, 1, H, W), 4.0)
    polyfit = torch.rand(1, 1, H, W, generator=g) * 8 + 1
    K = torch.tensor([[[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]])
    runs = [
        P.dual_propagation(feat0, fill, polyfit, sparse, K, preset, torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    # a propagated map lies within the convex-ish hull of the inputs' range
    assert runs[0].min() > -50 and runs[0].max() < 60
    for mode in ("3D+2D", "2D-3D"):
        out = P.dual_propagation(feat0, fill, polyfit, sparse, K, preset.replace(mode=mode))
        assert out.shape == (1, 1, H, W) and torch.isfinite(out).all()


def test_post_process_modes():
    sparse = _t([[0.0, 3.0], [0.0, 0.0]])
    dense = _t([[1.0, 1.0], [1.0, 1.0]])
    fd0 = torch.rand(1, 128, 1, 1)
    assert torch.equal(P.post_process(fd0, dense, sparse, -1), dense)
    assert P.post_process(fd0, dense, sparse, 0).flatten().tolist() == [1.0, 3.0, 1.0, 1.0]
    out = P.post_process(fd0, dense, sparse, 2)
    assert torch.isfinite(out).all() and not math.isnan(out.sum().item())
