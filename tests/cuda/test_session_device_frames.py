"""Device frames from Python: ``CSession.enqueue`` over CUDA arrays (the CUDA array interface v3
and DLPack, with their stream rules and row pitches), its ``DeviceArray`` output (consumed
through DLPack and the CUDA array interface), the typed errors, the absence of host copies, and
the host path's CPU DLPack inputs (PyTorch CPU tensors).

The producers are small fakes over the library's own device memory (``_device``), so the same
tests run on the emulated CUDA library here and on a GPU. Guided mode end to end: the networks of
psd/propagate need ONNX Runtime's CUDA provider, absent without a GPU; nothing in ``enqueue`` is
mode-specific (the C session runs the mode). Results are compared bit for bit with the CPU
session under the emulator (``assert_cuda_matches``)."""

from __future__ import annotations

import ctypes as C
import gc

import numpy as np
import pytest

from _device import D2D, H2D, FakeDLPack, assert_cuda_matches
from psdrt.runtime import _capi
from psdrt.runtime.errors import BackendUnavailable, InputError, PsdError, ShapeError
from psdrt.runtime.session import CSession, DeviceArray
from test_session_cuda import H, W, K, frame

_USED = C.create_string_buffer(b"used_dltensor")  # a capsule keeps its name's pointer


class _DLManaged(C.Structure):
    _fields_ = [("dl_tensor", _capi._DLTensor), ("manager_ctx", C.c_void_p), ("deleter", C.c_void_p)]


class FakeCAI:
    """A ``__cuda_array_interface__`` v3 view of device memory owned by ``base``: any strides
    (bytes), a producer ``stream``, read-only, an offset into the allocation (a crop)."""

    def __init__(self, base, shape, dtype, strides=None, stream=None, readonly=False, offset=0):
        self.base, self.shape, self.typestr = base, tuple(shape), np.dtype(dtype).str
        self.strides, self.stream, self.readonly, self.ptr = strides, stream, readonly, base.ptr + offset

    @property
    def __cuda_array_interface__(self):
        d = {"shape": self.shape, "typestr": self.typestr, "data": (self.ptr, self.readonly), "version": 3,
             "strides": self.strides}
        if self.stream is not None:
            d["stream"] = self.stream
        return d


def pitched(rt, host: np.ndarray, pad: int):
    """``host`` (H, W) or (H, W, 3) in device rows of ``pad`` extra bytes (zeroed): (memory, pitch)."""
    host = np.ascontiguousarray(host)
    h, row = host.shape[0], host[0].nbytes
    dev = rt.empty(h * (row + pad), np.uint8).fill(0)
    rt.c.cudaMemcpy2DAsync.argtypes = [C.c_void_p, C.c_size_t, C.c_void_p, C.c_size_t, C.c_size_t, C.c_size_t,
                                       C.c_int, C.c_void_p]
    rt.sync()
    rt.check(rt.c.cudaMemcpy2DAsync(dev.ptr, row + pad, host.ctypes.data, row, row, h, H2D, None))
    rt.sync()
    return dev, row + pad


def same(got, want, rt, what=""):
    assert_cuda_matches(got, want, rt.emulated, 1e-4, 1e-4, what)


@pytest.fixture(scope="module")
def cpu():
    s = CSession.guided()
    yield s
    s.close()


@pytest.fixture(scope="module")
def gpu(cuda_lib):
    s = CSession.guided(device="cuda", library=cuda_lib.path)
    yield s
    s.close()


def _destroy(rt, *streams):
    rt.sync()
    for s in streams:
        rt.check(rt.c.cudaStreamDestroy(s))


