"""Tests of psdrt.export.models.completion_head and psdrt.export.models.random_weights.

The key lists under tests/data/keys/psd_head*.txt were generated once from the official module
definitions (shenglunch/PSD, configs/cfg.yml widths); the parity against the official forward
lives in tests/parity/test_head_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from psdrt.export.models import completion_head as ch
from psdrt.export.models.completion_head import (
    BasicBlock,
    BasicBlockReZero,
    Conv2D,
    CorrectionHead,
    bin_labels,
    make_bins,
    masked_residual,
)
from psdrt.export.models.random_weights import BIN_SCALARS, PREDICTION_CONVS, randomize_head_
from psdrt.runtime.errors import ShapeError

KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "keys"
#: learnable parameters of the released head (method notes 5.7, what upstream print_params reports)
RELEASED_LEARNABLE = 17_969_314


def read_key_list(path: Path) -> dict:
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split()
        keys[name] = tuple(int(d) for d in shape.strip("[]").split(",") if d)
    return keys


def make_inputs(h: int, w: int, fm_channels: int, seed: int = 0, batch: int = 1):
    """Sparse (~1 % of pixels), depth_diff ~ U(1, 10) m and DA-V2-sized features, coarse to fine."""
    g = torch.Generator().manual_seed(seed)
    depth_diff = torch.empty(batch, 1, h, w).uniform_(1.0, 10.0, generator=g)
    mask = torch.rand(batch, 1, h, w, generator=g) < 0.01
    sparse = (depth_diff + 0.3 * torch.randn(batch, 1, h, w, generator=g)).clamp(min=0.1) * mask
    # DA-V2 input: lower-bound 392 keeping aspect, multiple of 14; path features at 1, 2, 4, 8 x grid
    gh, gw = 28, max(1, round(392 * w / h / 14))
    feats = [torch.randn(batch, fm_channels, gh * s, gw * s, generator=g) for s in (1, 2, 4, 8)]
    return sparse, depth_diff, feats


@pytest.fixture(scope="module")
def head64():
    """One randomized ViT-S head, shared because building 18 M parameters takes about a second."""
    return randomize_head_(CorrectionHead(64), seed=0)


@pytest.fixture(scope="module")
def nyu_run(head64):
    """The shared head and its outputs at NYU size (~0.5 s per forward)."""
    head = head64
    sparse, depth_diff, feats = make_inputs(228, 304, 64)
    with torch.no_grad():
        out = head(sparse, depth_diff, feats)
    return head, (sparse, depth_diff, feats), out


# ----------------------------------------------------------------------------------------------
# key layout


@pytest.mark.parametrize(
    "fm_channels, filename",
    [(256, "psd_head.txt"), (64, "psd_head_vits.txt"), (128, "psd_head_vitb.txt"), (384, "psd_head_vitg.txt")],
)
def test_state_dict_equals_official_key_list(fm_channels, filename):
    expected = read_key_list(KEYS_DIR / filename)
    ours = {k: tuple(v.shape) for k, v in CorrectionHead(fm_channels).state_dict().items()}
    assert ours == expected
    assert list(ours) == list(expected)  # same order too, so a diff against a checkpoint reads 1:1


def test_strict_load_of_key_list_shapes():
    keys = read_key_list(KEYS_DIR / "psd_head.txt")
    state = {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
             for k, s in keys.items()}
    head = CorrectionHead(256)
    result = head.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_learnable_parameter_count_matches_release():
    head = CorrectionHead(256)
    learnable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert learnable == RELEASED_LEARNABLE
    assert not head.sds.conv.weight.requires_grad
    assert torch.equal(head.sds.conv.weight, torch.ones(1, 1, 4, 4))


def test_bad_fm_channels():
    with pytest.raises(ValueError):
        CorrectionHead(0)


# ----------------------------------------------------------------------------------------------
# building blocks


def test_conv2d_reflect_padding():
    conv = Conv2D(1, 1, 3, norm=None)
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 0, 0, 0] = 1.0  # picks the up-left neighbour
        conv.conv.bias.zero_()
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    with torch.no_grad():
        y = conv(x)[0, 0].numpy()
    padded = np.pad(x[0, 0].numpy(), 1, mode="reflect")
    np.testing.assert_array_equal(y, padded[:3, :4])
    assert y[0, 0] == 5.0  # reflect (x[1, 1]), not zero or replicate padding


def test_conv2d_rezero_gate():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 6)
    gated = Conv2D(4, 4)
    assert gated.alpha is not None and gated.alpha.dim() == 0 and gated.alpha.item() == 0.0
    assert torch.equal(gated(x), x)  # alpha = 0: exactly the identity
    assert torch.equal(Conv2D(4, 4, act="lrelu")(x), torch.nn.functional.leaky_relu(x, 0.2))
    with torch.no_grad():
        gated.alpha.fill_(0.5)
    torch.testing.assert_close(gated(x), 0.5 * gated.conv(x) + x)
    # no gate when the convolution changes the shape, and none outside 'rezero'
    assert Conv2D(4, 8).alpha is None
    assert Conv2D(4, 4, stride=2).alpha is None
    assert Conv2D(4, 4, norm=None).alpha is None
    assert "alpha" not in dict(Conv2D(4, 8).named_parameters())


def test_basic_block_shortcut_without_final_activation():
    block = BasicBlock(3, 3)
    assert block.downsample is None
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.randn(1, 3, 6, 7)
    # conv1 = lrelu(0 * conv + x); conv2 = 0 * conv + that; plus the shortcut x, no activation
    torch.testing.assert_close(block(x), torch.nn.functional.leaky_relu(x, 0.2) + x)
    assert BasicBlock(3, 5).downsample is not None
    assert BasicBlock(3, 3, stride=2).downsample is not None


def test_basic_block_rezero_adds_input_twice():
    block = BasicBlockReZero(8)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.randn(2, 8, 5, 5)
    # convs 0 => t = x; zero attention convs => CA = SA = sigmoid(0) = 1/2 => t = x / 4;
    # the second addition of x gives relu(1.25 x) (a single residual would give relu(0.25 x)).
    torch.testing.assert_close(block(x), torch.relu(1.25 * x))


def test_resize_to_same_size_is_exact_identity():
    # CorrectionHead always resizes skip inputs (upstream skips equal sizes); this must be exact.
    x = torch.randn(1, 3, 7, 9)
    assert torch.equal(ch._resize_to(x, x.shape[-2:]), x)


# ----------------------------------------------------------------------------------------------
# bins and labels (method notes 5.3)


def _pixels(*values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_bins_hand_computed():
    zero = torch.zeros(1)
    residual = _pixels(0.5, 0.0, -1.0)
    conf = _pixels(0.5, 1.0, 0.5)
    bins = make_bins(residual, conf, zero, zero, zero, zero)[0, :, 0, :].T
    # width = |r| (2 - c) + 0.05: 0.8, 0.05, 1.55 -> symmetric bins around 0
    expected = torch.tensor([
        [-0.8, -0.4, 0.0, 0.4, 0.8],
        [-0.05, -0.025, 0.0, 0.025, 0.05],
        [-1.55, -0.775, 0.0, 0.775, 1.55],
    ])
    torch.testing.assert_close(bins, expected)

    # learnt stretch/shift: r = -1, c = 0 -> width 2.05; max = 1.5 * 2.05 + 0.1; min = -1.5 * 2.05 + 0.2
    a1, b1, a2, b2 = (torch.tensor([v]) for v in (0.5, 0.1, -0.5, 0.2))
    bins = make_bins(_pixels(-1.0), _pixels(0.0), a1, b1, a2, b2)[0, :, 0, 0]
    torch.testing.assert_close(bins, torch.tensor([-2.875, -1.3625, 0.15, 1.6625, 3.175]))

    # both ends are kept at least 5 cm from zero: the shifts would otherwise cross it
    bins = make_bins(_pixels(0.0), _pixels(1.0), zero, torch.tensor([-1.0]), zero, torch.tensor([1.0]))
    torch.testing.assert_close(bins[0, :, 0, 0], torch.tensor([-0.05, -0.025, 0.0, 0.025, 0.05]))


def test_bin_labels_softmax_and_mask():
    sparse = _pixels(0.0, 2.0, 3.0)
    depth = _pixels(1.0, 1.9, 3.25)
    sres = masked_residual(sparse, depth)
    torch.testing.assert_close(sres, _pixels(0.0, 0.1, -0.25))
    bins = torch.tensor([-0.2, -0.1, 0.0, 0.1, 0.2]).reshape(1, 5, 1, 1).expand(1, 5, 1, 3)
    label = bin_labels(sparse, sres, bins)[0, :, 0, :].T
    assert torch.equal(label[0], torch.zeros(5))  # no sample -> all zero
    for row, r in ((1, 0.1), (2, -0.25)):
        logits = -np.abs(r - np.array([-0.2, -0.1, 0.0, 0.1, 0.2]))
        expected = np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(label[row].numpy(), expected, rtol=1e-6)
    assert label[1].argmax() == 3 and label[2].argmax() == 0


# ----------------------------------------------------------------------------------------------
# the whole head


EXPECTED_KEYS = {"residual", "conf_r", "depth_residual", "bins", "label", "sim", "conf_i", "fd0",
                 "depth_img", "offset", "depth_pix"}


def test_shapes_nyu(nyu_run):
    _, _, out = nyu_run
    assert set(out) == EXPECTED_KEYS
    for name, tensor in out.items():
        channels = {"bins": 5, "label": 5, "sim": 5, "fd0": 128}.get(name, 1)
        size = (114, 152) if name == "fd0" else (228, 304)
        assert tuple(tensor.shape) == (1, channels, *size), name


def test_odd_size_decoder_bounce(head64):
    """100 x 130: 1/8 is 13 x 17, each transposed conv doubles to 26 x 34, the skips pull back."""
    sizes = {}
    handles = [
        getattr(head64.rb, name).register_forward_hook(
            lambda m, i, o, n=name: sizes.__setitem__(n, tuple(o.shape[-2:])))
        for name in ("conv3", "conv5", "deconv5", "deconv4", "deconv3")
    ]
    sparse, depth_diff, feats = make_inputs(100, 130, 64, seed=1, batch=2)
    try:
        with torch.no_grad():
            out = head64(sparse, depth_diff, feats)
    finally:
        for handle in handles:
            handle.remove()
    assert sizes == {"conv3": (13, 17), "conv5": (13, 17), "deconv5": (26, 34), "deconv4": (26, 34),
                     "deconv3": (26, 34)}
    assert out["depth_pix"].shape == (2, 1, 100, 130)
    assert out["fd0"].shape == (2, 128, 50, 65)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_minimum_size(head64):
    head = head64
    sparse, depth_diff, feats = make_inputs(ch.MIN_SPATIAL, ch.MIN_SPATIAL, 64)
    with torch.no_grad():
        assert head(sparse, depth_diff, feats)["depth_pix"].shape == (1, 1, 17, 17)
    sparse, depth_diff, feats = make_inputs(16, 40, 64)
    with pytest.raises(ShapeError):
        head(sparse, depth_diff, feats)


def test_bad_inputs_raise_shape_error(head64):
    head = head64
    sparse, depth_diff, feats = make_inputs(32, 48, 64)
    with pytest.raises(ShapeError):
        head(sparse.expand(1, 2, 32, 48), depth_diff, feats)
    with pytest.raises(ShapeError):
        head(sparse, depth_diff[..., :40], feats)
    with pytest.raises(ShapeError, match="fm_channels"):
        head(sparse, depth_diff, [f[:, :32] for f in feats])
    with pytest.raises(ShapeError):
        head(sparse, depth_diff, feats[:3])


class _MustNotRun(nn.Module):
    def forward(self, *args):
        raise AssertionError("dead module executed")


DEAD_MODULES = (("ib", "mconv1"), ("ib", "mconv2"), ("ib", "mconv3"), ("ib", "mconv4"), ("ib", "mconv"),
                ("ib", "all_fuse"), ("pb", "predict_conf"))


def test_dead_modules_never_run(head64):
    head = head64
    inputs = make_inputs(48, 64, 64, seed=2)
    with torch.no_grad():
        out = head(*inputs)
    saved = {}
    try:
        for branch, name in DEAD_MODULES:
            saved[(branch, name)] = getattr(head, branch)._modules[name]  # present for strict loading
            setattr(getattr(head, branch), name, _MustNotRun())
        with torch.no_grad():
            again = head(*inputs)
    finally:
        for (branch, name), module in saved.items():
            setattr(getattr(head, branch), name, module)
    for key in out:
        assert torch.equal(again[key], out[key]), key


def test_stage_composition(nyu_run):
    _, (sparse, depth_diff, _), out = nyu_run
    torch.testing.assert_close(out["depth_residual"], depth_diff + out["residual"], rtol=0, atol=0)
    torch.testing.assert_close(out["sim"].sum(1, keepdim=True), torch.ones_like(depth_diff))
    expected_img = out["depth_residual"] + (out["bins"] * out["sim"]).sum(1, keepdim=True)
    torch.testing.assert_close(out["depth_img"], expected_img)
    # the stage-3 offset goes through sum_b(offset * sim_b) = offset, up to rounding
    torch.testing.assert_close(out["depth_pix"], out["depth_img"] + out["offset"], rtol=0, atol=1e-5)
    assert torch.equal(out["label"] * (sparse <= 0), torch.zeros_like(out["label"]))


# ----------------------------------------------------------------------------------------------
# random weights (method notes 12.4)


def test_randomize_is_deterministic_and_seeded():
    a = randomize_head_(CorrectionHead(64), seed=3).state_dict()
    b = randomize_head_(CorrectionHead(64), seed=3).state_dict()
    c = randomize_head_(CorrectionHead(64), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["ib.conv4.1.conv2.conv.weight"], c["ib.conv4.1.conv2.conv.weight"])


def test_randomize_values(nyu_run):
    head, _, _ = nyu_run
    assert not head.training
    state = head.state_dict()
    alphas = [v for k, v in state.items() if k.endswith(".alpha")]
    assert len(alphas) == sum(k.endswith(".alpha") for k in read_key_list(KEYS_DIR / "psd_head.txt"))
    assert all(0.05 <= a.item() <= 0.1 for a in alphas)
    for name in BIN_SCALARS:
        assert 0.05 <= abs(state[name].item()) <= 0.1
    for name in ("rb.confhead.0.bn", "ib.confhead.0.bn"):
        assert state[f"{name}.running_mean"].abs().max() > 0
        assert not torch.equal(state[f"{name}.running_var"], torch.ones_like(state[f"{name}.running_var"]))
    assert torch.equal(state["sds.conv.weight"], torch.ones(1, 1, 4, 4))
    fresh = CorrectionHead(64)
    for name in PREDICTION_CONVS:  # scaled: ~100x smaller than a Kaiming draw of the same shape
        assert state[f"{name}.weight"].std() < 0.05 * fresh.get_submodule(name).weight.std()


def test_randomized_outputs_plausible(nyu_run):
    """Every stage contributes and the depth stays within a few metres of depth_diff ~ U(1, 10)."""
    _, (_, depth_diff, _), out = nyu_run
    assert all(torch.isfinite(v).all() for v in out.values())
    previous = depth_diff
    for stage in ("depth_residual", "depth_img", "depth_pix"):
        change = (out[stage] - previous).abs()
        assert change.max() > 1e-2, f"{stage} adds nothing"
        deviation = out[stage] - depth_diff
        assert deviation.abs().max() < 10.0 and deviation.pow(2).mean().sqrt() < 2.0, stage
        previous = out[stage]
    assert ((out["conf_r"] > 0) & (out["conf_r"] < 1)).all()
