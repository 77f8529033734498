"""The guided mode's CSPN method as one kernel call (psd_guided, kernels/guided) vs the readable
references: NumPy features (runtime.guided.guided_features), scipy's nearest fill and the PyTorch
coarse-to-fine CSPN (export.reference.guided); the CPU schedules against each other; the C ABI's
error paths through ctypes, as a C embedder calls them.

Tolerances (measured on Middlebury and random frames): features <= 5.2e-6 absolute with the
default parameters (float32 colour and phase + polynomial cosine vs float64 NumPy); depth within
1e-4 relative of the reference (measured: 1.4e-5 with the defaults on KITTI and Middlebury, up
to 5.4e-5 on the 8-channel random frame; 2 channels, the minimum, reach 1.5e-4, so no case here
uses them); the
nearest fill and the CPU schedules (row-streamed AVX2 / baseline ISA / per-pixel generic) agree
bit for bit.
"""

import ctypes as C

import numpy as np
import pytest
import torch

from _kernel_reference import t4
from _support import SHARED_DATA, requires_shared_data
from psdrt.export.reference.guided import guided_propagation
from psdrt.runtime import _capi
from psdrt.runtime.classical import nearest_fill
from psdrt.runtime.errors import InputError, ShapeError
from psdrt.runtime.guided import GuidedParams, guided_features, projection_json, rff_projection

#: these tests cover the CSPN method (tests/kernels/test_guided_dt.py: the default DT method)
CSPN = GuidedParams(method="cspn")
from psdrt.runtime.io import load_middlebury, load_shared_frame
from psdrt.runtime.patterns import make_sparse

GENERIC, BASELINE = _capi.GUIDED_FLAG_GENERIC, _capi.GUIDED_FLAG_BASELINE_ISA
FEAT_ATOL = 1e-5
DEPTH_RTOL = 1e-4


