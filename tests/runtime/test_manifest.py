"""Engine fingerprints and sidecar manifests: stability, sensitivity, round trip, mismatch errors."""

import json

import pytest

from psdrt.runtime.errors import ArtifactError, InputError
from psdrt.runtime.manifest import (
    EngineManifest,
    engine_file_name,
    fingerprint,
    manifest_path,
    read_manifest,
    sha256_file,
    validate_manifest,
    write_manifest,
)

BASE = dict(
    onnx_sha256="ab" * 32,
    precision="fp16",
    shapes={"profiles": [{"rgb": {"min": [1, 3, 392, 518], "opt": [1, 3, 392, 518], "max": [1, 3, 392, 518]}}]},
    trt_version="10.3.0.30",
    compute_capability="8.7",
    builder_options={"workspace": 1 << 30, "dla_core": None, "strongly_typed": True},
)


def _manifest(engine, **over):
    fields = {**BASE, **over}
    return EngineManifest(fingerprint=fingerprint(**fields), gpu_name="Orin", engine_sha256=sha256_file(engine),
                          **fields)


def test_sha256_file_hashes_the_whole_file(tmp_path):
    import hashlib

    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB + 1792 bytes: several chunks and a partial one
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
    assert sha256_file(f, chunk=1000) == hashlib.sha256(data).hexdigest()
    tail = bytearray(data)
    tail[-1] ^= 1  # one bit after the first MiB
    g = tmp_path / "tail.bin"
    g.write_bytes(bytes(tail))
    assert sha256_file(g) != sha256_file(f)
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_fingerprint_is_stable_and_ignores_key_order():
    fp = fingerprint(**BASE)
    assert fp == fingerprint(**BASE) and len(fp) == 64
    reordered = dict(reversed(list(BASE.items())))
    reordered["builder_options"] = dict(reversed(list(BASE["builder_options"].items())))
    assert fingerprint(**reordered) == fp
    # tuples and lists are the same JSON
    tupled = {**BASE, "shapes": {"profiles": ({"rgb": {k: tuple(v) for k, v in BASE["shapes"]["profiles"][0]["rgb"].items()}},)}}
    assert fingerprint(**tupled) == fp
    # pinned: a change of the canonical form would silently orphan every deployed engine
    assert fp == fingerprint(**json.loads(json.dumps(BASE)))


@pytest.mark.parametrize("key,value", [
    ("onnx_sha256", "cd" * 32),
    ("precision", "int8"),
    ("shapes", {"profiles": [{"rgb": {"min": [1, 3, 392, 518], "opt": [1, 3, 392, 518], "max": [1, 3, 392, 532]}}]}),
    ("trt_version", "10.13.0.35"),
    ("compute_capability", "8.6"),
    ("builder_options", {"workspace": 1 << 29, "dla_core": None, "strongly_typed": True}),
    ("builder_options", {"workspace": 1 << 30, "dla_core": 0, "strongly_typed": True}),
    ("builder_options", {"workspace": 1 << 30, "dla_core": None, "strongly_typed": False}),
])
def test_fingerprint_changes_with_every_input(key, value):
    assert fingerprint(**{**BASE, key: value}) != fingerprint(**BASE)


def test_fingerprint_rejects_non_json_values():
    with pytest.raises(InputError):
        fingerprint(**{**BASE, "builder_options": {"x": object()}})
    with pytest.raises(InputError):
        fingerprint(**{**BASE, "builder_options": {"x": float("nan")}})


def test_engine_name_carries_the_fingerprint():
    fp = fingerprint(**BASE)
    assert engine_file_name("dav2_vits_392x518", "FP16", fp) == f"dav2_vits_392x518-fp16-{fp[:16]}.engine"


def test_write_read_round_trip(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    m = _manifest(engine).with_gate({"passed": True, "precision": "fp16"})
    path = write_manifest(engine, m)
    assert path == manifest_path(engine) and path.name == "e.engine.manifest.json"
    back = read_manifest(engine)
    assert back == m
    assert back.gate["passed"] is True
    validate_manifest(back, trt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", engine_path=engine)


def test_missing_corrupt_and_edited_manifests(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="no manifest.*psdrt build"):
        read_manifest(engine)
    manifest_path(engine).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        read_manifest(engine)
    write_manifest(engine, _manifest(engine))
    data = json.loads(manifest_path(engine).read_text())
    data["precision"] = "int8"  # hand-edited: fingerprint no longer matches
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="edited"):
        read_manifest(engine)
    data["format"] = 99
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="format 99"):
        read_manifest(engine)


def test_other_trt_version_is_refused_naming_both_and_the_fix(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    m = _manifest(engine)
    with pytest.raises(ArtifactError) as e:
        validate_manifest(m, trt_version="10.13.0.35", gpu_name="Orin", compute_capability="8.7")
    msg = str(e.value)
    assert "TensorRT 10.3.0.30" in msg and "TensorRT 10.13.0.35" in msg and "psdrt build" in msg


def test_other_gpu_is_refused_naming_both(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    m = _manifest(engine)
    with pytest.raises(ArtifactError) as e:
        validate_manifest(m, trt_version="10.3.0.30", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    msg = str(e.value)
    assert "8.7 (Orin)" in msg and "9.0 (NVIDIA H100 80GB HBM3)" in msg and "psdrt build" in msg
    with pytest.raises(ArtifactError, match="built on Orin, this GPU is Jetson AGX Orin"):
        validate_manifest(m, trt_version="10.3.0.30", gpu_name="Jetson AGX Orin", compute_capability="8.7")


def test_replaced_engine_bytes_are_refused(tmp_path):
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    m = _manifest(engine)
    engine.write_bytes(b"pla")  # truncated copy
    with pytest.raises(ArtifactError, match="SHA-256"):
        validate_manifest(m, trt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", engine_path=engine)
