"""Exception types of psdrt. Every error message names the fix.

The hierarchy is small on purpose: callers catch ``PsdError`` for anything raised by psdrt,
or one of the subclasses for a specific failure. Each subclass also derives from the closest
built-in exception so that generic handlers (``except ValueError``) keep working.
"""

from __future__ import annotations


class PsdError(Exception):
    """Base class of every error raised by psdrt."""

    #: process exit code used by the ``psdrt`` command for this error type
    exit_code = 1


class InputError(PsdError, ValueError):
    """Bad user input: wrong shape, dtype, NaN/Inf, too few sparse points, invalid intrinsics."""

    exit_code = 2


class ShapeError(InputError):
    """An array has the wrong shape or the shapes of two inputs do not match."""


class CheckpointError(PsdError, ValueError):
    """A checkpoint is corrupt, of an unknown layout, or does not match the model."""

    exit_code = 3


class BackendUnavailable(PsdError, RuntimeError):
    """An optional dependency (torch, onnxruntime, TensorRT, the kernel library) is missing or unusable."""

    exit_code = 4


class ArtifactError(PsdError, ValueError):
    """A built artefact (ONNX file, engine, manifest directory) is missing, corrupt or mismatched."""

    exit_code = 5


class OutOfMemoryError(PsdError, MemoryError):
    """A frame needs more memory than the machine can give (buffers grow with H x W)."""

    exit_code = 7


class CalibrationError(PsdError, RuntimeError):
    """INT8 calibration failed or produced unusable ranges."""

    exit_code = 6
