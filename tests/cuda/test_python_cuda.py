"""The Python side of the CUDA path: the DLPack stream handshake, the CUDA array interface v3
``stream`` key and read-only flag, the explicit choice of the emulated library, and the
resources of ``runtime._cuda`` freed when collected."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from _device import FakeDLPack
from psdrt.runtime import _capi
from psdrt.runtime.errors import InputError


def test_dlpack_is_asked_for_the_stream_the_library_uses(cuda_lib, cpu_lib, rt):
    s = (np.random.default_rng(0).random((16, 20)) < 0.2).astype(np.float32) * 3
    src = FakeDLPack(rt.upload(s))
    out = rt.empty((4, 5))
    cuda_lib.sparse_pool(src, out=out)
    assert src.asked == [2]  # NULL -> cudaStreamPerThread, DLPack's 2
    stream = rt.stream()
    cuda_lib.sparse_pool(src, out=out, stream=stream)
    assert src.asked == [2, stream]
    rt.sync(stream)
    np.testing.assert_array_equal(out.get(), cpu_lib.sparse_pool(s))
    old = FakeDLPack(rt.upload(s), accepts_stream=False)  # a producer without the keyword still works
    cuda_lib.sparse_pool(old, out=out)
    assert old.asked == ["no keyword"]
    rt.check(rt.c.cudaStreamDestroy(stream))


def _produced_late(rt, host, with_stream_key):
    """A device array whose data a (slow) producer stream is still writing."""
    producer = rt.stream()
    dev = rt.empty(host.shape).fill(0)
    rt.sync()
    rt.sleep(producer, 150)
    rt.check(rt.c.cudaMemcpyAsync(dev.ptr, host.ctypes.data, host.nbytes, 1, producer))
    dev.stream = producer if with_stream_key else None
    return dev, producer


def test_the_cuda_array_interface_stream_is_waited_on(cuda_lib, cpu_lib, emulated):
    rt = emulated
    s = (np.random.default_rng(1).random((16, 20)) < 0.3).astype(np.float32) * 5
    want = cpu_lib.sparse_pool(s)
    for with_key in (True, False):
        dev, producer = _produced_late(rt, s, with_key)
        out = rt.empty((4, 5))
        cuda_lib.sparse_pool(dev, out=out)
        got = out.get()  # synchronises everything
        if with_key:
            np.testing.assert_array_equal(got, want)  # the library's stream waited for the producer
        else:
            assert not np.array_equal(got, want)  # without the key nothing orders them: stale data
        rt.check(rt.c.cudaStreamDestroy(producer))
        del dev, out  # freed here: cudaFree synchronises the device, which would order the next round
        gc.collect()


def test_read_only_outputs_and_stream_zero_are_refused(cuda_lib, rt):
    x = rt.upload(np.ones((8, 8), np.float32))
    ro = rt.empty((2, 2))
    ro.readonly = True
    with pytest.raises(InputError, match="read-only"):
        cuda_lib.sparse_pool(x, out=ro)
    x.stream = 0
    with pytest.raises(InputError, match="'stream' is 0"):
        cuda_lib.sparse_pool(x, out=rt.empty((2, 2)))


def test_stream_wait_abi(cuda_lib, emulated):
    rt = emulated
    a, b = rt.stream(), rt.stream()
    rt.sleep(a, 150)
    cuda_lib.stream_wait(b, a)
    rt.sleep(b, 1)
    rt.sync(b)
    assert rt.c.cudaStreamQuery(a) == 0  # b's work started only after a's
    with pytest.raises(InputError, match="ambiguous"):
        cuda_lib.stream_wait(b, 0)
    for s in (a, b):
        rt.check(rt.c.cudaStreamDestroy(s))


def test_the_emulated_library_is_loaded_only_by_name(cuda_lib, emulated):
    assert cuda_lib.cuda_emulated and cuda_lib.path.name == _capi.CUDA_EMU_LIB
    assert all(p.name != _capi.CUDA_EMU_LIB for p in _capi.find_library_candidates())
    assert _capi.load().path.name != _capi.CUDA_EMU_LIB
    with pytest.raises(InputError, match="cuda-emulation"):
        _capi.load("emulated")


def test_cuda_wrapper_frees_streams_and_buffers_when_collected(emulated):
    from psdrt.runtime import _cuda

    rt = emulated
    old = _cuda._LIB
    try:
        _cuda.use_runtime(rt.c._name)
        gc.collect()
        rt.sync()
        before = rt.live()
        objs = [_cuda.Stream(), _cuda.DeviceBuffer(4096), _cuda.Stream(), _cuda.DeviceBuffer(10)]
        assert rt.live() == (before[0] + 2, before[1] + 2, *before[2:])
        del objs
        gc.collect()
        assert rt.live() == before
        with _cuda.DeviceBuffer(64) as buf:
            host = np.arange(16, dtype=np.float32)
            with _cuda.Stream() as s:
                _cuda.memcpy_htod_async(buf.ptr, host, s.handle)
                back = np.zeros_like(host)
                _cuda.memcpy_dtoh_async(back, buf.ptr, s.handle)
                s.synchronize()
            np.testing.assert_array_equal(back, host)
        assert rt.live() == before
    finally:
        _cuda._LIB = old
