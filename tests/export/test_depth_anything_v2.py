"""Depth Anything V2: checkpoint key layout, registry, strict round trip, output shapes and order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import _support
from psdrt.export.models import registry
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2

KEYS_DIR = _support.REPO_ROOT / "tests" / "data" / "keys"
ENCODERS = ["vits", "vitb", "vitl", "vitg"]


def read_key_list(path: Path) -> dict[str, tuple[int, ...]]:
    """Parse a committed ``name shape`` key list (shape comma-separated, ``#`` comments)."""
    shapes = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split()
        shapes[name] = tuple(int(v) for v in shape.split(","))
    return shapes


@pytest.fixture(scope="module")
def vits() -> DepthAnythingV2:
    torch.manual_seed(0)
    return DepthAnythingV2("vits").eval()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_state_dict_equals_official_key_list(encoder):
    expected = read_key_list(KEYS_DIR / f"dav2_{encoder}.txt")
    # Meta tensors: ViT-g has 1.3 G parameters; only names and shapes matter here.
    with torch.device("meta"):
        model = DepthAnythingV2(encoder)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_detect_encoder_from_key_list(encoder):
    shapes = read_key_list(KEYS_DIR / f"dav2_{encoder}.txt")
    assert registry.detect_dav2_encoder(shapes) == encoder
    # PSD stores the foundation model under mde.net.
    assert registry.detect_dav2_encoder({"mde.net." + k: s for k, s in shapes.items()}) == encoder


def test_detect_encoder_rejects_partial_or_foreign_dicts():
    shapes = read_key_list(KEYS_DIR / "dav2_vits.txt")
    assert registry.detect_dav2_encoder({}) is None
    assert registry.detect_dav2_encoder({"conv.weight": (3, 3)}) is None
    truncated = {k: s for k, s in shapes.items() if not k.startswith("pretrained.blocks.11.")}
    assert registry.detect_dav2_encoder(truncated) is None
    wrong_dim = dict(shapes, **{"pretrained.pos_embed": (1, 1370, 512), "pretrained.cls_token": (1, 1, 512)})
    assert registry.detect_dav2_encoder(wrong_dim) is None


def test_model_configs_table():
    assert set(registry.MODEL_CONFIGS) == set(ENCODERS)
    assert registry.MODEL_CONFIGS["vits"].license == "Apache-2.0"
    assert {registry.MODEL_CONFIGS[e].license for e in ("vitb", "vitl", "vitg")} == {"CC BY-NC 4.0"}
    assert registry.MODEL_CONFIGS["vitl"].layer_idx == (4, 11, 17, 23)
    assert registry.MODEL_CONFIGS["vitg"].ffn_layer == "swiglufused"
    for cfg in registry.MODEL_CONFIGS.values():
        assert max(cfg.layer_idx) == cfg.depth - 1
        assert cfg.embed_dim % cfg.num_heads == 0
    assert registry.checkpoint_file("vitl") == "depth_anything_v2_vitl.pth"


def test_round_trip_strict_load_with_renames(vits, tmp_path):
    path = tmp_path / "dav2_vits.pth"
    torch.save(vits.state_dict(), path)
    fresh = DepthAnythingV2("vits").eval()
    state = registry.apply_checkpoint_renames(torch.load(path, weights_only=True))
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 154, 224)
    with torch.no_grad():
        a_depth, a_feats = vits(x)
        b_depth, b_feats = fresh(x)
    assert torch.equal(a_depth, b_depth)
    assert all(torch.equal(a, b) for a, b in zip(a_feats, b_feats))


def test_forward_shapes_and_coarse_to_fine_order(vits):
    captured = {}
    hooks = [
        getattr(vits.depth_head.scratch, f"refinenet{i}").register_forward_hook(
            lambda _m, _i, out, i=i: captured.__setitem__(i, out)
        )
        for i in range(1, 5)
    ]
    try:
        with torch.no_grad():
            depth, feats = vits(torch.randn(1, 3, 392, 518))
    finally:
        for h in hooks:
            h.remove()
    assert depth.shape == (1, 1, 392, 518)
    assert depth.min().item() >= 0.0
    assert [tuple(f.shape) for f in feats] == [(1, 64, 28, 37), (1, 64, 56, 74), (1, 64, 112, 148), (1, 64, 224, 296)]
    # (path_4, path_3, path_2, path_1) = refinenet4..1, the order PSD uses for Depth Anything.
    assert all(f is captured[i] for f, i in zip(feats, (4, 3, 2, 1)))


def test_small_non_square_batch_is_per_sample(vits):
    x = torch.randn(2, 3, 154, 224)
    with torch.no_grad():
        depth, feats = vits(x)
        depth1, feats1 = vits(x[1:])
    assert depth.shape == (2, 1, 154, 224)
    assert [tuple(f.shape[-2:]) for f in feats] == [(11, 16), (22, 32), (44, 64), (88, 128)]
    torch.testing.assert_close(depth[1:], depth1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats[0][1:], feats1[0], rtol=1e-5, atol=1e-5)


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="unknown encoder"):
        DepthAnythingV2("vith")