# ------------------------------------------------------------------------------ results
def test_device_frames_equal_the_cpu_session(gpu, cpu, rt, order):
    stream = rt.stream()
    try:
        for seed in (1, 2):
            rgb, sparse = frame(seed)
            res = gpu.enqueue(rt.upload(rgb), rt.upload(sparse), K)
            assert isinstance(res, DeviceArray) and res.shape == (H, W) and res.stream == _capi.STREAM_PER_THREAD
            same(res.copy_to_host(), cpu(rgb, sparse, K).depth, rt, f"frame {seed}")
        rgb, sparse = frame(3)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        res = gpu.enqueue(rt.upload(bgr), rt.upload(sparse), K, stream=stream, bgr=True)
        assert res.stream == stream
        same(res.copy_to_host(), cpu(bgr, sparse, K, bgr=True).depth, rt, "BGR on a user stream")
        same(res.copy_to_host(), cpu(rgb, sparse, K).depth, rt, "BGR = RGB")
    finally:
        _destroy(rt, stream)


def test_row_padded_and_cropped_device_frames(gpu, cpu, rt, order):
    rgb, sparse = frame(4)
    want = cpu(rgb, sparse, K).depth
    (m_rgb, p_rgb), (m_sp, p_sp) = pitched(rt, rgb, 16), pitched(rt, sparse, 12)
    m_out, p_out = pitched(rt, np.zeros((H, W), np.float32), 8)
    out = FakeCAI(m_out, (H, W), np.float32, (p_out, 4))
    res = gpu.enqueue(FakeCAI(m_rgb, (H, W, 3), np.uint8, (p_rgb, 3, 1)),
                      FakeCAI(m_sp, (H, W), np.float32, (p_sp, 4)), K, out=out)
    assert res is out
    raw = m_out.get().reshape(H, p_out)
    same(np.ascontiguousarray(raw[:, :4 * W]).view(np.float32), want, rt, "pitched CAI")
    assert (raw[:, 4 * W:] == 0).all()  # nothing written between the rows
    # the same through DLPack (strides in elements)
    res = gpu.enqueue(FakeDLPack(m_rgb, shape=(H, W, 3), strides=(p_rgb, 3, 1), dtype=np.uint8),
                      FakeDLPack(m_sp, shape=(H, W), strides=(p_sp // 4, 1)), K)
    same(res.copy_to_host(), want, rt, "pitched DLPack")
    # a crop of a larger device image: an interior pointer with the big image's pitch
    big_rgb, big_sparse = frame(5, 60, 80)
    d_rgb, d_sp = rt.upload(big_rgb), rt.upload(big_sparse)
    y, x = 5, 7
    res = gpu.enqueue(FakeCAI(d_rgb, (H, W, 3), np.uint8, (80 * 3, 3, 1), offset=(y * 80 + x) * 3),
                      FakeCAI(d_sp, (H, W), np.float32, (80 * 4, 4), offset=(y * 80 + x) * 4), K)
    crop = (np.ascontiguousarray(big_rgb[y:y + H, x:x + W]), np.ascontiguousarray(big_sparse[y:y + H, x:x + W]))
    same(res.copy_to_host(), cpu(*crop, K).depth, rt, "crop")


def test_layouts_with_unpacked_rows_are_refused(gpu, rt):
    rgb, sparse = frame(6)
    d_rgb, d_sp = rt.upload(rgb), rt.upload(sparse)
    planar = FakeCAI(d_rgb, (H, W, 3), np.uint8, (W, 1, H * W))  # channels apart (a CHW buffer seen as HWC)
    with pytest.raises(ShapeError, match=r"rgb: .*each row must be packed.*\.contiguous\(\).*cupy\.ascontiguousarray"):
        gpu.enqueue(planar, d_sp, K)
    for bad in ((0, 4), (-4 * W, 4)):  # a broadcast row, flipped rows
        with pytest.raises(ShapeError, match="sparse: .*pitch positive"):
            gpu.enqueue(d_rgb, FakeCAI(d_sp, (H, W), np.float32, bad), K)
    with pytest.raises(ShapeError, match=r"rgb: DLPack tensor.*each row must be packed"):
        gpu.enqueue(FakeDLPack(d_rgb, shape=(H, W, 3), strides=(3 * W, 1, 3), dtype=np.uint8), d_sp, K)


# ------------------------------------------------------------------------------ input streams
def test_the_cuda_array_interface_producer_stream_is_waited_on(gpu, cpu, emulated):
    rt = emulated
    rgb, sparse = frame(7)
    want = cpu(rgb, sparse, K).depth
    d_rgb = rt.upload(rgb)
    for with_key in (True, False):
        producer = rt.stream()
        d_sp = rt.empty(sparse.shape).fill(0)
        rt.sync()
        rt.sleep(producer, 150)  # the producer is still busy when enqueue is called
        rt.check(rt.c.cudaMemcpyAsync(d_sp.ptr, sparse.ctypes.data, sparse.nbytes, H2D, producer))
        d_sp.stream = producer if with_key else None
        got = gpu.enqueue(d_rgb, d_sp, K).copy_to_host()  # synchronises the session's stream only
        if with_key:
            assert rt.c.cudaStreamQuery(producer) == 0  # the frame ran after the producer's copy
            same(got, want, rt, "waited on the producer")
        else:  # nothing orders them: the frame read the zeros (the control that shows the wait matters)
            assert not np.array_equal(got, want)
        _destroy(rt, producer)
        del d_sp
        gc.collect()


class TorchLike(FakeDLPack):
    """DLPack plus a CUDA array interface v2 (no stream key), as a PyTorch CUDA tensor has."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": tuple(self._shape), "typestr": "<f4", "data": (self.dev.ptr, False), "version": 2,
                "strides": None}


def _late(rt, host, producer):
    """Device memory that ``producer`` fills with ``host`` after a while (zeros until then)."""
    dev = rt.empty(host.shape).fill(0)
    rt.sync()
    if rt.emulated:
        rt.sleep(producer, 150)
    rt.check(rt.c.cudaMemcpyAsync(dev.ptr, host.ctypes.data, host.nbytes, H2D, producer))
    return dev


def test_dlpack_producers_are_asked_for_the_session_stream(gpu, cpu, rt, cuda_lib):
    rgb, sparse = frame(8)
    want = cpu(rgb, sparse, K).depth
    stream, producer = rt.stream(), rt.stream()
    try:
        d_sp = _late(rt, sparse, producer)
        p_rgb = FakeDLPack(rt.upload(rgb), dtype=np.uint8)
        p_sp = FakeDLPack(d_sp, producer=producer, lib=cuda_lib)  # orders its copy before the asked stream
        res = gpu.enqueue(p_rgb, p_sp, K, stream=stream)
        assert p_rgb.asked == [stream] and p_sp.asked == [stream]
        same(res.copy_to_host(), want, rt, "DLPack inputs")
        res = gpu.enqueue(p_rgb, p_sp, K)  # None: the per-thread default stream, DLPack's 2
        assert p_sp.asked == [stream, _capi.STREAM_PER_THREAD]
        same(res.copy_to_host(), want, rt, "DLPack inputs, default stream")
        old = FakeDLPack(rt.upload(rgb), accepts_stream=False, dtype=np.uint8)  # predates the keyword
        same(gpu.enqueue(old, p_sp, K).copy_to_host(), want, rt, "old producer")
        assert old.asked == ["no keyword"]
        # an object with both protocols goes through DLPack, whose handshake orders any producer
        both = TorchLike(_late(rt, sparse, producer), producer=producer, lib=cuda_lib)
        same(gpu.enqueue(p_rgb, both, K, stream=stream).copy_to_host(), want, rt, "DLPack before a v2 CAI")
        assert both.asked == [stream]
    finally:
        _destroy(rt, stream, producer)


# ------------------------------------------------------------------------------ the output
def _capsule_tensor(capsule):
    get = C.pythonapi["PyCapsule_GetPointer"]
    get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
    ptr = get(capsule, b"dltensor")
    return ptr, _DLManaged.from_address(ptr)


def test_the_output_cuda_array_interface(gpu, cpu, rt, cuda_lib, cpu_lib):
    rgb, sparse = frame(9)
    d_rgb, d_sp = rt.upload(rgb), rt.upload(sparse)
    stream = rt.stream()
    try:
        if rt.emulated:
            rt.sleep(stream, 150)  # the frame is still pending when its output is consumed
        res = gpu.enqueue(d_rgb, d_sp, K, stream=stream)
        assert res.__cuda_array_interface__ == {"shape": (H, W), "typestr": "<f4", "data": (res.ptr, False),
                                                "version": 3, "strides": None, "stream": stream}
        assert res.dtype == np.float32 and res.shape == (H, W) and res.__dlpack_device__() == (2, 0)
        if rt.emulated:
            assert rt.c.psd_emu_is_device_pointer(res.ptr, None) == 1
        # a CUDA-array-interface consumer (the kernel binding) waits on the v3 stream key
        pooled = rt.empty((H // 4, W // 4))
        cuda_lib.sparse_pool(res, out=pooled)
        depth = res.copy_to_host()
        same(depth, cpu(rgb, sparse, K).depth, rt, "output")
        np.testing.assert_array_equal(pooled.get(), cpu_lib.sparse_pool(depth))
        with pytest.raises(TypeError, match="copy_to_host"):
            np.asarray(res)
    finally:
        _destroy(rt, stream)


def test_a_dlpack_consumer_is_ordered_after_the_frame(gpu, cpu, emulated):
    """The consumer's stream waits for the frame's (held back) stream; with -1 (no sync asked)
    the consumer reads the fresh allocation before the frame wrote it (the control)."""
    rt = emulated
    rgb, sparse = frame(10)
    want = cpu(rgb, sparse, K).depth
    d_rgb, d_sp = rt.upload(rgb), rt.upload(sparse)
    s1, s2 = rt.stream(), rt.stream()
    try:
        for asked, copy_on, ordered in ((s2, s2, True), (None, _capi.STREAM_LEGACY, True), (-1, s2, False)):
            dst = rt.empty((H, W))  # allocated (and, below, freed) outside the race: cudaFree syncs the device
            rt.sleep(s1, 150)
            res = gpu.enqueue(d_rgb, d_sp, K, stream=s1)
            capsule = res.__dlpack__(stream=asked) if asked is not None else res.__dlpack__()
            _, m = _capsule_tensor(capsule)
            t = m.dl_tensor
            assert (t.data, t.device.device_type, t.device.device_id, t.ndim, tuple(t.shape[i] for i in range(2)),
                    (t.dtype.code, t.dtype.bits, t.dtype.lanes), bool(t.strides), t.byte_offset) == \
                (res.ptr, 2, 0, 2, (H, W), (2, 32, 1), False, 0)
            rt.check(rt.c.cudaMemcpyAsync(dst.ptr, t.data, H * W * 4, D2D, copy_on))  # the consumer's work
            rt.sync(copy_on)
            got = dst.get()
            if ordered:
                assert rt.c.cudaStreamQuery(s1) == 0
                same(got, want, rt, f"consumer on {asked}")
            else:
                assert np.isnan(got).all()  # never-written memory (0xFF bytes)
            rt.sync()
            del capsule, res, dst
            gc.collect()
    finally:
        _destroy(rt, s1, s2)


def test_dlpack_export_keeps_the_memory_until_the_consumer_lets_go(gpu, emulated):
    rt = emulated
    d_rgb, d_sp = rt.upload(frame(11)[0]), rt.upload(frame(11)[1])
    gc.collect()
    rt.sync()
    before = rt.live()[0]
    res = gpu.enqueue(d_rgb, d_sp, K)
    ptr = res.ptr
    capsule = res.__dlpack__(stream=2)
    mptr, m = _capsule_tensor(capsule)
    with pytest.raises(BufferError, match="DLPack consumer"):
        res.close()
    rename = C.pythonapi["PyCapsule_SetName"]
    rename.restype, rename.argtypes = C.c_int, [C.py_object, C.c_char_p]
    assert rename(capsule, _USED) == 0  # consumed, as torch.from_dlpack does
    del res, capsule
    gc.collect()
    assert rt.c.psd_emu_is_device_pointer(ptr, None) == 1  # the consumer still holds it
    C.CFUNCTYPE(None, C.c_void_p)(m.deleter)(mptr)  # the consumer is done
    gc.collect()
    assert rt.c.psd_emu_is_device_pointer(ptr, None) == 0
    # a capsule nobody consumed releases the array when it goes
    res = gpu.enqueue(d_rgb, d_sp, K)
    capsule = res.__dlpack__(stream=-1)
    del res
    gc.collect()
    assert rt.live()[0] == before + 1
    del capsule
    gc.collect()
    assert rt.live()[0] == before
    # close(), then every use says so
    res = gpu.enqueue(d_rgb, d_sp, K)
    res.close()
    res.close()
    with pytest.raises(BufferError, match="closed"):
        res.copy_to_host()
    assert rt.live()[0] == before


def test_enqueue_makes_no_host_copy(gpu, cpu, emulated):
    """Device memory is host memory under the emulator, but guarded (a host access faults) and
    every copy is counted by direction: a device frame moves no byte between host and device."""
    rt = emulated
    rgb, sparse = frame(12)
    d_rgb, d_sp = rt.upload(rgb), rt.upload(sparse)
    out = rt.empty((H, W))
    rt.sync()
    before = rt.copies()
    res = gpu.enqueue(d_rgb, d_sp, K)
    gpu.enqueue(d_rgb, d_sp, K, out=out)
    rt.sync()
    after = rt.copies()
    assert after["H2D"] == before["H2D"] and after["D2H"] == before["D2H"], (before, after)
    assert after["D2D"][0] >= before["D2D"][0] + 4  # the session's own sparse/depth copies, counted
    depth = res.copy_to_host()  # the one copy the caller asked for
    assert rt.copies()["D2H"] == (after["D2H"][0] + 1, after["D2H"][1] + H * W * 4)
    same(depth, cpu(rgb, sparse, K).depth, rt, "no-copy frame")
    base = rt.copies()
    gpu(rgb, sparse, K)  # the control: a host frame on the same session is staged through the host
    now = rt.copies()
    assert now["H2D"][1] - base["H2D"][1] >= rgb.nbytes + sparse.nbytes
    assert now["D2H"][1] - base["D2H"][1] >= sparse.nbytes


# ------------------------------------------------------------------------------ errors
def test_bad_device_frames_get_typed_errors(gpu, cpu, rt):
    rgb, sparse = frame(13)
    d_rgb, d_sp = rt.upload(rgb), rt.upload(sparse)
    with pytest.raises(InputError, match=r"rgb is host memory.*session\(rgb, sparse, K\)"):
        gpu.enqueue(rgb, sparse, K)
    with pytest.raises(InputError, match=r"sparse is host memory.*session\(rgb, sparse, K\)"):
        gpu.enqueue(d_rgb, sparse, K)  # mixed host and device
    with pytest.raises(BackendUnavailable, match=r"device='cuda'.*session\(rgb, sparse, K\)"):
        cpu.enqueue(d_rgb, d_sp, K)
    with pytest.raises(InputError, match="rgb must be uint8"):
        gpu.enqueue(rt.upload(rgb.astype(np.float32)), d_sp, K)
    with pytest.raises(InputError, match="sparse must be float32"):
        gpu.enqueue(d_rgb, rt.upload(sparse.astype(np.float64)), K)
    with pytest.raises(ShapeError, match="alpha"):
        gpu.enqueue(rt.upload(np.zeros((H, W, 4), np.uint8)), d_sp, K)
    with pytest.raises(ShapeError, match="RGB is 64x48 but sparse depth is 60x48"):
        gpu.enqueue(d_rgb, rt.upload(sparse[:, :60].copy()), K)
    with pytest.raises(ShapeError, match=r"out must be \(48, 64\)"):
        gpu.enqueue(d_rgb, d_sp, K, out=rt.empty((H, W - 1)))
    ro = rt.empty((H, W))
    ro.readonly = True
    with pytest.raises(InputError, match="read-only"):
        gpu.enqueue(d_rgb, d_sp, K, out=ro)
    with pytest.raises(InputError, match="out is host memory"):
        gpu.enqueue(d_rgb, d_sp, K, out=np.zeros((H, W), np.float32))
    with pytest.raises(InputError, match=r"CUDA device\(s\) \[1\].*device_id=1"):
        gpu.enqueue(d_rgb, FakeDLPack(d_sp, device_id=1), K)
    d_sp.stream = 0
    with pytest.raises(InputError, match="'stream' is 0"):
        gpu.enqueue(d_rgb, d_sp, K)
    d_sp.stream = None
    with pytest.raises(InputError, match="K is host memory"):
        gpu.enqueue(d_rgb, d_sp, rt.upload(K))
    with pytest.raises(InputError, match="3x3"):
        gpu.enqueue(d_rgb, d_sp, np.eye(2))
    with pytest.raises(InputError, match="stream must be"):
        gpu.enqueue(d_rgb, d_sp, K, stream="fast")
    with pytest.raises(InputError, match=r"invalid K|intrinsics|fx"):
        gpu.enqueue(d_rgb, d_sp, np.zeros((3, 3)))  # the library's K rule (psd_check_intrinsics)
    with pytest.raises(InputError, match=r"RGB image is CUDA device memory.*enqueue"):
        gpu(d_rgb, sparse, K)  # device arrays on the host path
    closed = CSession.guided(device="cuda", library=gpu._path)
    closed.close()
    with pytest.raises(PsdError, match="closed"):
        closed.enqueue(d_rgb, d_sp, K)


# ------------------------------------------------------------------------------ host path, from_artifacts
def test_the_host_path_takes_torch_cpu_tensors_in_place(cpu, gpu, rt):
    torch = pytest.importorskip("torch")
    rgb, sparse = frame(14)
    want = cpu(rgb, sparse, K).depth
    t_rgb, t_sp, t_K = torch.from_numpy(rgb), torch.from_numpy(sparse), torch.from_numpy(K)
    got = cpu(t_rgb, t_sp, t_K).depth
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.shares_memory(_capi.host_array(t_rgb, "rgb"), rgb)  # np.from_dlpack: read in place
    same(gpu(t_rgb, t_sp, t_K).depth, want, rt, "torch tensors on a CUDA session's host path")
    big_rgb, big_sparse = frame(15, 60, 80)
    crop = torch.from_numpy(big_rgb)[5:5 + H, 7:7 + W], torch.from_numpy(big_sparse)[5:5 + H, 7:7 + W]
    assert np.shares_memory(_capi.host_array(crop[0], "rgb"), big_rgb)  # strided rows, still no copy
    ref = cpu(np.ascontiguousarray(big_rgb[5:5 + H, 7:7 + W]), np.ascontiguousarray(big_sparse[5:5 + H, 7:7 + W]),
              K).depth
    assert np.array_equal(cpu(*crop, K).depth.view(np.uint32), ref.view(np.uint32))
    with pytest.raises(InputError, match="detach"):
        cpu(t_rgb, torch.from_numpy(sparse.copy()).requires_grad_(True), K)


def test_from_artifacts_device_cuda_is_the_cuda_session(cuda_lib, rt, tmp_path, monkeypatch):
    from _tiny_artifacts import make_artifacts
    from psdrt.runtime.pipeline import Pipeline

    d = make_artifacts(tmp_path / "a", size=(28, 42), fm_lower=28)
    sess = Pipeline.from_artifacts(d, mode="guided", device="cuda", kernels=cuda_lib)
    ref = Pipeline.from_artifacts(d, mode="guided")
    assert isinstance(sess, CSession) and sess.device == "cuda" and sess.working_size == (28, 42)
    K28 = np.array([[30.0, 0, 21.0], [0, 30.0, 14.0], [0, 0, 1]])
    rgb, sparse = frame(16, 28, 42)
    same(sess.enqueue(rt.upload(rgb), rt.upload(sparse), K28).copy_to_host(), ref(rgb, sparse, K28).depth, rt,
         "from_artifacts")
    with pytest.raises(ShapeError, match="built for 28x42"):  # the library's working-size rule
        sess.enqueue(*(rt.upload(a) for a in frame(16)), K)
    try:  # the manifest's mode needs the ONNX Runtime CUDA provider, present on a GPU machine only
        net = Pipeline.from_artifacts(d, device="cuda", kernels=cuda_lib)
    except BackendUnavailable as e:
        assert "CUDA" in str(e), e
    else:
        assert isinstance(net, CSession) and net.device == "cuda" and net.mode == "propagate"
    # without kernels=, device="cuda" asks for the CUDA build of the library
    asked, real = [], _capi.load
    monkeypatch.setattr(_capi, "load", lambda kind=None: (asked.append(kind), cuda_lib if kind == "cuda"
                                                          else real(kind))[1])
    s = CSession.guided(device="cuda")
    assert asked[0] == "cuda" and s._path == str(cuda_lib.path) and s.device == "cuda"


# ------------------------------------------------------------------------------ psd / propagate
@pytest.mark.parametrize("mode", ["psd", "propagate"])
def test_psd_and_propagate_device_frames_through_the_protocols(cuda_lib, rt, tmp_path, mode):
    """The networks' modes through the same binding, with the session's test fixture backend
    (psd_session_create with PSD_BACKEND_TEST_FIXTURE: the encoder and head as fixed device
    functions; everything else the real session): pitched CUDA-array-interface inputs and DLPack
    inputs give the CPU session's depth bit for bit, with no host copy of frame data."""
    pytest.importorskip("onnx")
    if not rt.emulated:
        pytest.skip("the test fixture backend runs under the emulator; on a GPU the real networks are tested")
    from _tiny_artifacts import make_artifacts

    from psdrt.runtime.session import test_fixture_backend

    from test_session_graphs import H as h, W as w, K1, frame as small_frame

    d = make_artifacts(tmp_path / mode, mode=mode)
    with test_fixture_backend("1"):
        cpu_s = CSession(d)
        gpu_s = CSession(d, device="cuda", library=cuda_lib.path)
    try:
        for seed in (5, 6):
            rgb, sparse = small_frame(seed)
            want = cpu_s(rgb, sparse, K1).depth
            (m_rgb, p_rgb), (m_sp, p_sp) = pitched(rt, rgb, 8), pitched(rt, sparse, 4)
            before = rt.copies()
            res = gpu_s.enqueue(FakeCAI(m_rgb, (h, w, 3), np.uint8, (p_rgb, 3, 1)),
                                FakeCAI(m_sp, (h, w), np.float32, (p_sp, 4)), K1)
            res2 = gpu_s.enqueue(FakeDLPack(m_rgb, shape=(h, w, 3), strides=(p_rgb, 3, 1), dtype=np.uint8),
                                 FakeDLPack(m_sp, shape=(h, w), strides=(p_sp // 4, 1)), K1)
            rt.sync()
            after = rt.copies()
            assert after["H2D"] == before["H2D"] and after["D2H"] == before["D2H"], (before, after)
            np.testing.assert_array_equal(res.copy_to_host(), want)
            np.testing.assert_array_equal(res2.copy_to_host(), want)
    finally:
        cpu_s.close()
        gpu_s.close()


def test_device_array_from_host_uint8_and_float32(cuda_lib, rt):
    """``DeviceArray.from_host``: a complete copy (no CAI ``stream`` key, no wait asked of DLPack
    consumers), uint8 and float32, exported with the right DLPack dtype."""
    from psdrt.runtime import _cuda
    from psdrt.runtime.session import _kernel_library

    waits = []
    runtime = _cuda.runtime_for(cuda_lib.path)
    rgb, sparse = frame(31)
    for host, code in ((rgb, 1), (sparse, 2)):
        a = DeviceArray.from_host(host, runtime, lambda c, p: waits.append((c, p)))
        cai = a.__cuda_array_interface__
        assert "stream" not in cai and cai["typestr"] == host.dtype.str and cai["shape"] == host.shape
        np.testing.assert_array_equal(a.copy_to_host(), host)
        cap = a.__dlpack__(stream=2)
        get = C.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
        t = _DLManaged.from_address(get(cap, b"dltensor")).dl_tensor
        assert (t.dtype.code, t.dtype.bits) == (code, 8 * host.dtype.itemsize)
        del cap, t
        gc.collect()
        a.close()
    assert waits == []
    with pytest.raises(TypeError, match="float32 or uint8"):
        DeviceArray.from_host(sparse.astype(np.float64), runtime, _kernel_library(cuda_lib.path).stream_wait)
