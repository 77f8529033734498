"""One set of artefact-directory rules (psd_artifacts_read), enforced identically by the C session
and Pipeline.from_artifacts: every failure is an ArtifactError, and both paths say the same."""

from __future__ import annotations

import ctypes as C
import json
import os
import shutil

import numpy as np
import pytest
from _frames import copy_artifacts, create

from psdrt.runtime import session as S
from psdrt.runtime.errors import ArtifactError

ARTIFACT = 10


def _edit(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def _both_refuse(lib, d, match, **options):
    """The C session and the Python pipeline refuse ``d`` with the same ArtifactError text."""
    from psdrt.runtime.pipeline import Pipeline

    st, _, c_msg = create(lib, d, **options)
    assert st == ARTIFACT, (st, c_msg)
    for engine in ("c", "python"):
        with pytest.raises(ArtifactError) as e:
            Pipeline.from_artifacts(d, precision=options.get("precision_name", "fp32"), engine=engine)
        assert str(e.value).endswith(c_msg), (engine, str(e.value), c_msg)
    assert match in c_msg, c_msg
    return c_msg


def _file_entry(name):
    def fn(m):
        for a in m["artifacts"]:
            if a["part"] == "head":
                a["file"] = name
    return fn


def test_file_entries_must_stay_inside_the_directory(capi_lib, artifacts, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(artifacts / "head.fp32.onnx", outside / "head.fp32.onnx")
    for name, entry, match in (("dotdot", "../elsewhere/head.fp32.onnx", "leaves the directory (..)"),
                               ("absolute", str(outside / "head.fp32.onnx"), "an absolute path"),
                               ("empty", "", "which is empty")):
        d = copy_artifacts(artifacts, tmp_path / name)
        _edit(d, _file_entry(entry))
        _both_refuse(capi_lib, d, match)
    d = copy_artifacts(artifacts, tmp_path / "link")
    (d / "head.fp32.onnx").unlink()
    (d / "head.fp32.onnx").symlink_to(outside / "head.fp32.onnx")
    msg = _both_refuse(capi_lib, d, "is a link to")
    assert "copy the file in instead of linking it" in msg
    # a link that stays inside the directory is fine
    d = copy_artifacts(artifacts, tmp_path / "inner")
    os.rename(d / "head.fp32.onnx", d / "head.real.onnx")
    (d / "head.fp32.onnx").symlink_to("head.real.onnx")
    st, h, msg = create(capi_lib, d)
    assert st == 0, msg
    capi_lib.psd_session_destroy(h)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.__setitem__("fm_lower", 20000), "fm_lower 20000 is outside 1..4096"),
    (lambda m: m["model"].__setitem__("mode", "guided"), "this psdrt runs 'psd' and 'propagate'"),
    (lambda m: m.__setitem__("size", [4, 400]), "too small for psd mode"),
    (lambda m: m.__setitem__("size", [100, 100000]), "[4, 32768]"),
    (lambda m: m.__setitem__("size", [56, 84, 3]), "'size' is missing or not [H, W]"),
    (lambda m: m.__setitem__("preset", 7), "'preset' is not a string"),
])
def test_manifest_sanity_is_the_same_on_both_paths(capi_lib, artifacts, tmp_path, edit, match):
    """Before: Python loaded fm_lower 20000 and died later on a 6 GiB allocation."""
    d = copy_artifacts(artifacts, tmp_path / "m")
    _edit(d, edit)
    _both_refuse(capi_lib, d, match)


def test_huge_and_deeply_nested_manifests_are_typed_errors(capi_lib, artifacts, tmp_path):
    """Before: a 100000-deep nesting gave a raw RecursionError in Python; C refused > 64 MiB and
    Python read it."""
    d = copy_artifacts(artifacts, tmp_path / "deep")
    m = json.loads((d / "manifest.json").read_text())
    text = json.dumps(m)[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}"
    (d / "manifest.json").write_text(text)
    _both_refuse(capi_lib, d, "nesting deeper than 64 levels")
    d = copy_artifacts(artifacts, tmp_path / "big")
    m["padding"] = "x" * (65 << 20)
    (d / "manifest.json").write_text(json.dumps(m))
    _both_refuse(capi_lib, d, "larger than 64 MiB")


def _fail_head_gate(d):
    def fn(m):
        for a in m["artifacts"]:
            if a["part"] == "head":
                a["gate"] = {"passed": False, "why": "depth_pix: max-rel 0.4"}
                a["usable"] = False
    _edit(d, fn)


