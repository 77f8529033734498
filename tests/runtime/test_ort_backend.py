"""OrtBackend and the Backend contract, on tiny ONNX graphs built inline (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from psdrt.runtime._lazy import lazy_import  # noqa: E402
from psdrt.runtime.backends import Backend, TensorSpec, check_feeds  # noqa: E402
from psdrt.runtime.backends import ort as ort_backend  # noqa: E402
from psdrt.runtime.backends.ort import OrtBackend, available_providers  # noqa: E402
from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError, PsdError, ShapeError  # noqa: E402


def _model(path, dims=(1, 1, 4, 6)):
    """y = 2 * x + 1 with input ``x`` of shape ``dims`` (str entries are symbolic)."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["t"]), h.make_node("Add", ["t", "one"], ["y"])],
        "affine",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(dims))],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(dims))],
        [h.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0]), h.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def static_model(tmp_path):
    return _model(tmp_path / "static.onnx")


def test_runs_and_reports_specs(static_model):
    with OrtBackend(static_model, threads=1) as b:
        assert isinstance(b, Backend)
        assert b.input_specs() == (TensorSpec("x", np.float32, (1, 1, 4, 6)),)
        assert [s.name for s in b.output_specs()] == ["y"]
        assert b.providers == ["CPUExecutionProvider"]
        x = np.arange(24, dtype=np.float32).reshape(1, 1, 4, 6)
        np.testing.assert_array_equal(b.run({"x": x})["y"], 2 * x + 1)
        # the CPU provider is synchronous; a stream argument is accepted and ignored
        b.run({"x": x}, stream=0)
    with pytest.raises(PsdError, match="closed"):
        b.run({"x": x})
    b.close()  # idempotent


def test_bytes_and_dynamic_axes(tmp_path):
    path = _model(tmp_path / "dyn.onnx", (1, 1, "H", "W"))
    b = OrtBackend(path.read_bytes())
    assert b.input_specs()[0].shape == (1, 1, "H", "W") and not b.input_specs()[0].is_static
    assert b.run({"x": np.ones((1, 1, 3, 5), np.float32)})["y"].shape == (1, 1, 3, 5)
    with pytest.raises(ShapeError, match="reshape or resize"):
        b.run({"x": np.ones((1, 3, 5), np.float32)})


@pytest.mark.parametrize(
    "feeds, error, match",
    [
        ({"x": np.zeros((1, 1, 4, 5), np.float32)}, ShapeError, "re-export"),
        ({"x": np.zeros((1, 1, 4, 6), np.float64)}, InputError, r"astype\(np.float32\)"),
        ({"rgb": np.zeros((1, 1, 4, 6), np.float32)}, InputError, "missing.*unknown"),
        ({"x": np.zeros((1, 1, 4, 6), np.float32), "extra": np.zeros(1)}, InputError, "unknown"),
        ({"x": [[1.0]]}, InputError, "np.asarray"),
        ([np.zeros((1, 1, 4, 6), np.float32)], InputError, "dict"),
    ],
)
def test_bad_feeds_raise_typed_errors(static_model, feeds, error, match):
    with OrtBackend(static_model) as b, pytest.raises(error, match=match):
        b.run(feeds)


def test_shape_error_is_an_input_error():
    spec = TensorSpec("x", np.float32, (1, None, 3))
    check_feeds({"x": np.zeros((1, 7, 3), np.float32)}, [spec])
    with pytest.raises(InputError):
        check_feeds({"x": np.zeros((1, 7, 4), np.float32)}, [spec])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        OrtBackend(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all")
    with pytest.raises(ArtifactError, match="not a valid ONNX model"):
        OrtBackend(bad)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(_model(tmp_path / "ok.onnx").read_bytes()[:40])
    with pytest.raises(ArtifactError):
        OrtBackend(truncated)


def test_unavailable_provider_names_the_extra(static_model):
    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("CUDA EP present")
    with pytest.raises(BackendUnavailable, match=r"psdrt\[gpu\]"):
        OrtBackend(static_model, providers=["cuda"])


def test_provider_options_resolved(static_model, monkeypatch):
    # Option building is pure Python: check it without a GPU build of onnxruntime.
    b = OrtBackend(static_model)
    monkeypatch.setattr(
        ort_backend.ort.load(), "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    b._stream = 1234
    resolved = dict(
        b._resolve_providers(
            None, device_id=1, trt_cache_dir=static_model.parent / "engines", trt_fp16=True, trt_int8=False,
            trt_int8_calibration_table=None, trt_timing_cache=static_model.parent / "timing", trt_workspace_bytes=None,
        )
    )
    assert list(resolved) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = resolved["TensorrtExecutionProvider"]
    assert trt["trt_fp16_enable"] == "1" and trt["trt_engine_cache_enable"] == "1"
    assert trt["trt_timing_cache_enable"] == "1" and trt["user_compute_stream"] == "1234"
    assert resolved["CUDAExecutionProvider"] == {"device_id": "1", "has_user_compute_stream": "1", "user_compute_stream": "1234"}


def test_lazy_import_names_the_extra():
    missing = lazy_import("psdrt_no_such_module_xyz", extra="cpu")
    assert not missing.available()
    with pytest.raises(BackendUnavailable, match=r"psdrt\[cpu\]"):
        missing.anything
    with pytest.raises(BackendUnavailable, match="found version"):
        lazy_import("numpy", "999.0").load()
    assert lazy_import("numpy", "1.0").asarray([1]).shape == (1,)


def test_intra_op_threads_do_not_spin(static_model):
    # spinning ORT threads took the cores from the kernels between the two networks (bm_runtime)
    b = OrtBackend(static_model, threads=2)
    entry = b._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == "0"