def random_frame(h, w, n, seed=0, smooth=True):
    """A colour image with edges (blocks + noise) and n sparse depths in 1..20 m."""
    rng = np.random.default_rng(seed)
    if smooth:
        blocks = rng.integers(0, 256, (max(1, h // 8) + 1, max(1, w // 8) + 1, 3))
        rgb = blocks[np.arange(h) // 8][:, np.arange(w) // 8] + rng.integers(-20, 21, (h, w, 3))
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    else:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = np.zeros((h, w), np.float32)
    s.flat[rng.choice(h * w, n, replace=False)] = rng.uniform(1.0, 20.0, n)
    return rgb, s


def reference(rgb, sparse, params=GuidedParams(method="cspn")):
    """The FP32 reference of the guided mode: NumPy features + scipy fill + PyTorch CSPN."""
    feat = torch.from_numpy(guided_features(rgb, params))[None]
    init = t4(nearest_fill(sparse))
    return guided_propagation(t4(sparse), init, feat, params)[0, 0].numpy()


def assert_depth_close(out, ref):
    assert out.dtype == np.float32 and out.shape == ref.shape and np.isfinite(out).all()
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
    assert rel.max() <= DEPTH_RTOL, rel.max()


# ------------------------------------------------------------------------------------ features
@pytest.mark.parametrize("bgr", [False, True])
def test_features_match_numpy_reference(lib, bgr):
    rgb, _ = random_frame(37, 61, 1, seed=1, smooth=False)
    # the float32 phase error grows with |z| and the amplitude sqrt(2 / C): colour scale 3 about
    # triples the phases and C = 5 raises the amplitude 2.5x (measured 1.7e-5 there)
    for params, atol in ((GuidedParams(method="cspn"), FEAT_ATOL), (GuidedParams(method="cspn", channels=5, colour_scale=3.0, seed=7), 4e-5)):
        out = lib.guided_features(rgb, params, bgr=bgr)
        ref = guided_features(rgb, params, bgr=bgr)
        assert out.shape == ref.shape == (params.channels, 37, 61)
        assert np.abs(out - ref).max() <= atol


def test_features_cover_every_colour_cube_corner_and_middlebury(lib):
    # a 52^3 lattice of the RGB cube, every channel value 0..255 step 5
    v = np.arange(0, 256, 5, dtype=np.uint8)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, -1, 3)
    assert np.abs(lib.guided_features(cube) - guided_features(cube)).max() <= FEAT_ATOL
    mb = load_middlebury().rgb
    assert np.abs(lib.guided_features(mb) - guided_features(mb)).max() <= FEAT_ATOL


def test_projection_json_round_trips_to_the_same_float32_and_output(lib):
    import json

    params = GuidedParams(method="cspn", channels=12, seed=5)
    doc = json.loads(projection_json(params))
    w, b = np.array(doc["w"], np.float32), np.array(doc["b"], np.float32)
    rw, rb = rff_projection(params)
    np.testing.assert_array_equal(w, rw)
    np.testing.assert_array_equal(b, rb)
    rgb, s = random_frame(20, 24, 9, seed=8)
    np.testing.assert_array_equal(lib.guided(rgb, s, params, projection=(w, b)), lib.guided(rgb, s, params))


# ------------------------------------------------------------------------------------ nearest fill
def _fill_only(lib, rgb, sparse):
    # one level, no sweep: the output is the nearest fill clamped to its own range
    return lib.guided(rgb, sparse, GuidedParams(method="cspn", levels=1, iterations=0))


@pytest.mark.parametrize("pattern", ["random", "grid", "two", "edges", "column"])
def test_nearest_fill_matches_scipy_including_ties(lib, pattern):
    h, w = 41, 57
    rgb, s = random_frame(h, w, 30, seed=3)
    if pattern == "grid":  # equidistant sites everywhere: ties are the rule
        s = np.zeros((h, w), np.float32)
        s[::6, ::6] = np.arange(1, s[::6, ::6].size + 1, dtype=np.float32).reshape(s[::6, ::6].shape)
    elif pattern == "two":
        s = np.zeros((h, w), np.float32)
        s[10, 10], s[30, 40] = 2.0, 7.0
    elif pattern == "edges":
        s = np.zeros((h, w), np.float32)
        s[0, :: 7] = np.linspace(1, 9, s[0, ::7].size)
        s[-1, 3::5] = np.linspace(2, 8, s[-1, 3::5].size)
    elif pattern == "column":  # one column holds every point: all other columns are empty
        s = np.zeros((h, w), np.float32)
        s[::4, 20] = np.arange(1, s[::4, 20].size + 1, dtype=np.float32)
    out = _fill_only(lib, rgb, s)
    np.testing.assert_array_equal(out, nearest_fill(s))
    np.testing.assert_array_equal(lib.guided(rgb, s, GuidedParams(method="cspn", levels=1, iterations=0), flags=GENERIC), out)


# ------------------------------------------------------------------------------------ depth
@pytest.mark.parametrize("h,w,n,params", [
    (64, 90, 60, GuidedParams(method="cspn")),
    (37, 53, 25, GuidedParams(method="cspn", levels=3, iterations=7, channels=5, colour_scale=4.0, seed=3)),
    (33, 70, 200, GuidedParams(method="cspn", levels=1, iterations=3)),
    (40, 41, 10, GuidedParams(method="cspn", levels=9, iterations=2)),  # levels capped by the size
    (5, 7, 3, GuidedParams(method="cspn")),                            # below 4 px per side: one level
    (1, 1, 1, GuidedParams(method="cspn")),
    (3, 200, 9, GuidedParams(method="cspn", iterations=0)),
    (20, 30, 10, GuidedParams(method="cspn", channels=64, iterations=4)),          # the largest channel count
    (180, 200, 300, GuidedParams(method="cspn", channels=8, iterations=9)),        # threaded, passes of 8 + 1
])
def test_guided_matches_reference_on_random_frames(lib, h, w, n, params):
    rgb, s = random_frame(h, w, n, seed=h + w)
    out = lib.guided(rgb, s, params)
    assert_depth_close(out, reference(rgb, s, params))
    vals = s[s > 0]
    assert out.min() >= vals.min() and out.max() <= vals.max()


def test_guided_matches_reference_on_middlebury_and_bgr(lib):
    f = load_middlebury()
    sparse = make_sparse("random1", f.rgb, f.depth, 0)
    out = lib.guided(f.rgb, sparse, CSPN)
    np.testing.assert_array_equal(lib.guided(np.ascontiguousarray(f.rgb[..., ::-1]), sparse, CSPN, bgr=True), out)
    # the PyTorch reference on a 240 x 360 crop keeps the test fast (the full frame: same bound)
    rgb, sp = np.ascontiguousarray(f.rgb[130:370, 190:550]), np.ascontiguousarray(sparse[130:370, 190:550])
    assert_depth_close(lib.guided(rgb, sp, CSPN), reference(rgb, sp))


def test_cpu_schedules_agree_bit_for_bit(lib):
    f = load_middlebury()
    rgb = np.ascontiguousarray(f.rgb[100:340, 150:510])  # 86k pixels: the threaded path
    sparse = make_sparse("random0.1", rgb, np.ascontiguousarray(f.depth[100:340, 150:510]), 1)
    fast = lib.guided(rgb, sparse, CSPN)
    np.testing.assert_array_equal(lib.guided(rgb, sparse, CSPN, flags=BASELINE), fast)
    np.testing.assert_array_equal(lib.guided(rgb, sparse, CSPN, flags=GENERIC), fast)
    rgb, s = random_frame(29, 83, 40, seed=5, smooth=False)  # odd sizes, 3 levels, tails
    p = GuidedParams(method="cspn", levels=3, iterations=5, channels=7)
    fast = lib.guided(rgb, s, p)
    for flags in (BASELINE, GENERIC, GENERIC | BASELINE):
        np.testing.assert_array_equal(lib.guided(rgb, s, p, flags=flags), fast)
    np.testing.assert_array_equal(lib.guided(rgb, s, p), fast)  # deterministic


_BANDS_SCRIPT = """
import sys, numpy as np
from psdrt.runtime import _capi
from psdrt.runtime.guided import GuidedParams
lib = _capi.load("cpu")
rng = np.random.default_rng(0)
rgb = rng.integers(0, 256, (203, 187, 3), dtype=np.uint8)
s = np.where(rng.random((203, 187)) < 0.02, rng.uniform(1, 9, (203, 187)), 0).astype(np.float32)
for p in (GuidedParams(method="cspn", levels=3, iterations=19), GuidedParams(method="cspn", iterations=3)):
    a, b = lib.guided(rgb, s, p), lib.guided(rgb, s, p, flags=_capi.GUIDED_FLAG_GENERIC)
    assert np.array_equal(a, b), (p, float(np.abs(a - b).max()))
print("ok")
"""


@pytest.mark.parametrize("threads", [3, 7])
def test_more_bands_than_cores_agree_bit_for_bit(lib, threads):
    # odd band counts, halo rows on both sides of every band, a pass of 3 sweeps after two of 8
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", _BANDS_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@requires_shared_data
def test_guided_matches_reference_on_a_kitti_crop(lib):
    f = load_shared_frame(SHARED_DATA, "KITTI", "0000000005")
    rgb, depth = f.rgb[-128:, 300:700], f.depth[-128:, 300:700]  # a LiDAR crop keeps this fast
    sparse = make_sparse("random1", np.ascontiguousarray(rgb), np.ascontiguousarray(depth), 0)
    out = lib.guided(np.ascontiguousarray(rgb), sparse, CSPN)
    assert_depth_close(out, reference(np.ascontiguousarray(rgb), sparse))


# ------------------------------------------------------------------------------------ degenerate
def test_one_point_and_equal_points_give_that_value(lib):
    rgb, _ = random_frame(30, 40, 1, seed=2)
    s = np.zeros((30, 40), np.float32)
    s[7, 9] = 3.25
    np.testing.assert_array_equal(lib.guided(rgb, s, CSPN), np.full((30, 40), 3.25, np.float32))
    s[20, 30] = s[1, 1] = 3.25
    np.testing.assert_array_equal(lib.guided(rgb, s, CSPN), np.full((30, 40), 3.25, np.float32))


def test_uniform_image_and_zero_iterations_stay_finite(lib):
    rgb = np.full((24, 32, 3), 77, np.uint8)  # every affinity equal
    _, s = random_frame(24, 32, 12, seed=4)
    out = lib.guided(rgb, s, CSPN)
    assert_depth_close(out, reference(rgb, s))


def test_nan_and_inf_sparse_values_are_missing(lib):
    rgb, s = random_frame(20, 30, 15, seed=6)
    bad = s.copy()
    bad[0, 0], bad[5, 5], bad[9, 9] = np.nan, np.inf, -3.0
    ref = s.copy()
    ref[0, 0] = ref[5, 5] = ref[9, 9] = 0.0
    np.testing.assert_array_equal(lib.guided(rgb, bad, CSPN), lib.guided(rgb, ref, CSPN))


def test_no_valid_point_is_a_typed_error_in_python_and_zeros_in_c(lib):
    rgb, _ = random_frame(16, 16, 1)
    s = np.zeros((16, 16), np.float32)
    with pytest.raises(InputError, match="no valid"):
        lib.guided(rgb, s, CSPN)
    out = np.full((16, 16), 5.0, np.float32)
    prm, keep = _params(lib)
    ws = np.empty(lib.guided_workspace_size(16, 16, CSPN), np.uint8)
    st = lib._lib.psd_guided(0, 16, 16, C.byref(prm), rgb.ctypes.data, 0, s.ctypes.data, ws.ctypes.data,
                             ws.nbytes, None, out.ctypes.data)
    assert st == 0
    np.testing.assert_array_equal(out, 0.0)


# ------------------------------------------------------------------------------------ bad arguments
def _params(lib, **kw):
    prm, keep = lib._guided_params(GuidedParams(method="cspn"), None, 0)
    for k, v in kw.items():
        setattr(prm, k, v)
    return prm, keep


def _call(lib, prm, h=16, w=16, rgb=True, sparse=True, ws=True, out=True, ws_bytes=None, device=0, out_is_sparse=False):
    img, s = random_frame(16, 16, 5)
    o = np.empty((16, 16), np.float32)
    buf = np.empty(lib.guided_workspace_size(16, 16, CSPN) + 4096, np.uint8)
    return lib._lib.psd_guided(
        device, h, w, C.byref(prm) if prm is not None else None, img.ctypes.data if rgb else None, 0,
        s.ctypes.data if sparse else None, buf.ctypes.data if ws else None,
        buf.nbytes if ws_bytes is None else ws_bytes, None,
        (s.ctypes.data if out_is_sparse else o.ctypes.data) if out else None)


def test_c_abi_rejects_bad_arguments_with_a_status(lib):
    ok, keep = _params(lib)
    assert _call(lib, ok) == 0
    assert _call(lib, None) == 2
    for kw in ({"rgb": False}, {"sparse": False}, {"ws": False}, {"out": False}):
        assert _call(lib, ok, **kw) == 2, kw
    assert "null pointer" in lib.last_error()
    assert _call(lib, _params(lib, projection_w=None)[0]) == 2
    assert "projection_w" in lib.last_error()
    assert _call(lib, ok, h=0) == 3
    assert _call(lib, ok, w=-4) == 3
    assert _call(lib, ok, h=1 << 21) == 3
    assert _call(lib, ok, ws_bytes=100) == 4
    assert "psd_guided_workspace_size" in lib.last_error()
    assert _call(lib, ok, out_is_sparse=True) == 1
    assert _call(lib, ok, device=7) == 1
    assert _call(lib, ok, device=1) == (7 if lib.has_cuda else 6)
    for kw in ({"struct_size": 8}, {"channels": 1}, {"channels": 65}, {"colour_scale": 0.0},
               {"colour_scale": float("nan")}, {"levels": 0}, {"iterations": -1}, {"flags": 8}):
        prm, keep2 = _params(lib, **kw)
        assert _call(lib, prm) == 1, kw
    w = np.array(rff_projection(GuidedParams(method="cspn"))[0])
    w[1, 3] = np.nan
    prm, keep3 = _params(lib, projection_w=w.ctypes.data_as(C.POINTER(C.c_float)))
    assert _call(lib, prm) == 1 and "non-finite" in lib.last_error()
    nbytes = C.c_size_t()
    assert lib._lib.psd_guided_workspace_size(0, 16, 16, None, C.byref(nbytes)) == 2
    assert lib._lib.psd_guided_workspace_size(0, 16, 16, C.byref(ok), None) == 2
    feat = np.empty((32, 16, 16), np.float32)
    img, _ = random_frame(16, 16, 1)
    assert lib._lib.psd_guided_features(0, 16, 16, C.byref(ok), None, 0, None, feat.ctypes.data) == 2
    assert lib._lib.psd_guided_features(0, 0, 16, C.byref(ok), img.ctypes.data, 0, None, feat.ctypes.data) == 3


def test_python_binding_rejects_bad_inputs_with_typed_errors(lib):
    rgb, s = random_frame(16, 20, 5)
    with pytest.raises(InputError, match="uint8"):
        lib.guided(rgb.astype(np.float32), s)
    with pytest.raises(InputError, match="H, W, 3"):
        lib.guided(rgb[..., :2], s)
    with pytest.raises(ShapeError):
        lib.guided(rgb, s[:, :-1])
    with pytest.raises(ShapeError, match="projection"):
        lib.guided(rgb, s, projection=(np.zeros((3, 4), np.float32), np.zeros(4, np.float32)))
    with pytest.raises(InputError, match="channels"):
        lib.guided(rgb, s, GuidedParams(method="cspn", channels=65))
    with pytest.raises(InputError):
        lib.guided(rgb, s, params={"channels": 32})


# The CUDA guided kernels are compared with these CPU results in tests/cuda/test_kernels_cuda.py
# (emulated CUDA build everywhere, a real GPU under benchmarks/gpu_check.py).
