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
from _frames import SIZE, link_or_copy, onnxruntime_problem, shared_frame

from psdrt.runtime.errors import InputError, PsdError, ShapeError
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.presets import PRESETS
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


# ------------------------------------------------------------------------------ IP-Basic presets
#: presets whose propagation takes the IP-Basic fill (rate < 1, a candidate cap or a mode other
#: than 3D-2D) and a pinhole camera: all of them run in the C session (psd_ip_basic)
IP_PRESETS = [n for n, p in PRESETS.items() if not (p.deterministic and p.mode == "3D-2D") and p.cam == "pinhole"]
TINY = (28, 42)


class _NoIp:
    """The kernel library with the IP-Basic fill switched off (ip=None: the aligned FM depth)."""

    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def ip_basic(self, sparse):
        return None


@pytest.fixture(scope="module")
def tiny_propagate(capi_lib, tmp_path_factory):
    """A propagate-mode directory at 28x42 over a hand-made encoder (tests/_tiny_artifacts.py: no torch)."""
    problem = onnxruntime_problem(capi_lib, tmp_path_factory.mktemp("ort_probe_ip"))
    if problem:
        pytest.skip(f"the session library cannot run ONNX Runtime here: {problem}")
    pytest.importorskip("onnx")
    from _tiny_artifacts import make_artifacts

    return make_artifacts(tmp_path_factory.mktemp("tiny_ip") / "deploy", size=TINY, fm_lower=28)


def _tiny_frame(seed, near=False):
    rng = np.random.default_rng(seed)
    h, w = TINY
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5 + seed), np.cos(yy / 4), np.sin((xx + yy) / 7)], -1)
    rgb = np.clip(128 + 90 * base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    depth = (2 + xx / w * 3 + yy / h * 2 + seed % 3).astype(np.float32)
    if near:  # every point within IP-Basic's 0.1 m (still accepted sparse depth: >= 1 mm)
        depth = (0.02 + 0.05 * depth / depth.max()).astype(np.float32)
    sparse = np.where(rng.random((h, w)) < 0.08, depth, 0).astype(np.float32)
    K = np.array([[40.0, 0, 21.0], [0, 40.0, 14.0], [0, 0, 1]])
    return rgb, sparse, K


@pytest.mark.parametrize("preset", IP_PRESETS)
def test_ip_basic_presets_propagate_mode(tiny_propagate, preset):
    """The C session fills IP-Basic (psd_ip_basic) for these presets and equals the Python
    Pipeline bit for bit, seeded subsets included; without the fill the output differs, so the
    equality checks the fill."""
    assert {"ARGOVERSE", "VKITTI2", "DIMLi"} <= set(IP_PRESETS)
    for seed in (0, 3):
        c = CSession.from_artifacts(tiny_propagate, preset=preset, seed=seed)
        py = Pipeline.from_artifacts(tiny_propagate, engine="python", preset=preset, seed=seed)
        assert c.preset_name == py.preset.name == preset
        for frame_seed in (1, 2):
            rgb, sparse, K = _tiny_frame(frame_seed)
            got, want = c(rgb, sparse, K), py(rgb, sparse, K)
            assert np.isfinite(got.depth).all()
            np.testing.assert_array_equal(got.depth, want.depth)
            py.kernels = _NoIp(py.kernels)
            assert not np.array_equal(py(rgb, sparse, K).depth, got.depth), "the fill changes nothing here"
            py.kernels = py.kernels._lib
        c.close()


def test_ip_basic_needs_a_depth_above_0_1_m(tiny_propagate):
    """A frame whose accepted points are all within 0.1 m: both engines refuse it for a preset that
    needs IP-Basic (InputError, before the C session runs a network) and run it for NYUv2."""
    rgb, sparse, K = _tiny_frame(4, near=True)
    assert sparse.max() <= 0.1 and (sparse > 0).any()
    c = CSession.from_artifacts(tiny_propagate, preset="ARGOVERSE")
    py = Pipeline.from_artifacts(tiny_propagate, engine="python", preset="ARGOVERSE")
    with pytest.raises(InputError, match="0.1 m"):
        c(rgb, sparse, K)
    with pytest.raises(InputError, match="0.1 m"):
        py(rgb, sparse, K)
    c(*_tiny_frame(5)[:2], K)  # the session is still usable
    c.close()
    c = CSession.from_artifacts(tiny_propagate, preset="NYUv2")
    py = Pipeline.from_artifacts(tiny_propagate, engine="python", preset="NYUv2")
    np.testing.assert_array_equal(c(rgb, sparse, K).depth, py(rgb, sparse, K).depth)
    c.close()


def test_pipeline_ip_basic_is_the_reference(tiny_propagate, monkeypatch):
    """Pipeline's fill (the kernel) and the OpenCV reference give the same result."""
    from psdrt.runtime.classical import ip_basic_fill

    rgb, sparse, K = _tiny_frame(6)
    py = Pipeline.from_artifacts(tiny_propagate, engine="python", preset="VKITTI2")
    want = py(rgb, sparse, K).depth
    lib = py.kernels
    monkeypatch.setattr(lib, "ip_basic", lambda s, **kw: ip_basic_fill(s), raising=False)
    np.testing.assert_array_equal(py(rgb, sparse, K).depth, want)


@pytest.mark.parametrize("preset", ["ARGOVERSE", "VKITTI2"])
def test_ip_basic_presets_psd_mode(capi_lib, artifacts, middlebury, preset):
    """psd mode (encoder, head and post-processing: VKITTI2 sweeps 8 times) on the ViT-S artefacts."""
    rgb, sparse, K, _ = middlebury
    c = CSession.from_artifacts(artifacts, preset=preset, seed=2)
    py = Pipeline.from_artifacts(artifacts, engine="python", preset=preset, seed=2)
    got, want = c(rgb, sparse, K), py(rgb, sparse, K)
    assert got.mode == want.mode == "psd" and got.info["preset"] == want.info["preset"] == preset
    np.testing.assert_array_equal(got.depth, want.depth)
    c.close()
