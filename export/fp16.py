"""FP16 conversion of exported ONNX graphs, keeping FP32 inputs/outputs and sensitive ops.

Uses onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True``: the graph
takes and returns float32 (the pipeline, the gate and calibration feed FP32 everywhere), with Cast
nodes at the boundary. Workaround (docs/platform.md): a graph that already holds
``Cast(to=FLOAT)`` nodes converts to an invalid model unless those nodes are in
``node_block_list``; :func:`convert_fp16` adds them.

Measured choices are recorded in :data:`ENCODER_KEEP_FP32` / :data:`HEAD_KEEP_FP32` and in
``tests/export/test_fp16.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

__all__ = ["ENCODER_KEEP_FP32", "HEAD_KEEP_FP32", "convert_fp16", "fp32_cast_nodes"]

log = logging.getLogger(__name__)

#: Op types kept in FP32 in the ViT encoder. Measured on ORT CPU, ViT-S, random DINOv2-scheme
#: weights, 392 x 518, max|a-b|/max|b| against the FP32 model (rel_inv / worst feature):
#: everything FP16 -> see the module tests; LayerNormalization and Softmax in FP32 is the default
#: because both reduce over 384..1024 values and TensorRT keeps them in FP32 too.
ENCODER_KEEP_FP32: tuple = ("LayerNormalization", "Softmax")
#: Op types kept in FP32 in the correction head: the bin softmax and the sigmoid confidences
#: feed products with depths in metres.
HEAD_KEEP_FP32: tuple = ("Softmax",)


def fp32_cast_nodes(model) -> list:
    """Names of the ``Cast(to=FLOAT)`` nodes (they must stay out of the FP16 conversion).

    Args:
        model (onnx.ModelProto): the FP32 model; unnamed nodes are given unique names in place.

    Returns:
        list[str]: node names.
    """
    import onnx

    names = []
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"psdrt_node_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == onnx.TensorProto.FLOAT:
                names.append(node.name)
    return names


def _unshare_initializers(model) -> int:
    """Give every consumer its own copy of a shared initializer; returns the number of copies.

    onnxslim deduplicates equal constants, so one initializer can feed a node kept in FP32 and a
    node converted to FP16; onnxconverter-common then converts it once and leaves one consumer with
    the wrong type ("Type parameter (T) bound to different types"). Copies cost little (shared
    constants are small: shapes, scalars, biases).
    """
    inits = {i.name: i for i in model.graph.initializer}
    seen: dict = {}
    copies = 0
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name not in seen:
                seen[name] = 0
                continue
            seen[name] += 1
            clone = model.graph.initializer.add()
            clone.CopyFrom(inits[name])
            clone.name = f"{name}__psdrt_copy{seen[name]}"
            node.input[k] = clone.name
            copies += 1
    return copies


def _isolate_outputs(model) -> int:
    """Feed graph outputs that other nodes also read through an Identity; returns their number.

    The encoder's ``feat0..feat2`` are graph outputs and inputs of the next DPT fusion stage. With
    ``keep_io_types`` onnxconverter-common casts such an output back to float32 in place, so the
    internal consumer then gets float32 next to float16 ("Type parameter (T) bound to different
    types"). Renaming the internal tensor and ending the output in an Identity avoids that.
    """
    import onnx

    outputs = {o.name for o in model.graph.output}
    consumed = {i for n in model.graph.node for i in n.input}
    count = 0
    for name in sorted(outputs & consumed):
        internal = f"{name}__psdrt_internal"
        for node in model.graph.node:
            for k, v in enumerate(node.output):
                if v == name:
                    node.output[k] = internal
            for k, v in enumerate(node.input):
                if v == name:
                    node.input[k] = internal
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [name], name=f"{name}__psdrt_out"))
        count += 1
    return count


def convert_fp16(
    src: Union[str, os.PathLike],
    dst: Union[str, os.PathLike],
    keep_fp32: Sequence[str] = ENCODER_KEEP_FP32,
    keep_nodes: Iterable[str] = (),
) -> Path:
    """Write an FP16 copy of an FP32 ONNX model whose inputs and outputs stay float32.

    Args:
        src (str | os.PathLike): FP32 model (from ``export_encoder`` / ``export_head``).
        dst (str | os.PathLike): output file.
        keep_fp32 (Sequence[str]): op types left in FP32 (``op_block_list``). Defaults to
            :data:`ENCODER_KEEP_FP32`; pass :data:`HEAD_KEEP_FP32` for the head, or ``()`` for all-FP16.
        keep_nodes (Iterable[str]): additional node names left in FP32. Defaults to none.

    Returns:
        Path: ``dst``.

    Raises:
        BackendUnavailable: onnxconverter-common or onnx is not installed (``[export]`` extra).
    """
    from psdrt.runtime._lazy import lazy_import

    onnx = lazy_import("onnx", extra="export").load()
    f16 = lazy_import("onnxconverter_common.float16", extra="export").load()

    model = onnx.load(str(src))
    _unshare_initializers(model)
    _isolate_outputs(model)
    # Stale value_info (from onnxslim's shape inference) makes the converter keep float32 types on
    # the outputs of the blocked Casts (ORT: "output arg ... does not match expected type");
    # the converter re-infers the shapes itself.
    del model.graph.value_info[:]
    block_nodes = sorted(set(fp32_cast_nodes(model)) | set(keep_nodes))
    converted = f16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(keep_fp32),
        node_block_list=block_nodes,
        disable_shape_infer=False,
    )
    # onnxconverter-common keeps the source IR/opset; check the result is loadable before writing.
    onnx.checker.check_model(converted)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(dst))
    return dst
