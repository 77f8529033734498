"""Configuration read from ``PSD_*`` environment variables: the only module that reads ``os.environ``.

Every variable is read through one small typed parser, at call time (not import time), so that a
test or an embedding application can change the environment and see the effect immediately.

Variables:
    PSD_SHARED_DATA: folder holding the shared ``kitti/`` and ``nyu/`` development frames.
        Defaults to ``../shared/data`` beside the repository checkout when that folder exists.
    PSD_NUM_THREADS: integer 1..1024, CPU threads for NumPy/OpenCV-side work. Defaults to unset
        (each library's own default).
    PSD_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, CRITICAL (case-insensitive). Defaults to WARNING.
"""

from __future__ import annotations

import os
from pathlib import Path

from psdrt.runtime.errors import InputError

__all__ = ["LOG_LEVELS", "MAX_THREADS", "shared_data_dir", "num_threads", "log_level"]

#: the most CPU threads any psdrt option accepts (ONNX Runtime intra-op threads, PSD_NUM_THREADS,
#: psd_session_options.intra_op_threads): more is a typo, and ONNX Runtime would try to start them
MAX_THREADS = 1024

#: accepted values of PSD_LOG_LEVEL, in increasing severity
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The repository root is the package folder; the shared data sits beside the checkout.
_DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _env_str(name: str) -> str | None:
    """Return the stripped value of ``name``, or None when it is unset or empty."""
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _env_int(name: str, default: int | None, minimum: int = 1, maximum: int | None = None) -> int | None:
    """Parse ``name`` as an integer in [``minimum``, ``maximum``]; ``default`` when unset. Bad values raise
    InputError."""
    raw = _env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(
            f"{name}={raw!r} is not an integer; set it to a whole number >= {minimum} or unset it"
        ) from None
    if value < minimum:
        raise InputError(f"{name}={value} is below {minimum}; set it to a whole number >= {minimum} or unset it")
    if maximum is not None and value > maximum:
        raise InputError(f"{name}={value} is above {maximum}; set it to a whole number <= {maximum} or unset it")
    return value


def _env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """Parse ``name`` as one of ``choices`` (case-insensitive, returned upper-case); ``default`` when unset."""
    raw = _env_str(name)
    if raw is None:
        return default
    value = raw.upper()
    if value not in choices:
        raise InputError(f"{name}={raw!r} is not one of {', '.join(choices)}; set one of those or unset it")
    return value


def _env_path(name: str) -> Path | None:
    """Parse ``name`` as a filesystem path (``~`` expanded); None when unset. Existence is not checked."""
    raw = _env_str(name)
    return Path(raw).expanduser() if raw is not None else None


def shared_data_dir() -> Path | None:
    """Folder of the shared development frames, or None when it cannot be found.

    Returns:
        Path | None: ``$PSD_SHARED_DATA`` if set (returned even if it does not exist, so that the
        caller's error can name it), else ``../shared/data`` beside the checkout if it exists, else None.
    """
    path = _env_path("PSD_SHARED_DATA")
    if path is not None:
        return path
    return _DEFAULT_SHARED_DATA if _DEFAULT_SHARED_DATA.is_dir() else None


def num_threads() -> int | None:
    """CPU thread count requested through ``PSD_NUM_THREADS``.

    Returns:
        int | None: a positive thread count, or None when unset (use the libraries' defaults).
    """
    return _env_int("PSD_NUM_THREADS", None, minimum=1, maximum=MAX_THREADS)


def log_level() -> str:
    """Logging level requested through ``PSD_LOG_LEVEL``.

    Returns:
        str: one of ``LOG_LEVELS``. Defaults to ``"WARNING"``.
    """
    return _env_choice("PSD_LOG_LEVEL", LOG_LEVELS, "WARNING")
