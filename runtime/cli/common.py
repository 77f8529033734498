"""Helpers shared by the ``psdrt`` subcommands: one size syntax (``HxW``), output folders.

Every size on the command line is written ``HxW`` (height first, e.g. ``228x304``) and printed the
same way; every output folder is checked before anything is computed, so that a path naming an
existing file ends in a typed error that names the fix instead of a ``FileExistsError`` traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError

__all__ = ["parse_size", "format_size", "check_out_dir"]


def parse_size(text, flag: str = "--size", minimum: int = 1) -> tuple[int, int]:
    """``"228x304"`` -> ``(228, 304)``: the one size syntax of the ``psdrt`` command.

    Args:
        text (str | Sequence): ``"HxW"`` (``x`` or ``X``, surrounding blanks ignored); a pair of
            integers is accepted too (the old ``psdrt calibrate --size H W`` form, unambiguous
            because its order is fixed: height, then width).
        flag (str): the option named in the error. Defaults to "--size".
        minimum (int): the smallest side accepted. Defaults to 1.

    Returns:
        tuple[int, int]: (H, W).

    Raises:
        InputError: anything else; the message shows the HxW form.
    """
    if isinstance(text, (list, tuple)):
        parts = [str(t) for t in text]
        if len(parts) == 1:
            return parse_size(parts[0], flag, minimum)
        if len(parts) != 2:
            raise InputError(f"{flag} {' '.join(parts)!r}: write the size as HxW (height x width), e.g. 228x304")
        joined = "x".join(parts)
    else:
        joined = str(text)
    try:
        h, w = (int(v.strip()) for v in joined.strip().lower().split("x"))
    except ValueError:
        raise InputError(f"{flag} {joined!r}: write the size as HxW (height x width), e.g. 228x304") from None
    if h < minimum or w < minimum:
        raise InputError(f"{flag} {h}x{w}: both sides must be at least {minimum} pixels (HxW, e.g. 228x304)")
    return h, w


def format_size(size: Optional[Sequence[int]]) -> str:
    """``(228, 304)`` -> ``"228x304"`` (``"any size"`` for None)."""
    if size is None:
        return "any size"
    return f"{int(size[0])}x{int(size[1])}"


def check_out_dir(path, flag: str = "--out") -> Path:
    """Check that ``path`` can be (or already is) an output folder, before any work is done.

    Raises:
        InputError: ``path`` or one of its parents is an existing file (not a folder).
    """
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            what = "is an existing file, not a folder" if q == p else f"cannot be created: {q} is a file"
            raise InputError(f"{flag} {p} {what}; pass a folder path (created if missing), or move the "
                             "file out of the way")
    return p
