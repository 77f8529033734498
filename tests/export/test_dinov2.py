"""DINOv2 encoder: position-embedding resampling against DINOv2's scale-factor formula, layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from psdrt.export.models.dinov2 import DinoVisionTransformer, resample_pos_grid
from psdrt.export.models.dinov2_layers import SwiGLUFFN, swiglu_hidden_width

#: (H, W) input sizes in pixels: PSD's NYU and KITTI sizes, the training size, and two small
#: non-square sizes in both orientations (catches a swapped height/width scale).
SIZES = [(392, 518), (392, 1862), (518, 518), (154, 224), (224, 154)]
GRID = 37  # 518 / 14


def official_pos_embed(table: torch.Tensor, height: int, width: int, offset: float = 0.1) -> torch.Tensor:
    """DINOv2's interpolate_pos_encoding semantics, written out for the test.

    The table is returned unchanged at the training size; otherwise the 37x37 grid goes through
    F.interpolate with scale_factor ((H//14 + offset) / 37, (W//14 + offset) / 37), bicubic,
    no antialias, and the output size is whatever that scale floors to.
    """
    h, w = height // 14, width // 14
    if (h, w) == (GRID, GRID):
        return table
    dim = table.shape[-1]
    grid = table[:, 1:].float().reshape(1, GRID, GRID, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, scale_factor=((h + offset) / GRID, (w + offset) / GRID), mode="bicubic", antialias=False
    )
    assert grid.shape[-2:] == (h, w)
    return torch.cat((table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)), dim=1).to(table.dtype)


def _tiny_encoder(seed: int = 0, pos_std: float = 1.0) -> DinoVisionTransformer:
    """Two-block encoder with the real 37x37 pos_embed grid, embeddings drawn with ``pos_std``."""
    torch.manual_seed(seed)
    enc = DinoVisionTransformer(embed_dim=48, depth=2, num_heads=3).eval()
    with torch.no_grad():
        enc.pos_embed.normal_(0.0, pos_std)
    return enc


@pytest.mark.parametrize("pos_std", [0.02, 0.1], ids=["dinov2-init", "5x-init"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pos_embed_matches_official_scale_factor(size, pos_std):
    enc = _tiny_encoder(pos_std=pos_std)
    with torch.no_grad():
        ours = enc.pos_embed_for(size[0] // 14, size[1] // 14)
        ref = official_pos_embed(enc.pos_embed, *size)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("hw", [(28, 37), (28, 133), (37, 37), (11, 16), (16, 11), (50, 60)])
def test_resample_pos_grid_equals_scale_factor_interpolate(hw):
    # Unit-variance embeddings, and the 37x37 resampling itself (not the identity shortcut).
    # What remains is float32 rounding inside PyTorch's kernel (its outer-tap weights lose a few
    # ulps to cancellation; ours are rounded once from float64): 2-5 ulps of the largest value,
    # measured ~2.4e-6 on values up to ~4.7. The bound is 1e-6 relative to the largest value.
    torch.manual_seed(1)
    grid = torch.randn(1, 64, GRID, GRID)
    h, w = hw
    ref = F.interpolate(grid, scale_factor=((h + 0.1) / GRID, (w + 0.1) / GRID), mode="bicubic", antialias=False)
    ours = resample_pos_grid(grid, hw)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-6 * grid.abs().max().item()


def test_plain_size_interpolate_is_not_the_official_mapping():
    # Records why resample_pos_grid exists: size=(h, w) steps by n/h, upstream by n/(h + 0.1).
    torch.manual_seed(2)
    grid = torch.randn(1, 8, GRID, GRID)
    by_size = F.interpolate(grid, size=(28, 37), mode="bicubic", align_corners=False, antialias=False)
    assert (by_size - resample_pos_grid(grid, (28, 37))).abs().max().item() > 1e-2


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encoder_outputs_match_official_pos_embed(size, monkeypatch):
    enc = _tiny_encoder()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ours = enc(x, (0, 1))
        monkeypatch.setattr(enc, "pos_embed_for", lambda h, w: official_pos_embed(enc.pos_embed, h * 14, w * 14))
        ref = enc(x, (0, 1))
    for a, b in zip(ours, ref):
        assert a.shape == (1, (size[0] // 14) * (size[1] // 14), 48)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dynamic_export_keeps_explicit_sizes():
    # The scale-factor form is traced into constants for one size; ours stays symbolic, so one
    # exported program serves other sizes. The training grid (37x37) is a shape guard.
    enc = _tiny_encoder()

    class Wrap(torch.nn.Module):
        def __init__(self, e):
            super().__init__()
            self.e = e

        def forward(self, x):
            return self.e(x, (1,))[0]

    model = Wrap(enc)
    ph, pw = torch.export.Dim("ph", min=2, max=160), torch.export.Dim("pw", min=2, max=160)
    prog = torch.export.export(model, (torch.randn(1, 3, 392, 518),), dynamic_shapes={"x": {2: 14 * ph, 3: 14 * pw}})
    with torch.no_grad():
        for size in [(154, 224), (392, 1862)]:
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(prog.module()(x), model(x), rtol=0, atol=1e-5)


def test_intermediate_layers_are_normed_and_selected():
    enc = _tiny_encoder()
    x = torch.randn(2, 3, 154, 224)
    with torch.no_grad():
        first, second = enc(x, (0, 1))
        (only_last,) = enc(x, (1,))
    torch.testing.assert_close(second, only_last, rtol=0, atol=0)
    # LayerNorm with its default affine (1, 0) output: zero mean per token.
    assert first.mean(-1).abs().max().item() < 1e-5


def test_swiglu_width_rule_matches_vitg_checkpoint():
    assert swiglu_hidden_width(4 * 1536) == 4096
    ffn = SwiGLUFFN(1536 // 16, 4 * 1536 // 16)
    x = torch.randn(3, 1536 // 16)
    gate, value = ffn.w12(x).chunk(2, dim=-1)
    torch.testing.assert_close(ffn(x), ffn.w3(F.silu(gate) * value))
