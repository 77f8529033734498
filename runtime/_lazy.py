"""Lazy import of optional heavy dependencies (style G2).

References: NVIDIA/TensorRT tools/Polygraphy/polygraphy/mod/importer.py (``lazy_import``), without
its auto-install: psdrt never installs packages, it names the extra that provides them.

``ort = lazy_import("onnxruntime", "1.17")`` at module level costs nothing; the first attribute
access imports the module, checks the version and raises ``BackendUnavailable`` naming the fix when
the package is missing, broken or too old.
"""

from __future__ import annotations

import importlib
import re
import threading
from types import ModuleType
from typing import Any, Optional

from psdrt.runtime.errors import BackendUnavailable

__all__ = ["EXTRAS", "lazy_import", "LazyModule"]

#: which ``psdrt`` extra installs each optional top-level package (the fix named in errors)
EXTRAS = {
    "onnxruntime": "cpu",  # or [gpu] (onnxruntime-gpu); never both, they share one package folder
    "tensorrt": "trt",
    "torch": "torch",
    "onnx": "export",
    "onnxslim": "export",
    "onnxconverter_common": "export",
    "cuda": "gpu",
    "plyfile": "points",
    "pypcd4": "points",
    "rosbags": "ros",
    "mcap": "ros",
    "mcap_ros2": "ros",
    "ray": "ray",
    "tritonclient": "triton",
}


def _version_tuple(text: str) -> tuple[int, ...]:
    # "1.17.3", "10.3.0.26", "2.4.0+cpu", "1.20.0.dev2024" -> leading integer fields only
    parts = []
    for field in text.split("."):
        m = re.match(r"\d+", field)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


class LazyModule:
    """A module proxy that imports on first attribute access.

    Args:
        name (str): importable module name, e.g. ``"onnxruntime"``.
        min_version (str, optional): smallest accepted ``__version__``. Defaults to None (any).
        extra (str, optional): the psdrt extra named in the error. Defaults to ``EXTRAS`` lookup of
            the top-level package name.

    Thread safety: the first import is guarded by a lock; later accesses are plain attribute reads.
    """

    def __init__(self, name: str, min_version: Optional[str] = None, extra: Optional[str] = None) -> None:
        self._name = name
        self._min_version = min_version
        self._extra = extra if extra is not None else EXTRAS.get(name.split(".")[0])
        self._module: Optional[ModuleType] = None
        self._lock = threading.Lock()

    def _requirement(self) -> str:
        return f"{self._name}>={self._min_version}" if self._min_version else self._name

    def _fix(self) -> str:
        if self._extra:
            return f"install the [{self._extra}] extra: pip install 'psdrt[{self._extra}]'"
        return f"pip install '{self._requirement()}'"

    def load(self) -> ModuleType:
        """Import (once) and return the module.

        Returns:
            ModuleType: the imported module.

        Raises:
            BackendUnavailable: the module is missing, fails to import, or is older than ``min_version``.
        """
        if self._module is not None:
            return self._module
        with self._lock:
            if self._module is None:
                try:
                    module = importlib.import_module(self._name)
                except Exception as exc:  # ImportError, or a broken native library (OSError, ...)
                    raise BackendUnavailable(
                        f"{self._requirement()} not importable: {type(exc).__name__}: {exc}; {self._fix()}"
                    ) from exc
                if self._min_version:
                    have = str(getattr(module, "__version__", "0"))
                    if _version_tuple(have) < _version_tuple(self._min_version):
                        raise BackendUnavailable(
                            f"{self._requirement()} not importable: found version {have}; {self._fix()}"
                        )
                self._module = module
        return self._module

    def available(self) -> bool:
        """True when :meth:`load` succeeds (never raises)."""
        try:
            self.load()
        except BackendUnavailable:
            return False
        return True

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<LazyModule {self._requirement()} ({state})>"


def lazy_import(name: str, min_version: Optional[str] = None, extra: Optional[str] = None) -> LazyModule:
    """Return a proxy that imports ``name`` on first use.

    Args:
        name (str): module to import, e.g. ``"onnxruntime"`` or ``"tensorrt"``.
        min_version (str, optional): smallest accepted ``__version__``. Defaults to None (any version).
        extra (str, optional): the psdrt extra that installs it, named in the error message.
            Defaults to the ``EXTRAS`` entry of the top-level package.

    Returns:
        LazyModule: attribute access imports the module; ``.load()`` returns it; ``.available()``
        tests for it without raising.
    """
    return LazyModule(name, min_version, extra)
