"""Inference backends: one module per engine (ONNX Runtime, TensorRT, PyTorch reference).

Importing this package imports no optional dependency; each backend imports its engine lazily.
"""

from psdrt.runtime.backends.base import Backend, TensorSpec, check_feeds

__all__ = ["Backend", "TensorSpec", "check_feeds"]
