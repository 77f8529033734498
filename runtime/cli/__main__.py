"""The ``psdrt`` command: thin subcommands over library functions.

Each subcommand lives in its own module and registers itself through ``add_parser``. A subcommand
whose optional dependency is missing still shows up in ``psdrt -h``; running it prints why it is
unavailable and how to fix it (exit code 4). Errors raised by psdrt map to their ``exit_code``;
``exit_code_table()`` lists them (``psdrt --help`` prints it), built from ``runtime.errors`` so that
the table and the codes cannot drift apart.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import errors as _errors
from ..errors import PsdError

#: subcommand name -> module under psdrt.runtime.cli
SUBCOMMANDS = {
    "demo": "demo",
    "inspect": "inspect_cmd",
    "calibrate": "calibrate",
    "build": "build_cmd",
    "run": "run_cmd",
    "batch": "batch_cmd",
    "bench": "bench_cmd",
    "eval": "eval_cmd",
}


#: exit codes that are not an error class: success, Ctrl-C
_OTHER_CODES = {0: "success", 130: "interrupted (Ctrl-C)"}
#: what the command-line user reads for each error class (default: the class docstring's first line)
_MEANING = {
    "PsdError": "another psdrt error (e.g. non-finite output), or a failed `psdrt build` step; "
                "a Python traceback instead of an 'error:' line is a bug: please report it",
    "InputError": "bad input or usage: a file, flag, size, dtype, depth or K the command cannot use "
                  "(InputError, ShapeError; argparse usage errors too)",
    "CheckpointError": "a checkpoint is missing, corrupt, unsafe (refused pickle) or does not match the model",
    "BackendUnavailable": "an optional dependency (torch, onnx, onnxruntime, TensorRT, matplotlib, the "
                          "kernel library) is missing or unusable; the message names the install command",
    "ArtifactError": "a built artefact (build directory, ONNX file, engine) is missing, corrupt, mismatched "
                     "or failed its correctness gate",
}


def exit_code_table() -> list[tuple[int, str]]:
    """(code, meaning) of every exit code of ``psdrt``, from the error classes' own ``exit_code``."""
    codes: dict[int, list[str]] = {}
    for name, cls in vars(_errors).items():
        if isinstance(cls, type) and issubclass(cls, PsdError) and "exit_code" in vars(cls):
            doc = _MEANING.get(name) or (cls.__doc__ or name).strip().splitlines()[0].rstrip(".")
            first = doc.split()[0] if doc.split() else ""
            if len(first) == 1 or not first.isupper():  # "A frame ..." -> "a frame ...", "INT8 ..." stays
                doc = doc[0].lower() + doc[1:]
            codes.setdefault(int(cls.exit_code), []).append(f"{doc} [{name}]")
    rows = [(0, _OTHER_CODES[0])]
    rows += [(code, "; ".join(codes[code])) for code in sorted(codes)]
    rows.append((130, _OTHER_CODES[130]))
    return rows


def _epilog() -> str:
    import textwrap

    lines = ["exit codes:"]
    for code, text in exit_code_table():
        lines += textwrap.wrap(text, 96, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
    lines += ["  `psdrt run` over a folder continues past bad frames and exits with the first failed frame's code;",
              "  `psdrt batch` too, and lists them in <out>/failures.jsonl.",
              "", "Sizes are written HxW everywhere (height x width, e.g. 228x304)."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from ... import __version__

    parser = argparse.ArgumentParser(
        prog="psdrt",
        description="psdrt: dense metric depth from RGB + sparse depth (PSD), built for deployment.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"psdrt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
            mod.add_parser(sub)
        except Exception as exc:  # a broken optional dependency must not break `psdrt -h`
            p = sub.add_parser(name, help=f"unavailable: {exc}")
            p.set_defaults(func=_unavailable(name, exc))
    return parser


def _unavailable(name, exc):
    def run(_args):
        print(f"psdrt {name} is unavailable: {exc}", file=sys.stderr)
        return _errors.BackendUnavailable.exit_code

    return run


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
