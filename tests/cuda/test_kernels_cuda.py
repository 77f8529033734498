"""Every kernel family on the CUDA device against the CPU library, through the same Python
binding a user calls with device arrays (``__cuda_array_interface__``).

Under the emulated CUDA build the results are asserted bit-identical to the CPU library: the
same source, compiled by the same host compiler with the same flags (no FMA contraction), must
give the same bits whatever the order of the GPU threads (each test runs under two orders). On a
real GPU (``PSD_CUDA_TEST_LIB``) nvcc contracts multiply-adds into FMAs, so the bound there is
the stated float tolerance (``_device.assert_cuda_matches``; looser where iterated sweeps
accumulate the rounding difference).
"""

from __future__ import annotations

import ctypes as C

import numpy as np
import pytest

from _device import assert_cuda_matches
from psdrt.runtime import _capi
from psdrt.runtime.errors import InputError
from psdrt.runtime.guided import GuidedParams
from psdrt.runtime.presets import PRESETS

K = np.array([[61.9, 0, 39.1], [0, 62.3, 27.4], [0, 0, 1]], np.float32)
MEI = np.array([1.2, -0.1, 0.02, 1e-3, -1e-3, 80.0, 81.0, 38.0, 28.0], np.float32)


def sparse_map(rng, h, w, density, hi=10.0):
    return np.where(rng.random((h, w)) < density, rng.uniform(0.5, hi, (h, w)), 0).astype(np.float32)


def cmp(rt, gpu, cpu, what, rtol=1e-5, atol=1e-5):
    assert_cuda_matches(gpu.get(), np.asarray(cpu), rt.emulated, rtol, atol, what)


# ------------------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("fn", ["align_inverse_ls", "align_median"])
@pytest.mark.parametrize("density", [0.002, 0.05])
def test_alignment(cuda_lib, cpu_lib, rt, order, fn, density):
    rng = np.random.default_rng(1)
    data = rng.uniform(0.1, 1.0, (60, 80)).astype(np.float32)
    s = sparse_map(rng, 60, 80, density)
    s[3, 4] = 2.5  # at least one point
    cpu = getattr(cpu_lib, fn)(data, s)
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_align_workspace_size(1, 60, 80, C.byref(nbytes)))
    out, ws = rt.empty((60, 80)), rt.empty(nbytes.value, np.uint8)
    getattr(cuda_lib, fn)(rt.upload(data), rt.upload(s), out=out, workspace=ws)
    cmp(rt, out, cpu, fn)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("src,dst", [((37, 49), (60, 80)), ((98, 126), (57, 76))])
def test_resize(cuda_lib, cpu_lib, rt, order, mode, src, dst):
    x = np.random.default_rng(2).standard_normal((3,) + src).astype(np.float32)
    out = rt.empty((3,) + dst)
    cuda_lib.resize(rt.upload(x), dst, mode, out=out)
    cmp(rt, out, cpu_lib.resize(x, dst, mode), f"resize {mode}")


def test_sparse_pool(cuda_lib, cpu_lib, rt, order):
    s = sparse_map(np.random.default_rng(3), 62, 81, 0.05, 80)
    out = rt.empty((15, 20))
    cuda_lib.sparse_pool(rt.upload(s), out=out)
    cmp(rt, out, cpu_lib.sparse_pool(s), "sparse_pool")


