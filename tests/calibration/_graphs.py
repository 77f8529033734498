"""Tiny inline ONNX graphs for the calibration tests (style G14), written under tmp_path."""

from __future__ import annotations

import numpy as np


def mlp_graph(path, seed=0, batch=1):
    """x[batch,16] -> MatMul W1 -> t1 -> Relu -> t2 -> MatMul W2 -> y[1,4]; returns (path, W1, W2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["t1"], name="/fc1/MatMul"),
        helper.make_node("Relu", ["t1"], ["t2"], name="/act/Relu"),
        helper.make_node("MatMul", ["t2", "w2"], ["y"], name="/fc2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, w1, w2


def conv_graph(path, seed=0):
    """x[1,3,16,16] -> Conv(8,3x3) -> Relu -> Conv(8,3x3) -> GlobalAveragePool -> Flatten -> Gemm -> y[1,5]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {
        "c1w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "c1b": rng.standard_normal(8).astype(np.float32) * 0.1,
        "c2w": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2,
        "c2b": rng.standard_normal(8).astype(np.float32) * 0.1,
        "gw": rng.standard_normal((5, 8)).astype(np.float32),
        "gb": rng.standard_normal(5).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["a1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["a2"], name="/conv1/Relu"),
        helper.make_node("Conv", ["a2", "c2w", "c2b"], ["a3"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a3"], ["a4"], name="/conv2/Relu"),
        helper.make_node("GlobalAveragePool", ["a4"], ["a5"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["a5"], ["a6"], name="/pool/Flatten"),
        helper.make_node("Gemm", ["a6", "gw", "gb"], ["y"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def feeds(n, shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) * scale).astype(np.float32)} for _ in range(n)]
