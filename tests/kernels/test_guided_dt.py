"""The guided mode's default DT method (kernels/guided/dt.h) against its NumPy reference
(runtime.guided.reference_guided_dt), its behaviour on scenes with a known answer, and its errors.

Tolerances: the kernel and the reference perform the same float32 operations in the same order,
except exp (the kernel's polynomial DtExp, within 2e-7 of exp) and log (libm's logf vs NumPy's
float32 log); measured differences are below 2e-6 relative (the real KITTI LiDAR frame: 1.7e-6),
so the tests allow 2e-5. The geodesic fill has no such function and is compared exactly.
"""

import ctypes as C
import os
import subprocess
import sys

import numpy as np
import pytest

from _support import SHARED_DATA, requires_shared_data
from psdrt.runtime import _capi
from psdrt.runtime.classical import nearest_fill
from psdrt.runtime.errors import InputError
from psdrt.runtime.guided import (GuidedParams, input_kind, reference_geodesic_fill, reference_guided_dt)
from psdrt.runtime.points import filter_occluded

RTOL = 2e-5


@pytest.fixture(scope="module")
def lib():
    return _capi.load("cpu")


def random_frame(h, w, n, seed=0, lo=1.0, hi=20.0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = np.zeros((h, w), np.float32)
    idx = rng.choice(h * w, size=min(n, h * w), replace=False)
    s.flat[idx] = rng.uniform(lo, hi, idx.size).astype(np.float32)
    return rgb, s


def scan_frame(h=60, w=90, seed=1):
    """Scan-line-like input: every 4th row from row 24 down, 1 return in 6 missing."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = np.zeros((h, w), np.float32)
    rows = np.arange(24, h, 4)
    s[rows] = rng.uniform(3, 40, (rows.size, w)).astype(np.float32)
    s[rows, ::6] = 0
    return rgb, s


def assert_close(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("h,w,n,params", [
    (40, 60, 30, GuidedParams()),
    (37, 53, 5, GuidedParams(sigma_s=7.0, sigma_r=30.0, beta=3.0, lam=0.4)),
    (33, 70, 200, GuidedParams(dt_iterations=1, rounds=1)),
    (25, 31, 40, GuidedParams(dt_iterations=5, rounds=3, kind="scan")),
    (1, 1, 1, GuidedParams()),
    (1, 50, 7, GuidedParams()),
    (50, 1, 7, GuidedParams()),
    (180, 200, 300, GuidedParams()),  # threaded rows and column ranges
], ids=["default", "params", "one-pass", "forced-scan", "1x1", "row", "column", "threaded"])
def test_matches_numpy_reference(lib, h, w, n, params):
    rgb, s = random_frame(h, w, n, seed=h * w)
    assert_close(lib.guided(rgb, s, params), reference_guided_dt(rgb, s, params))


def test_scan_input_matches_reference_and_is_detected(lib):
    rgb, s = scan_frame()
    assert input_kind(s) == "scan"
    out = lib.guided(rgb, s)
    np.testing.assert_array_equal(out, lib.guided(rgb, s, GuidedParams(kind="scan")))
    assert np.abs(out - lib.guided(rgb, s, GuidedParams(kind="scattered"))).max() > 0.1  # the kind matters
    assert_close(out, reference_guided_dt(rgb, s))
    # the filter inside is the kernel library's psd_occlusion_filter (idempotent); the IP-Basic
    # base takes the unfiltered points, so filtering first changes the base, not the kept points
    f = filter_occluded(s)
    assert 0 < int((f > 0).sum()) < int((s > 0).sum())
    np.testing.assert_array_equal(filter_occluded(f), f)
    pre = lib.guided(rgb, f)
    assert_close(pre, reference_guided_dt(rgb, f))
    np.testing.assert_array_equal(pre[f > 0], out[f > 0])
    assert np.abs(pre - out).max() > 1e-3


def test_scan_base_is_ip_basic_of_the_unfiltered_points(lib):
    """Scan input: with a filter of no reach (sigma_s_scan 0.001) every empty pixel is the base,
    IP-Basic of the unfiltered points (empty pixels take hi), clamped to the kept points' range,
    and every kept point its own depth."""
    from psdrt.runtime.classical import ip_basic_fill

    rgb, s = scan_frame()
    out = lib.guided(rgb, s, GuidedParams(kind="scan", sigma_s_scan=1e-3))  # no reach at all
    f = filter_occluded(s)
    ip = ip_basic_fill(s)
    empty = f == 0
    base = np.where(ip > 0.1, ip, f[f > 0].max())
    lo, hi = f[f > 0].min(), f[f > 0].max()
    np.testing.assert_allclose(out[empty], np.clip(base, lo, hi)[empty], rtol=1e-6)
    np.testing.assert_array_equal(out[~empty], f[~empty])


@pytest.mark.parametrize("pattern,kind", [("random", "scattered"), ("scan", "scan"), ("clusters", "scattered")])
def test_input_kind_detector(lib, pattern, kind):
    """The detector's rule on the three input kinds; the kernel's choice equals input_kind's
    (its output equals the forced kind's bit for bit)."""
    if pattern == "random":
        rgb, s = random_frame(80, 120, 96)  # 1 %
    elif pattern == "scan":
        rgb, s = scan_frame(80, 120)
    else:  # SLAM / corner-like clusters: 3 x 3 blocks
        rgb, s = random_frame(80, 120, 0)
        rng = np.random.default_rng(3)
        for y, x in rng.integers(2, 78, (40, 2)):
            s[y - 1:y + 2, min(x, 117) - 1:min(x, 117) + 2] = rng.uniform(1, 9)
    assert input_kind(s) == kind
    np.testing.assert_array_equal(lib.guided(rgb, s), lib.guided(rgb, s, GuidedParams(kind=kind)))


def test_real_lidar_is_a_scan_and_random_samples_are_not():
    if not (SHARED_DATA / "lidar" / "kittidc_a_lidar.png").is_file():
        pytest.skip("needs ../shared/data/lidar (the KITTI depth-completion frame)")
    from psdrt.runtime.io import read_depth
    from psdrt.runtime.patterns import random_sparse

    lidar = read_depth(SHARED_DATA / "lidar" / "kittidc_a_lidar.png", 256.0)
    gt = read_depth(SHARED_DATA / "lidar" / "kittidc_a_gt.png", 256.0)
    assert input_kind(lidar) == "scan"
    assert input_kind(random_sparse(gt, 0.01, 0)) == "scattered"
    assert input_kind(random_sparse(gt, 0.001, 0)) == "scattered"


@requires_shared_data
def test_real_lidar_frame_matches_reference(lib):
    if not (SHARED_DATA / "lidar" / "kittidc_a_lidar.png").is_file():
        pytest.skip("needs ../shared/data/lidar")
    from psdrt.runtime.io import read_depth, read_rgb

    rgb = read_rgb(SHARED_DATA / "lidar" / "kittidc_a_rgb.png")
    s = read_depth(SHARED_DATA / "lidar" / "kittidc_a_lidar.png", 256.0)
    assert_close(lib.guided(rgb, s), reference_guided_dt(rgb, s))


def test_geodesic_fill_is_exact(lib):
    """With a vanishing filter bandwidth every filter weight underflows to 0, so the output away
    from the points is (eps * fill) / eps: the kernel's geodesic fill, compared exactly."""
    rgb, s = random_frame(45, 64, 25, seed=11)
    p = GuidedParams(sigma_s=1e-3)
    out = lib.guided(rgb, s, p)
    fill = reference_geodesic_fill(rgb, s, float(np.float32(p.lam)), p.rounds)
    eps = np.float32(1e-6)
    want = np.clip((eps * fill) / eps, s[s > 0].min(), s[s > 0].max())
    miss = s == 0
    np.testing.assert_array_equal(out[miss], want[miss])


def test_geodesic_fill_follows_colour_not_distance():
    """Two points, two colour regions: a pixel nearer the other region's point still takes its
    own region's depth (the nearest fill does not)."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 20:] = 200
    s = np.zeros((20, 40), np.float32)
    s[10, 2], s[10, 22] = 2.0, 8.0
    fill = reference_geodesic_fill(rgb, s, 0.1, 2)
    assert (fill[:, :20] == 2.0).all() and (fill[:, 20:] == 8.0).all()
    assert (nearest_fill(s)[:, 13:20] == 8.0).all()  # the Euclidean fill crosses the colour edge


def test_two_region_scene_keeps_the_edge(lib):
    """A known answer: a 2 m and an 8 m region split at a colour edge, 1 % random points. Nearest
    fill puts 8 m where 2 m is true (and the reverse) on 312 pixels; the DT method stays within
    10 % everywhere (measured 5.0 %, where the sparse 2 m side borders the 8 m one) and within
    1 % on all but 50 pixels."""
    h, w = 64, 96
    rng = np.random.default_rng(5)
    rgb = np.full((h, w, 3), 40, np.uint8)
    rgb[:, 48:] = 190
    rgb = np.clip(rgb.astype(int) + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    gt = np.where(np.arange(w)[None, :] < 48, 2.0, 8.0) * np.ones((h, 1))
    s = np.where(rng.random((h, w)) < 0.01, gt, 0).astype(np.float32)
    out = lib.guided(rgb, s)
    rel = np.abs(out - gt) / gt
    nn = np.abs(nearest_fill(s) - gt) / gt
    assert nn.max() == 3.0 and (nn > 0.01).sum() == 312
    assert rel.max() < 0.1 and (rel > 0.01).sum() <= 60, (rel.max(), (rel > 0.01).sum())


def test_bgr_and_threads_give_identical_output(lib, tmp_path):
    rgb, s = random_frame(50, 70, 40, seed=2)
    out = lib.guided(rgb, s)
    np.testing.assert_array_equal(lib.guided(np.ascontiguousarray(rgb[..., ::-1]), s, bgr=True), out)
    np.savez(tmp_path / "f.npz", rgb=rgb, s=s)
    code = ("import numpy as np, sys; from psdrt.runtime import _capi; f = np.load(sys.argv[1]);"
            "sys.stdout.buffer.write(_capi.load('cpu').guided(f['rgb'], f['s']).tobytes())")
    one = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.npz")], capture_output=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    np.testing.assert_array_equal(np.frombuffer(one.stdout, np.float32).reshape(out.shape), out)


GENERIC, BASELINE = _capi.GUIDED_FLAG_GENERIC, _capi.GUIDED_FLAG_BASELINE_ISA


@pytest.mark.parametrize("h,w,kind", [
    (37, 129, "scattered"), (64, 203, "scan"), (35, 90, "auto"),  # full blocks of rows + a last partial one
    (15, 61, "scattered"), (5, 3, "scan"), (1, 7, "auto"), (16, 1, "scattered"),  # fewer rows than a block / columns
])
def test_cpu_schedules_agree_bit_for_bit(lib, h, w, kind):
    """The CPU's vectorised row passes (AVX2 where the CPU has it, and the baseline ISA) equal the
    shared per-row bodies the CUDA build runs (GENERIC), bit for bit, scattered and scan input."""
    rgb, s = random_frame(h, w, max(1, h * w // 50), seed=h + w) if kind != "scan" else scan_frame(h, w, seed=w)
    if kind == "scan" and not (s > 0).any():
        s[h // 2] = 7.5
    p = GuidedParams(kind=kind)
    fast = lib.guided(rgb, s, p)
    assert np.isfinite(fast).all() and (fast > 0).all()
    for flags in (BASELINE, GENERIC, GENERIC | BASELINE):
        np.testing.assert_array_equal(lib.guided(rgb, s, p, flags=flags), fast)


@requires_shared_data
def test_cpu_schedules_agree_bit_for_bit_on_a_real_frame(lib):
    from psdrt.runtime.io import load_shared_frame
    from psdrt.runtime.patterns import make_sparse

    f = load_shared_frame(SHARED_DATA, "KITTI", "0000000005")
    rgb, depth = np.ascontiguousarray(f.rgb[150:250, 300:700]), np.ascontiguousarray(f.depth[150:250, 300:700])
    s = make_sparse("random1", rgb, depth, 0)
    fast = lib.guided(rgb, s)
    for flags in (BASELINE, GENERIC):
        np.testing.assert_array_equal(lib.guided(rgb, s, flags=flags), fast)


def test_degenerate_and_bad_sparse_values(lib):
    rgb, s = random_frame(30, 40, 0)
    s[7, 9] = 3.25
    np.testing.assert_array_equal(lib.guided(rgb, s), np.full((30, 40), 3.25, np.float32))
    s[20, 30] = 3.25
    np.testing.assert_array_equal(lib.guided(rgb, s), np.full((30, 40), 3.25, np.float32))
    rgb, s = random_frame(20, 30, 15, seed=6)
    bad = s.copy()
    bad[0, 0], bad[5, 5], bad[9, 9] = np.nan, np.inf, -3.0
    ref = s.copy()
    ref[0, 0] = ref[5, 5] = ref[9, 9] = 0.0
    np.testing.assert_array_equal(lib.guided(rgb, bad), lib.guided(rgb, ref))
    out = lib.guided(rgb, s)
    valid = s[s > 0]
    assert out.min() >= valid.min() and out.max() <= valid.max()
    with pytest.raises(InputError, match="no valid"):
        lib.guided(rgb, np.zeros((20, 30), np.float32))


@pytest.mark.parametrize("kind", ["scan", "scattered"])
def test_few_points_tiny_depths_and_one_row_stay_in_range(lib, kind):
    """Both kinds' stages (the IP-Basic base and residual filter; the spacing-bound bandwidth) on
    inputs at their limits: 1 and 2 points, all equal, every depth <= 0.1 m (IP-Basic takes none),
    one full row: finite, within the points' range, equal to the reference."""
    rgb, _ = random_frame(20, 30, 0)
    z = np.zeros((20, 30), np.float32)
    one, two, row = z.copy(), z.copy(), z.copy()
    one[5, 5] = 3.0
    two[5, 5], two[10, 20] = 3.0, 0.05
    row[10] = np.linspace(1, 5, 30)
    rng = np.random.default_rng(3)
    equal = np.where(rng.random((20, 30)) < 0.1, 2.0, 0).astype(np.float32)
    tiny = np.where(rng.random((20, 30)) < 0.1, 0.05, 0).astype(np.float32)
    p = GuidedParams(kind=kind)
    for s in (one, two, equal, tiny, row):
        out = lib.guided(rgb, s, p)
        v = s[s > 0]
        assert np.isfinite(out).all() and out.min() >= v.min() and out.max() <= v.max()
        assert_close(out, reference_guided_dt(rgb, s, p))


@pytest.mark.parametrize("kw", [{"method": "x"}, {"kind": "lidar"}, {"lam": -1.0}, {"sigma_s": 0.0},
                                {"sigma_r": float("nan")}, {"beta": float("inf")}, {"dt_iterations": 0},
                                {"rounds": 17}, {"occl_rx": 65}, {"occl_ry": 0}, {"occl_rel": 1.0}])
def test_bad_parameters_are_input_errors(kw):
    with pytest.raises(InputError):
        GuidedParams(**kw)


def _call(lib, prm, h=16, w=16):
    rgb, s = random_frame(h, w, 5)
    o = np.empty((h, w), np.float32)
    buf = np.empty(lib.guided_workspace_size(h, w) + 4096, np.uint8)
    return lib._lib.psd_guided(0, h, w, C.byref(prm), rgb.ctypes.data, 0, s.ctypes.data, buf.ctypes.data,
                               buf.nbytes, None, o.ctypes.data)


def test_c_abi_defaults_and_statuses(lib):
    """psd_guided_params_init writes GuidedParams()'s values; out-of-range fields are statuses,
    not crashes, and the DT method needs no projection."""
    prm = _capi.GuidedParamsC()
    assert lib._lib.psd_guided_params_init(C.byref(prm)) == 0
    want, _keep = lib._guided_params(GuidedParams(), None, 0)
    for name, _ in _capi.GuidedParamsC._fields_:
        got, exp = getattr(prm, name), getattr(want, name)
        if name.startswith("projection"):
            assert not got and not exp
        else:
            assert got == exp, name
    assert lib._lib.psd_guided_params_init(None) == 2
    assert _call(lib, prm) == 0
    for name, bad in (("method", 2), ("kind", 3), ("lambda", -0.5), ("sigma_s", 0.0), ("sigma_s_scan", float("nan")),
                      ("sigma_r", -1.0), ("beta", float("inf")), ("dt_iterations", 0), ("rounds", 99),
                      ("occl_rx", -1), ("occl_ry", 65), ("occl_rel", 0.0)):
        p2 = _capi.GuidedParamsC()
        lib._lib.psd_guided_params_init(C.byref(p2))
        setattr(p2, name, bad)
        assert _call(lib, p2) == 1, name
        assert "guided" in lib.last_error()
