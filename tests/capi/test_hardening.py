"""Defects a user met with real (and hostile) frames, each fixed at its cause: threads, sizes,
bounds, outliers and the output range, on the C session and the Python paths alike."""

from __future__ import annotations

import ctypes as C
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _frames import Frame, create, last_error

from psdrt.runtime import _capi
from psdrt.runtime import session as S
from psdrt.runtime.errors import InputError, ShapeError

OK, INVALID, SHAPE = 0, 1, 3


def _with_outlier(sparse, value):
    s = sparse.copy()
    ys, xs = np.nonzero(s)
    s[ys[len(ys) // 2], xs[len(xs) // 2]] = value
    return s


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("mode", ["guided", "psd"])
def test_one_session_from_four_threads_is_serialised_and_right(capi_lib, artifacts, middlebury, mode):
    """Before: a guided session segfaulted and a psd session returned OK with 4 of 12 outputs
    wrong. Calls on one session are now serialised by the session."""
    rgb, sparse, K, _ = middlebury
    st, h, msg = create(capi_lib, None if mode == "guided" else artifacts, mode=S.MODES[mode])
    assert st == OK, msg
    want = Frame(rgb, sparse, K)
    assert want.run(capi_lib, h) == OK
    results, errors = [], []

    def worker():
        for _ in range(3):
            f = Frame(rgb, sparse, K)
            st = f.run(capi_lib, h)
            (results if st == OK else errors).append(f.depth if st == OK else last_error(capi_lib))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    capi_lib.psd_session_destroy(h)
    assert not errors and len(results) == 12
    for d in results:
        np.testing.assert_array_equal(d, want.depth)


def test_python_csession_from_four_threads_does_not_crash(middlebury):
    """Before: one CSession called from 4 threads killed the interpreter (SIGSEGV). Run in a child
    so that a crash fails this test instead of the suite."""
    code = (
        "import threading, numpy as np\n"
        "from psdrt.runtime.session import CSession\n"
        "from psdrt.runtime.io import load_middlebury\n"
        "from psdrt.export.gate import fit_frame\n"
        "from psdrt.runtime.patterns import make_sparse\n"
        "rgb, gt, K = fit_frame(load_middlebury(), (120, 160)); s = make_sparse('random1', rgb, gt, 0)\n"
        "sess = CSession.guided(); want = sess(rgb, s, K).depth; bad = []\n"
        "def w():\n"
        "    for _ in range(5):\n"
        "        bad.append(not np.array_equal(sess(rgb, s, K).depth, want))\n"
        "ts = [threading.Thread(target=w) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(bad), sum(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["20", "0"]


# ------------------------------------------------------------------------------ bounds
def test_thread_counts_are_bounded_everywhere(capi_lib, artifacts, monkeypatch):
    t0 = time.perf_counter()
    st, _, msg = create(capi_lib, artifacts, intra_op_threads=100000)
    assert st == INVALID and "intra_op_threads must be 0..1024" in msg and time.perf_counter() - t0 < 5
    from psdrt.runtime.backends.ort import OrtBackend
    from psdrt.runtime.config import num_threads

    onnx = next(artifacts.glob("encoder.fp32.onnx"))
    for bad in (0, 100000, 2.5, True):
        with pytest.raises(InputError, match=r"threads must be an integer in 1\.\.1024"):
            OrtBackend(onnx, providers=["cpu"], threads=bad)
    monkeypatch.setenv("PSD_NUM_THREADS", "100000")
    with pytest.raises(InputError, match="above 1024"):
        num_threads()
    st, _, msg = create(capi_lib, artifacts, fm_lower=20000)
    assert st == INVALID and "fm_lower must be 0..4096" in msg
    st, _, msg = create(capi_lib, None, guided_levels=40)
    assert st == INVALID and "levels must be 1..16" in msg


@pytest.mark.parametrize("hw", [(4, 400), (20, 2000), (1, 1), (16, 40)])
def test_frame_sizes_are_refused_before_any_network_runs(hw):
    """Before: 4x400 ran the encoder at 392x39200 (no result after 240 s) and 1x1 raised a raw torch
    RuntimeError. One rule (psd_check_frame_size) on every path, checked first."""
    torch = pytest.importorskip("torch")
    from psdrt.export.models.psd import PSDModel
    from psdrt.export.reference.pipeline import ReferencePipeline
    from psdrt.runtime.pipeline import Pipeline

    h, w = hw
    rgb, s = np.zeros((h, w, 3), np.uint8), np.ones((h, w), np.float32)
    K = [[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]]
    torch.manual_seed(0)
    ref = ReferencePipeline("psd", PSDModel("vits").eval())
    t0 = time.perf_counter()
    with pytest.raises(ShapeError) as e_ref:
        ref(rgb, s, K)
    assert time.perf_counter() - t0 < 2
    lib = _capi.load()
    with pytest.raises(ShapeError) as e_lib:
        lib.check_frame_size(h, w, "psd")
    assert str(e_ref.value) == str(e_lib.value)
    if min(h, w) < 4:  # every mode refuses it, guided included
        with pytest.raises(ShapeError, match=r"\[4, 32768\]"):
            Pipeline("guided")(rgb, s, K)


def test_frame_size_rule_per_mode():
    lib = _capi.load()
    lib.check_frame_size(16, 40, "guided")  # no head, no foundation model: fine
    lib.check_frame_size(20, 2000, "guided")
    lib.check_frame_size(17, 170, "psd")
    with pytest.raises(ShapeError, match="aspect ratio over 10:1"):
        lib.check_frame_size(17, 171, "propagate")
    with pytest.raises(ShapeError, match=">= 17"):
        lib.check_frame_size(16, 40, "psd")


# ------------------------------------------------------------------------------ outliers and the output range
@pytest.mark.parametrize("value", [1e9, 2e4, 1e-7])
def test_one_impossible_point_is_rejected_and_reported(capi_lib, artifacts, middlebury, value):
    """Before: one point at 1e9 m among 1-10 m gave depths down to -3.2e7 m with alignment 'ok'."""
    from psdrt.runtime.pipeline import Pipeline

    rgb, sparse, K, _ = middlebury
    bad = _with_outlier(sparse, value)
    for make in (lambda: S.CSession.from_artifacts(artifacts), lambda: S.CSession.guided(), lambda: Pipeline("guided")):
        p = make()
        clean, dirty = p(rgb, sparse, K), p(rgb, bad, K)
        assert dirty.info["rejected"] == {"range": 1, "outliers": 0}, dirty.info
        assert clean.info["rejected"] == {"range": 0, "outliers": 0}
        assert dirty.info["points"] == clean.info["points"] - 1
        lo, hi = sparse[sparse > 0].min(), sparse[sparse > 0].max()
        assert dirty.depth.min() >= 0.5 * lo * (1 - 1e-6) and dirty.depth.max() <= 2 * hi * (1 + 1e-6)


def test_outliers_beyond_100x_the_median_are_rejected():
    lib = _capi.load()
    s = np.zeros((10, 10), np.float32)
    s[0, :5] = [2.0, 3.0, 4.0, 5.0, 6.0]
    s[1, 0], s[1, 1], s[1, 2] = 401.0, 399.0, 0.039  # median 4: 400 and 0.04 are the limits
    out, st = lib.prepare_sparse(s)
    assert st["rejected_outliers"] == 2 and st["rejected_range"] == 0 and st["points"] == 6
    assert out[1, 0] == 0 and out[1, 1] == 399.0 and out[1, 2] == 0 and st["median"] == 4.0
    assert (st["dmin"], st["dmax"], st["interior"]) == (2.0, 399.0, 4)
    np.testing.assert_array_equal(out[0, :5], s[0, :5])  # in-range points are untouched


def test_depths_not_in_metres_are_refused_with_the_units_fix(middlebury):
    from psdrt.runtime.inputs import validate_frame

    rgb, sparse, K, _ = middlebury
    with pytest.raises(InputError, match=r"no point within \[0.001, 10000\] m .* convert millimetres"):
        validate_frame(rgb, sparse * 1e-30, K)
    with pytest.raises(InputError, match=r"no point within"):
        validate_frame(rgb, sparse * 1e6, K)


def test_psd_output_never_leaves_the_guard_range(capi_lib, artifacts, middlebury):
    """Propagation and the head can overshoot (CSPN weights may be negative); the final depth of
    every pipeline is clamped to [0.5 dmin, 2 dmax] of the accepted points and the count reported."""
    from psdrt.runtime.pipeline import Pipeline

    rgb, sparse, K, _ = middlebury
    s = np.where(sparse > 0, np.where(np.arange(sparse.size).reshape(sparse.shape) % 2, 1.0, 9.0), 0).astype(np.float32)
    for p in (S.CSession.from_artifacts(artifacts), Pipeline.from_artifacts(artifacts, engine="python")):
        r = p(rgb, s, K)
        assert r.depth.min() >= 0.5 and r.depth.max() <= 18.0
        assert r.info["clamped"] == int(((r.depth == np.float32(0.5)) | (r.depth == np.float32(18.0))).sum())


def test_guard_leaves_non_finite_values_for_the_pipelines_to_report():
    lib = _capi.load()
    d = np.array([[np.nan, -5.0, 3.0, 1e9]], np.float32)
    assert lib.guard_depth(d, 1.0, 4.0) == 2
    assert np.isnan(d[0, 0]) and d[0, 1:].tolist() == [0.5, 3.0, 8.0]


def test_older_frame_out_struct_is_still_accepted(capi_lib, artifacts, middlebury):
    """psd_frame_out grew three fields; a caller compiled against the older psd.h still works."""
    rgb, sparse, K, _ = middlebury
    st, h, msg = create(capi_lib, None)
    assert st == OK, msg
    f = Frame(rgb, sparse, K)
    f.fout.struct_size = C.sizeof(S.FrameOut) - 24
    f.fout.clamped = -7
    assert f.run(capi_lib, h) == OK and f.fout.clamped == -7  # not written past the old size
    f.fout.struct_size = C.sizeof(S.FrameOut) - 32
    assert f.run(capi_lib, h) == INVALID and "struct_size" in last_error(capi_lib)
    capi_lib.psd_session_destroy(h)


# ------------------------------------------------------------------------------ build
def test_unchanged_build_does_not_touch_the_library_and_relinks_replace_it(tmp_path):
    """Before: every run relinked libpsd_kernels_cpu.so in place; processes loading it meanwhile
    failed ("file too short": 116 of 352 starts in a race test)."""
    from psdrt import build

    lib = build.DEFAULT_BUILD_DIR / build.CPU_LIB
    build.build_kernels(cuda=False)
    before = os.stat(lib)
    build.build_kernels(cuda=False)
    after = os.stat(lib)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)  # not rewritten
    # a relink writes a new file and renames it over it: whoever mapped the old file keeps it intact
    src = tmp_path / "x.c"
    src.write_text("int psd_x(void) { return 1; }\n")
    obj = tmp_path / "x.o"
    subprocess.run(["gcc", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
    out = tmp_path / "libx.so"
    build._link(["gcc", "-shared", str(obj)], out, [obj], False, stamp_dir=tmp_path)
    first = os.stat(out)
    build._link(["gcc", "-shared", str(obj)], out, [obj], False, stamp_dir=tmp_path)
    assert os.stat(out).st_ino == first.st_ino  # up to date: skipped
    with open(out, "rb") as held:
        head = held.read(64)
        build._link(["gcc", "-shared", "-s", str(obj)], out, [obj], False, stamp_dir=tmp_path)  # another command
        assert os.stat(out).st_ino != first.st_ino
        held.seek(0)
        assert held.read(64) == head
    assert not list(tmp_path.glob(".libx.so.*.tmp"))


@pytest.mark.parametrize("engine", ["python", "c"])
def test_a_frame_too_big_for_memory_is_a_typed_error(engine):
    """Before: numpy's MemoryError in Python; the C session said PSD_E_OUT_OF_MEMORY without a fix.
    A child process under a 3 GiB address-space limit completes a 6000x8000 guided frame."""
    code = (
        "import resource, numpy as np\n"
        "from psdrt.runtime.pipeline import Pipeline\n"
        "from psdrt.runtime.session import CSession\n"
        "from psdrt.runtime.errors import OutOfMemoryError\n"
        f"p = Pipeline('guided') if {engine!r} == 'python' else CSession.guided()\n"
        "h, w = 6000, 8000\n"
        "rgb = np.zeros((h, w, 3), np.uint8); s = np.zeros((h, w), np.float32); s[::50, ::50] = 3.0\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "try:\n"
        "    p(rgb, s, [[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]]); print('completed')\n"
        "except OutOfMemoryError as e:\n"
        "    print('OutOfMemoryError:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OutOfMemoryError:") and "smaller frame" in proc.stdout, proc.stdout


def test_python_pipeline_from_four_threads_is_right(artifacts, middlebury):
    """Pipeline keeps no per-call state (kernel workspaces are per thread, ONNX Runtime's Run is
    thread-safe): concurrent calls give the sequential result."""
    from psdrt.runtime.pipeline import Pipeline

    rgb, sparse, K, _ = middlebury
    for p in (Pipeline("guided"), Pipeline.from_artifacts(artifacts, engine="python")):
        want = p(rgb, sparse, K).depth
        got, errors = [], []

        def worker():
            try:
                for _ in range(3):
                    got.append(p(rgb, sparse, K).depth)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(got) == 12
        for d in got:
            np.testing.assert_array_equal(d, want)
