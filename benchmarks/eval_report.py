"""The README's Accuracy section, rendered from ``benchmarks/results/accuracy_*.json``.

``render_accuracy()`` returns the markdown (one row per dataset and sparse pattern, each saying
what was measured, on which machine and when); ``write_readme()`` puts it between
``<!-- psdrt:accuracy:begin -->`` and ``<!-- psdrt:accuracy:end -->``. ``benchmarks.bm_accuracy``
calls it after measuring, and ``benchmarks.report`` includes it in the full report.

Usage: python -m psdrt.benchmarks.eval_report [--results DIR] [--check]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from psdrt.benchmarks.readme_sections import README, section_body, update_readme
from psdrt.runtime.evaluation import format_metric, read_result

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "accuracy"
#: row order of the datasets in the table; others follow alphabetically
ORDER = ("middlebury", "nyu-shared", "kitti-shared")
_CONFIG_NAMES = {"guided": "guided", "ip_basic": "IP-Basic", "nearest": "nearest"}
_PATTERN_NAMES = {"random1": "random 1 %", "random0.1": "random 0.1 %", "pseudo_hole": "pseudo-hole",
                  "harris": "Harris", "stored": "stored"}


def result_files(results_dir=RESULTS) -> list[Path]:
    """The ``accuracy_*.json`` files, in table order."""
    files = {p.stem[len("accuracy_"):]: p for p in Path(results_dir).glob("accuracy_*.json")}
    names = [n for n in ORDER if n in files] + sorted(n for n in files if n not in ORDER)
    return [files[n] for n in names]


def _machine(env: dict) -> str:
    cpu = env.get("cpu_model") or env.get("cpu") or "unknown CPU"
    cores = env.get("cpu_cores") or env.get("cores")
    gpus = env.get("gpus") or []
    gpu = ", " + ", ".join(str(g.get("name")) for g in gpus) if gpus else ""
    return f"{cpu}, {cores} cores{gpu}" if cores else f"{cpu}{gpu}"


def _commit(env: dict) -> str:
    git = env.get("git") or {}
    commit = git.get("commit") if isinstance(git, dict) else None
    return f", psdrt {commit[:7]}" if commit else ""


def _date(env: dict) -> str:
    stamp = str(env.get("timestamp") or env.get("date") or "?")
    return stamp[:10]


def _data_cell(ds: dict, shape: str) -> str:
    return f"{ds['title']} ({ds['frames']} frame{'s' if ds['frames'] != 1 else ''}, {shape})"


def render_accuracy(results_dir=RESULTS) -> str:
    """Markdown of the Accuracy section from the result files (empty-results note if there are none)."""
    files = result_files(results_dir)
    if not files:
        return ("No accuracy results yet: run `python -m psdrt.benchmarks.bm_accuracy` "
                "(writes `benchmarks/results/accuracy_*.json`).")
    results = [read_result(p) for p in files]
    labels: list[str] = []
    for r in results:
        for c in r["meta"]["configs"]:
            if c["label"] not in labels:
                labels.append(c["label"])
    seeds = sorted({r["meta"]["seed"] for r in results})
    lines = [
        "Measured by `python -m psdrt.benchmarks.bm_accuracy` with the `psdrt eval` engine; full metrics "
        "(iRMSE, iMAE, REL, δ2, δ3) and per-frame rows are in `benchmarks/results/accuracy_*.{md,csv,json}`. "
        "Each cell is RMSE / MAE in mm and δ1 in %, the mean over frames of the per-frame values (official "
        "definitions and evaluation masks); lowest RMSE in bold. Sparse inputs are generated from the ground "
        f"truth, seeded per frame (seed {', '.join(map(str, seeds))}); frames are at PSD's working sizes. "
        "`psd` and `propagate` rows are absent: no trained PSD checkpoint is available here, and random "
        "weights give meaningless accuracy.",
        "",
        "| data | sparse | " + " | ".join(_CONFIG_NAMES.get(lb, lb) for lb in labels) + " | measured |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    for r in results:
        meta = r["meta"]
        ds = meta["dataset"]
        env = meta.get("environment") or {}
        size = ds.get("working_size")
        shape = f"{size[0]}x{size[1]}" if size else _stored_shape(r)
        measured = f"{_date(env)}, {_machine(env)}{_commit(env)}"
        for pattern in meta["patterns"]:
            sel = {s["config"]: s for s in r["summary"] if s["pattern"] == pattern}
            rmses = [float(s["rmse"]) for s in sel.values() if math.isfinite(float(s["rmse"]))]
            best = min(rmses) if len(rmses) > 1 else None
            cells = []
            for lb in labels:
                s = sel.get(lb)
                if s is None:
                    cells.append("–")
                    continue
                rmse = format_metric("rmse", s["rmse"])
                if best is not None and float(s["rmse"]) == best:
                    rmse = f"**{rmse}**"
                cells.append(f"{rmse} / {format_metric('mae', s['mae'])} / {format_metric('d1', s['d1'])}")
            lines.append(f"| {_data_cell(ds, shape)} | {_PATTERN_NAMES.get(pattern, pattern)} | "
                         + " | ".join(cells) + f" | {measured} |")
    return "\n".join(lines)


def _stored_shape(result: dict) -> str:
    shapes = {tuple(s) for s in (result["meta"].get("shapes") or [])}
    if len(shapes) == 1:
        h, w = next(iter(shapes))
        return f"{h}x{w}"
    return "stored size"


def write_readme(results_dir=RESULTS, readme: Path = README) -> bool:
    """Rewrite the README Accuracy section from ``results_dir``; True when the file changed."""
    return update_readme(SECTION, render_accuracy(results_dir), readme)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--readme", default=str(README))
    ap.add_argument("--check", action="store_true", help="exit 1 when the README section differs from the render")
    args = ap.parse_args(argv)
    if args.check:
        same = section_body(Path(args.readme).read_text(), SECTION) == render_accuracy(args.results).strip("\n")
        print("README Accuracy section is up to date" if same else "README Accuracy section is stale: run "
              "python -m psdrt.benchmarks.eval_report")
        return 0 if same else 1
    changed = write_readme(args.results, Path(args.readme))
    print(f"README Accuracy section {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
