"""The CUDA emulator catches the bugs it exists for, and behaves as the CUDA runtime does.

The planted bugs (``planted_bugs.cu``) are compiled exactly as the library's .cu sources are in
the emulated build and run as separate processes (some must crash). Emulator-only: on a real GPU
these tests skip (``emulated`` fixture)."""

from __future__ import annotations

import ctypes as C
import re
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from psdrt import build
from psdrt.runtime.errors import BackendUnavailable

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def planted(emulated, cuda_lib, tmp_path_factory) -> Path:
    """The planted-bug program, linked with the emulated library under test."""
    _host, device = build.emulation_flags()
    exe = tmp_path_factory.mktemp("planted") / "planted_bugs"
    cmd = device + [f"-I{build.KERNELS / 'common'}", str(HERE / "planted_bugs.cu"),
                    str(build.KERNELS / "common" / "launch_cuda.cu"), "-x", "none", str(cuda_lib.path),
                    f"-Wl,-rpath,{cuda_lib.path.parent}", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def run(exe: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


def values(proc: subprocess.CompletedProcess) -> dict:
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


# ------------------------------------------------------------------------------ planted bugs
def test_host_access_to_device_memory_faults_at_once(planted):
    proc = run(planted, "host-access")
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
    assert "before 1.0" in proc.stdout and "survived" not in proc.stdout  # the copy worked, the access did not
    assert "host code touched device memory" in proc.stderr and "device allocation of 64 bytes" in proc.stderr


def test_kernel_writing_past_its_allocation_faults(planted):
    proc = run(planted, "overrun")
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
    assert "out-of-bounds access" in proc.stderr and "allocation of 256 bytes" in proc.stderr


def test_missing_synchronisation_between_streams_gives_a_wrong_result(planted):
    v = values(run(planted, "streams"))
    assert int(v["wrong_unsynced"]) == 4096  # the consumer ran before the (slow) producer: all wrong
    assert int(v["wrong_synced"]) == 0  # an event orders them: all right
    # the legacy default stream waits for blocking streams, not for non-blocking ones
    assert float(v["legacy_after_blocking"]) == 3.0
    assert float(v["legacy_after_nonblocking"]) == 3.0  # read before the non-blocking stream wrote 4


def test_in_place_stencil_gives_an_order_dependent_result(planted):
    runs = [values(run(planted, "stencil", str(order))) for order in (0, 1, 2)]
    assert len({r["out_of_place"] for r in runs}) == 1  # correct code: one answer under every order
    assert len({r["in_place"] for r in runs}) == 3  # the race: a different answer under each order


def test_launches_the_hardware_rejects_are_rejected(planted):
    v = values(run(planted, "launch-limits"))
    assert v["block_1024"] == "cudaSuccess"
    for case in ("block_2048", "block_32x64", "block_z128", "grid_y65536", "grid_0"):
        assert v[case] == "cudaErrorInvalidConfiguration", case
    assert v["shared_64k"] == "cudaErrorInvalidValue"
    assert "CUDA kernel launch in LaunchLimits (planted_bugs.cu:" in v["message"]
    assert "cudaErrorLaunchOutOfResources" in v["message"]
    assert float(v["value"]) == 4095.0  # the valid 1024-thread launch ran


def test_never_written_device_memory_reads_as_nan(planted):
    assert values(run(planted, "uninitialised"))["nan"] == "1"


# ------------------------------------------------------------------------------ runtime semantics
def test_device_count_properties_and_devices(emulated):
    rt = emulated
    n = C.c_int()
    assert rt.c.cudaGetDeviceCount(C.byref(n)) == 0 and n.value == 2
    major, minor = C.c_int(), C.c_int()
    rt.c.cudaDeviceGetAttribute.argtypes = [C.POINTER(C.c_int), C.c_int, C.c_int]
    assert rt.c.cudaDeviceGetAttribute(C.byref(major), 75, 1) == 0
    assert rt.c.cudaDeviceGetAttribute(C.byref(minor), 76, 1) == 0
    assert (major.value, minor.value) == (8, 7)
    assert rt.c.cudaSetDevice(2) == 101  # cudaErrorInvalidDevice
    assert rt.c.cudaGetLastError() == 101 and rt.c.cudaGetLastError() == 0  # reset by reading
    from psdrt.runtime import _cuda

    old = _cuda._LIB
    try:
        _cuda.use_runtime(rt.c._name)
        assert _cuda.device_count() == 2
        assert _cuda.device_name(1) == "psdrt CUDA emulator (device 1)"
        assert _cuda.compute_capability(0) == "8.7"
    finally:
        _cuda._LIB = old


def test_copies_must_name_the_right_kind_and_stay_inside_one_allocation(emulated):
    rt = emulated
    d = rt.upload(np.arange(16, dtype=np.float32))
    h = np.zeros(16, np.float32)
    assert rt.c.cudaMemcpy(d.ptr, h.ctypes.data, 64, 2) == 1  # device-to-host with the pointers swapped
    assert rt.c.cudaMemcpy(h.ctypes.data, d.ptr, 68, 2) == 1  # 4 bytes past the allocation
    assert rt.c.cudaMemcpy(h.ctypes.data, d.ptr + 4, 60, 2) == 0
    np.testing.assert_array_equal(h[:15], np.arange(1, 16))
    assert rt.c.cudaMemcpy(h.ctypes.data, d.ptr, 64, 4) == 0  # cudaMemcpyDefault infers the kind
    rt.c.cudaGetLastError()


def test_async_copies_read_the_host_buffer_when_they_run(emulated):
    """As with pinned memory: a host buffer changed before the stream ran is what gets copied."""
    rt = emulated
    s = rt.stream()
    d = rt.empty(4)
    h = np.ones(4, np.float32)
    rt.sleep(s, 100)
    rt.check(rt.c.cudaMemcpyAsync(d.ptr, h.ctypes.data, 16, 1, s))
    h[:] = 7.0  # the bug a real pinned-memory pipeline has: reusing the buffer before the copy ran
    rt.sync(s)
    np.testing.assert_array_equal(d.get(), 7.0)
    rt.check(rt.c.cudaStreamDestroy(s))


def test_events_time_the_work_between_them(emulated):
    rt = emulated
    s = rt.stream()
    a, b = C.c_void_p(), C.c_void_p()
    rt.check(rt.c.cudaEventCreateWithFlags(C.byref(a), 0))
    rt.check(rt.c.cudaEventCreateWithFlags(C.byref(b), 0))
    rt.check(rt.c.cudaEventRecord(a, s))
    rt.sleep(s, 60)
    rt.check(rt.c.cudaEventRecord(b, s))
    ms = C.c_float()
    rt.c.cudaEventElapsedTime.argtypes = [C.POINTER(C.c_float), C.c_void_p, C.c_void_p]
    assert rt.c.cudaEventElapsedTime(C.byref(ms), a, b) == 600  # cudaErrorNotReady
    rt.c.cudaGetLastError()
    rt.sync(s)
    assert rt.c.cudaEventElapsedTime(C.byref(ms), a, b) == 0 and 55 <= ms.value < 1000
    nt = C.c_void_p()
    rt.check(rt.c.cudaEventCreateWithFlags(C.byref(nt), 2))  # cudaEventDisableTiming
    rt.check(rt.c.cudaEventRecord(nt, s))
    rt.sync(s)
    assert rt.c.cudaEventElapsedTime(C.byref(ms), a, nt) == 400
    rt.c.cudaGetLastError()
    for e in (a, b, nt):
        rt.check(rt.c.cudaEventDestroy(e))
    rt.check(rt.c.cudaStreamDestroy(s))
    assert rt.c.cudaStreamDestroy(s) == 400  # destroyed already
    assert rt.c.cudaStreamSynchronize(s) == 400
    rt.c.cudaGetLastError()


def test_a_kernel_on_another_devices_stream_is_rejected(emulated, cuda_lib):
    rt = emulated
    rt.check(rt.c.cudaSetDevice(1))
    s1 = rt.stream()
    rt.check(rt.c.cudaSetDevice(0))
    x = rt.upload(np.ones((8, 8), np.float32))
    out = rt.empty((2, 2))
    with pytest.raises(BackendUnavailable, match=r"cudaErrorInvalidResourceHandle.*another device"):
        cuda_lib.sparse_pool(x, out=out, stream=s1)
    rt.check(rt.c.cudaStreamDestroy(s1))


def test_launch_errors_name_the_kernel_and_faults_are_not_blamed_on_later_calls(emulated, cuda_lib, cpu_lib):
    rt = emulated
    x, out = rt.upload(np.ones((8, 8), np.float32)), rt.empty((2, 2))
    rt.c.psd_emu_inject_launch_error(1, 701)
    with pytest.raises(BackendUnavailable, match=r"kernel launch in SparsePool<psd::Device::kCuda> \(resample_impl\.h:\d+\) failed: cudaErrorLaunchOutOfResources"):
        cuda_lib.sparse_pool(x, out=out)
    cuda_lib.sparse_pool(x, out=out)  # the next call is fine
    rt.sync()
    rt.c.psd_emu_inject_fault(1, 700)  # the next kernel faults on the device, asynchronously
    fault = "sticky device fault of asynchronous work.*this kernel or from work enqueued before it"
    try:
        # the fault comes when the kernel runs: a tiny grid may already have run (and faulted) by
        # the post-launch check, as on a GPU, so this call either returns or reports the fault
        # as one of asynchronous work, never as a launch error
        try:
            cuda_lib.sparse_pool(x, out=out)
        except BackendUnavailable as exc:
            assert re.search(fault, str(exc)) and "launch in" not in str(exc), exc
        assert rt.c.cudaDeviceSynchronize() == 700
        with pytest.raises(BackendUnavailable, match=fault):
            cuda_lib.sparse_pool(x, out=out)
    finally:
        rt.c.psd_emu_clear_sticky_error()
    cuda_lib.sparse_pool(x, out=out)  # after the (test-only) reset, the device works again
    np.testing.assert_array_equal(out.get(), cpu_lib.sparse_pool(np.ones((8, 8), np.float32)))


# ------------------------------------------------------------------------------ stream capture and graphs
CAPTURE_GLOBAL, CAPTURE_THREAD_LOCAL, CAPTURE_RELAXED = 0, 1, 2
STATUS_NONE, STATUS_ACTIVE, STATUS_INVALIDATED = 0, 1, 2
E_ILLEGAL_STATE, E_CAPTURE_UNSUPPORTED, E_CAPTURE_INVALIDATED = 401, 900, 901
E_CAPTURE_ISOLATION, E_CAPTURE_IMPLICIT, E_CAPTURED_EVENT, E_CAPTURE_WRONG_THREAD = 905, 906, 907, 908


def capture_status(rt, stream) -> int:
    st = C.c_int(-1)
    rt.check(rt.c.cudaStreamIsCapturing(stream, C.byref(st)), "cudaStreamIsCapturing")
    return st.value


def end_capture(rt, stream):
    g = C.c_void_p()
    return rt.c.cudaStreamEndCapture(stream, C.byref(g)), g


def test_captured_work_is_recorded_then_replayed_in_order_with_current_contents(emulated, cuda_lib, cpu_lib):
    rt = emulated
    s = rt.stream()
    src = rt.upload(np.full((8, 8), 2.0, np.float32))
    mid, out = rt.empty((8, 8)).fill(0), rt.empty((2, 2)).fill(0)
    before = rt.live()
    kernels0 = rt.c.psd_emu_kernels_executed()
    assert capture_status(rt, s) == STATUS_NONE
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_THREAD_LOCAL))
    assert capture_status(rt, s) == STATUS_ACTIVE
    rt.check(rt.c.cudaMemcpyAsync(mid.ptr, src.ptr, src.nbytes, 3, s))  # 1: copy
    cuda_lib.sparse_pool(mid.view((8, 8)), out=out, stream=s)  # 2: a kernel reading the copy
    rt.check(rt.c.cudaMemsetAsync(src.ptr, 0, 4, s))  # 3: a memset after both
    rt.sleep(s, 1)  # 4: the emulator's stand-in for a long kernel
    err, graph = end_capture(rt, s)
    rt.check(err, "cudaStreamEndCapture")
    assert capture_status(rt, s) == STATUS_NONE
    rt.sync()
    # recorded, not executed
    assert rt.c.psd_emu_kernels_executed() == kernels0
    assert (out.get() == 0).all() and (mid.get() == 0).all() and src.get()[0, 0] == 2.0
    n = C.c_size_t()
    rt.check(rt.c.cudaGraphGetNodes(graph, None, C.byref(n)))
    assert n.value == 4
    nodes = (C.c_void_p * 2)()
    n2 = C.c_size_t(2)
    rt.check(rt.c.cudaGraphGetNodes(graph, nodes, C.byref(n2)))
    assert n2.value == 2 and nodes[0] and nodes[1] and nodes[0] != nodes[1]
    exe = C.c_void_p()
    rt.check(rt.c.cudaGraphInstantiateWithFlags(C.byref(exe), graph, 0))
    rt.check(rt.c.cudaGraphDestroy(graph))  # the executable graph keeps its own copy
    assert rt.live()[3:] == (before[3], before[4] + 1)
    for value in (2.0, 5.0):
        host = np.full((8, 8), value, np.float32)
        rt.check(rt.c.cudaMemcpy(src.ptr, host.ctypes.data, src.nbytes, 1))  # new contents, same address
        rt.sync()
        rt.check(rt.c.cudaGraphLaunch(exe, s))
        rt.sync(s)
        np.testing.assert_array_equal(out.get(), cpu_lib.sparse_pool(host))  # the copy ran before the kernel
        assert src.get()[0, 0] == 0.0  # and the memset after the copy
    assert rt.c.psd_emu_kernels_executed() == kernels0 + 2  # one kernel per launch
    rt.check(rt.c.cudaGraphExecDestroy(exe))
    assert rt.c.cudaGraphLaunch(exe, s) == 1  # a destroyed executable graph: cudaErrorInvalidValue
    rt.c.cudaGetLastError()
    assert rt.live()[3:] == before[3:]
    rt.check(rt.c.cudaStreamDestroy(s))


