"""``psdrt inspect``: what a file is (checkpoint), or what this machine can run."""

from __future__ import annotations

import importlib
import platform
from pathlib import Path

from ..errors import BackendUnavailable, InputError

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="describe a checkpoint (foundation model, size, head, licence) or the environment",
        description="Describe a checkpoint file, or with no argument the environment "
        "(which optional backends are importable and why not).",
    )
    p.add_argument("path", nargs="?", help="checkpoint (.pth/.pt/.ckpt); omit for the environment")
    p.set_defaults(func=run)


def _version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
        return getattr(mod, "__version__", "installed")
    except Exception as exc:  # report, never fail: this is a diagnostic
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def environment_report() -> str:
    from ... import __version__

    rows = [("psdrt", __version__), ("python", platform.python_version()), ("machine", platform.machine())]
    for name in ("numpy", "cv2", "torch", "onnx", "onnxruntime", "tensorrt"):
        rows.append((name, _version(name)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    problem = onnxruntime_conflict()
    if problem:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def onnxruntime_conflict(installed=None):
    """A message when both onnxruntime and onnxruntime-gpu are installed (they overwrite each other).

    Args:
        installed (set[str], optional): distribution names to check; defaults to the environment's.
    """
    if installed is None:
        from importlib import metadata

        installed = {d.metadata["Name"].lower() for d in metadata.distributions() if d.metadata["Name"]}
    if {"onnxruntime", "onnxruntime-gpu"} <= set(installed):
        return ("both onnxruntime and onnxruntime-gpu are installed and write the same package folder; "
                "keep one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'psdrt[cpu]' (or [gpu])")
    return None


def run(args) -> int:
    if not args.path:
        print(environment_report())
        return 0
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        try:
            from ...export.checkpoints import inspect_checkpoint
        except ImportError as exc:
            raise BackendUnavailable(
                f"reading checkpoints needs PyTorch ({exc}); install the CPU build: pip install torch"
            ) from None
        print(inspect_checkpoint(path).describe())
        return 0
    raise InputError(
        f"{path}: unknown file type {path.suffix!r}; psdrt inspect reads checkpoints "
        f"({', '.join(sorted(CHECKPOINT_SUFFIXES))}) or, with no argument, the environment"
    )
