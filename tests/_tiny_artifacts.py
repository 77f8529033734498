"""A real, tiny ``psdrt build``-style directory for CLI tests: a hand-made encoder ONNX (no torch).

The encoder maps ``rgb`` (1, 3, Hm, Wm) to ``rel_inv`` = mean over channels + 3 and ``feat0..3`` =
average-pooled RGB at the four feature sizes, which is enough for the ``propagate`` mode of
``Pipeline.from_artifacts`` (manifest, SHA-256 and gate checks are the real ones). With
``mode="psd"`` a hand-made head joins it (``depth_pix`` from every input, ``fd0`` 128 channels at
half size, as the real head's), so the post-processing runs too. It builds in milliseconds, where a
random-weight ViT-S directory takes about 25 s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def encoder_onnx(path, hm: int, wm: int, opset: int = 17) -> Path:
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
    return _save(graph, path, opset)


def _save(graph, path, opset: int) -> Path:
    """The graph as a checked ONNX file (IR 8, as the exporter writes)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="psdrt-test",
                              producer_version="0.1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def head_onnx(path, size, hm, opset: int = 17) -> Path:
    """A tiny head: ``depth_pix`` = 0.9 depth_diff + 0.1 sparse + a weighted sum of the means of
    ``feat0..3`` (each input changes the output); ``fd0`` (1, 128, H/2, W/2) = pooled depth_diff
    times one weight per channel, plus the mean of feat0."""
    import numpy as np
    from onnx import TensorProto, helper

    h, w = size
    ph, pw = hm[0] // 14, hm[1] // 14
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Mul", ["depth_diff", "c09"], ["a"]),
             helper.make_node("Mul", ["sparse", "c01"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["ab"])]
    acc = "ab"
    for i in range(4):
        nodes += [helper.make_node("ReduceMean", [f"feat{i}"], [f"m{i}"], axes=[1, 2, 3], keepdims=1),
                  helper.make_node("Mul", [f"m{i}", f"w{i}"], [f"mw{i}"]),
                  helper.make_node("Add", [acc, f"mw{i}"], [f"acc{i}"])]
        acc = f"acc{i}"
    nodes += [helper.make_node("Identity", [acc], ["depth_pix"]),
              helper.make_node("AveragePool", ["depth_diff"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Mul", ["pooled", "chw"], ["scaled"]),
              helper.make_node("Add", ["scaled", "m0"], ["fd0"])]
    inits = [helper.make_tensor("c09", f, [], [0.9]), helper.make_tensor("c01", f, [], [0.1])]
    inits += [helper.make_tensor(f"w{i}", f, [], [0.01 * (i + 1)]) for i in range(4)]
    weights = np.linspace(0.5, 1.5, 128, dtype=np.float32)
    inits.append(helper.make_tensor("chw", f, [1, 128, 1, 1], weights.tolist()))
    inputs = [helper.make_tensor_value_info("sparse", f, [1, 1, h, w]),
              helper.make_tensor_value_info("depth_diff", f, [1, 1, h, w])]
    inputs += [helper.make_tensor_value_info(f"feat{i}", f, [1, 3, ph * 2 ** i, pw * 2 ** i]) for i in range(4)]
    outs = [helper.make_tensor_value_info("depth_pix", f, [1, 1, h, w]),
            helper.make_tensor_value_info("fd0", f, [1, 128, h // 2, w // 2])]
    graph = helper.make_graph(nodes, "tiny_head", inputs, outs, inits)
    return _save(graph, path, opset)


def _entry(path: Path, part: str, gate_passed: bool) -> dict:
    return {"name": path.name, "file": path.name, "part": part, "precision": "fp32", "backend": "onnxruntime",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "usable": True, "requested": True,
            "gate": {"passed": gate_passed, "max_rel": 1.5e-6 if gate_passed else 0.4, "max_abs": 2e-6,
                     "depth_rmse_mm": 0.25, "why": "" if gate_passed else "rel_inv max_rel 0.4 > 0.2"}}


def make_artifacts(out, size=(28, 42), fm_lower: int = 28, preset: str = "NYUv2", gate_passed: bool = True,
                   preprocess: str = "official", mode: str = "propagate") -> Path:
    """A ``mode`` directory (``"propagate"``: the encoder; ``"psd"``: the encoder and the tiny head)
    at ``size`` with FP32 files whose (recorded) gate passed, or failed with ``gate_passed=False``
    (the files are there: usable for latency-only runs)."""
    from psdrt.runtime.preprocess import fm_input_size

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hm = fm_input_size(*size, lower=fm_lower)
    entries = [_entry(encoder_onnx(out / "encoder.fp32.onnx", *hm), "encoder", gate_passed)]
    if mode == "psd":
        entries.append(_entry(head_onnx(out / "head.fp32.onnx", size, hm), "head", gate_passed))
    manifest = {
        "format": 1, "psdrt_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
        "model": {"kind": "psd" if mode == "psd" else "dav2", "mode": mode, "encoder": "vits",
                  "licence": "Apache-2.0", "checkpoint": "tiny.pth", "checkpoint_sha256": "0" * 64},
        "size": list(size), "fm_size": list(hm), "fm_lower": fm_lower, "preset": preset, "target": "cpu",
        "preprocess": preprocess,
        "precisions": ["fp32"], "opset": 17, "tools": {"onnx": "test"},
        "artifacts": entries,
        "kernels": None,
    }
    if mode == "psd":
        head = head_onnx(out / "head.fp32.onnx", size, hm)
        entry = dict(manifest["artifacts"][0], name="head.fp32.onnx", file="head.fp32.onnx", part="head",
                     sha256=hashlib.sha256(head.read_bytes()).hexdigest())
        manifest["artifacts"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
