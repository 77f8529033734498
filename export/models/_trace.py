"""Whether a graph is being recorded for export: the models keep upstream's eager numerics for the
FP32 reference and write export-friendly forms (explicit sizes, fused attention) into graphs."""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True while an exporter (TorchScript tracing, ONNX, dynamo / torch.export) records the graph."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and (getattr(compiler, "is_compiling", lambda: False)()
                                          or getattr(compiler, "is_exporting", lambda: False)()))
