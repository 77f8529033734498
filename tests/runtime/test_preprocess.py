"""Tests of psdrt.runtime.preprocess: FM input size, PyTorch-exact resizes, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

import _support
from psdrt.runtime import preprocess as pp
from psdrt.runtime.errors import InputError, ShapeError

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (in_h, in_w, out_h, out_w): up, down, mixed, non-square, degenerate, and the FM sizes of §2.2
SIZES = [(7, 5, 13, 11), (50, 40, 17, 9), (30, 60, 31, 59), (1, 1, 3, 4), (5, 3, 1, 1),
         (228, 304, 392, 518), (64, 300, 392, 1862), (120, 97, 33, 250)]


@pytest.mark.parametrize("h, w, expected", [(228, 304, (392, 518)), (256, 1216, (392, 1862)),
                                            (480, 640, (392, 518)), (392, 392, (392, 392)),
                                            (375, 1242, (392, 1302))])
def test_fm_input_size(h, w, expected):
    hm, wm = pp.fm_input_size(h, w)
    assert (hm, wm) == expected and hm % 14 == 0 and wm % 14 == 0 and min(hm, wm) >= 392


def test_fm_input_size_ceils_below_lower():
    # 100x101: s = 3.92, 392/14 = 28 exactly; 101·3.92 = 395.9 → rounds to 392 (28 multiples) ≥ lower
    assert pp.fm_input_size(100, 101) == (392, 392)
    # a height that would round below the bound must go up to the next multiple
    assert pp.fm_input_size(10, 10, lower=20, multiple=14) == (28, 28)
    with pytest.raises(InputError):
        pp.fm_input_size(0, 5)


def _torch_resize(x, oh, ow, mode):
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)[None] if x.ndim == 3 else x[None, None]))
    y = F.interpolate(t, size=(oh, ow), mode=mode, align_corners=False).numpy()[0]
    return np.moveaxis(y, 0, -1) if x.ndim == 3 else y[0]


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("h, w, oh, ow", SIZES)
def test_resize_matches_torch(mode, h, w, oh, ow):
    x = np.random.default_rng(h * 1000 + w).standard_normal((h, w, 3)).astype(np.float32)
    fn = pp.resize_bicubic if mode == "bicubic" else pp.resize_bilinear
    out = fn(x, oh, ow)
    assert out.dtype == np.float32 and out.shape == (oh, ow, 3)
    np.testing.assert_allclose(out, _torch_resize(x, oh, ow, mode), rtol=0, atol=1e-5)
    out2 = fn(x[..., 1], oh, ow)  # 2-D input
    np.testing.assert_allclose(out2, out[..., 1], rtol=0, atol=1e-6)


def test_resize_weights_rows_sum_to_one_and_identity():
    for mode in ("bicubic", "bilinear"):
        for n_in, n_out in ((5, 9), (9, 5), (1, 4)):
            np.testing.assert_allclose(pp.resize_matrix(n_in, n_out, mode).sum(1), 1.0, atol=1e-6)
        x = np.random.default_rng(0).random((6, 7)).astype(np.float32)
        np.testing.assert_allclose(pp.resize_bicubic(x, 6, 7), x, atol=1e-6)
    with pytest.raises(InputError, match="bicubic"):
        pp.resize_weights(4, 5, "lanczos")


def test_resize_validation():
    with pytest.raises(ShapeError):
        pp.resize_bicubic(np.zeros((1, 2, 3, 4), np.float32), 2, 2)
    with pytest.raises(InputError, match="numeric"):
        pp.resize_bilinear(np.zeros((2, 2), bool), 2, 2)
    with pytest.raises(InputError, match="positive"):
        pp.resize_bicubic(np.zeros((2, 2), np.float32), 0, 2)


def test_preprocess_rgb_matches_torch_pipeline():
    rgb = np.random.default_rng(3).integers(0, 256, (57, 83, 3), dtype=np.uint8)
    out = pp.preprocess_rgb(rgb, method="bicubic")
    hm, wm = pp.fm_input_size(57, 83)
    assert out.shape == (1, 3, hm, wm) and out.dtype == np.float32 and out.flags.c_contiguous
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    t = F.interpolate(t, size=(hm, wm), mode="bicubic", align_corners=False)
    t = (t - torch.tensor(pp.IMAGENET_MEAN)[:, None, None]) / torch.tensor(pp.IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(out, t.numpy(), rtol=0, atol=1e-4)  # 1e-5 on [0,1] before /std
    np.testing.assert_array_equal(pp.preprocess_rgb(rgb[..., ::-1].copy(), bgr=True, method="bicubic"), out)
    assert pp.preprocess_rgb(rgb, size=(28, 42)).shape == (1, 3, 28, 42)


def _skimage_input(rgb, size):
    """The official loaders' FM input: scikit-image resize(order=3) in float64, ImageNet
    normalisation, float32 (what their ToTensor gives)."""
    from skimage.transform import resize

    img = resize(rgb, size, order=3)
    img = (img - np.asarray(pp.IMAGENET_MEAN)) / np.asarray(pp.IMAGENET_STD)
    return img.astype(np.float32).transpose(2, 0, 1)[None]


# up-scales (the usual case: 228x304 -> 392x518), equal sizes, down-scales with anti-aliasing on
# one or both axes, odd sizes, a one-pixel-wide image
@pytest.mark.parametrize("src, size", [((57, 83), None), ((228, 304), (392, 518)), ((40, 40), (40, 40)),
                                       ((120, 90), (56, 70)), ((77, 300), (98, 112)), ((1, 9), (14, 28)),
                                       ((600, 31), (42, 56))])
def test_official_preprocessing_equals_scikit_image(src, size):
    rgb = np.random.default_rng(sum(src)).integers(0, 256, src + (3,), dtype=np.uint8)
    out = pp.preprocess_rgb(rgb, size=size)  # the default: official
    want = _skimage_input(rgb, out.shape[2:])
    np.testing.assert_array_equal(out, want)  # the kernel, bit for bit
    np.testing.assert_array_equal(pp.reference_preprocess_rgb(rgb, size=size), want)  # and its NumPy reference
    np.testing.assert_array_equal(pp.preprocess_rgb(rgb[..., ::-1].copy(), size=size, bgr=True), want)


def test_official_preprocessing_refuses_a_downscale_past_its_gaussian():
    rgb = np.zeros((2000, 40, 3), np.uint8)
    with pytest.raises(InputError, match="at most 32x"):
        pp.preprocess_rgb(rgb, size=(28, 42))


@pytest.mark.parametrize("bad, match", [(np.zeros((4, 4, 3), np.float32), "uint8"),
                                        (np.zeros((4, 4), np.uint8), r"\(H, W, 3\)"),
                                        (np.zeros((4, 4, 4), np.uint8), "RGBA")])
def test_preprocess_rgb_validation(bad, match):
    with pytest.raises(InputError, match=match):
        pp.preprocess_rgb(bad)


# The official method equals the official loaders' input on the shared frames; the bicubic option
# differs by what docs/preprocessing.md measures (normalised units): NYU 228x304 max 0.40 / mean
# 0.0070, KITTI 256x1216 max 0.77 / mean 0.0085 (bounds over them: a broken resize gives mean
# differences of several 0.01).
@_support.requires_shared_data
def test_official_and_bicubic_against_the_official_loader_on_shared_frames():
    from PIL import Image

    from psdrt.runtime import io

    nyu = io.load_shared_frame(_support.SHARED_DATA, "NYUv2", "00000").rgb
    nyu = np.asarray(Image.fromarray(nyu).resize((320, 240), Image.BILINEAR))[6:234, 8:312]
    kitti = io.load_shared_frame(_support.SHARED_DATA, "KITTI", "0000000005").rgb[375 - 256:, 13:13 + 1216]
    for img in (nyu, kitti):
        ours = pp.preprocess_rgb(img)
        ref = _skimage_input(img, ours.shape[2:])  # as the official ResizeV4 calls resize
        np.testing.assert_array_equal(ours, ref)
        diff = np.abs(pp.preprocess_rgb(img, method="bicubic") - ref)
        assert diff.mean() < 0.015 and diff.max() < 1.0
