"""The session C API's contract, call by call, through raw ctypes: every error path returns the
documented status with a message naming the fix, and the checks of an artefact directory say
exactly what ``Pipeline.from_artifacts`` says."""

from __future__ import annotations

import ctypes as C
import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from _frames import SIZE, Frame, copy_artifacts, create, last_error, status_name

from psdrt.runtime import session as S
from psdrt.runtime.errors import ArtifactError, InputError
from psdrt.runtime.presets import _ALIASES, PRESETS, get_preset
from psdrt.runtime.result import DepthResult

OK, INVALID, NULLP, SHAPE, NOCUDA, INTERNAL = 0, 1, 2, 3, 6, 8
UNSUPPORTED, ARTIFACT, UNAVAILABLE, BACKEND = 9, 10, 11, 12


@pytest.fixture(scope="module")
def psd_session(capi_lib, artifacts):
    st, h, msg = create(capi_lib, artifacts)
    assert st == OK, msg
    yield h
    capi_lib.psd_session_destroy(h)


def _run(lib, handle, frame) -> tuple[int, str]:
    st = frame.run(lib, handle)
    return st, last_error(lib) if st else ""


# ------------------------------------------------------------------------------------ basics
def test_abi_version_and_status_names(capi_lib):
    assert capi_lib.psd_session_abi_version() == S.SESSION_ABI_VERSION == 1
    for st, name in S.STATUS_NAMES.items():
        assert status_name(capi_lib, st) == name
    assert status_name(capi_lib, 13) == "PSD_E_UNKNOWN"


def test_c_preset_table_is_generated_from_the_python_one():
    from psdrt.runtime.presets import c_table

    header = Path(__file__).resolve().parents[2] / "runtime" / "capi" / "presets_table.h"
    assert header.read_text() == c_table(), "regenerate runtime/capi/presets_table.h (presets.c_table's docstring)"


def test_presets_match_python_table(capi_lib):
    for name, p in PRESETS.items():
        c = S.preset_from_c(name)
        want = dict(name=p.name, k=p.k, rate=p.rate, candidates=p.candidates, mode=p.mode, post_iters=p.post_iters,
                    cam=p.cam, iters_quarter=p.iters_quarter, iters_full=p.iters_full, min_depth=p.min_depth,
                    max_depth=p.max_depth)
        assert c == want, name
    for alias in _ALIASES:
        assert S.preset_from_c(alias.upper())["name"] == get_preset(alias.upper()).name
    d = S.preset_from_c("default")
    assert (d["k"], d["rate"], d["post_iters"]) == (3, 0.5, -1)
    with pytest.raises(InputError, match="unknown dataset preset 'nyu2'.*NYUv2, KITTI"):
        S.preset_from_c("nyu2")
    p = S.Preset()
    assert capi_lib.psd_preset_get(b"KITTI", C.byref(p)) == INVALID and "struct_size" in last_error(capi_lib)
    p.struct_size = C.sizeof(S.Preset)
    assert capi_lib.psd_preset_get(None, C.byref(p)) == NULLP
    assert capi_lib.psd_preset_get(b"KITTI", None) == NULLP


def test_options_defaults(capi_lib):
    o = S.SessionOptions()
    assert capi_lib.psd_session_options_init(C.byref(o)) == OK
    assert o.struct_size == C.sizeof(S.SessionOptions)
    assert (o.device, o.precision, o.mode, o.backend, o.seed, o.intra_op_threads) == (0, 0, 0, 0, 0, 0)
    assert not o.ort_library and not o.preset and not o.preset_override
    assert capi_lib.psd_session_options_init(None) == NULLP


