"""Parity of CorrectionHead against the official PSD DCNet (stages 1-3), with random weights.

Skipped unless $PSD_OFFICIAL_DIR names a local checkout of shenglunch/PSD. The official DCNet is
built with a random ViT-S Depth Anything V2 (feature width 64) and given test-friendly weights by
``randomize_head_``; its head weights (state dict minus ``mde.*``) are loaded strictly into
``CorrectionHead(64)``.

The official side runs the real ``DCNet.forward`` (eval, ``is_test=True``, epoch 0), with only the
two parts outside the head replaced on the instance: the FM returns the test's features and the
dual propagation returns the test's ``depth_diff``. Intermediate values are read with forward
hooks on the official ``rb``/``ib``/``pb`` and a torch-function mode that records the bins tensor,
so nothing of the official orchestration is re-typed here except the two lines that turn the
stage-2 logits into ``sim`` (softmax over the bins of the bilinearly resized logits).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from parity import _official
from psdrt.export.models.completion_head import NUM_BINS, CorrectionHead
from psdrt.export.models.random_weights import randomize_head_

pytestmark = pytest.mark.skipif(_official.official_problem() is not None,
                                reason=str(_official.official_problem()))

ENCODER = "vits"
FM_CHANNELS = _official.DAV2_FEATURES[ENCODER]
SIZES = {
    # H x W -> path-feature grid (DA-V2 input 392 x 518 resp. 392 x 1862, patch 14)
    "nyu_228x304": ((228, 304), (28, 37)),
    "kitti_256x1216": ((256, 1216), (28, 133)),
}


@pytest.fixture(scope="module")
def models():
    checkout = _official.official_checkout()
    t0 = time.perf_counter()
    official = _official.build_official_dcnet(checkout, ENCODER, seed=0)
    randomize_head_(official, seed=7)
    head_state = {k: v for k, v in official.state_dict().items() if not k.startswith("mde.")}
    ours = CorrectionHead(FM_CHANNELS)
    ours.load_state_dict(head_state, strict=True)
    print(f"\nofficial DCNet ({ENCODER}) built and converted in {time.perf_counter() - t0:.1f} s")
    return official, ours.eval()


def make_case(size, grid, seed=0):
    (h, w), (gh, gw) = size, grid
    g = torch.Generator().manual_seed(seed)
    depth_diff = torch.empty(1, 1, h, w).uniform_(1.0, 10.0, generator=g)
    mask = torch.rand(1, 1, h, w, generator=g) < 0.01
    sparse = (depth_diff + 0.3 * torch.randn(1, 1, h, w, generator=g)).clamp(min=0.1) * mask
    feats = [torch.randn(1, FM_CHANNELS, gh * s, gw * s, generator=g) for s in (1, 2, 4, 8)]
    # relative inverse depth for the (unused by the head) official alignment steps
    inverse = torch.rand(1, 1, gh * 14, gw * 14, generator=g) + 0.1
    return sparse, depth_diff, feats, inverse


class _RecordBins(TorchFunctionMode):
    """Keeps the result of every ``torch.cat`` with NUM_BINS channels at full resolution.

    Inside ``DCNet.forward`` that is exactly the bins tensor ``cat(min, inner, max)``; the stage
    inputs concatenated inside the branches have 3, 4 or 9 channels.
    """

    def __init__(self, hw):
        super().__init__()
        self.hw = tuple(hw)
        self.found = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.cat and isinstance(out, torch.Tensor) and out.dim() == 4:
            if out.shape[1] == NUM_BINS and tuple(out.shape[-2:]) == self.hw:
                self.found.append(out)
        return out


@contextlib.contextmanager
def _patched(official, feats, inverse, depth_diff):
    """Replace the FM and the propagation on the instance only; undo afterwards."""
    official.mde.forward = lambda x, K=None: (inverse, feats, None)
    official.dual_diffusion = lambda *args, **kwargs: depth_diff
    try:
        yield
    finally:
        del official.mde.forward
        del official.dual_diffusion


def run_official(official, sparse, depth_diff, feats, inverse):
    seen = {}

    def keep(name, with_args=False):
        def hook(module, args, output):
            seen[name] = (args, output) if with_args else output
        return hook

    handles = [
        official.rb.register_forward_hook(keep("rb")),
        official.ib.register_forward_hook(keep("ib", with_args=True)),
        official.pb.register_forward_hook(keep("pb", with_args=True)),
    ]
    h, w = sparse.shape[-2:]
    inputs = {
        "rgb": torch.zeros(1, 3, h, w),
        "rgb_mde": torch.zeros(1, 3, *inverse.shape[-2:]),
        "sparse": sparse,
        "ip": depth_diff.clone(),
        "K": torch.tensor([[[259.4, 0.0, 154.8], [0.0, 259.7, 120.9], [0.0, 0.0, 1.0]]]),
    }
    try:
        with torch.no_grad(), _patched(official, feats, inverse, depth_diff), _RecordBins((h, w)) as rec:
            outputs = official(inputs, 0, True, "NYUv2")
    finally:
        for handle in handles:
            handle.remove()

    assert len(rec.found) == 1, "expected exactly one bins concatenation in DCNet.forward"
    depths = outputs["depth"]  # [ip, polyfit, diff, residual, img, pix, post]
    ib_args, (sim_logits, _, fd0) = seen["ib"]
    pb_args, (offset, _) = seen["pb"]
    return {
        "residual": seen["rb"][0],
        "conf_r": seen["rb"][1],
        "depth_residual": depths[3],
        "bins": rec.found[0],
        "label": ib_args[3],
        # the only re-typed official lines: resize the logits to H x W, softmax over the bins
        "sim": F.softmax(F.interpolate(sim_logits, size=(h, w), mode="bilinear", align_corners=False), dim=1),
        "conf_i": pb_args[3],
        "fd0": fd0,
        "depth_img": depths[4],
        "offset": offset,
        "depth_pix": depths[5],
    }


@pytest.mark.parametrize("case", list(SIZES))
def test_stagewise_parity(models, case):
    official, ours = models
    sparse, depth_diff, feats, inverse = make_case(*SIZES[case])
    assert sparse.count_nonzero() > 100  # enough samples for the official median alignment

    t0 = time.perf_counter()
    expected = run_official(official, sparse, depth_diff, feats, inverse)
    t1 = time.perf_counter()
    with torch.no_grad():
        got = ours(sparse, depth_diff, feats)
    t2 = time.perf_counter()

    report = []
    for name, ref in expected.items():
        assert got[name].shape == ref.shape, name
        diff = (got[name] - ref).abs().max().item()
        report.append(f"{name}={diff:.3g}")
        # the same operations in the same order: equal bit for bit (measured: every stage 0)
        assert torch.equal(got[name], ref), f"{name}: max |ours - official| = {diff:.3g}"
    print(f"\n[{case}] official {t1 - t0:.2f} s, ours {t2 - t1:.2f} s; max |ours - official|: " + ", ".join(report))