def test_synchronising_or_querying_a_capturing_stream_invalidates_the_capture(emulated):
    rt = emulated
    s = rt.stream()
    buf = rt.empty(16).fill(0)
    for call in (lambda: rt.c.cudaStreamSynchronize(s), lambda: rt.c.cudaStreamQuery(s)):
        rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_GLOBAL))
        assert call() == E_CAPTURE_UNSUPPORTED
        assert capture_status(rt, s) == STATUS_INVALIDATED
        assert rt.c.cudaMemsetAsync(buf.ptr, 0, 4, s) == E_CAPTURE_INVALIDATED  # later work is refused
        err, graph = end_capture(rt, s)
        assert err == E_CAPTURE_INVALIDATED and not graph.value
        assert capture_status(rt, s) == STATUS_NONE
    rt.c.cudaGetLastError()
    assert rt.c.cudaStreamSynchronize(s) == 0  # after the capture, an ordinary stream again
    # the legacy stream cannot capture; ending a capture that was never begun is an illegal state
    assert rt.c.cudaStreamBeginCapture(None, CAPTURE_GLOBAL) == E_CAPTURE_UNSUPPORTED
    assert end_capture(rt, s)[0] == E_ILLEGAL_STATE
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_GLOBAL))
    assert rt.c.cudaStreamBeginCapture(s, CAPTURE_GLOBAL) == E_ILLEGAL_STATE  # already capturing
    # host memory is pageable here: a copy between host and device cannot be captured
    host = np.zeros(16, np.float32)
    assert rt.c.cudaMemcpyAsync(host.ctypes.data, buf.ptr, 64, 2, s) == E_CAPTURE_UNSUPPORTED
    assert end_capture(rt, s)[0] == E_CAPTURE_INVALIDATED
    rt.c.cudaGetLastError()
    rt.check(rt.c.cudaStreamDestroy(s))


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def test_unsafe_calls_follow_the_capture_interaction_modes(emulated):
    rt = emulated
    s = rt.stream()
    p = C.c_void_p()

    def malloc():
        q = C.c_void_p()
        e = rt.c.cudaMalloc(C.byref(q), 64)
        if e == 0:
            rt.c.cudaFree(q)
        rt.c.cudaGetLastError()
        return e

    # the capturing thread itself: cudaMalloc, the synchronous copies and cudaDeviceSynchronize
    buf = rt.empty(16).fill(0)
    host = np.zeros(16, np.float32)
    for call in (lambda: rt.c.cudaMalloc(C.byref(p), 64), lambda: rt.c.cudaMemcpy(host.ctypes.data, buf.ptr, 64, 2),
                 lambda: rt.c.cudaMemset(buf.ptr, 0, 64), lambda: rt.c.cudaDeviceSynchronize(),
                 lambda: rt.c.cudaFree(buf.ptr)):
        for mode in (CAPTURE_GLOBAL, CAPTURE_THREAD_LOCAL):
            rt.check(rt.c.cudaStreamBeginCapture(s, mode))
            assert call() == E_CAPTURE_UNSUPPORTED
            assert end_capture(rt, s)[0] == E_CAPTURE_INVALIDATED
    rt.c.cudaGetLastError()
    # another thread: prohibited by a global-mode capture only, and never in its relaxed mode
    expected = {CAPTURE_GLOBAL: E_CAPTURE_UNSUPPORTED, CAPTURE_THREAD_LOCAL: 0, CAPTURE_RELAXED: 0}
    for mode, want in expected.items():
        rt.check(rt.c.cudaStreamBeginCapture(s, mode))
        assert _in_thread(malloc) == want, mode
        assert end_capture(rt, s)[0] == (E_CAPTURE_INVALIDATED if want else 0), mode
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_GLOBAL))

    def relaxed_malloc():
        m = C.c_int(CAPTURE_RELAXED)
        rt.check(rt.c.cudaThreadExchangeStreamCaptureMode(C.byref(m)))
        assert m.value == CAPTURE_GLOBAL  # the previous mode comes back
        e = malloc()
        rt.check(rt.c.cudaThreadExchangeStreamCaptureMode(C.byref(m)))
        return e

    assert _in_thread(relaxed_malloc) == 0
    err, graph = end_capture(rt, s)
    assert err == 0 and graph.value
    rt.check(rt.c.cudaGraphDestroy(graph))
    # a relaxed capture does not prohibit its own thread either
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_RELAXED))
    assert malloc() == 0
    err, graph = end_capture(rt, s)
    assert err == 0
    rt.check(rt.c.cudaGraphDestroy(graph))
    # only the capturing thread ends a global or thread-local capture
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_THREAD_LOCAL))
    assert _in_thread(lambda: end_capture(rt, s)[0]) == E_CAPTURE_WRONG_THREAD
    assert capture_status(rt, s) == STATUS_ACTIVE
    err, graph = end_capture(rt, s)
    assert err == 0
    rt.check(rt.c.cudaGraphDestroy(graph))
    rt.c.cudaGetLastError()
    rt.check(rt.c.cudaStreamDestroy(s))