def test_info_shapes_and_modes(capi_lib, psd_session, artifacts, propagate_artifacts):
    h, w = C.c_int64(), C.c_int64()
    assert capi_lib.psd_session_input_shape(psd_session, C.byref(h), C.byref(w)) == OK
    assert (h.value, w.value) == SIZE
    assert capi_lib.psd_session_output_shape(psd_session, C.byref(h), C.byref(w)) == OK
    assert (h.value, w.value) == SIZE
    assert capi_lib.psd_session_input_shape(None, C.byref(h), C.byref(w)) == NULLP
    assert capi_lib.psd_session_input_shape(psd_session, None, C.byref(w)) == NULLP
    info = S.SessionInfo()
    assert capi_lib.psd_session_get_info(psd_session, C.byref(info)) == INVALID  # struct_size 0
    info.struct_size = C.sizeof(S.SessionInfo)
    assert capi_lib.psd_session_get_info(psd_session, C.byref(info)) == OK
    assert (info.mode, info.precision, info.fm_height, info.fm_width) == (S.MODES["psd"], 0, 56, 84)
    assert info.preset.name == b"NYUv2" and b"onnxruntime" in info.backend
    assert info.artifact_dir.decode() == str(artifacts)
    # the manifest's mode (propagate), and an override of a psd directory
    for d, kw in ((propagate_artifacts, {}), (artifacts, {"mode": S.MODES["propagate"]})):
        st, hh, msg = create(capi_lib, d, **kw)
        assert st == OK, msg
        assert capi_lib.psd_session_get_info(hh, C.byref(info)) == OK and info.mode == S.MODES["propagate"]
        capi_lib.psd_session_destroy(hh)
    # guided needs no directory and takes any size
    st, hh, msg = create(capi_lib, None)
    assert st == OK, msg
    assert capi_lib.psd_session_input_shape(hh, C.byref(h), C.byref(w)) == OK and (h.value, w.value) == (0, 0)
    assert capi_lib.psd_session_get_info(hh, C.byref(info)) == OK and info.mode == S.MODES["guided"]
    capi_lib.psd_session_destroy(hh)
    capi_lib.psd_session_destroy(None)  # no-op


# ------------------------------------------------------------------------------------ run: bad calls
def test_run_null_pointers(capi_lib, psd_session, middlebury):
    rgb, sparse, K, _ = middlebury
    f = Frame(rgb, sparse, K)
    assert capi_lib.psd_session_run(None, C.byref(f.fin), C.byref(f.fout)) == NULLP
    assert "session" in last_error(capi_lib)
    assert capi_lib.psd_session_run(psd_session, None, C.byref(f.fout)) == NULLP
    assert capi_lib.psd_session_run(psd_session, C.byref(f.fin), None) == NULLP
    for struct, field, name in (("fin", "rgb", "in->rgb"), ("fin", "sparse", "in->sparse"), ("fin", "K", "in->K"),
                                ("fout", "depth", "out->depth")):
        f = Frame(rgb, sparse, K)
        setattr(getattr(f, struct), field, None)
        st, msg = _run(capi_lib, psd_session, f)
        assert st == NULLP and f"null pointer: {name}" in msg, msg
        assert (f.depth == -1).all()  # nothing written on failure


def test_run_struct_sizes_flags_dtypes(capi_lib, psd_session, middlebury):
    rgb, sparse, K, _ = middlebury
    for struct, field, value, match in (("fin", "struct_size", 0, "psd_frame_in->struct_size is 0"),
                                        ("fin", "struct_size", C.sizeof(S.FrameIn) - 8, "sizeof"),
                                        ("fout", "struct_size", 4, "psd_frame_out->struct_size"),
                                        ("fin", "flags", 2, "unknown bits"),
                                        ("fin", "K_dtype", 7, "K_dtype")):
        f = Frame(rgb, sparse, K)
        setattr(getattr(f, struct), field, value)
        st, msg = _run(capi_lib, psd_session, f)
        assert st == INVALID and match in msg, (field, msg)


