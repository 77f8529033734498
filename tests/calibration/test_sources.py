"""Calibration sources: frame fitting, the three frame sources, the encoder/head feed adapters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from _support import SHARED_DATA, requires_shared_data
from psdrt.calibration import sources as S
from psdrt.runtime.errors import InputError
from psdrt.runtime.preprocess import preprocess_rgb


def test_calibration_imports_with_numpy_only():
    """Every module under calibration/ imports with torch, onnx, onnxruntime, scipy, cv2, PIL blocked."""
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch','onnx','onnxruntime','scipy','cv2','PIL','skimage','modelopt'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import pkgutil, importlib, psdrt.calibration as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'psdrt.calibration.'):\n"
        "    importlib.import_module(m.name)\n"
        "import psdrt.runtime.cli.calibrate\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def _frame(h=60, w=90, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = rng.uniform(1, 5, (h, w)).astype(np.float32)
    sparse = np.where(rng.random((h, w)) < 0.05, gt, 0).astype(np.float32)
    K = np.array([[80.0, 0, 45.0], [0, 80.0, 30.0], [0, 0, 1]])
    return S.CalibFrame(rgb, sparse, K, gt, "f")


def test_fit_frame_keeps_aspect_and_moves_K():
    fr = _frame(60, 90)
    out = S.fit_frame(fr, (40, 40))  # scale 2/3 to 40x60, centre crop x0 = 10
    assert out.rgb.shape == (40, 40, 3) and out.sparse.shape == (40, 40) and out.gt.shape == (40, 40)
    assert out.K[0, 0] == pytest.approx(80 * 60 / 90) and out.K[1, 1] == pytest.approx(80 * 40 / 60)
    assert out.K[0, 2] == pytest.approx(45 * 60 / 90 - 10)
    assert set(np.unique(out.sparse)) <= set(np.unique(fr.sparse))  # nearest: no invented depths
    assert S.fit_frame(fr, (60, 90)) is fr


def test_generated_source():
    src = S.GeneratedSource(num=3, size=(48, 64))
    frames = list(src)
    assert len(src) == 3 and len(frames) == 3
    for f in frames:
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.sparse.shape == (48, 64) and (f.sparse > 0).any()
        assert f.K.shape == (3, 3)
    assert not np.array_equal(frames[0].rgb, frames[1].rgb)  # different views


def test_encoder_feeds_go_through_preprocess():
    fr = _frame(60, 90)
    feeds = list(S.EncoderFeeds([fr], size=(42, 56)))
    assert feeds[0]["rgb"].shape == (1, 3, 42, 56)
    # 90/60 = 1.5 -> crop to 56/42 = 1.333 aspect (80 columns), never stretched
    np.testing.assert_array_equal(feeds[0]["rgb"], preprocess_rgb(fr.rgb[:, 5:85], size=(42, 56)))
    auto = next(iter(S.EncoderFeeds([fr])))
    assert auto["rgb"].shape[2] % 14 == 0 and auto["rgb"].shape[3] % 14 == 0


def test_image_folder_source(tmp_path):
    import cv2

    (tmp_path / "rgb").mkdir()
    (tmp_path / "sparse").mkdir()
    for i in range(3):
        fr = _frame(30, 40, seed=i)
        cv2.imwrite(str(tmp_path / "rgb" / f"{i:03d}.png"), fr.rgb[..., ::-1])
        np.save(tmp_path / "sparse" / f"{i:03d}.npy", fr.sparse)
    src = S.ImageFolderSource(tmp_path / "rgb", tmp_path / "sparse", size=(20, 20), K=_frame().K, limit=2)
    frames = list(src)
    assert len(src) == 2 and frames[0].rgb.shape == (20, 20, 3) and frames[0].sparse.shape == (20, 20)
    with pytest.raises(InputError, match="no .png"):
        S.ImageFolderSource(tmp_path / "sparse")
    with pytest.raises(InputError, match="not found"):
        S.ImageFolderSource(tmp_path / "nope")


def test_shared_frames_absent_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="ImageFolderSource"):
        S.SharedFramesSource(tmp_path / "missing")


@requires_shared_data
def test_shared_frames_source():
    src = S.SharedFramesSource(SHARED_DATA, size=(64, 80))
    frames = list(src)
    assert len(frames) == len(src) >= 2
    assert {f.name.split("/")[0] for f in frames} == {"KITTI", "NYUv2"}
    assert all(f.rgb.shape == (64, 80, 3) and (f.sparse > 0).any() for f in frames)


def test_head_feeds_need_sparse_and_K():
    with pytest.raises(InputError, match="sparse"):
        S.head_inputs(object(), S.CalibFrame(np.zeros((20, 20, 3), np.uint8)))
