"""A real, tiny ``psdrt build``-style directory for CLI tests: a hand-made encoder ONNX (no torch).

The encoder maps ``rgb`` (1, 3, Hm, Wm) to ``rel_inv`` = mean over channels + 3 and ``feat0..3`` =
average-pooled RGB at the four feature sizes, which is enough for the ``propagate`` mode of
``Pipeline.from_artifacts`` (manifest, SHA-256 and gate checks are the real ones). With
``mode="psd"`` a hand-made head is added (``sparse``, ``depth_diff``, ``feat0..3`` ->
``depth_pix`` = |depth_diff|, ``fd0`` = feat0 twice, nearest-resized to H/2 x W/2): the tensor
names and shapes of the real head, which is what the session's test fixture backend reads. It
builds in milliseconds, where a random-weight ViT-S directory takes about 25 s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def encoder_onnx(path, hm: int, wm: int, opset: int = 17) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["rgb"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Add", ["m", "three"], ["rel_inv"]),
             helper.make_node("AveragePool", ["rgb"], ["feat0"], kernel_shape=[14, 14], strides=[14, 14]),
             helper.make_node("AveragePool", ["rgb"], ["feat1"], kernel_shape=[7, 7], strides=[7, 7]),
             helper.make_node("Resize", ["feat1", "", "sc2"], ["feat2"], mode="nearest"),
             helper.make_node("Resize", ["feat1", "", "sc4"], ["feat3"], mode="nearest")]
    ph, pw = hm // 14, wm // 14
    outs = [helper.make_tensor_value_info("rel_inv", TensorProto.FLOAT, [1, 1, hm, wm])]
    outs += [helper.make_tensor_value_info(f"feat{i}", TensorProto.FLOAT, [1, 3, ph * 2 ** i, pw * 2 ** i])
             for i in range(4)]
    inits = [helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]),
             helper.make_tensor("sc2", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
             helper.make_tensor("sc4", TensorProto.FLOAT, [4], [1, 1, 4, 4])]
    graph = helper.make_graph(nodes, "tiny_encoder",
                              [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, hm, wm])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="psdrt-test",
                              producer_version="0.1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def head_onnx(path, size, hm, opset: int = 17) -> Path:
    """The head's interface for a working ``size`` and encoder input ``hm``: inputs ``sparse``,
    ``depth_diff`` (1, 1, H, W), ``feat0..3`` as ``encoder_onnx`` gives them; outputs ``depth_pix``
    (1, 1, H, W) = |depth_diff| and ``fd0`` (1, 6, H/2, W/2) = feat0 twice, nearest-resized."""
    import onnx
    from onnx import TensorProto, helper

    h, w = size
    ph, pw = hm[0] // 14, hm[1] // 14
    fd0 = [1, 6, h // 2, w // 2]
    nodes = [helper.make_node("Abs", ["depth_diff"], ["a"]),
             helper.make_node("Mul", ["sparse", "zero"], ["z"]),
             helper.make_node("Add", ["a", "z"], ["depth_pix"]),
             helper.make_node("Concat", ["feat0", "feat0"], ["f6"], axis=1),
             helper.make_node("Resize", ["f6", "", "", "fd0_size"], ["fd0"], mode="nearest")]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, h, w]) for n in ("sparse", "depth_diff")]
    ins += [helper.make_tensor_value_info(f"feat{i}", TensorProto.FLOAT, [1, 3, ph * 2 ** i, pw * 2 ** i])
            for i in range(4)]
    outs = [helper.make_tensor_value_info("depth_pix", TensorProto.FLOAT, [1, 1, h, w]),
            helper.make_tensor_value_info("fd0", TensorProto.FLOAT, fd0)]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("fd0_size", TensorProto.INT64, [4], fd0)]
    graph = helper.make_graph(nodes, "tiny_head", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="psdrt-test",
                              producer_version="0.1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def make_artifacts(out, size=(28, 42), fm_lower: int = 28, preset: str = "NYUv2", gate_passed: bool = True,
                   preprocess: str = "official", mode: str = "propagate") -> Path:
    """A ``mode`` ("propagate" or "psd") directory at ``size`` with one FP32 encoder (and head)
    whose (recorded) gate passed, or failed with ``gate_passed=False`` (the files are there: usable
    for latency-only runs)."""
    from psdrt.runtime.preprocess import fm_input_size

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hm = fm_input_size(*size, lower=fm_lower)
    enc = encoder_onnx(out / "encoder.fp32.onnx", *hm)
    sha = hashlib.sha256(enc.read_bytes()).hexdigest()
    manifest = {
        "format": 1, "psdrt_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
        "model": {"kind": "psd" if mode == "psd" else "dav2", "mode": mode, "encoder": "vits", "licence": "Apache-2.0",
                  "checkpoint": "tiny.pth", "checkpoint_sha256": "0" * 64},
        "size": list(size), "fm_size": list(hm), "fm_lower": fm_lower, "preset": preset, "target": "cpu",
        "preprocess": preprocess,
        "precisions": ["fp32"], "opset": 17, "tools": {"onnx": "test"},
        "artifacts": [{"name": "encoder.fp32.onnx", "file": "encoder.fp32.onnx", "part": "encoder",
                       "precision": "fp32", "backend": "onnxruntime", "sha256": sha, "usable": True,
                       "requested": True, "gate": {"passed": gate_passed, "max_rel": 1.5e-6 if gate_passed else 0.4,
                                                   "max_abs": 2e-6, "depth_rmse_mm": 0.25,
                                                   "why": "" if gate_passed else "rel_inv max_rel 0.4 > 0.2"}}],
        "kernels": None,
    }
    if mode == "psd":
        head = head_onnx(out / "head.fp32.onnx", size, hm)
        entry = dict(manifest["artifacts"][0], name="head.fp32.onnx", file="head.fp32.onnx", part="head",
                     sha256=hashlib.sha256(head.read_bytes()).hexdigest())
        manifest["artifacts"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