def test_run_bad_sizes_and_strides(capi_lib, psd_session, middlebury):
    rgb, sparse, K, _ = middlebury
    h, w = SIZE
    cases = [("fin", "height", 2, SHAPE, "out of range"), ("fin", "width", 1 << 20, SHAPE, "out of range"),
             ("fin", "height", -5, SHAPE, "out of range"),
             ("fin", "rgb_stride", 3 * w - 1, SHAPE, "in->rgb_stride is 251 bytes, smaller than one row"),
             ("fin", "sparse_stride", 4 * w + 2, SHAPE, "multiple of 4"),
             ("fin", "sparse_stride", -4 * w, SHAPE, "smaller than one row"),
             ("fout", "depth_stride", 4 * w - 4, SHAPE, "out->depth_stride"),
             ("fin", "sparse_stride", 1 << 62, SHAPE, "implausibly large")]
    for struct, field, value, status, match in cases:
        f = Frame(rgb, sparse, K)
        setattr(getattr(f, struct), field, value)
        st, msg = _run(capi_lib, psd_session, f)
        assert st == status and match in msg, (field, value, msg)
    # the artefacts' working size is enforced, with Python's message
    small = Frame(rgb[:48], sparse[:48], K)
    st, msg = _run(capi_lib, psd_session, small)
    assert st == SHAPE and msg == ("frame is 48x84 but the artefacts were built for 56x84; resize the frame, "
                                   "or rebuild with `psdrt build --size 48x84`")
    # misaligned float pointers
    f = Frame(rgb, sparse, K)
    raw = np.zeros(h * w * 4 + 8, np.uint8)
    raw[1:1 + h * w * 4] = sparse.view(np.uint8).ravel()
    f.fin.sparse = raw.ctypes.data + 1
    st, msg = _run(capi_lib, psd_session, f)
    assert st == INVALID and "in->sparse must be 4-byte aligned" in msg


@pytest.mark.parametrize("edit,match", [
    (lambda s, K: s.__setitem__((3, 3), np.nan), "NaN or Inf"),
    (lambda s, K: s.__setitem__((3, 3), np.inf), "NaN or Inf"),
    (lambda s, K: s.__setitem__((3, 3), -1.0), "negative values"),
    (lambda s, K: s.__setitem__(slice(None), 0.0), "no valid point"),
    (lambda s, K: K.__setitem__((1, 1), 0.0), "non-positive focal lengths"),
    (lambda s, K: K.__setitem__((0, 2), np.nan), "K contains NaN"),
    (lambda s, K: K.__setitem__((2, 2), 2.0), "bottom row"),
    (lambda s, K: K.__setitem__(slice(0, 2), [[1.0, 1.0, 40.0], [1.0, 1.0, 28.0]]), "singular"),
    (lambda s, K: K.__setitem__((0, 2), 10_000.0), "principal point"),
])
def test_run_bad_values_match_python_validation(capi_lib, psd_session, middlebury, edit, match):
    from psdrt.runtime.inputs import validate_frame

    rgb, sparse, K, _ = middlebury
    s, k = sparse.copy(), np.array(K, np.float64)
    edit(s, k)
    f = Frame(rgb, s, k)
    st, msg = _run(capi_lib, psd_session, f)
    assert st == INVALID and match in msg, msg
    assert (f.depth == -1).all()
    with pytest.raises(InputError, match=match.split(" ")[0]):  # the Python check refuses it too
        validate_frame(rgb, s, k)


