"""The guided mode through the session (psd_guided inside psd_session_run), and what a warm
run allocates.

The session calls the same kernel as ``Pipeline('guided')`` with the same projection, so the
two agree bit for bit; the projection built into the library is checked against
``rff_projection(GuidedParams())``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from _support import requires_shared_data
from _frames import SIZE

from psdrt.runtime.errors import ShapeError
from psdrt.runtime.guided import GuidedParams
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.session import CSession, projection_header

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def middlebury_full():
    from psdrt.runtime.io import load_middlebury
    from psdrt.runtime.patterns import make_sparse

    f = load_middlebury()
    return f.rgb, make_sparse("random1", f.rgb, f.depth, 0), f.K


def test_builtin_projection_is_python_default():
    assert (ROOT / "runtime" / "capi" / "guided_projection.h").read_text() == projection_header()


def test_guided_equals_pipeline(capi_lib, middlebury_full):
    rgb, sparse, K = middlebury_full
    sess = CSession.guided()
    assert sess.mode == "guided" and sess.working_size is None and sess.fm_size is None
    got = sess(rgb, sparse, K)
    want = Pipeline("guided")(rgb, sparse, K)
    np.testing.assert_array_equal(got.depth, want.depth)
    assert set(got.info["timings_ms"]) == {"validate", "guided", "total"}
    assert got.info["points"] == want.info["points"] == int((sparse > 0).sum())
    # BGR input, and another size in the same session (reallocates once)
    np.testing.assert_array_equal(sess(rgb[..., ::-1], sparse, K, bgr=True).depth, want.depth)
    small = (slice(100, 300), slice(200, 500))
    K2 = np.array(K, np.float64)
    K2[0, 2] -= 200
    K2[1, 2] -= 100
    np.testing.assert_array_equal(sess(rgb[small], sparse[small], K2).depth,
                                  Pipeline("guided")(rgb[small], sparse[small], K2).depth)
    np.testing.assert_array_equal(sess(rgb, sparse, K).depth, want.depth)


@pytest.mark.parametrize("g", [
    GuidedParams(kind="scan", sigma_s_scan=3.0, lam=0.3, dt_iterations=2, rounds=1, occl_rx=2),
    GuidedParams(sigma_s=7.0, sigma_r=40.0, beta=2.0),
    GuidedParams(method="cspn", channels=16, seed=3, levels=3, iterations=20, colour_scale=7.0),
], ids=["dt-scan", "dt-scattered", "cspn"])
def test_guided_custom_parameters(capi_lib, middlebury_full, g):
    rgb, sparse, K = middlebury_full
    got = CSession.guided(g)(rgb, sparse, K).depth
    np.testing.assert_array_equal(got, Pipeline("guided", guided=g)(rgb, sparse, K).depth)
    assert np.abs(got - CSession.guided()(rgb, sparse, K).depth).max() > 1e-3  # the parameters matter


@requires_shared_data
@pytest.mark.parametrize("dataset,frame_id", [("NYUv2", "00000"), ("KITTI", "0000000005")])
def test_guided_real_frames(capi_lib, dataset, frame_id):
    from _support import SHARED_DATA

    from psdrt.runtime.io import load_shared_frame
    from psdrt.runtime.patterns import make_sparse

    f = load_shared_frame(SHARED_DATA, dataset, frame_id)
    sparse = make_sparse("random1", f.rgb, f.depth, 0)
    got = CSession.guided()(f.rgb, sparse, f.K).depth
    np.testing.assert_array_equal(got, Pipeline("guided")(f.rgb, sparse, f.K).depth)
    assert np.isfinite(got).all() and got.min() >= sparse[sparse > 0].min()


def test_guided_over_an_artifact_directory(capi_lib, artifacts, middlebury):
    rgb, sparse, K, _ = middlebury
    sess = CSession(artifacts, mode="guided")
    assert sess.mode == "guided" and sess.working_size == SIZE and sess.preset_name == "NYUv2"
    np.testing.assert_array_equal(sess(rgb, sparse, K).depth, CSession.guided()(rgb, sparse, K).depth)
    with pytest.raises(ShapeError, match="built for 56x84"):
        sess(rgb[:40], sparse[:40], K)


def _alloc_counts(exe: Path, *args) -> dict:
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.strip().splitlines():
        name, value = line.rsplit(":", 1)
        out[Path(name).name] = float(value)
    return out


def test_warm_runs_allocate_nothing_in_the_library(capi_lib, artifacts, tmp_path):
    """After the first frame, psd_session_run allocates nothing in libpsd (guided and psd mode);
    in psd mode ONNX Runtime allocates inside its own Run (thousands of small blocks)."""
    lib = Path(capi_lib._name)
    exe = tmp_path / "alloc_count"
    proc = subprocess.run(["gcc", "-std=c99", "-O1", "-g", f"-I{ROOT / 'runtime' / 'capi' / 'include'}",
                           str(HERE / "alloc_count.c"), str(lib), f"-Wl,-rpath,{lib.parent}", "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    guided = _alloc_counts(exe)
    assert guided.get(lib.name, 0.0) == 0.0 and guided["unattributed"] == 0.0, guided
    assert sum(v for k, v in guided.items() if not k.startswith("libgomp")) == 0.0, guided
    psd = _alloc_counts(exe, artifacts)
    assert psd.get(lib.name, 0.0) == 0.0 and psd["unattributed"] == 0.0, psd
    assert any(k.startswith("libonnxruntime") and v > 0 for k, v in psd.items()), psd
