"""The session's psd and propagate device frames, and CUDA graphs (psd_session_options.cuda_graph),
under the emulated CUDA runtime.

The networks are the test fixture backend (``PSD_BACKEND_TEST_FIXTURE``,
runtime/capi/test_backend.cpp: a fixed function of its inputs with the tiny artefacts' ONNX
shapes), since no ONNX Runtime provider runs here; everything around them is the session's
real code. The reference of every device frame is the CPU session over the same directory with
the same fixture: under the emulator the two are bit-identical (the same kernel sources)."""

from __future__ import annotations

import ctypes as C
import os
import sys
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # _tiny_artifacts

from _device import assert_cuda_matches  # noqa: E402
from _tiny_artifacts import make_artifacts  # noqa: E402

from psdrt.runtime import session as S  # noqa: E402
from psdrt.runtime.errors import InputError  # noqa: E402

H, W = 28, 42  # the tiny artefacts' working size (encoder input 28 x 42)
K1 = np.array([[30.0, 0, 21.0], [0, 30.0, 14.0], [0, 0, 1]])
K2 = np.array([[34.0, 0, 20.0], [0, 33.0, 13.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("graphs")
    return {"psd": make_artifacts(root / "psd", mode="psd"), "propagate": make_artifacts(root / "prop")}


@pytest.fixture(scope="module")
def emu_path(cuda_lib, rt):
    if not rt.emulated:
        pytest.skip("the test fixture backend runs the psd/propagate paths under the emulator; on a GPU the real "
                    "networks are tested instead")
    return cuda_lib.path


def frame(seed, h=H, w=W):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5 + seed), np.cos(yy / 4), np.sin((xx + yy) / 7)], -1)
    rgb = np.clip(128 + 90 * base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    depth = (2 + xx / w * 2 + yy / h + seed % 3).astype(np.float32)
    sparse = np.where(rng.random((h, w)) < 0.08, depth, 0).astype(np.float32)
    return rgb, sparse


def session(d=None, variant="1", **kw):
    with S.test_fixture_backend(variant):
        return S.CSession(d, **kw) if d is not None else S.CSession.guided(**kw)


def cpu_reference(sess, rgb, sparse, K):
    """The CPU session's depth; checks that nothing was rejected or clamped (psd_session_run's
    data-dependent steps, which psd_session_enqueue does not make), so that the frames compare."""
    r = sess(rgb, sparse, K)
    assert r.info["clamped"] == 0 and r.info["rejected"] == {"range": 0, "outliers": 0}
    return r.depth


class Frame:
    """Device buffers of one frame (contiguous), reusable: upload() changes contents, not addresses."""

    def __init__(self, rt, h=H, w=W):
        self.rt = rt
        self.rgb, self.sparse, self.out = rt.empty((h, w, 3), np.uint8), rt.empty((h, w)), rt.empty((h, w))

    def upload(self, rgb, sparse, stream=None):
        rt = self.rt
        self._host = (np.ascontiguousarray(rgb), np.ascontiguousarray(sparse))  # alive until the copies ran
        for dev, host in zip((self.rgb, self.sparse), self._host):
            rt.check(rt.c.cudaMemcpyAsync(dev.ptr, host.ctypes.data, host.nbytes, 1, stream))
        if stream is None:
            rt.sync()
        return self

    def run(self, sess, K, stream=None, bgr=False) -> np.ndarray:
        sess.enqueue(self.rgb, self.sparse, K, self.out, stream=stream, bgr=bgr)
        self.rt.sync()
        return self.out.get()


def bits_equal(a, b, what=""):
    assert_cuda_matches(a, b, True, what=what)


# ------------------------------------------------------------------------------ device frames
@pytest.mark.parametrize("mode, preset", [("psd", None), ("psd", "SUNRGBD"), ("propagate", None)],
                         ids=["psd", "psd-post-cspn", "propagate"])
def test_device_frames_equal_the_cpu_session(dirs, emu_path, rt, order, mode, preset):
    """Warm-up, capture and replays all give the CPU session's bits (SUNRGBD: 6 post-processing
    CSPN sweeps on the head's fd0)."""
    cpu = session(dirs[mode], preset=preset)
    plain = session(dirs[mode], preset=preset, device="cuda", library=emu_path)
    graph = session(dirs[mode], preset=preset, device="cuda", library=emu_path, cuda_graph=True)
    assert cpu.mode == plain.mode == mode and cpu.backend.startswith("TEST FIXTURE")
    assert "on cuda" in graph.backend and graph.graph_info()["state"] == "armed"
    fp, fg = Frame(rt), Frame(rt)
    for i, seed in enumerate((1, 2, 3, 4)):
        rgb, sparse = frame(seed)
        ref = cpu_reference(cpu, rgb, sparse, K1)
        bits_equal(fp.upload(rgb, sparse).run(plain, K1), ref, f"plain frame {i}")
        bits_equal(fg.upload(rgb, sparse).run(graph, K1), ref, f"graph frame {i}")
    info = graph.graph_info()
    assert info == {"state": "ready", "nodes": info["nodes"], "captures": 1, "replays": 2, "fallback": ""}
    assert info["nodes"] > 10  # the whole frame: copies, preprocessing, networks, propagation, post
    assert plain.graph_info()["state"] == "off"


def test_a_replayed_frame_equals_an_uncaptured_one_and_new_contents_are_honoured(dirs, emu_path, rt):
    graph = session(dirs["psd"], device="cuda", library=emu_path, cuda_graph=True)
    fg = Frame(rt)
    fg.upload(*frame(5)).run(graph, K1)  # warm-up
    fg.run(graph, K1)  # captured
    outs = []
    for seed in (6, 7, 8):  # new contents in the same buffers: replays
        rgb, sparse = frame(seed)
        fresh = session(dirs["psd"], device="cuda", library=emu_path)  # a fresh, uncaptured session
        want = Frame(rt).upload(rgb, sparse).run(fresh, K1)
        outs.append(fg.upload(rgb, sparse).run(graph, K1))
        bits_equal(outs[-1], want, f"replay of frame {seed}")
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])  # the data changed
    info = graph.graph_info()
    assert (info["captures"], info["replays"]) == (1, 3)  # no re-capture for new contents
    # a graph frame's timings: the device time of the whole graph
    t = (C.c_double * len(S.STAGES))()
    assert graph._lib.psd_session_timings(graph._handle, t, len(S.STAGES)) == 0
    times = dict(zip(S.STAGES, t))
    assert times["total"] > 0 and all(times[k] == 0 for k in ("preprocess", "encoder", "propagation", "head"))


