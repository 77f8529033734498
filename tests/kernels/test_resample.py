"""Resampling, pooling, back-projection, channel compression and FM preprocessing vs the oracles."""

import numpy as np
import pytest
import torch

from _kernel_reference import t4
from _support import SHARED_DATA, requires_shared_data
from psdrt.export.reference import propagation as R
from psdrt.runtime import preprocess as PP

TOL = 2e-6  # float32, values O(1); ATen accumulates in a different order


@pytest.mark.parametrize("src,dst", [((392, 518), (228, 304)), ((57, 76), (228, 304)),
                                     ((228, 304), (57, 76)), ((5, 7), (5, 7)), ((1, 1), (3, 4))])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_resize_matches_torch(lib, src, dst, mode):
    x = np.random.default_rng(1).uniform(-1, 1, (3,) + src).astype(np.float32)
    ref = R.resize_bicubic(t4(x), dst) if mode == "bicubic" else R.resize_bilinear(t4(x), dst)
    np.testing.assert_allclose(lib.resize(x, dst, mode), ref[0].numpy(), atol=TOL, rtol=0)


def test_sparse_pool_matches_torch(lib):
    rng = np.random.default_rng(2)
    s = np.where(rng.random((230, 307)) < 0.05, rng.uniform(0.5, 80, (230, 307)), 0).astype(np.float32)
    np.testing.assert_allclose(lib.sparse_pool(s), R.sparse_pool(t4(s))[0, 0].numpy(), rtol=1e-6)


@pytest.mark.parametrize("cam", ["pinhole", "360", "MEI"])
def test_backproject_matches_torch(lib, cam):
    rng = np.random.default_rng(3)
    d = rng.uniform(0.5, 10, (40, 60)).astype(np.float32)
    if cam == "pinhole":
        p = np.array([[51.9, 0, 30.2], [0, 52.3, 20.1], [0, 0, 1]], np.float32)
    elif cam == "MEI":
        p = np.array([1.2, -0.1, 0.02, 1e-3, -1e-3, 80.0, 81.0, 30.0, 20.0], np.float32)
    else:
        p = None
    ref = R.backproject(t4(d), None if p is None else torch.from_numpy(p)[None], cam=cam)[0].numpy()
    np.testing.assert_allclose(lib.backproject(d, p, cam), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels,size", [(9, (57, 76)), (16, (228, 304)), (32, (64, 90)), (256, (30, 40))])
def test_compress_channels_matches_trilinear(lib, channels, size):
    f = np.random.default_rng(4).standard_normal((256, 28, 37)).astype(np.float32)
    ref = R.compress_channels(t4(f), channels, size)[0].numpy()
    np.testing.assert_allclose(lib.compress_channels(f, channels, size), ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("h,w", [(228, 304), (256, 1216), (480, 640), (375, 1242), (100, 100)])
def test_fm_input_size(lib, h, w):
    assert lib.fm_input_size(h, w) == PP.fm_input_size(h, w)


@pytest.mark.parametrize("bgr", [False, True])
def test_preprocess_matches_numpy_reference(lib, bgr):
    rgb = np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    want = PP.reference_preprocess_rgb(rgb, bgr=bgr, method="bicubic")
    np.testing.assert_allclose(lib.preprocess_rgb(rgb, bgr=bgr), want, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(lib.preprocess(rgb, bgr=bgr, method="bicubic"), lib.preprocess_rgb(rgb, bgr=bgr))
    # the official method: the kernel equals its NumPy reference bit for bit
    np.testing.assert_array_equal(lib.preprocess(rgb, bgr=bgr), PP.reference_preprocess_rgb(rgb, bgr=bgr))


@requires_shared_data
def test_preprocess_real_nyu_frame(lib):
    from PIL import Image

    rgb = np.asarray(Image.open(SHARED_DATA / "nyu" / "00000_rgb.jpg").convert("RGB"))
    out = lib.preprocess_rgb(rgb)
    assert out.shape == (1, 3, 392, 518)
    np.testing.assert_allclose(out, PP.reference_preprocess_rgb(rgb, method="bicubic"), atol=2e-5, rtol=0)
    np.testing.assert_array_equal(lib.preprocess(rgb), PP.reference_preprocess_rgb(rgb))
