"""psdrt: an edge-deployment runtime for PSD depth completion.

Sub-packages (one import namespace):
    psdrt.export       PyTorch models (Depth Anything V2, PSD correction head), checkpoint
                       loading, the FP32 reference pipeline, ONNX export.
    psdrt.runtime      the deployment pipeline, I/O, metrics, sparse patterns, the ``psdrt`` CLI.
    psdrt.kernels      single-source CUDA/C++ kernels behind a C ABI.
    psdrt.calibration  INT8 calibration.
    psdrt.benchmarks   latency and accuracy harnesses.
"""

__version__ = "0.1.0"