def test_a_change_of_K_or_of_a_buffer_address_captures_again(dirs, emu_path, rt):
    cpu = session(dirs["psd"])
    graph = session(dirs["psd"], device="cuda", library=emu_path, cuda_graph=True)
    rgb, sparse = frame(9)
    fa = Frame(rt).upload(rgb, sparse)
    fa.run(graph, K1)
    fa.run(graph, K1)
    assert graph.graph_info()["captures"] == 1
    steps = [("K", fa, K2, False, 2), ("K again", fa, K2, False, 2), ("back to K1", fa, K1, False, 3),
             ("BGR flag", fa, K1, True, 4)]
    for what, f, K, bgr, captures in steps:
        out = f.run(graph, K, bgr=bgr)
        want = cpu_reference(cpu, rgb[..., ::-1] if bgr else rgb, sparse, K)
        bits_equal(out, want, what)
        assert graph.graph_info()["captures"] == captures, what
    for part in ("out", "rgb", "sparse"):  # the same contents at another address
        fb = Frame(rt).upload(rgb, sparse)
        for name in ("out", "rgb", "sparse"):
            if name != part:
                setattr(fb, name, getattr(fa, name))
        before = graph.graph_info()["captures"]
        bits_equal(fb.run(graph, K1), cpu_reference(cpu, rgb, sparse, K1), f"new {part} address")
        assert graph.graph_info()["captures"] == before + 1, part
    info = graph.graph_info()
    assert info["state"] == "ready" and info["replays"] == 1  # only "K again" replayed


