"""The session (psd_session_*) on the CUDA device: host frames (psd_session_run), strided
device frames (psd_session_enqueue), ordering across streams and threads, devices, CUDA-event
timings and error attribution. Guided mode: the networks (ONNX Runtime's CUDA provider) cannot
run without a GPU, so the psd/propagate device path is covered kernel by kernel in
test_kernels_cuda.py.

Under the emulator each test runs under two thread orders and the results are compared bit for
bit with the CPU session."""

from __future__ import annotations

import ctypes as C
import threading
import time

import numpy as np
import pytest

from _device import assert_cuda_matches
from psdrt.runtime import session as S

H, W = 48, 64
K = np.array([[60.0, 0, 32.0], [0, 60.0, 24.0], [0, 0, 1]])


@pytest.fixture(scope="module")
def slib(cuda_lib):
    return S.session_library(cuda_lib.path)


def frame(seed, h=H, w=W):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 7 + seed), np.cos(yy / 5), np.sin((xx + yy) / 11)], -1)
    rgb = np.clip(128 + 90 * base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    depth = (2 + xx / w * 3 + yy / h * 2 + seed % 3).astype(np.float32)
    sparse = np.where(rng.random((h, w)) < 0.04, depth, 0).astype(np.float32)
    return rgb, sparse


def create(slib, device="cuda", device_id=0):
    o = S.SessionOptions()
    assert slib.psd_session_options_init(C.byref(o)) == 0
    o.device, o.device_id, o.mode = S.DEVICES[device], device_id, S.MODES["guided"]
    h = C.c_void_p()
    st = slib.psd_session_create(None, C.byref(o), C.byref(h))
    assert st == 0, slib.psd_last_error().decode()
    return h


def last_error(slib) -> str:
    return (slib.psd_last_error() or b"").decode()


def host_in(rgb, sparse, K=K):
    Kd = np.ascontiguousarray(K, np.float64)
    fin = S.FrameIn(C.sizeof(S.FrameIn), 0, rgb.shape[0], rgb.shape[1], rgb.ctypes.data, rgb.strides[0],
                    sparse.ctypes.data, sparse.strides[0], Kd.ctypes.data, S.DTYPE_FLOAT64, 0)
    return fin, Kd


def run_host(slib, h, rgb, sparse):
    depth = np.full(sparse.shape, -1, np.float32)
    fin, _keep = host_in(rgb, sparse)
    fout = S.FrameOut()
    fout.struct_size = C.sizeof(S.FrameOut)
    fout.depth = depth.ctypes.data
    st = slib.psd_session_run(h, C.byref(fin), C.byref(fout))
    assert st == 0, last_error(slib)
    return depth, fout


@pytest.fixture(scope="module")
def cpu_session():
    lib = S.session_library()
    h = create(lib, "cpu")
    yield lambda rgb, sparse: run_host(lib, h, rgb, sparse)[0]
    lib.psd_session_destroy(h)


class DeviceFrame:
    """A frame in device memory with row pitches larger than the rows (pad bytes), as a crop of
    a bigger image or a pitched allocation gives."""

    def __init__(self, rt, rgb, sparse, pad=16):
        h, w = sparse.shape
        self.rt = rt
        self.rgb_pitch, self.sp_pitch, self.out_pitch = 3 * w + pad, 4 * w + pad, 4 * w + pad
        self.rgb = rt.empty(h * self.rgb_pitch, np.uint8)
        self.sparse = rt.empty(h * self.sp_pitch, np.uint8)
        self.out = rt.empty(h * self.out_pitch, np.uint8).fill(0)
        self.h, self.w = h, w
        self.upload(rgb, sparse)
        self.K = np.ascontiguousarray(K, np.float64)

    def upload(self, rgb, sparse, stream=None):
        rt = self.rt
        rt.c.cudaMemcpy2DAsync.argtypes = [C.c_void_p, C.c_size_t, C.c_void_p, C.c_size_t, C.c_size_t, C.c_size_t,
                                           C.c_int, C.c_void_p]
        self._host = (np.ascontiguousarray(rgb), np.ascontiguousarray(sparse))  # alive until the copy ran
        for dev, host, pitch, row in ((self.rgb, self._host[0], self.rgb_pitch, 3 * self.w),
                                      (self.sparse, self._host[1], self.sp_pitch, 4 * self.w)):
            rt.check(rt.c.cudaMemcpy2DAsync(dev.ptr, pitch, host.ctypes.data, row, row, self.h, 1, stream))
        if stream is None:
            rt.sync()

    def structs(self):
        fin = S.FrameIn(C.sizeof(S.FrameIn), 0, self.h, self.w, self.rgb.ptr, self.rgb_pitch, self.sparse.ptr,
                        self.sp_pitch, self.K.ctypes.data, S.DTYPE_FLOAT64, 0)
        fout = S.FrameOut()
        fout.struct_size = C.sizeof(S.FrameOut)
        fout.depth, fout.depth_stride = self.out.ptr, self.out_pitch
        return fin, fout

    def enqueue(self, slib, h, stream=None) -> int:
        self._structs = self.structs()
        return slib.psd_session_enqueue(h, C.byref(self._structs[0]), C.byref(self._structs[1]), stream)

    def result(self) -> np.ndarray:
        raw = self.out.get().reshape(self.h, self.out_pitch)
        return np.ascontiguousarray(raw[:, :4 * self.w]).view(np.float32)


# ------------------------------------------------------------------------------ results
def test_run_host_frames_equals_cpu_session(slib, rt, order, cpu_session):
    h = create(slib)
    try:
        for seed in (1, 2):
            rgb, sparse = frame(seed)
            depth, fout = run_host(slib, h, rgb, sparse)
            assert_cuda_matches(depth, cpu_session(rgb, sparse), rt.emulated, 1e-4, 1e-4, "run")
            assert fout.points == int((sparse > 0).sum())
        # a strided host frame (a crop) and a new size on the same session
        big_rgb, big_sparse = frame(3, 60, 80)
        rgb, sparse = big_rgb[5:5 + H, 7:7 + W], big_sparse[5:5 + H, 7:7 + W]
        depth, _ = run_host(slib, h, rgb, sparse)
        assert_cuda_matches(depth, cpu_session(np.ascontiguousarray(rgb), np.ascontiguousarray(sparse)),
                            rt.emulated, 1e-4, 1e-4, "strided host frame")
        depth, _ = run_host(slib, h, big_rgb, big_sparse)
        assert_cuda_matches(depth, cpu_session(big_rgb, big_sparse), rt.emulated, 1e-4, 1e-4, "new size")
    finally:
        slib.psd_session_destroy(h)


def test_host_frames_stage_through_pinned_memory_allocated_once(slib, emulated, cpu_session):
    """psd_session_run on a CUDA session stages rgb, sparse and depth through page-locked buffers
    (cudaHostAlloc) made at the first frame and kept (none per frame; freed with the session);
    strided host frames and a frame whose sparse depth is refused leave them usable."""
    live = lambda: (int(emulated.c.psd_emu_live_host_allocations(None)),  # noqa: E731
                    int(emulated.c.psd_emu_live_allocations(None)))
    pinned0, dev0 = live()
    h = create(slib)
    try:
        assert live()[0] == pinned0
        rgb, sparse = frame(21)
        run_host(slib, h, rgb, sparse)
        pinned, dev = live()
        assert pinned == pinned0 + 3
        for seed in (22, 23):
            rgb, sparse = frame(seed)
            big = np.zeros((H, W + 5, 3), np.uint8)
            big[:, :W] = rgb
            depth, _ = run_host(slib, h, big[:, :W], sparse)  # row stride 3 (W + 5)
            assert_cuda_matches(depth, cpu_session(rgb, sparse), True, 1e-4, 1e-4, "strided host frame")
            assert live() == (pinned, dev)
        bad = sparse.copy()
        bad[3, 4] = np.nan
        fin, _keep = host_in(rgb, bad)
        fout = S.FrameOut()
        fout.struct_size = C.sizeof(S.FrameOut)
        out = np.zeros_like(sparse)
        fout.depth = out.ctypes.data
        st = slib.psd_session_run(h, C.byref(fin), C.byref(fout))
        assert S.STATUS_NAMES[st] == "PSD_E_INVALID_ARGUMENT" and "NaN" in last_error(slib), last_error(slib)
        assert live() == (pinned, dev)
        depth, _ = run_host(slib, h, rgb, sparse)
        assert_cuda_matches(depth, cpu_session(rgb, sparse), True, 1e-4, 1e-4, "after a refused frame")
    finally:
        slib.psd_session_destroy(h)
    assert live()[0] == pinned0


def test_enqueue_strided_device_frames_equals_cpu_session(slib, rt, order, cpu_session):
    h = create(slib)
    stream = rt.stream()
    try:
        for seed in (4, 5):
            rgb, sparse = frame(seed)
            f = DeviceFrame(rt, rgb, sparse)
            assert f.enqueue(slib, h, stream) == 0, last_error(slib)
            rt.sync(stream)
            assert_cuda_matches(f.result(), cpu_session(rgb, sparse), rt.emulated, 1e-4, 1e-4, "enqueue")
            pad = f.out.get().reshape(H, f.out_pitch)[:, 4 * W:]
            assert (pad == 0).all()  # nothing written between the rows
        # the NULL stream is cudaStreamPerThread
        f = DeviceFrame(rt, *frame(6))
        assert f.enqueue(slib, h, None) == 0, last_error(slib)
        rt.sync()
        assert_cuda_matches(f.result(), cpu_session(*frame(6)), rt.emulated, 1e-4, 1e-4, "NULL stream")
    finally:
        slib.psd_session_destroy(h)
        rt.check(rt.c.cudaStreamDestroy(stream))


def test_cuda_sessions_take_the_ip_basic_presets(slib, tmp_path):
    """A CUDA session sizes the IP-Basic buffers for ARGOVERSE / VKITTI2 / DIMLi instead of refusing
    them; without a GPU build of ONNX Runtime (the emulator) create stops at the encoder's CUDA
    provider, after the preset was accepted. A non-pinhole camera is still refused."""
    pytest.importorskip("onnx")
    from _tiny_artifacts import make_artifacts

    d = make_artifacts(tmp_path / "tiny", size=(28, 42), fm_lower=28)
    for preset, want in (("ARGOVERSE", (0, 11)), ("VKITTI2", (0, 11)), ("DIMLi", (0, 11)), ("Stanford", (9,))):
        o = S.SessionOptions()
        assert slib.psd_session_options_init(C.byref(o)) == 0
        o.device, o.preset = S.DEVICES["cuda"], preset.encode()
        h = C.c_void_p()
        st = slib.psd_session_create(str(d).encode(), C.byref(o), C.byref(h))
        msg = last_error(slib)
        assert st in want, (preset, st, msg)
        if st == 11:
            assert "CUDA execution provider" in msg, msg
        if st == 9:
            assert "non-pinhole camera" in msg, msg
        slib.psd_session_destroy(h if st == 0 else None)


# ------------------------------------------------------------------------------ ordering
def test_two_enqueues_on_two_streams_run_one_after_the_other(slib, rt, order, cpu_session):
    """The session's buffers are shared by its calls: the second call's stream must wait for the
    first call's work. Deterministic under the emulator: the first stream is held back by a
    long-running operation, so without the ordering the second call would finish first."""
    if not rt.emulated:
        pytest.skip("needs the emulator's stream sleep to hold a stream back")
    h = create(slib)
    s1, s2 = rt.stream(), rt.stream()
    try:
        (ra, sa), (rb, sb) = frame(7), frame(8)
        fa, fb = DeviceFrame(rt, ra, sa), DeviceFrame(rt, rb, sb)
        rt.sleep(s1, 200)
        assert fa.enqueue(slib, h, s1) == 0, last_error(slib)
        assert fb.enqueue(slib, h, s2) == 0, last_error(slib)
        rt.sync(s2)
        assert rt.c.cudaStreamQuery(s1) == 0  # the second call waited for the first one's work
        rt.sync()
        assert_cuda_matches(fa.result(), cpu_session(ra, sa), rt.emulated, 1e-4, 1e-4, "first frame")
        assert_cuda_matches(fb.result(), cpu_session(rb, sb), rt.emulated, 1e-4, 1e-4, "second frame")
    finally:
        slib.psd_session_destroy(h)
        for s in (s1, s2):
            rt.check(rt.c.cudaStreamDestroy(s))


def test_many_enqueues_alternating_streams_are_all_right(slib, rt, order, cpu_session):
    """The race as a user meets it: frames enqueued on two streams without host synchronisation
    (before the fix about one in seven came out wrong)."""
    h = create(slib)
    streams = [rt.stream(), rt.stream()]
    try:
        inputs = [frame(20 + i) for i in range(12)]
        frames = [DeviceFrame(rt, r, s) for r, s in inputs]
        for i, f in enumerate(frames):
            assert f.enqueue(slib, h, streams[i % 2]) == 0, last_error(slib)
        rt.sync()
        wrong = [i for i, (f, (r, s)) in enumerate(zip(frames, inputs))
                 if not np.array_equal(f.result(), cpu_session(r, s)) and rt.emulated]
        assert wrong == [], f"frames {wrong} are wrong"
        if not rt.emulated:
            for f, (r, s) in zip(frames, inputs):
                assert_cuda_matches(f.result(), cpu_session(r, s), False, 1e-4, 1e-4, "alternating")
    finally:
        slib.psd_session_destroy(h)
        for s in streams:
            rt.check(rt.c.cudaStreamDestroy(s))


def test_run_after_enqueue_waits_for_the_enqueued_work(slib, rt, order, cpu_session):
    if not rt.emulated:
        pytest.skip("needs the emulator's stream sleep to hold a stream back")
    h = create(slib)
    s1 = rt.stream()
    try:
        (ra, sa), (rb, sb) = frame(9), frame(10)
        fa = DeviceFrame(rt, ra, sa)
        rt.sleep(s1, 200)
        assert fa.enqueue(slib, h, s1) == 0, last_error(slib)
        depth, _ = run_host(slib, h, rb, sb)
        assert rt.c.cudaStreamQuery(s1) == 0  # run started after the enqueued frame had finished
        assert_cuda_matches(depth, cpu_session(rb, sb), rt.emulated, 1e-4, 1e-4, "run")
        assert_cuda_matches(fa.result(), cpu_session(ra, sa), rt.emulated, 1e-4, 1e-4, "enqueued")
    finally:
        slib.psd_session_destroy(h)
        rt.check(rt.c.cudaStreamDestroy(s1))


def test_two_sessions_on_two_streams_run_concurrently_and_correctly(slib, rt, order, cpu_session):
    """Distinct sessions share nothing: their frames overlap on the device and stay right."""
    hs = [create(slib), create(slib)]
    streams = [rt.stream(), rt.stream()]
    try:
        inputs = [frame(40 + i) for i in range(8)]
        frames = [DeviceFrame(rt, r, s) for r, s in inputs]
        if rt.emulated:
            rt.sleep(streams[0], 1000)  # both sessions' work is pending at the same time
        for i, f in enumerate(frames):
            assert f.enqueue(slib, hs[i % 2], streams[i % 2]) == 0, last_error(slib)
        if rt.emulated:  # the second session did not wait for the first one's (held back) stream
            rt.sync(streams[1])
            assert rt.c.cudaStreamQuery(streams[0]) == 600
        rt.sync()
        for f, (r, s) in zip(frames, inputs):
            assert_cuda_matches(f.result(), cpu_session(r, s), rt.emulated, 1e-4, 1e-4, "two sessions")
    finally:
        for h in hs:
            slib.psd_session_destroy(h)
        for s in streams:
            rt.check(rt.c.cudaStreamDestroy(s))


def test_calls_from_several_threads_are_serialised(slib, rt, order, cpu_session):
    h = create(slib)
    inputs = [frame(60 + i) for i in range(8)]
    results, errors = {}, []

    def worker(k):
        try:
            for i in range(k, len(inputs), 4):
                results[i] = run_host(slib, h, *inputs[i])[0]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slib.psd_session_destroy(h)
    assert not errors, errors
    for i, (r, s) in enumerate(inputs):
        assert_cuda_matches(results[i], cpu_session(r, s), rt.emulated, 1e-4, 1e-4, f"thread frame {i}")


# ------------------------------------------------------------------------------ devices
def test_session_on_device_1_works_from_a_thread_on_device_0(slib, rt, order, cpu_session):
    n = C.c_int()
    rt.c.cudaGetDeviceCount.argtypes = [C.POINTER(C.c_int)]
    rt.c.cudaGetDeviceCount(C.byref(n))
    if n.value < 2:
        pytest.skip("needs two CUDA devices")
    h = create(slib, device_id=1)
    out, errors = {}, []
    rgb, sparse = frame(11)

    def worker():  # a new host thread starts on device 0
        try:
            out["depth"] = run_host(slib, h, rgb, sparse)[0]
            dev = C.c_int(-1)
            rt.check(rt.c.cudaGetDevice(C.byref(dev)))
            out["device_after"] = dev.value
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    try:
        assert not errors, errors
        assert out["device_after"] == 0  # the caller's device is restored
        assert_cuda_matches(out["depth"], cpu_session(rgb, sparse), rt.emulated, 1e-4, 1e-4, "device 1")
        rt.check(rt.c.cudaSetDevice(1))
        f = DeviceFrame(rt, rgb, sparse)  # device-1 memory
        rt.check(rt.c.cudaSetDevice(0))
        assert f.enqueue(slib, h, None) == 0, last_error(slib)  # NULL: device 1's per-thread stream
        rt.check(rt.c.cudaSetDevice(1))
        rt.sync()
        rt.check(rt.c.cudaSetDevice(0))
        assert_cuda_matches(f.result(), cpu_session(rgb, sparse), rt.emulated, 1e-4, 1e-4, "device 1 enqueue")
    finally:
        rt.check(rt.c.cudaSetDevice(0))
        slib.psd_session_destroy(h)


# ------------------------------------------------------------------------------ timings and errors
def test_timings_are_device_times_from_cuda_events(slib, rt, order):
    h = create(slib)
    s1 = rt.stream()
    try:
        rgb, sparse = frame(12, 96, 128)
        depth, fout = run_host(slib, h, rgb, sparse)
        t = list(fout.timings_ms)
        guided, total = t[S.STAGES.index("guided")], t[S.STAGES.index("total")]
        assert 0 < guided <= total
        assert all(t[S.STAGES.index(k)] == 0 for k in ("preprocess", "encoder", "head"))
        f = DeviceFrame(rt, rgb, sparse)
        if rt.emulated:
            rt.sleep(s1, 300)  # the device is busy long before the frame's own work starts
        t0 = time.perf_counter()
        assert f.enqueue(slib, h, s1) == 0, last_error(slib)
        enqueue_ms = (time.perf_counter() - t0) * 1e3
        times = (C.c_double * S.STAGES.__len__())()
        assert slib.psd_session_timings(h, times, len(S.STAGES)) == 0, last_error(slib)
        assert rt.c.cudaStreamQuery(s1) == 0  # psd_session_timings waited for the frame's work
        g = times[S.STAGES.index("guided")]
        assert 0 < g <= times[S.STAGES.index("total")]
        if rt.emulated:  # the stage ran after the 300 ms hold-back: its time is the kernels', not the wait's
            assert g < 300 and g > enqueue_ms, (g, enqueue_ms)
    finally:
        slib.psd_session_destroy(h)
        rt.check(rt.c.cudaStreamDestroy(s1))


def test_launch_error_names_the_kernel(slib, emulated):
    h = create(slib)
    try:
        emulated.c.psd_emu_inject_launch_error(1, 701)
        rgb, sparse = frame(13)
        depth = np.zeros(sparse.shape, np.float32)
        fin, _keep = host_in(rgb, sparse)
        fout = S.FrameOut()
        fout.struct_size, fout.depth = C.sizeof(S.FrameOut), depth.ctypes.data
        assert slib.psd_session_run(h, C.byref(fin), C.byref(fout)) == 7
        msg = last_error(slib)
        assert msg.startswith("guided mode: ") and "CUDA kernel launch in Guided" in msg, msg
        assert "dt_impl.h:" in msg and "cudaErrorLaunchOutOfResources" in msg, msg
        assert slib.psd_session_run(h, C.byref(fin), C.byref(fout)) == 0, last_error(slib)  # not sticky
    finally:
        slib.psd_session_destroy(h)


def test_an_asynchronous_fault_is_reported_as_earlier_work(slib, emulated):
    rt = emulated
    h = create(slib)
    try:
        rgb, sparse = frame(14)
        f = DeviceFrame(rt, rgb, sparse)
        s1 = rt.stream()
        rt.sleep(s1, 100)  # nothing of the frame runs before enqueue has returned
        rt.c.psd_emu_inject_fault(1, 700)
        assert f.enqueue(slib, h, s1) == 0, last_error(slib)  # the fault happens later, on the device
        assert rt.c.cudaStreamSynchronize(s1) == 700
        assert f.enqueue(slib, h, s1) == 7
        msg = last_error(slib)
        assert "before this call started" in msg and "cudaErrorIllegalAddress" in msg, msg
        assert "not from this call" in msg, msg
    finally:
        rt.c.psd_emu_clear_sticky_error()
        slib.psd_session_destroy(h)
        rt.check(rt.c.cudaStreamDestroy(s1))


def test_sessions_free_every_device_resource(slib, emulated):
    rt = emulated
    rt.sync()
    before = rt.live()
    for _ in range(5):
        h = create(slib)
        run_host(slib, h, *frame(15))
        f = DeviceFrame(rt, *frame(15))
        assert f.enqueue(slib, h, None) == 0
        slib.psd_session_destroy(h)
        del f
    assert rt.live() == before
