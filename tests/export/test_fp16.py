"""FP16 conversion: runs on ORT CPU with FP32 I/O, within a stated tolerance of the FP32 model.

Tolerance: max|fp16 - fp32| / max|fp32| < 5e-3 per output (measured: ~7e-4 for the ViT-S encoder,
see the commit message / final report for the head).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")
pytest.importorskip("onnxslim")

from psdrt.export.fp16 import ENCODER_KEEP_FP32, HEAD_KEEP_FP32, convert_fp16  # noqa: E402
from psdrt.export.models.completion_head import CorrectionHead  # noqa: E402
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2  # noqa: E402
from psdrt.export.models.random_weights import randomize_head_  # noqa: E402
from psdrt.export.onnx_export import ENCODER_OUTPUTS, HEAD_OUTPUTS, encoder_feat_sizes, export_encoder, export_head  # noqa: E402
from psdrt.runtime.backends.ort import OrtBackend  # noqa: E402
from psdrt.runtime.preprocess import fm_input_size  # noqa: E402

TOL_FP16 = 5e-3


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _fp16_types(path):
    model = onnx.load(str(path))
    return {i.type.tensor_type.elem_type for i in list(model.graph.input) + list(model.graph.output)}, model


def test_encoder_fp16(tmp_path):
    torch.manual_seed(0)
    size = (266, 350)
    src = export_encoder(DepthAnythingV2("vits").eval(), tmp_path / "enc.onnx", size)
    dst = convert_fp16(src, tmp_path / "enc16.onnx", ENCODER_KEEP_FP32)
    io_types, model = _fp16_types(dst)
    assert io_types == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert all(n.op_type != "LayerNormalization" or "fp32" not in n.name for n in model.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    with OrtBackend(src, threads=2) as b32, OrtBackend(dst, threads=2) as b16:
        assert b16.input_specs() == b32.input_specs()
        ref, out = b32.run({"rgb": x}), b16.run({"rgb": x})
    for name in ENCODER_OUTPUTS:
        assert out[name].dtype == np.float32
        assert rel_err(out[name], ref[name]) < TOL_FP16, name


def test_head_fp16(tmp_path):
    head = CorrectionHead(64)
    randomize_head_(head, 0)
    size = (228, 304)
    src = export_head(head.eval(), tmp_path / "head.onnx", size)
    dst = convert_fp16(src, tmp_path / "head16.onnx", HEAD_KEEP_FP32)
    g = np.random.default_rng(1)
    sparse = (g.random((1, 1, *size)) * 10 * (g.random((1, 1, *size)) < 0.05)).astype(np.float32)
    feeds = {"sparse": sparse, "depth_diff": (g.random((1, 1, *size)) * 10 + 1).astype(np.float32)}
    for i, (h, w) in enumerate(encoder_feat_sizes(fm_input_size(*size))):
        feeds[f"feat{i}"] = g.standard_normal((1, 64, h, w)).astype(np.float32)
    with OrtBackend(src, threads=2) as b32, OrtBackend(dst, threads=2) as b16:
        ref, out = b32.run(feeds), b16.run(feeds)
    for name in HEAD_OUTPUTS:
        assert rel_err(out[name], ref[name]) < TOL_FP16, name