def test_events_and_the_legacy_stream_cannot_cross_the_capture_boundary(emulated):
    rt = emulated
    s, other = rt.stream(), rt.stream()
    blocking = rt.stream(non_blocking=False)
    buf = rt.empty(16).fill(0)
    ev_out, ev_in = C.c_void_p(), C.c_void_p()
    rt.check(rt.c.cudaEventCreateWithFlags(C.byref(ev_out), 2))
    rt.check(rt.c.cudaEventCreateWithFlags(C.byref(ev_in), 2))
    rt.check(rt.c.cudaEventRecord(ev_out, other))
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_THREAD_LOCAL))
    assert rt.c.cudaStreamWaitEvent(s, ev_out, 0) == E_CAPTURE_ISOLATION  # work outside the capture
    assert end_capture(rt, s)[0] == E_CAPTURE_INVALIDATED
    rt.check(rt.c.cudaStreamBeginCapture(s, CAPTURE_THREAD_LOCAL))
    rt.check(rt.c.cudaEventRecord(ev_in, s))  # recorded inside: orders the capture's own work
    rt.check(rt.c.cudaStreamWaitEvent(s, ev_in, 0))
    assert rt.c.cudaEventQuery(ev_in) == E_CAPTURED_EVENT
    assert rt.c.cudaEventSynchronize(ev_in) == E_CAPTURED_EVENT
    err, graph = end_capture(rt, s)
    assert err == 0
    rt.check(rt.c.cudaGraphDestroy(graph))
    # legacy-stream work while a blocking stream captures would depend on the capture
    rt.check(rt.c.cudaStreamBeginCapture(blocking, CAPTURE_THREAD_LOCAL))
    assert rt.c.cudaMemsetAsync(buf.ptr, 0, 4, None) == E_CAPTURE_IMPLICIT
    assert end_capture(rt, blocking)[0] == E_CAPTURE_INVALIDATED
    rt.c.cudaGetLastError()
    for e in (ev_out, ev_in):
        rt.check(rt.c.cudaEventDestroy(e))
    for st in (s, other, blocking):
        rt.check(rt.c.cudaStreamDestroy(st))