def test_strided_device_frames_replay(dirs, emu_path, rt):
    """Row pitches larger than the rows: the staging copy of the image and the pitched sparse and
    depth copies are captured too; the pad bytes between the rows stay untouched."""
    cpu = session(dirs["psd"])
    g = session(dirs["psd"], device="cuda", library=emu_path, cuda_graph=True)
    pad = 16
    pitches = (3 * W + pad, 4 * W + pad, 4 * W + pad)
    bufs = [rt.empty(H * p_, np.uint8).fill(0) for p_ in pitches]
    rt.c.cudaMemcpy2D.argtypes = [C.c_void_p, C.c_size_t, C.c_void_p, C.c_size_t, C.c_size_t, C.c_size_t, C.c_int]
    Kd = np.ascontiguousarray(K1)
    for seed in (60, 61, 62):
        rgb, sparse = frame(seed)
        for dev, host, pitch in zip(bufs, (rgb, sparse), pitches):
            rt.check(rt.c.cudaMemcpy2D(dev.ptr, pitch, host.ctypes.data, host.strides[0], host.strides[0], H, 1))
        rt.sync()
        fin = S.FrameIn(C.sizeof(S.FrameIn), 0, H, W, bufs[0].ptr, pitches[0], bufs[1].ptr, pitches[1],
                        Kd.ctypes.data, S.DTYPE_FLOAT64, 0)
        fout = S.FrameOut()
        fout.struct_size, fout.depth, fout.depth_stride = C.sizeof(S.FrameOut), bufs[2].ptr, pitches[2]
        assert g._lib.psd_session_enqueue(g._handle, C.byref(fin), C.byref(fout), None) == 0
        rt.sync()
        raw = bufs[2].get().reshape(H, pitches[2])
        bits_equal(np.ascontiguousarray(raw[:, :4 * W]).view(np.float32), cpu_reference(cpu, rgb, sparse, K1),
                   f"strided frame {seed}")
        assert (raw[:, 4 * W:] == 0).all()
    assert (g.graph_info()["captures"], g.graph_info()["replays"]) == (1, 1)


def test_a_backend_that_refuses_capture_falls_back_with_the_reason(dirs, emu_path, rt):
    cpu = session(dirs["psd"])
    g = session(dirs["psd"], "refuse-capture", device="cuda", library=emu_path, cuda_graph=True)
    info = g.graph_info()
    assert info["state"] == "fallback" and info["captures"] == 0
    assert "the encoder's backend cannot be captured" in info["fallback"] and "refuse" in info["fallback"]
    f = Frame(rt)
    for seed in (10, 11, 12):
        rgb, sparse = frame(seed)
        bits_equal(f.upload(rgb, sparse).run(g, K1), cpu_reference(cpu, rgb, sparse, K1), f"fallback {seed}")
    assert g.graph_info() == info  # plain launches throughout


def test_a_capture_that_fails_midway_falls_back_and_loses_no_frame(dirs, emu_path, rt):
    """The sync-in-run fixture synchronises the stream inside the encoder's run: fine uncaptured,
    illegal while capturing (cudaErrorStreamCaptureUnsupported). The frame whose capture failed
    is run plainly."""
    cpu = session(dirs["propagate"], "sync-in-run")
    graphs_before = rt.live()[3:]
    g = session(dirs["propagate"], "sync-in-run", device="cuda", library=emu_path, cuda_graph=True)
    assert g.graph_info()["state"] == "armed"
    f = Frame(rt)
    for i, seed in enumerate((13, 14, 15)):
        rgb, sparse = frame(seed)
        bits_equal(f.upload(rgb, sparse).run(g, K1), cpu_reference(cpu, rgb, sparse, K1), f"frame {i}")
        if i == 0:
            assert g.graph_info()["state"] == "armed"  # the warm-up ran uncaptured
    info = g.graph_info()
    assert info["state"] == "fallback" and info["captures"] == 0 and info["nodes"] == 0
    assert "capture of a device frame failed" in info["fallback"], info
    assert "cudaErrorStreamCaptureUnsupported" in info["fallback"], info
    assert rt.live()[3:] == graphs_before  # no graph or executable graph left behind by the failed capture


