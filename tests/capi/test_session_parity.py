"""The C session (``CSession``, psd_session_run) against the Python ``Pipeline`` on the same
artefacts and frames: **bit-identical**, in both modes and with both preprocessing methods.

Both paths preprocess the encoder input with the same kernel (``psd_preprocess``), run the same
ONNX Runtime graphs with the same options and the same propagation and post-processing kernels, so
nothing may differ. (Before the preprocessing was one kernel call, Python resized with NumPy and
the two differed by up to 5 cm at KITTI size, through kNN near-ties.) tests/parity additionally
compares the two at the full NYU and KITTI sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _support import requires_shared_data
from _frames import SIZE, link_or_copy, shared_frame

from psdrt.runtime.errors import InputError, PsdError, ShapeError
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.session import CSession


def _with_preprocess(src: Path, dst: Path, method: str) -> Path:
    """``src`` with its manifest's preprocessing replaced (the files are shared)."""
    dst.mkdir()
    m = json.loads((src / "manifest.json").read_text())
    m["preprocess"] = method
    for a in m["artifacts"]:
        if a.get("file"):
            link_or_copy(src / a["file"], dst / a["file"])
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture(scope="module")
def engines(capi_lib, artifacts, propagate_artifacts, tmp_path_factory):
    bicubic = _with_preprocess(artifacts, tmp_path_factory.mktemp("capi_bicubic") / "deploy", "bicubic")
    out = {}
    for name, d in (("psd", artifacts), ("propagate", propagate_artifacts), ("psd-bicubic", bicubic)):
        out[name] = (CSession.from_artifacts(d), Pipeline.from_artifacts(d, engine="python"))
    return out


def _check(engines, mode, rgb, sparse, K):
    c, py = engines[mode]
    got, want = c(rgb, sparse, K), py(rgb, sparse, K)
    mode = mode.split("-")[0]
    assert got.mode == want.mode == mode and got.depth.shape == want.depth.shape == SIZE
    assert got.depth.dtype == np.float32 and np.isfinite(got.depth).all()
    np.testing.assert_array_equal(got.depth, want.depth)
    assert got.info["points"] == want.info["points"] and got.info["alignment"] == want.info["alignment"]
    assert got.info["preset"] == want.info["preset"] == "NYUv2"
    return got


@pytest.mark.parametrize("mode", ["psd", "propagate", "psd-bicubic"])
def test_middlebury(engines, middlebury, mode):
    rgb, sparse, K, gt = middlebury
    got = _check(engines, mode, rgb, sparse, K)
    stages = {"psd": {"preprocess", "encoder", "propagation", "head", "post"},
              "propagate": {"preprocess", "encoder", "propagation"}}[mode.split("-")[0]]
    assert set(got.info["timings_ms"]) == stages | {"validate", "total"}
    assert got.info["timings_ms"]["total"] > got.info["timings_ms"]["encoder"] > 0


@requires_shared_data
@pytest.mark.parametrize("dataset,frame_id", [("NYUv2", "00000"), ("NYUv2", "00100"), ("KITTI", "0000000005"),
                                              ("KITTI", "0000000100")])
@pytest.mark.parametrize("mode", ["psd", "propagate", "psd-bicubic"])
def test_real_frames(engines, dataset, frame_id, mode):
    rgb, sparse, K, _ = shared_frame(dataset, frame_id)
    _check(engines, mode, rgb, sparse, K)


def test_pipeline_engine_c_and_python_api(capi_lib, artifacts, middlebury):
    rgb, sparse, K, _ = middlebury
    sess = Pipeline.from_artifacts(artifacts, engine="c", seed=3)
    assert isinstance(sess, CSession) and sess.mode == "psd" and sess.working_size == SIZE
    assert sess.fm_size == (56, 84) and "onnxruntime" in sess.backend and "56x84" in repr(sess)
    base = sess(rgb, sparse, K).depth
    # views with row padding and float64 sparse are accepted; BGR order is honoured
    big = np.zeros((SIZE[0], SIZE[1] + 10, 3), np.uint8)
    big[:, :SIZE[1]] = rgb
    np.testing.assert_array_equal(sess(big[:, :SIZE[1]], sparse.astype(np.float64), K).depth, base)
    np.testing.assert_array_equal(sess(rgb[..., ::-1], sparse[None], K, bgr=True).depth, base)
    with pytest.raises(ShapeError, match="built for 56x84"):
        sess(rgb[:40], sparse[:40], K)
    with pytest.raises(InputError, match="uint8"):
        sess(rgb.astype(np.float32), sparse, K)
    with pytest.raises(InputError, match="3x3"):
        sess(rgb, sparse, K[:2])
    with pytest.raises(InputError, match="NaN"):
        sess(rgb, np.where(sparse > 0, np.nan, 0).astype(np.float32), K)
    with pytest.raises(InputError, match="return_stages"):
        sess(rgb, sparse, K, return_stages=True)
    with pytest.raises(InputError, match="unknown engine"):
        Pipeline.from_artifacts(artifacts, engine="rust")
    sess.close()
    with pytest.raises(PsdError, match="closed"):
        sess(rgb, sparse, K)
