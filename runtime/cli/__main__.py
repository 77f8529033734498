"""The ``psdrt`` command: thin subcommands over library functions.

Each subcommand lives in its own module and registers itself through ``add_parser``. A subcommand
whose optional dependency is missing still shows up in ``psdrt -h``; running it prints why it is
unavailable and how to fix it (exit code 4). Errors raised by psdrt map to their ``exit_code``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import PsdError

#: subcommand name -> module under psdrt.runtime.cli
SUBCOMMANDS = {
    "demo": "demo",
    "inspect": "inspect_cmd",
    "calibrate": "calibrate",
    "build": "build_cmd",
    "run": "run_cmd",
    "bench": "bench_cmd",
    "eval": "eval_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psdrt",
        description="psdrt: dense metric depth from RGB + sparse depth (PSD), built for deployment.",
    )
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
        return 4

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