def test_run_layouts_give_identical_depth(capi_lib, psd_session, middlebury):
    """Strided rows, BGR order, float32 K and the uint16 mm output all describe the same frame."""
    rgb, sparse, K, _ = middlebury
    h, w = SIZE
    base = Frame(rgb, sparse, K, depth_mm=True)
    st, msg = _run(capi_lib, psd_session, base)
    assert st == OK, msg
    assert np.isfinite(base.depth).all() and base.depth.min() > 0
    assert base.fout.points == int((sparse > 0).sum()) and base.fout.alignment_degenerate == 0
    np.testing.assert_array_equal(base.mm, DepthResult(base.depth, "psd").depth_mm())
    t = np.array(base.fout.timings_ms)
    assert (t >= 0).all() and t[S.STAGES.index("total")] >= t[1:6].sum() > 0
    # rows with padding: 16 extra pixels per row everywhere
    big_rgb = np.zeros((h, w + 16, 3), np.uint8)
    big_rgb[:, :w] = rgb
    big_sp = np.zeros((h, w + 16), np.float32)
    big_sp[:, :w] = sparse
    f = Frame(rgb, sparse, K, depth_mm=True)
    f.keep = (big_rgb, big_sp, np.zeros((h, w + 8), np.float32), np.zeros((h, w + 4), np.uint16))
    f.fin.rgb, f.fin.rgb_stride = big_rgb.ctypes.data, big_rgb.strides[0]
    f.fin.sparse, f.fin.sparse_stride = big_sp.ctypes.data, big_sp.strides[0]
    f.fout.depth, f.fout.depth_stride = f.keep[2].ctypes.data, f.keep[2].strides[0]
    f.fout.depth_mm, f.fout.depth_mm_stride = f.keep[3].ctypes.data, f.keep[3].strides[0]
    assert _run(capi_lib, psd_session, f)[0] == OK
    np.testing.assert_array_equal(f.keep[2][:, :w], base.depth)
    np.testing.assert_array_equal(f.keep[3][:, :w], base.mm)
    assert (f.keep[2][:, w:] == 0).all()  # the padding is not written
    # BGR order, float32 K
    f = Frame(np.ascontiguousarray(rgb[..., ::-1]), sparse, K)
    f.fin.flags = S.FRAME_BGR
    k32 = np.ascontiguousarray(K, np.float32)
    f.fin.K, f.fin.K_dtype = k32.ctypes.data, S.DTYPE_FLOAT32
    assert _run(capi_lib, psd_session, f)[0] == OK
    np.testing.assert_array_equal(f.depth, base.depth)
    # the same frame again: bit-identical (buffers are reused, nothing carries over)
    again = Frame(rgb, sparse, K)
    assert _run(capi_lib, psd_session, again)[0] == OK
    np.testing.assert_array_equal(again.depth, base.depth)


def test_enqueue_and_cuda_on_cpu_build(capi_lib, psd_session, middlebury, artifacts):
    rgb, sparse, K, _ = middlebury
    f = Frame(rgb, sparse, K)
    st = capi_lib.psd_session_enqueue(psd_session, C.byref(f.fin), C.byref(f.fout), None)
    assert st == UNSUPPORTED and "CUDA build" in last_error(capi_lib) and "psd_session_run" in last_error(capi_lib)
    st, _, msg = create(capi_lib, artifacts, device=1)
    assert st == NOCUDA and "without CUDA" in msg


# ------------------------------------------------------------------------------------ create: artefacts
def _python_error(directory, precision="fp32") -> str:
    from psdrt.runtime.pipeline import Pipeline

    with pytest.raises(ArtifactError) as e:
        Pipeline.from_artifacts(directory, precision=precision)
    return str(e.value)