def test_graph_frames_on_two_streams_of_one_session_run_one_after_the_other(dirs, emu_path, rt):
    cpu = session(dirs["psd"])
    g = session(dirs["psd"], device="cuda", library=emu_path, cuda_graph=True)
    s1, s2 = rt.stream(), rt.stream()
    try:
        f = Frame(rt).upload(*frame(16))
        f.run(g, K1)
        f.run(g, K1)  # captured
        (ra, sa), (rb, sb) = frame(17), frame(18)
        fa, fb = Frame(rt), Frame(rt)
        fa.out, fb.out = f.out, Frame(rt).out  # fa replays (same addresses as the capture), fb re-captures
        fa.rgb, fa.sparse = f.rgb, f.sparse
        fa.upload(ra, sa)
        fb.upload(rb, sb)
        rt.sleep(s1, 150)  # s1 is held back: without the session's ordering s2's frame would finish first
        g.enqueue(fa.rgb, fa.sparse, K1, fa.out, stream=s1)
        g.enqueue(fb.rgb, fb.sparse, K1, fb.out, stream=s2)
        rt.sync(s2)
        assert rt.c.cudaStreamQuery(s1) == 0
        bits_equal(fa.out.get(), cpu_reference(cpu, ra, sa, K1), "replay on s1")
        bits_equal(fb.out.get(), cpu_reference(cpu, rb, sb, K1), "capture on s2")
        assert (g.graph_info()["captures"], g.graph_info()["replays"]) == (2, 1)
    finally:
        for s in (s1, s2):
            rt.check(rt.c.cudaStreamDestroy(s))


def test_two_graph_sessions_on_two_streams_from_two_threads(dirs, emu_path, rt):
    """Each thread captures on its own stream (thread-local capture mode) while the other one
    launches, captures or allocates: both are right, and neither capture is invalidated."""
    cpu = session(dirs["psd"])
    sessions = [session(dirs["psd"], device="cuda", library=emu_path, cuda_graph=True) for _ in range(2)]
    streams = [rt.stream(), rt.stream()]
    inputs = [[frame(20 + 10 * k + i) for i in range(4)] for k in range(2)]
    results, errors = {}, []

    def worker(k):
        try:
            f = Frame(rt)
            for i, (rgb, sparse) in enumerate(inputs[k]):
                f.upload(rgb, sparse, streams[k])
                sessions[k].enqueue(f.rgb, f.sparse, K1, f.out, stream=streams[k])
                rt.sync(streams[k])
                results[k, i] = f.out.get()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for k in range(2):
            for i, (rgb, sparse) in enumerate(inputs[k]):
                bits_equal(results[k, i], cpu_reference(cpu, rgb, sparse, K1), f"session {k} frame {i}")
            assert sessions[k].graph_info() == {"state": "ready", "nodes": sessions[k].graph_info()["nodes"],
                                                "captures": 1, "replays": 2, "fallback": ""}
    finally:
        for s in streams:
            rt.check(rt.c.cudaStreamDestroy(s))


def test_guided_frames_with_graphs(emu_path, rt):
    cpu = S.CSession.guided()
    g = S.CSession.guided(device="cuda", library=emu_path, cuda_graph=True)
    f = Frame(rt)
    for seed in (40, 41, 42):
        rgb, sparse = frame(seed)
        bits_equal(f.upload(rgb, sparse).run(g, K1), cpu_reference(cpu, rgb, sparse, K1), f"guided {seed}")
    assert (g.graph_info()["captures"], g.graph_info()["replays"]) == (1, 1)
    # a new frame size reallocates the session's buffers: captured again
    rgb, sparse = frame(43, 32, 48)
    K = np.array([[30.0, 0, 24.0], [0, 30.0, 16.0], [0, 0, 1]])
    bits_equal(Frame(rt, 32, 48).upload(rgb, sparse).run(g, K), cpu_reference(cpu, rgb, sparse, K), "new size")
    assert g.graph_info()["captures"] == 2


