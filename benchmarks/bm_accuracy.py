"""Accuracy of the weight-free ``guided`` mode and the classical baselines, with ``psdrt eval``'s engine.

Datasets: the built-in Middlebury Motorcycle frame (always), and the shared KITTI and NYUv2 frames
(``kitti-shared``, ``nyu-shared``, when ``../shared/data`` or ``$PSD_SHARED_DATA`` is present) at
PSD's working sizes (KITTI 256x1216 bottom crop, NYUv2 228x304). Sparse inputs: the four evaluation
patterns generated from the ground truth (random 1 %, random 0.1 %, pseudo-hole, Harris), seeded
per frame from ``--seed``. Configurations: ``guided``, ``ip_basic``, ``nearest``.

``psd`` and ``propagate`` are not run: no trained PSD checkpoint is available on our machines, and
random weights give meaningless accuracy.

Writes ``benchmarks/results/accuracy_<dataset>.{json,csv,md}`` and rewrites the README's Accuracy
section from them (``benchmarks.eval_report``).

Usage: python -m psdrt.benchmarks.bm_accuracy [--data DIR] [--out DIR] [--seed N] [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from psdrt.runtime import config
from psdrt.runtime.datasets import open_dataset
from psdrt.runtime.evaluation import environment, evaluate, parse_configs, summary_markdown, write_outputs
from psdrt.runtime.patterns import PATTERNS

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = ("guided", "ip_basic", "nearest")


def datasets(data_dir):
    """(name, reader) pairs: Middlebury always, the shared frames when present."""
    out = [("middlebury", open_dataset("middlebury"))]
    if data_dir is not None and Path(data_dir).is_dir():
        out += [(name, open_dataset(name, root=data_dir)) for name in ("nyu-shared", "kitti-shared")]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None,
                    help="shared KITTI/NYU frames (default: $PSD_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README Accuracy section")
    args = ap.parse_args(argv)
    data = Path(args.data) if args.data else config.shared_data_dir()
    configs = parse_configs(list(CONFIGS))
    env = environment()
    for name, reader in datasets(data):
        print(f"== {name}: {len(reader)} frame(s)", file=sys.stderr)
        result = evaluate(reader, configs, patterns=list(PATTERNS), seed=args.seed, env=env,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
        write_outputs(result, args.out, f"accuracy_{name}")
        print(summary_markdown(result))
    if not args.no_readme:
        from psdrt.benchmarks.eval_report import write_readme

        changed = write_readme(Path(args.out))
        print(f"README Accuracy section {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
