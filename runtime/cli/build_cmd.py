"""``psdrt build``: the kernel libraries, or (with ``--checkpoint``) a deployable directory.

Every argument goes to ``build.py``'s own parser (``psdrt.build.main``), so ``psdrt build`` and
``python build.py`` take the same flags; ``psdrt.build`` is imported only when the command runs
(style G19), and torch only when an artefact must be exported.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    # prefix "+" so that every flag, -h included, reaches build.py's parser untouched
    p = sub.add_parser(
        "build", add_help=False, prefix_chars="+",
        help="kernel libraries; with --checkpoint, one directory of ONNX/engines + manifest.json "
        "(psdrt build -h for the flags)",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args) -> int:
    from psdrt.build import main

    return main(list(args.args), prog="psdrt build")
