"""Generated README sections: text between ``<!-- psdrt:NAME:begin -->`` and ``<!-- psdrt:NAME:end -->``.

The Performance and Accuracy sections of the README are written from result files by the
benchmark scripts, never by hand. ``replace_section`` swaps one section's body; ``section_body``
reads it back (the tests compare it with what the result files render to).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lower-case letters, digits, '-' or '_'")
    return f"<!-- psdrt:{name}:begin -->", f"<!-- psdrt:{name}:end -->"


def section_body(text: str, name: str) -> str:
    """The body of section ``name`` in ``text`` (without the marker lines)."""
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise KeyError(f"README has no generated section {name!r} (markers {begin} ... {end})")
    return text[i + len(begin) : j].strip("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the body of section ``name`` replaced by ``body``."""
    begin, end = _markers(name)
    section_body(text, name)  # raises when the markers are missing
    i, j = text.find(begin), text.find(end)
    return text[: i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


def update_readme(name: str, body: str, readme: Path = README) -> bool:
    """Rewrite section ``name`` of ``readme``; returns True when the file changed."""
    old = readme.read_text()
    new = replace_section(old, name, body)
    if new != old:
        readme.write_text(new)
    return new != old