@pytest.mark.parametrize("shape", [(45, 77), (64, 200), (1, 33), (20, 1)])
def test_ip_basic(cuda_lib, cpu_lib, rt, order, shape):
    """Exact on a real GPU too: the steps select values, and the Gaussian's roundings are spelled
    out (PSD_FMA_RN / PSD_MUL_RN / PSD_ADD_RN), so nvcc fuses nothing else. Invalid input has no
    status on the GPU (no host sync): the fill is 0 everywhere, never NaN."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    s = sparse_map(rng, *shape, 0.05, 80.0)
    s[shape[0] // 2, shape[1] // 2] = 5.0
    ws = rt.empty(cuda_lib.ip_basic_workspace_size(*shape, _capi.DEVICE_CUDA), np.uint8)
    out = rt.empty(shape)
    cuda_lib.ip_basic(rt.upload(s), out=out, workspace=ws)
    cmp(rt, out, cpu_lib.ip_basic(s), f"ip_basic {shape}", rtol=0, atol=0)
    for what, bad in (("no depth > 0.1 m", np.full(shape, 0.05, np.float32)),
                      ("NaN", np.where(s > 0, np.nan, 0).astype(np.float32)), ("negative", -s)):
        out = rt.empty(shape).fill(0x7F)
        cuda_lib.ip_basic(rt.upload(bad), out=out, workspace=ws)
        assert (out.get() == 0).all(), what
        with pytest.raises(InputError):
            cpu_lib.ip_basic(bad)


def test_project_points(cuda_lib, cpu_lib, rt, order):
    """The z-buffer is an atomic minimum: the same image whatever the order of the threads, and
    float64 unfused arithmetic picks the same pixel on every device (exact on a real GPU too)."""
    rng = np.random.default_rng(6)
    n = 20000
    pts = np.stack([rng.uniform(-8, 8, n), rng.uniform(-6, 6, n), rng.uniform(-1, 30, n), rng.uniform(0, 1, n)],
                   1).astype(np.float32)
    pts[1::50] = pts[::50][: len(pts[1::50])]  # duplicates: ties in the z-buffer
    Kp = np.array([[61.9, 0, 39.1], [0, 62.3, 27.4], [0, 0, 1]])
    T = np.array([[1, 0, 0, 0.1], [0, 0.8, -0.6, 0.2], [0, 0.6, 0.8, 0.3], [0, 0, 0, 1]], np.float64)
    out = rt.empty((55, 80))
    cuda_lib.project_points(rt.upload(pts), Kp, (55, 80), T=T, out=out)
    cmp(rt, out, cpu_lib.project_points(pts, Kp, (55, 80), T=T), "project_points", rtol=0, atol=0)


@pytest.mark.parametrize("cam", ["pinhole", "360", "MEI"])
def test_backproject(cuda_lib, cpu_lib, rt, order, cam):
    d = np.random.default_rng(4).uniform(0.5, 10, (40, 60)).astype(np.float32)
    p = {"pinhole": K, "MEI": MEI, "360": None}[cam]
    out = rt.empty((3, 40, 60))
    cuda_lib.backproject(rt.upload(d), p, cam, out=out)
    cmp(rt, out, cpu_lib.backproject(d, p, cam), f"backproject {cam}")


@pytest.mark.parametrize("channels,size", [(9, (57, 76)), (32, (30, 40))])
def test_compress_channels(cuda_lib, cpu_lib, rt, order, channels, size):
    f = np.random.default_rng(5).standard_normal((64, 14, 19)).astype(np.float32)
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_compress_workspace_size(1, 14, 19, channels, C.byref(nbytes)))
    out, ws = rt.empty((channels,) + size), rt.empty(nbytes.value, np.uint8)
    cuda_lib.compress_channels(rt.upload(f), channels, size, out=out, workspace=ws)
    cmp(rt, out, cpu_lib.compress_channels(f, channels, size), "compress_channels")


def _knn_cells(h, w, density, seed):
    rng = np.random.default_rng(seed)
    feat = (np.abs(rng.standard_normal((12, h, w))) + 0.1).astype(np.float32)
    pts = rng.standard_normal((3, h, w)).astype(np.float32)
    s4 = sparse_map(rng, h, w, density, 80)
    init = rng.uniform(0.5, 80, (h, w)).astype(np.float32)
    return feat, pts, init, s4


@pytest.mark.parametrize("k,rate,cap,brute", [(1, 1.0, 0, False), (3, 1.0, 0, False), (3, 1.0, 0, True),
                                              (1, 0.5, 0, False), (2, 1.0, 25, False)])
def test_knn(cuda_lib, cpu_lib, rt, order, k, rate, cap, brute):
    feat, pts, init, s4 = _knn_cells(24, 36, 0.1, seed=k + 7 * cap)
    kw = dict(k=k, rate=rate, candidates=cap, seed=99, brute_force=brute)
    cpu = cpu_lib.knn_propagate(feat, pts, init, s4, **kw)
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_knn_workspace_size(1, 12, 24, 36, C.byref(nbytes)))
    out, ws = rt.empty((24, 36)), rt.empty(nbytes.value, np.uint8)
    cuda_lib.knn_propagate(rt.upload(feat), rt.upload(pts), rt.upload(init), rt.upload(s4), **kw, out=out,
                           workspace=ws)
    cmp(rt, out, cpu, f"knn k={k} rate={rate} cap={cap}")


@pytest.mark.parametrize("iterations", [0, 1, 12])
def test_cspn(cuda_lib, cpu_lib, rt, order, iterations):
    rng = np.random.default_rng(6)
    feat = rng.standard_normal((8, 30, 41)).astype(np.float32)
    dense = rng.uniform(0.5, 10, (30, 41)).astype(np.float32)
    s = sparse_map(rng, 30, 41, 0.05)
    cpu = cpu_lib.cspn(s, dense, feat, iterations)
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_cspn_workspace_size(1, 8, 30, 41, C.byref(nbytes)))
    out, ws = rt.empty((30, 41)), rt.empty(nbytes.value, np.uint8)
    cuda_lib.cspn(rt.upload(s), rt.upload(dense), rt.upload(feat), iterations, out=out, workspace=ws)
    cmp(rt, out, cpu, f"cspn {iterations}", atol=1e-4)


@pytest.mark.parametrize("bgr", [False, True])
def test_preprocess(cuda_lib, cpu_lib, rt, order, bgr):
    rgb = np.random.default_rng(8).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    out = rt.empty((1, 3, 56, 70))
    cuda_lib.preprocess_rgb(rt.upload(rgb), size=(56, 70), bgr=bgr, out=out)
    cmp(rt, out, cpu_lib.preprocess_rgb(rgb, size=(56, 70), bgr=bgr), "preprocess")


@pytest.mark.parametrize("method", ["official", "bicubic"])
@pytest.mark.parametrize("src,dst", [((45, 61), (56, 70)), ((90, 130), (56, 70))], ids=["up", "down"])
def test_preprocess_methods(cuda_lib, cpu_lib, rt, order, method, src, dst):
    """psd_preprocess, the default official (scikit-image) method included: its recursive spline
    prefilter runs one row or column per GPU thread, and a down-scale adds the anti-aliasing
    Gaussian."""
    rgb = np.random.default_rng(9).integers(0, 256, src + (3,), dtype=np.uint8)
    m = cuda_lib.PREPROCESS_METHODS[method]
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_preprocess_workspace_size(1, m, *src, *dst, C.byref(nbytes)))
    out, ws = rt.empty((1, 3) + dst), rt.empty(max(nbytes.value, 1), np.uint8)
    cuda_lib.preprocess(rt.upload(rgb), size=dst, method=method, out=out, workspace=ws)
    cmp(rt, out, cpu_lib.preprocess(rgb, size=dst, method=method), f"preprocess {method}")


# ------------------------------------------------------------------------------ composed calls
def _frame(h, w, seed, density=0.03):
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.1, 1.0, (56, 70)).astype(np.float32)
    s = sparse_map(rng, h, w, density)
    feat = rng.standard_normal((32, 14, 19)).astype(np.float32)
    ip = rng.uniform(0.5, 10, (h, w)).astype(np.float32)
    return rel, s, feat, ip


@pytest.mark.parametrize("mode", ["3D-2D", "3D+2D", "2D-3D"])
@pytest.mark.parametrize("with_ip", [False, True])
def test_propagate_modes(cuda_lib, cpu_lib, rt, order, mode, with_ip):
    rel, s, feat, ip = _frame(48, 64, seed=len(mode) + with_ip)
    kw = dict(_capi.preset_kwargs(PRESETS["NYUv2"]), mode=mode)
    cpu_d, cpu_p = cpu_lib.propagate(rel, s, feat, K, ip=ip if with_ip else None, return_polyfit=True, **kw)
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 48, 64, 56, 70, 32, 14, 19)
    nbytes = cuda_lib.propagate_workspace_size(desc, cuda_lib._params(**{k: kw[k] for k in ("k", "mode")}),
                                               with_ip, _capi.DEVICE_CUDA)
    out, poly, ws = rt.empty((48, 64)), rt.empty((48, 64)), rt.empty(nbytes, np.uint8)
    cuda_lib.propagate(rt.upload(rel), rt.upload(s), rt.upload(feat), K, ip=rt.upload(ip) if with_ip else None,
                       return_polyfit=True, out=out, polyfit_out=poly, workspace=ws, **kw)
    cmp(rt, poly, cpu_p, f"propagate {mode} polyfit", atol=1e-4)
    cmp(rt, out, cpu_d, f"propagate {mode} ip={with_ip}", atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("preset", ["KITTI", "Stanford", "ARGOVERSE"])
def test_propagate_presets_and_cameras(cuda_lib, cpu_lib, rt, order, preset):
    """Presets with seeded subsets (ARGOVERSE: rate < 1), the equirectangular camera (Stanford)."""
    p = PRESETS[preset]
    rel, s, feat, ip = _frame(40, 80, seed=3, density=0.05)
    cam = None if p.cam == "360" else (MEI if p.cam == "MEI" else K)
    kw = _capi.preset_kwargs(p)
    cpu = cpu_lib.propagate(rel, s, feat, cam, ip=ip, seed=5, **kw)
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 40, 80, 56, 70, 32, 14, 19)
    prm = cuda_lib._params(k=p.k, rate=p.rate, candidates=p.candidates, mode=p.mode, cam=p.cam)
    ws = rt.empty(cuda_lib.propagate_workspace_size(desc, prm, True, _capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((40, 80))
    cuda_lib.propagate(rt.upload(rel), rt.upload(s), rt.upload(feat), cam, ip=rt.upload(ip), seed=5, out=out,
                       workspace=ws, **kw)
    cmp(rt, out, cpu, f"propagate {preset}", atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("preset", ["ARGOVERSE", "VKITTI2"])
def test_propagate_with_the_device_ip_basic_fill(cuda_lib, cpu_lib, rt, order, preset):
    """The CUDA session's propagation stage for presets that need IP-Basic: psd_ip_basic, then
    psd_propagate with its map, both enqueued on one user stream (RunStages' order)."""
    p = PRESETS[preset]
    rel, s, feat, _ = _frame(40, 80, seed=4, density=0.05)
    kw = _capi.preset_kwargs(p)
    cpu = cpu_lib.propagate(rel, s, feat, K, ip=cpu_lib.ip_basic(s), seed=5, **kw)
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 40, 80, 56, 70, 32, 14, 19)
    prm = cuda_lib._params(k=p.k, rate=p.rate, candidates=p.candidates, mode=p.mode, cam=p.cam)
    ws = rt.empty(cuda_lib.propagate_workspace_size(desc, prm, True, _capi.DEVICE_CUDA), np.uint8)
    ws_ip = rt.empty(cuda_lib.ip_basic_workspace_size(40, 80, _capi.DEVICE_CUDA), np.uint8)
    stream = rt.stream()
    try:
        ds, ip, out = rt.upload(s), rt.empty((40, 80)), rt.empty((40, 80))
        cuda_lib.ip_basic(ds, out=ip, workspace=ws_ip, stream=stream)
        cuda_lib.propagate(rt.upload(rel), ds, rt.upload(feat), K, ip=ip, seed=5, out=out, workspace=ws,
                           stream=stream, **kw)
        rt.sync(stream)
        cmp(rt, ip, cpu_lib.ip_basic(s), "ip_basic", rtol=0, atol=0)
        cmp(rt, out, cpu, f"propagate {preset} with the device fill", atol=1e-3, rtol=1e-4)
    finally:
        rt.check(rt.c.cudaStreamDestroy(stream))


