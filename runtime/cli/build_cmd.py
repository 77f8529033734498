"""``psdrt build``: the kernel libraries, or (with ``--checkpoint``) a deployable directory.

Every argument goes to ``build.py``'s own parser (``psdrt.build.main``), so ``psdrt build`` and
``python build.py`` take the same flags; ``psdrt.build`` is imported only when the command runs
(style G19), and torch only when an artefact must be exported. Before that, the output folders are
checked (an existing *file* given as ``--out`` is a typed error, exit 2), and ``psdrt build -h``
ends with how to build for one's own camera.
"""

from __future__ import annotations

import argparse

#: printed after build.py's help: the frame size of a build is the camera's
CAMERA_SIZE_HELP = """\
building for your own camera:
  A deployable directory runs frames of exactly the working size it was built for, so build it
  for the frames you will feed it: --size HxW = your camera's frame size (height x width, after
  any crop or resize you apply before psdrt), e.g. for a 720x1280 camera:
      psdrt build --checkpoint checkpoint_000044.ckpt --size 720x1280 --target cpu --out psd_cam
  The encoder input follows from it (both sides >= 392, multiples of 14). `psdrt run --artifacts
  DIR` refuses frames of another size unless --fit resize|crop adapts them (accuracy is best at
  the built size). `psdrt inspect DIR` prints the size a directory was built for.
"""


def add_parser(sub) -> None:
    # prefix "+" so that every flag, -h included, reaches build.py's parser untouched
    p = sub.add_parser(
        "build", add_help=False, prefix_chars="+",
        help="kernel libraries; with --checkpoint, one directory of ONNX/engines + manifest.json for "
        "frames of --size HxW (your camera's frame size; psdrt build -h for the flags)",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def check_output_paths(argv) -> None:
    """Refuse output folders that are existing files before build.py starts (it would end in a
    ``FileExistsError`` traceback after minutes of work).

    Raises:
        InputError: ``--out`` (with ``--checkpoint``), ``--build-dir``, ``--install`` or ``--triton``
            names a file.
    """
    from .common import check_out_dir

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--checkpoint")
    pre.add_argument("--out", default="psdrt_artifacts")
    pre.add_argument("--build-dir")
    pre.add_argument("--install", "--prefix", dest="install")
    pre.add_argument("--triton")
    known, _ = pre.parse_known_args(list(argv))
    if known.checkpoint:
        check_out_dir(known.out, "--out")
    if known.build_dir:
        check_out_dir(known.build_dir, "--build-dir")
    if known.install:
        check_out_dir(known.install, "--install")
    if known.triton:
        check_out_dir(known.triton, "--triton")


def run(args) -> int:
    argv = list(args.args)
    if any(a in ("-h", "--help") for a in argv):
        from psdrt.build import main

        try:
            main(["-h"], prog="psdrt build")
        except SystemExit:
            pass
        print()
        print(CAMERA_SIZE_HELP, end="")
        return 0
    check_output_paths(argv)
    from psdrt.build import main

    return main(argv, prog="psdrt build")
