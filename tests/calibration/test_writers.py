"""Writers: TensorRT cache format round trip, Q/DQ ONNX for ORT CPU, Model Optimizer path."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _graphs import conv_graph, feeds  # noqa: E402

from psdrt.calibration import writers  # noqa: E402
from psdrt.calibration.collectors import TensorRanges  # noqa: E402
from psdrt.runtime.errors import BackendUnavailable, CalibrationError  # noqa: E402


def test_trt_cache_format_and_roundtrip(tmp_path):
    r = TensorRanges({"rgb": (-2.1, 2.6), "/blocks.0/Add_output_0": (0.0, 12.7), "feat0": (-1.0, 1.0)})
    path = writers.write_trt_cache(r, tmp_path / "c.cache", trt_version="8.6")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8602-EntropyCalibration2"
    name, hexval = lines[2].split(": ")
    assert name == "/blocks.0/Add_output_0" and len(hexval) == 8
    assert struct.unpack(">f", bytes.fromhex(hexval))[0] == pytest.approx(12.7 / 127, rel=1e-6)
    header, scales = writers.read_trt_cache(path)
    assert header.startswith("TRT-8602")
    assert set(scales) == set(r)
    for n in r:
        assert scales[n] == pytest.approx(r.amax(n) / 127, rel=1e-6)  # asymmetric ranges -> amax
    assert writers.read_trt_cache(writers.write_trt_cache(r, tmp_path / "d", "8.5.2"))[0] == \
        "TRT-8502-EntropyCalibration2"


@pytest.mark.parametrize("version", ["10.3", "8.4", "7.2", "nonsense"])
def test_trt_cache_refused_outside_85_86(tmp_path, version):
    with pytest.raises(CalibrationError, match="Q/DQ"):
        writers.write_trt_cache(TensorRanges({"a": (0.0, 1.0)}), tmp_path / "c", trt_version=version)


def test_trt_cache_malformed(tmp_path):
    (tmp_path / "bad").write_text("TRT-8602-EntropyCalibration2\nfoo: xyz\n")
    with pytest.raises(CalibrationError, match="malformed"):
        writers.read_trt_cache(tmp_path / "bad")


@pytest.fixture()
def convnet(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from psdrt.calibration.calibrate import collect_ranges

    src = conv_graph(tmp_path / "net.onnx")
    prep = writers.prepare_for_ort(src, tmp_path / "net.prep.onnx")
    cal = feeds(8, (1, 3, 16, 16), seed=3)
    ranges = collect_ranges(prep, cal, progress=False)
    return prep, ranges, cal


def _ops(path):
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_qdq_ort_runs_on_cpu_and_is_close(convnet, tmp_path):
    from psdrt.calibration.calibrate import fidelity

    prep, ranges, cal = convnet
    out = writers.write_qdq_ort(prep, tmp_path / "net.int8.onnx", ranges)
    ops = _ops(out)
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    rep = fidelity(prep, out, feeds(4, (1, 3, 16, 16), seed=9))
    assert rep["outputs"]["y"]["rel_rmse"] < 0.05


def test_qdq_ort_nodes_to_exclude(convnet, tmp_path):
    import onnx

    prep, ranges, _ = convnet
    full = writers.write_qdq_ort(prep, tmp_path / "a.onnx", ranges)
    part = writers.write_qdq_ort(prep, tmp_path / "b.onnx", ranges, nodes_to_exclude=["/conv2/Conv"])
    g = onnx.load(str(part)).graph
    producers = {o: n.op_type for n in g.node for o in n.output}
    conv2 = [n for n in g.node if n.name == "/conv2/Conv"][0]
    assert producers.get(conv2.input[1]) != "DequantizeLinear"  # weight stays FP32
    assert _ops(part).count("QuantizeLinear") < _ops(full).count("QuantizeLinear")


def test_qdq_ort_missing_ranges(convnet, tmp_path):
    prep, _, _ = convnet
    with pytest.raises(CalibrationError, match="no range"):
        writers.write_qdq_ort(prep, tmp_path / "x.onnx", TensorRanges({"x": (-1.0, 1.0)}))


def test_quantizable_nodes_skip_activation_matmul(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["b"], name="weighted"),
         helper.make_node("MatMul", ["b", "a"], ["c"], name="attention")],
        "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert writers.quantizable_nodes(m) == ["weighted"]
    assert writers.quantizable_tensors(m, ["weighted"]) == ["a", "b"]


def test_modelopt_path(convnet, tmp_path):
    """Model Optimizer Q/DQ when installed (psdrt[calibration]); otherwise a clean BackendUnavailable."""
    prep, ranges, cal = convnet
    ok, why = writers.modelopt_available()
    if not ok:
        with pytest.raises(BackendUnavailable, match=r"psdrt\[calibration\]"):
            writers.write_qdq_modelopt(prep, tmp_path / "mo.onnx", cal)
        pytest.skip(f"modelopt not installed: {why[:120]}")
    import onnx

    out = writers.write_qdq_modelopt(prep, tmp_path / "mo.onnx", cal, calibration_method="max",
                                     high_precision_dtype="fp32")
    m = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 19
    from psdrt.calibration.calibrate import fidelity

    rep = fidelity(prep, out, cal[:2])
    assert rep["outputs"]["y"]["rel_rmse"] < 0.1