def _edit(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_artifact_errors_match_python(capi_lib, artifacts, tmp_path):
    # no manifest
    empty = tmp_path / "empty"
    empty.mkdir()
    st, _, msg = create(capi_lib, empty)
    assert st == ARTIFACT and msg == _python_error(empty)
    # corrupt JSON (Python quotes the JSON parser; both say corrupt and name the rebuild)
    d = copy_artifacts(artifacts, tmp_path / "corrupt")
    (d / "manifest.json").write_text("{not json")
    st, _, msg = create(capi_lib, d)
    assert st == ARTIFACT and "manifest.json is corrupt (JSON: line 1, column 2" in msg and "psdrt build" in msg
    _python_error(d)
    for name, fn in (("format", lambda m: m.__setitem__("format", 2)),
                     ("hash", lambda m: m["artifacts"][1].__setitem__("sha256", "0" * 64)),
                     ("gate", lambda m: m["artifacts"][0].__setitem__("gate", {"passed": False,
                                                                                "why": "feat0: max-rel 0.5"})),
                     ("unusable", lambda m: m["artifacts"][1].__setitem__("usable", False))):
        d = copy_artifacts(artifacts, tmp_path / name)
        _edit(d, fn)
        st, _, msg = create(capi_lib, d)
        assert st == ARTIFACT and msg == _python_error(d), name
    # missing keys / wrong types
    for name, fn in (("nosize", lambda m: m.pop("size")), ("noart", lambda m: m.pop("artifacts")),
                     ("nomode", lambda m: m["model"].pop("mode")), ("size", lambda m: m.__setitem__("size", "56x84"))):
        d = copy_artifacts(artifacts, tmp_path / name)
        _edit(d, fn)
        st, _, msg = create(capi_lib, d)
        assert st == ARTIFACT and "is corrupt" in msg and "psdrt build --checkpoint CKPT" in msg, (name, msg)
        if name != "size":  # Python reads "56x84"[0:2] as the size 5x6; C refuses a non-list
            assert "is corrupt" in _python_error(d)
    # a file that is not the one hashed (truncated/replaced copy), then a missing file
    d = copy_artifacts(artifacts, tmp_path / "swapped")
    (d / "head.fp32.onnx").unlink()
    shutil.copyfile(artifacts / "encoder.fp32.onnx", d / "head.fp32.onnx")
    st, _, msg = create(capi_lib, d)
    assert st == ARTIFACT and msg == _python_error(d) and "--size 56x84" in msg
    (d / "head.fp32.onnx").unlink()
    st, _, msg = create(capi_lib, d)
    assert st == ARTIFACT and msg == _python_error(d) and "missing" in msg
    # precision not built, unknown precision
    st, _, msg = create(capi_lib, artifacts, precision_name="fp16")
    assert st == ARTIFACT and msg == _python_error(artifacts, "fp16") and "(built: fp32)" in msg
    st, _, msg = create(capi_lib, artifacts, precision_name="fp64")
    assert st == INVALID and "unknown precision 'fp64'; use fp32, fp16 or int8" in msg
    st, _, msg = create(capi_lib, artifacts, precision=7)
    assert st == INVALID and "psd_precision_t" in msg


def test_create_option_errors(capi_lib, artifacts, propagate_artifacts, tmp_path):
    st, _, msg = create(capi_lib, propagate_artifacts, mode=S.MODES["psd"])
    assert st == ARTIFACT and "was built for mode propagate (its manifest)" in msg and "PSD checkpoint" in msg
    st, _, msg = create(capi_lib, None, mode=S.MODES["psd"])
    assert st == NULLP and "artifact_dir" in msg and "guided" in msg
    for field, value, match in (("mode", 9, "psd_session_mode_t"), ("device", 5, "options.device"),
                                ("backend", 3, "psd_backend_t"), ("intra_op_threads", -1, "intra_op_threads"),
                                ("struct_size", 8, "psd_session_options->struct_size"),
                                ("guided_colour_scale", float("nan"), "guided options")):
        st, _, msg = create(capi_lib, artifacts, **{field: value})
        assert st == INVALID and match in msg, (field, msg)
    st, _, msg = create(capi_lib, artifacts, preset="nyu2")
    assert st == INVALID and "unknown dataset preset 'nyu2'" in msg
    # presets that need the IP-Basic fill run (test_session_parity.py checks their output); a
    # non-pinhole camera is still refused
    for preset in ("ARGOVERSE", "VKITTI2", "DIMLi"):
        st, h, msg = create(capi_lib, artifacts, preset=preset)
        assert st == OK, msg
        capi_lib.psd_session_destroy(h)
    for preset in ("Stanford", "KITTI360"):
        st, _, msg = create(capi_lib, artifacts, preset=preset)
        assert st == UNSUPPORTED and f"preset '{preset}' uses a non-pinhole camera" in msg, msg
    d = copy_artifacts(artifacts, tmp_path / "preset")
    _edit(d, lambda m: m.__setitem__("preset", "Atlantis"))
    st, _, msg = create(capi_lib, d)
    assert st == ARTIFACT and "unknown dataset preset 'Atlantis' in the manifest" in msg
    # a full preset override (copied): SUNRGBD's post-processing on these artefacts
    p = S.Preset()
    p.struct_size = C.sizeof(S.Preset)
    assert capi_lib.psd_preset_get(b"SUNRGBD", C.byref(p)) == OK
    st, h, msg = create(capi_lib, artifacts, preset_override=C.pointer(p))
    assert st == OK, msg
    info = S.SessionInfo()
    info.struct_size = C.sizeof(S.SessionInfo)
    capi_lib.psd_session_get_info(h, C.byref(info))
    assert info.preset.name == b"SUNRGBD" and info.preset.post_iters == 6
    capi_lib.psd_session_destroy(h)
    p.k = 0
    st, _, msg = create(capi_lib, artifacts, preset_override=C.pointer(p))
    assert st == INVALID and "preset_override is invalid" in msg


def test_onnxruntime_library_errors(capi_lib, artifacts, monkeypatch):
    st, _, msg = create(capi_lib, artifacts, ort_library="/nonexistent/libonnxruntime.so.1")
    assert st == UNAVAILABLE and "cannot load the ONNX Runtime library /nonexistent" in msg
    assert "pip install onnxruntime" in msg and "PSD_ONNXRUNTIME_LIB" in msg
    # a library that loads but is not ONNX Runtime
    st, _, msg = create(capi_lib, artifacts, ort_library=capi_lib._name)
    assert st == UNAVAILABLE and "no OrtGetApiBase symbol" in msg
    monkeypatch.setenv("PSD_ONNXRUNTIME_LIB", "/nonexistent/libort.so")
    st, _, msg = create(capi_lib, artifacts)
    assert st == UNAVAILABLE and "($PSD_ONNXRUNTIME_LIB)" in msg
    # guided mode never needs ONNX Runtime
    st, h, msg = create(capi_lib, None)
    assert st == OK, msg
    capi_lib.psd_session_destroy(h)


@pytest.mark.parametrize("n", [0, 1, 55, 56, 63, 64, 65, 119, 128, 1000])
def test_sha256_padding_edges(capi_lib, tmp_path, n):
    """The C SHA-256 agrees with hashlib at every padding boundary: with the right digest the
    check passes and ONNX Runtime refuses the non-model (PSD_E_BACKEND); with a wrong one the
    hash check stops it (PSD_E_ARTIFACT)."""
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    (tmp_path / "encoder.fp32.onnx").write_bytes(data)
    art = {"name": "encoder.fp32.onnx", "file": "encoder.fp32.onnx", "part": "encoder", "precision": "fp32",
           "backend": "onnxruntime", "sha256": hashlib.sha256(data).hexdigest(), "gate": {"passed": True}}
    m = {"format": 1, "size": [56, 84], "fm_lower": 56, "model": {"mode": "propagate"}, "preprocess": "official",
         "artifacts": [art]}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    st, _, msg = create(capi_lib, tmp_path)
    assert st == BACKEND and "cannot load" in msg, msg
    art["sha256"] = hashlib.sha256(data + b"\0").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    st, _, msg = create(capi_lib, tmp_path)
    assert st == ARTIFACT and "SHA-256" in msg


def test_last_error_is_thread_local(capi_lib):
    assert capi_lib.psd_session_options_init(None) == NULLP
    mine = last_error(capi_lib)
    seen = {}

    def other():
        st, _, msg = create(capi_lib, None, mode=9)
        seen["msg"] = (st, msg, last_error(capi_lib))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["msg"][0] == INVALID and seen["msg"][1] == seen["msg"][2] and "psd_session_mode_t" in seen["msg"][2]
    assert last_error(capi_lib) == mine == "null pointer: options"
