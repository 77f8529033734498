"""Parity with the official Depth-Anything-V2 code ($PSD_DAV2_OFFICIAL_DIR or
../shared/official/Depth-Anything-V2; skipped, naming what is missing, without it).

The official class is imported from that checkout, loaded with the same random ViT-S weights as
ours, and compared on depth and on the four DPT fusion outputs (captured with forward hooks, since
the official forward returns depth only): bit-identical in eager mode.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

import _support
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2

OFFICIAL_DIR = _support.official_dav2_dir()
_MISSING = _support.official_missing("DepthAnything/Depth-Anything-V2", "PSD_DAV2_OFFICIAL_DIR", "Depth-Anything-V2",
                                     ("depth_anything_v2/dpt.py",))
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

#: PSD's NYU size, its KITTI size, the training size (no pos-embed resampling) and a small one.
SIZES = [(392, 518), (392, 1862), (518, 518), (154, 224)]


def _import_official():
    """Import ``depth_anything_v2.dpt`` from the checkout without leaving it on sys.path."""
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    try:
        try:
            import torchvision.transforms  # noqa: F401  (the official dpt.py imports Compose)
        except ImportError:
            # Only infer_image() uses torchvision; a stub keeps the import working without it.
            stub = types.ModuleType("torchvision")
            stub.transforms = types.ModuleType("torchvision.transforms")
            stub.transforms.Compose = None
            sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
        sys.path.insert(0, str(OFFICIAL_DIR))
        return importlib.import_module("depth_anything_v2.dpt").DepthAnythingV2
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - set(saved_modules):
            if name.startswith(("depth_anything_v2", "torchvision")):
                del sys.modules[name]


@pytest.fixture(scope="module")
def models():
    official_cls = _import_official()
    torch.manual_seed(0)
    ours = DepthAnythingV2("vits").eval()
    with torch.no_grad():
        # Give every constant-initialised tensor (biases, norms, LayerScale, tokens) random values
        # so that a parameter used in the wrong place cannot hide behind a 0 or a 1.
        for name, p in ours.named_parameters():
            if name.endswith("bias") or ".norm" in name or name.endswith("gamma") or "token" in name:
                p.add_(0.05 * torch.randn_like(p))
    official = official_cls(encoder="vits", features=64, out_channels=[48, 96, 192, 384]).eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    return ours, official


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_official(models, size):
    ours, official = models
    captured = {}
    hooks = [
        getattr(official.depth_head.scratch, f"refinenet{i}").register_forward_hook(
            lambda _m, _i, out, i=i: captured.__setitem__(i, out)
        )
        for i in range(1, 5)
    ]
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    try:
        with torch.no_grad():
            ref_depth = official(x)
            depth, feats = ours(x)
    finally:
        for h in hooks:
            h.remove()
    assert ref_depth.shape == (1, *size)
    depth_err = (depth[:, 0] - ref_depth).abs().max().item() / ref_depth.abs().max().item()
    feat_errs = [
        (f - captured[i]).abs().max().item() / captured[i].abs().max().item()
        for f, i in zip(feats, (4, 3, 2, 1))
    ]
    print(f"{size}: depth max rel diff {depth_err:.2e}, features (path_4..path_1) {[f'{e:.2e}' for e in feat_errs]}")
    # eager mode computes upstream's attention and position-embedding resampling op for op
    # (export/models/_trace.py): bit-identical, not merely close
    assert torch.equal(depth[:, 0], ref_depth), depth_err
    assert all(torch.equal(f, captured[i]) for f, i in zip(feats, (4, 3, 2, 1))), feat_errs