# ------------------------------------------------------------------------------ options and resources
def test_graph_options_are_checked(dirs, emu_path):
    with pytest.raises(InputError, match="cuda_graph needs device = PSD_DEVICE_CUDA"):
        S.CSession.guided(cuda_graph=True)
    lib = S.session_library(emu_path)
    o = S.SessionOptions()
    assert lib.psd_session_options_init(C.byref(o)) == 0
    assert (o.cuda_graph, o.reserved_options) == (0, 0)
    o.device, o.cuda_graph = 1, 2
    h = C.c_void_p()
    assert lib.psd_session_create(None, C.byref(o), C.byref(h)) == 1
    assert "cuda_graph must be 0" in lib.psd_last_error().decode()
    # a caller built against the psd.h before cuda_graph: its struct ends there, graphs stay off
    o.struct_size = S.SessionOptions.cuda_graph.offset  # PSD_SESSION_OPTIONS_SIZE_V1
    assert lib.psd_session_create(None, C.byref(o), C.byref(h)) == 0, lib.psd_last_error().decode()
    info = S.SessionInfo()
    info.struct_size = C.sizeof(S.SessionInfo)
    assert lib.psd_session_get_info(h, C.byref(info)) == 0 and info.cuda_graph == 0 and info.graph_fallback == b""
    lib.psd_session_destroy(h)
    o.struct_size = S.SessionOptions.cuda_graph.offset - 8
    assert lib.psd_session_create(None, C.byref(o), C.byref(h)) == 1
    # the test fixture is chosen only by its variable, and only with a known variant
    os.environ["PSD_BACKEND_TEST_FIXTURE"] = "yes"
    try:
        with pytest.raises(InputError, match="PSD_BACKEND_TEST_FIXTURE='yes' is not a test fixture variant"):
            S.CSession(dirs["psd"])
    finally:
        del os.environ["PSD_BACKEND_TEST_FIXTURE"]
    with pytest.raises(InputError, match="unknown test fixture variant"):
        with S.test_fixture_backend("bogus"):
            pass
    assert "PSD_BACKEND_TEST_FIXTURE" not in os.environ
    pytest.importorskip("onnxruntime")
    assert not S.CSession(dirs["psd"]).backend.startswith("TEST FIXTURE")  # unset: the real backend


def test_graph_sessions_free_every_device_resource(dirs, emu_path, rt):
    rt.sync()
    before = rt.live()
    for variant in ("1", "sync-in-run"):
        g = session(dirs["psd"], variant, device="cuda", library=emu_path, cuda_graph=True)
        f = Frame(rt).upload(*frame(50))
        for K in (K1, K1, K1, K2):
            f.run(g, K)
        g.close()
        del f
    assert rt.live() == before


# ------------------------------------------------------------------------------ psdrt bench
def test_bench_times_device_frames_with_and_without_graphs(dirs, emu_path, cuda_lib, monkeypatch):
    """``psdrt bench --engine c --backend cuda --frames host|device [--cuda-graph]`` on the emulated
    library with the test fixture backend: device frames report the session's per-stage CUDA-event
    times; with a graph every timed frame is a replay (its total only); host frames run too."""
    from psdrt.runtime import _capi
    from psdrt.runtime.cli.__main__ import build_parser
    from psdrt.runtime.cli.bench_cmd import run_bench
    from psdrt.runtime.errors import InputError

    monkeypatch.setitem(_capi._CACHE, "cuda", cuda_lib)  # the CUDA library the session loads: the emulated one
    monkeypatch.setenv("PSD_BACKEND_TEST_FIXTURE", "1")
    base = ["bench", "--artifacts", str(dirs["psd"]), "--engine", "c", "--backend", "cuda", "--warmup", "2",
            "--iters", "3"]
    parse = build_parser().parse_args
    plain = run_bench(parse(base + ["--frames", "device"]))["runs"][0]
    assert plain["params"]["frames"] == "device" and plain["params"]["cuda_graph"] is False
    stages = plain["stages"]
    assert {"preprocess", "encoder", "propagation", "head", "post"} <= set(stages), stages
    assert all(stages[k]["p50_ms"] > 0 for k in ("preprocess", "encoder", "propagation", "head", "post"))
    graph = run_bench(parse(base + ["--frames", "device", "--cuda-graph"]))["runs"][0]
    info = graph["params"]["graph"]
    assert info["state"] == "ready" and info["captures"] == 1 and info["replays"] == 3, info
    assert "encoder" not in graph["stages"]  # a replay runs as one graph: no stage split
    host = run_bench(parse(base))["runs"][0]
    assert host["params"]["frames"] == "host" and host["stages"]["encoder"]["p50_ms"] > 0
    guided = run_bench(parse(["bench", "--engine", "c", "--backend", "cuda", "--size", "32x48", "--frames", "device",
                              "--cuda-graph", "--warmup", "2", "--iters", "2"]))["runs"][0]
    assert guided["params"]["backend"] == "c-session-cuda" and guided["params"]["graph"]["replays"] == 2
    with pytest.raises(InputError, match="--frames device"):
        run_bench(parse(base + ["--cuda-graph"]))
    with pytest.raises(InputError, match="--backend cuda"):
        run_bench(parse(["bench", "--artifacts", str(dirs["psd"]), "--frames", "device"]))
