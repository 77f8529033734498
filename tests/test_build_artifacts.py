"""``build.build_artifacts`` / ``psdrt build``: checkpoint -> deployable directory -> ``Pipeline.from_artifacts``.

A random-weight ViT-S PSD checkpoint (official layout), built at 56x84 (encoder at
``fm_input_size(56, 84)`` = 392x588) in FP32; the incremental and ``--force`` checks use a second,
cheaper directory with ``fm_lower=56`` (encoder at 56x84).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from psdrt import build as B  # noqa: E402
from psdrt.runtime.errors import ArtifactError, ShapeError  # noqa: E402
from psdrt.runtime.pipeline import Pipeline  # noqa: E402
from psdrt.runtime.preprocess import fm_input_size  # noqa: E402

SIZE = (56, 84)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from psdrt.export.checkpoints import save_official_psd
    from psdrt.export.models.psd import PSDModel
    from psdrt.export.models.random_weights import randomize_head_

    torch.manual_seed(0)
    model = randomize_head_(PSDModel("vits"), 0)
    path = tmp_path_factory.mktemp("ckpt") / "psd_vits.ckpt"
    save_official_psd(model, path)
    return path


@pytest.fixture(scope="module")
def built(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    res = B.build_artifacts(checkpoint, out, size=SIZE, precisions=("fp32",), golden_shared=False)
    return out, res


@pytest.fixture(scope="module")
def frame():
    from psdrt.export.gate import fit_frame
    from psdrt.runtime.io import load_middlebury
    from psdrt.runtime.patterns import make_sparse

    rgb, gt, K = fit_frame(load_middlebury(), SIZE)
    return rgb, make_sparse("random1", rgb, gt, 0), K


def _copy(out, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def test_manifest_contents(built, checkpoint):
    out, res = built
    m = json.loads((out / "manifest.json").read_text())
    assert m == res.manifest
    assert m["size"] == list(SIZE) and m["fm_size"] == list(fm_input_size(*SIZE)) == [392, 588]
    assert m["model"]["kind"] == "psd" and m["model"]["mode"] == "psd" and m["model"]["encoder"] == "vits"
    assert m["model"]["licence"] and m["preset"] == "NYUv2" and m["psdrt_version"]
    assert m["model"]["checkpoint_sha256"] == B._sha256(checkpoint)
    arts = {a["name"]: a for a in m["artifacts"]}
    assert set(arts) == {"encoder.fp32.onnx", "head.fp32.onnx"}
    for name, a in arts.items():
        assert a["sha256"] == B._sha256(out / a["file"]) and a["precision"] == "fp32"
        assert a["gate"]["passed"] and a["usable"] and a["gate"]["max_rel"] < 1e-3, a["gate"]
    assert m["kernels"]["cpu"]["sha256"] == B._sha256(out / m["kernels"]["cpu"]["file"])
    assert [r["status"] for r in res.rows[:2]] == ["built", "built"]
    assert "encoder.fp32.onnx" in res.summary() and "gate max-rel" in res.summary()


def test_incremental_and_force(checkpoint, tmp_path, capsys):
    kw = dict(size=SIZE, precisions=("fp32",), golden_shared=False, fm_lower=56)
    out = tmp_path / "small"
    B.build_artifacts(checkpoint, out, **kw)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")}
    capsys.readouterr()
    again = B.build_artifacts(checkpoint, out, **kw)
    err = capsys.readouterr().err
    assert [r["status"] for r in again.rows] == ["up to date"] * 3
    assert "exporting" not in err and "loading checkpoint" not in err and "up to date" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")} == mtimes
    forced = B.build_artifacts(checkpoint, out, force=True, **kw)
    assert [r["status"] for r in forced.rows if r["artefact"].endswith(".onnx")] == ["built"] * 2
    assert all(p.stat().st_mtime_ns > mtimes[p.name] for p in out.glob("*.onnx"))
    # another working size is another fingerprint: rebuilt, not reused
    other = B.build_artifacts(checkpoint, out, **{**kw, "size": (42, 70)})
    assert [r["status"] for r in other.rows if r["artefact"].endswith(".onnx")] == ["built"] * 2


def test_from_artifacts_matches_torch(built, checkpoint, frame):
    out, _ = built
    pipe = Pipeline.from_artifacts(out)
    assert pipe.mode == "psd" and pipe.working_size == SIZE and pipe.preset.name == "NYUv2"
    ref = Pipeline.from_checkpoint(checkpoint, preset="NYUv2")
    got, want = pipe(*frame).depth, ref(*frame).depth
    assert got.shape == SIZE
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_wrong_frame_size(built, frame):
    out, _ = built
    pipe = Pipeline.from_artifacts(out)
    rgb, sparse, K = frame
    with pytest.raises(ShapeError, match="56x84"):
        pipe(rgb[:42], sparse[:42], K)


def test_corrupt_manifest(built, tmp_path):
    d = _copy(built[0], tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt.*psdrt build"):
        Pipeline.from_artifacts(d)
    (d / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest"):
        Pipeline.from_artifacts(d)


def test_tampered_onnx(built, tmp_path):
    d = _copy(built[0], tmp_path)
    with open(d / "head.fp32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="SHA-256.*--size 56x84"):
        Pipeline.from_artifacts(d)
    (d / "head.fp32.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Pipeline.from_artifacts(d)


def test_failed_gate_and_missing_precision(built, tmp_path):
    d = _copy(built[0], tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["artifacts"][0]["gate"] = {"passed": False, "why": "feat0: max-rel 0.5"}
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="failed the correctness gate.*max-rel 0.5"):
        Pipeline.from_artifacts(d)
    with pytest.raises(ArtifactError, match="no fp16"):
        Pipeline.from_artifacts(built[0], precision="fp16")


def test_psdrt_build_help_without_torch(tmp_path):
    # torch/onnx/onnxruntime made unimportable: `psdrt build -h` must still work
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here')\n")
    (tmp_path / "onnx.py").write_text("raise ImportError('no onnx here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "psdrt.runtime.cli", "build", "-h"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--checkpoint" in proc.stdout and "--target" in proc.stdout and "psdrt build" in proc.stdout


def test_encoder_and_head_at_different_precisions(checkpoint, tmp_path, frame):
    """``--precision fp16+fp32`` builds the FP16 encoder and the FP32 head only (the FP32 encoder is
    the FP16's source), and the directory serves that combination (the INT8-encoder + FP32-head
    recommendation is the same code path; INT8 calibration is too slow for this test)."""
    out = tmp_path / "mixed"
    res = B.build_artifacts(checkpoint, out, size=SIZE, precisions=("fp16+fp32",), golden_shared=False, fm_lower=56,
                            kernels=False)
    names = sorted(a["name"] for a in res.manifest["artifacts"])
    assert names == ["encoder.fp16.onnx", "encoder.fp32.onnx", "head.fp32.onnx"]
    requested = {a["name"]: a["requested"] for a in res.manifest["artifacts"]}
    assert requested == {"encoder.fp16.onnx": True, "encoder.fp32.onnx": False, "head.fp32.onnx": True}
    assert res.manifest["precisions"] == ["fp16+fp32"]
    p = Pipeline.from_artifacts(out, precision="fp16+fp32")
    rgb, sparse, K = frame
    d16 = p(rgb, sparse, K).depth
    d32 = Pipeline.from_artifacts(out)(rgb, sparse, K).depth
    assert np.isfinite(d16).all() and not np.array_equal(d16, d32)  # the FP16 encoder really ran
    with pytest.raises(ArtifactError, match="no fp16 head"):
        Pipeline.from_artifacts(out, precision="fp16")
    with pytest.raises(ValueError, match="ENC\\+HEAD"):
        B.build_artifacts(checkpoint, out, size=SIZE, precisions=("int4",), golden_shared=False)


def test_sizes_a_mode_cannot_take_are_refused_before_export(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"--size 4x400: .*too small for psd mode"):
        B.build_artifacts(checkpoint, tmp_path / "x", size=(4, 400), golden_shared=False)
    assert not (tmp_path / "x" / "manifest.json").exists()