@pytest.mark.parametrize("iters", [-1, 0, 6])
def test_post_process(cuda_lib, cpu_lib, rt, order, iters):
    rng = np.random.default_rng(iters + 5)
    fd0 = rng.standard_normal((64, 16, 20)).astype(np.float32)
    dense = rng.uniform(0.5, 10, (32, 40)).astype(np.float32)
    s = sparse_map(rng, 32, 40, 0.05)
    cpu = cpu_lib.post_process(fd0, dense, s, iters)
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 32, 40, 0, 0, 64, 16, 20)
    nbytes = C.c_size_t()
    cuda_lib._check(cuda_lib._lib.psd_post_process_workspace_size(1, C.byref(desc), 32, iters, C.byref(nbytes)))
    out = rt.empty((32, 40))
    ws = rt.empty(nbytes.value, np.uint8) if nbytes.value else None
    cuda_lib.post_process(rt.upload(fd0), rt.upload(dense), rt.upload(s), iters, out=out, workspace=ws)
    cmp(rt, out, cpu, f"post_process {iters}", atol=1e-4)


@pytest.mark.parametrize("params", [GuidedParams(), GuidedParams(kind="scan", dt_iterations=2, rounds=1),
                                    GuidedParams(method="cspn"), GuidedParams(method="cspn", levels=1, iterations=7),
                                    GuidedParams(method="cspn", channels=8, seed=3, levels=3)],
                         ids=["dt", "dt-scan", "cspn", "cspn-one-level", "cspn-three-levels"])