def test_latency_only_loads_a_failed_gate_loudly_and_never_by_default(capi_lib, artifacts, middlebury, tmp_path,
                                                                      caplog):
    from psdrt.runtime.pipeline import Pipeline

    d = copy_artifacts(artifacts, tmp_path / "ungated")
    _fail_head_gate(d)
    msg = _both_refuse(capi_lib, d, "failed the correctness gate (depth_pix: max-rel 0.4)")
    assert "latency-only run" in msg
    rgb, sparse, K, _ = middlebury
    with caplog.at_level("WARNING"):
        p = Pipeline.from_artifacts(d, latency_only=True, engine="python")
        c = S.CSession.from_artifacts(d, latency_only=True)
    assert p.gate_approved is False and c.gate_approved is False
    assert sum("LATENCY-ONLY" in r.getMessage() for r in caplog.records) == 2
    assert p(rgb, sparse, K).info["gate_approved"] is False
    assert c(rgb, sparse, K).info["gate_approved"] is False
    assert S.CSession.from_artifacts(artifacts)(rgb, sparse, K).info["gate_approved"] is True
    sel = S.read_artifacts(d, latency_only=True)
    assert sel["gate_approved"] is False and "head.fp32.onnx: depth_pix: max-rel 0.4" in sel["gate_failures"]


def test_encoder_and_head_precisions_apart(capi_lib, artifacts, middlebury, tmp_path):
    """``ENC+HEAD`` selects each part's precision (the INT8-encoder + FP32-head recommendation).
    Here: an fp16 'encoder' entry that is the fp32 file (hashes listed), with the fp32 head."""
    from psdrt.runtime.manifest import sha256_file
    from psdrt.runtime.pipeline import Pipeline

    d = copy_artifacts(artifacts, tmp_path / "mixed")
    shutil.copyfile(artifacts / "encoder.fp32.onnx", d / "encoder.fp16.onnx")

    def add(m):
        enc = next(a for a in m["artifacts"] if a["part"] == "encoder")
        m["artifacts"].append({**enc, "name": "encoder.fp16.onnx", "file": "encoder.fp16.onnx", "precision": "fp16",
                               "sha256": sha256_file(d / "encoder.fp16.onnx")})
    _edit(d, add)
    sel = S.read_artifacts(d, "fp16+fp32")
    assert (sel["encoder_precision"], sel["head_precision"]) == ("fp16", "fp32")
    assert sel["encoder"].name == "encoder.fp16.onnx" and sel["head"].name == "head.fp32.onnx"
    rgb, sparse, K, _ = middlebury
    mixed = Pipeline.from_artifacts(d, precision="fp16+fp32", engine="python")(rgb, sparse, K).depth
    np.testing.assert_array_equal(mixed, Pipeline.from_artifacts(d, engine="python")(rgb, sparse, K).depth)
    c = S.CSession.from_artifacts(d, precision="fp16+fp32")
    assert c.precision == "fp16+fp32"
    msg = _both_refuse(capi_lib, d, "has no int8 head (built: fp32)", precision_name="fp16+int8")
    assert "--precision fp16+int8" in msg
    st, _, msg = create(capi_lib, d, precision_name="fp16+fp64")
    assert st == 1 and "ENC+HEAD" in msg


def test_older_session_info_struct_is_still_accepted(capi_lib):
    st, h, msg = create(capi_lib, None)
    assert st == 0, msg
    info = S.SessionInfo()
    info.struct_size = S.SessionInfo.gate_approved.offset  # PSD_SESSION_INFO_SIZE_V1 (psdrt 0.1)
    info.gate_approved = 7
    assert capi_lib.psd_session_get_info(h, C.byref(info)) == 0
    assert info.gate_approved == 7 and info.mode == S.MODES["guided"]  # not written past the old size
    info = S.SessionInfo()
    info.struct_size = S.SessionInfo.cuda_graph.offset  # PSD_SESSION_INFO_SIZE_V2 (psdrt 0.2)
    info.cuda_graph, info.graph_captures = 7, 9
    assert capi_lib.psd_session_get_info(h, C.byref(info)) == 0
    assert info.gate_approved == 1 and (info.cuda_graph, info.graph_captures) == (7, 9)
    capi_lib.psd_session_destroy(h)
