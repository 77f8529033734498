"""The backend contract: a tiny structural protocol plus one shared feed check (style G4).

References: NVIDIA/TensorRT tools/Polygraphy/polygraphy/backend/base/runner.py (the runner
lifecycle), microsoft/onnxruntime (the structural-protocol spirit of its ``__subclasshook__``).

A backend is anything with ``input_specs()``, ``output_specs()``, ``run(feeds, stream=None)`` and
``close()`` that is also a context manager; no base class is needed (a 15-line fake satisfies it).
Checks shared by every backend live in the free function :func:`check_feeds`, not in a base class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from psdrt.runtime.errors import InputError, ShapeError

__all__ = ["Dim", "TensorSpec", "Backend", "check_feeds"]

#: one dimension of a tensor spec: a fixed size, or a symbolic name / None for a dynamic axis
Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one backend input or output.

    Args:
        name (str): tensor name in the model (e.g. ``"rgb"``, ``"feat0"``).
        dtype (np.dtype): element type as seen by the caller (FP16 models keep FP32 I/O).
        shape (tuple): one entry per axis: an int for a fixed size, a string or None for a dynamic
            axis (any size >= 1 is accepted there).
    """

    name: str
    dtype: np.dtype
    shape: Tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def is_static(self) -> bool:
        """True when every axis has a fixed size."""
        return all(isinstance(d, int) and not isinstance(d, bool) for d in self.shape)

    def matches(self, shape: Sequence[int]) -> bool:
        """True when a concrete ``shape`` fits this spec (same rank, equal fixed axes)."""
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape))

    def __str__(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


@runtime_checkable
class Backend(Protocol):
    """What the pipeline, the calibration code and the correctness gate need from a backend.

    Contract:
        * ``input_specs()`` / ``output_specs()`` list the model's tensors in model order.
        * ``run(feeds, stream=None)`` takes a dict name -> array for every input (host NumPy
          arrays; GPU backends may also accept device arrays) and returns a dict name -> array
          for every output. Returned arrays may be reused by the next ``run``; copy to keep.
          ``stream`` is a CUDA stream handle (int or object with ``.ptr``/``.handle``) where
          the backend supports it; None means the backend's own stream.
        * ``close()`` releases the model; it is idempotent. Backends are context managers whose
          ``__exit__`` calls ``close()``.

    Thread safety: one backend object must not be ``run`` concurrently from several threads
    unless its own docstring says so.
    """

    def input_specs(self) -> Sequence[TensorSpec]: ...

    def output_specs(self) -> Sequence[TensorSpec]: ...

    def run(self, feeds: Mapping[str, Any], stream: Optional[Any] = None) -> Dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: Any) -> None: ...


def check_feeds(feeds: Mapping[str, Any], specs: Sequence[TensorSpec]) -> None:
    """Check that ``feeds`` hold exactly the inputs of ``specs`` with the right dtype and shape.

    Arrays are checked through their ``shape`` and ``dtype`` attributes, so device arrays (CuPy,
    torch) pass as long as they expose them.

    Args:
        feeds (Mapping[str, array]): input name -> array.
        specs (Sequence[TensorSpec]): the backend's ``input_specs()``.

    Raises:
        InputError: ``feeds`` is not a mapping, an input is missing or unknown, or has the wrong
            dtype (the message names the expected dtype and the conversion to apply).
        ShapeError: an input has the wrong rank or a wrong fixed dimension (the message names the
            expected shape and, for a static model, that it must be re-exported for other sizes).
    """
    if not isinstance(feeds, Mapping):
        raise InputError(
            f"feeds must be a dict of input name -> array, got {type(feeds).__name__}; "
            f"pass {{{', '.join(repr(s.name) for s in specs)}: ...}}"
        )
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    unknown = [n for n in feeds if n not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        raise InputError(
            f"wrong input names ({'; '.join(parts)}); this model takes exactly {list(expected)}"
        )
    for name, spec in expected.items():
        arr = feeds[name]
        shape = getattr(arr, "shape", None)
        dtype = getattr(arr, "dtype", None)
        if shape is None or dtype is None:
            raise InputError(
                f"input {name!r} must be an array with .shape and .dtype, got {type(arr).__name__}; "
                f"wrap it with np.asarray(x, dtype=np.{spec.dtype.name})"
            )
        try:
            dtype_ok = np.dtype(dtype) == spec.dtype
        except TypeError:  # torch.dtype and other foreign dtype objects
            dtype_ok = str(dtype).rsplit(".", 1)[-1] == spec.dtype.name
        if not dtype_ok:
            raise InputError(
                f"input {name!r} has dtype {dtype}, expected {spec.dtype.name}; "
                f"convert with x.astype(np.{spec.dtype.name})"
            )
        shape = tuple(int(s) for s in shape)
        if not spec.matches(shape):
            hint = (
                "re-export the model for this size (static shapes are fixed at export)"
                if spec.is_static and len(shape) == len(spec.shape)
                else "reshape or resize the input to match"
            )
            raise ShapeError(f"input {name!r} has shape {shape}, expected {spec}; {hint}")