def test_guided(cuda_lib, cpu_lib, rt, order, params):
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    s = sparse_map(rng, 37, 53, 0.04)
    cpu = cpu_lib.guided(rgb, s, params)
    ws = rt.empty(cuda_lib.guided_workspace_size(37, 53, params, device=_capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((37, 53))
    cuda_lib.guided(rt.upload(rgb), rt.upload(s), params, out=out, workspace=ws)
    cmp(rt, out, cpu, "guided", atol=1e-4, rtol=1e-4)
    feat = rt.empty((params.channels, 37, 53))
    cuda_lib.guided_features(rt.upload(rgb), params, out=feat)
    cmp(rt, feat, cpu_lib.guided_features(rgb, params), "guided features")


def test_guided_dt_on_scan_lines(cuda_lib, cpu_lib, rt, order):
    """The DT method's scan path under the emulator: a LiDAR-like pattern (every 4th row, gaps),
    so the detector picks 'scan' and the parallax filter runs on the device too."""
    rng = np.random.default_rng(4)
    h, w = 48, 70
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = np.zeros((h, w), np.float32)
    s[20::4] = rng.uniform(2, 30, (len(range(20, h, 4)), w))
    s[20::4, ::7] = 0
    s[28, 30:34] = 50.0  # background returns inside nearer rows: the filter drops them
    from psdrt.runtime.guided import input_kind

    assert input_kind(s) == "scan"
    cpu = cpu_lib.guided(rgb, s)
    np.testing.assert_array_equal(cpu, cpu_lib.guided(rgb, s, GuidedParams(kind="scan")))
    ws = rt.empty(cuda_lib.guided_workspace_size(h, w, device=_capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((h, w))
    cuda_lib.guided(rt.upload(rgb), rt.upload(s), out=out, workspace=ws)
    cmp(rt, out, cpu, "guided dt scan", atol=1e-4, rtol=1e-4)


def test_guided_on_middlebury_like_a_user(cuda_lib, cpu_lib, rt, order):
    """The former GPU-only test: the demo frame with 1 % random points, features and depth."""
    from psdrt.export.gate import fit_frame
    from psdrt.runtime.io import load_middlebury
    from psdrt.runtime.patterns import make_sparse

    rgb, gt, _ = fit_frame(load_middlebury(), (96, 128))
    sparse = make_sparse("random1", rgb, gt, 0)
    ws = rt.empty(cuda_lib.guided_workspace_size(96, 128, device=_capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((96, 128))
    cuda_lib.guided(rt.upload(rgb), rt.upload(sparse), out=out, workspace=ws, bgr=False)
    cmp(rt, out, cpu_lib.guided(rgb, sparse), "guided middlebury", atol=1e-4, rtol=1e-4)


def test_propagation_at_nyu_size(cuda_lib, cpu_lib, rt, order):
    """The former GPU-only test: NYU working size, the ViT feature shapes (256 x 28 x 37)."""
    rng = np.random.default_rng(0)
    s = np.where(rng.random((228, 304)) < 0.01, rng.uniform(0.5, 10, (228, 304)), 0).astype(np.float32)
    rel = rng.uniform(0.1, 1, (392, 518)).astype(np.float32)
    feat = rng.standard_normal((256, 28, 37)).astype(np.float32)
    k_nyu = np.array([[259.4, 0, 154.8], [0, 259.7, 120.9], [0, 0, 1]], np.float32)
    cpu = cpu_lib.propagate(rel, s, feat, k_nyu)
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 228, 304, 392, 518, 256, 28, 37)
    ws = rt.empty(cuda_lib.propagate_workspace_size(desc, cuda_lib._params(), False, _capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((228, 304))
    cuda_lib.propagate(rt.upload(rel), rt.upload(s), rt.upload(feat), k_nyu, out=out, workspace=ws)
    cmp(rt, out, cpu, "propagate 228x304", atol=1e-3, rtol=1e-4)


def test_calls_on_a_user_stream_are_asynchronous_and_ordered(cuda_lib, cpu_lib, rt, order):
    """A call on a user stream returns before its work has run; work on the same stream runs in
    order (here: an upload, then the kernel), and the result is there after synchronising."""
    rel, s, feat, _ = _frame(48, 64, seed=11)
    cpu = cpu_lib.propagate(rel, s, feat, K)
    stream = rt.stream()
    d_rel, d_s, d_feat = rt.empty(rel.shape), rt.empty(s.shape), rt.empty(feat.shape)
    if rt.emulated:
        rt.sleep(stream, 150)  # the stream is busy: nothing below may have run when the call returns
    for dev, host in ((d_rel, rel), (d_s, s), (d_feat, feat)):
        rt.check(rt.c.cudaMemcpyAsync(dev.ptr, host.ctypes.data, host.nbytes, 1, stream))
    desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, 48, 64, 56, 70, 32, 14, 19)
    ws = rt.empty(cuda_lib.propagate_workspace_size(desc, cuda_lib._params(), False, _capi.DEVICE_CUDA), np.uint8)
    out = rt.empty((48, 64)).fill(0)
    rt.sync()
    if rt.emulated:
        rt.sleep(stream, 150)
    cuda_lib.propagate(d_rel, d_s, d_feat, K, out=out, workspace=ws, stream=stream)
    if rt.emulated:
        assert rt.c.cudaStreamQuery(stream) == 600  # cudaErrorNotReady: still running
    rt.sync(stream)
    cmp(rt, out, cpu, "propagate on a user stream", atol=1e-3, rtol=1e-4)
    rt.check(rt.c.cudaStreamDestroy(stream))
