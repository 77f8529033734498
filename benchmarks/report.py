"""The README's generated sections, rendered from the committed result files.

* Performance: every ``benchmarks/results/*.json`` in the harness schema (``psdrt-bench``, written by
  ``psdrt bench --out`` or ``benchmarks.bm_runtime``), one row per measured configuration, each
  saying what was measured, its latency, the PyTorch reference's where one was measured, on which
  machine and when (from the environment captured with the numbers).
* Accuracy: ``render_accuracy()`` of ``psdrt.benchmarks.eval_report`` when that module exists.

``python -m psdrt.benchmarks.report`` rewrites the sections between their markers
(``readme_sections.update_readme``); ``--check`` rewrites nothing and exits 1 when the README
differs from what the result files render to (a test runs the same check).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from psdrt.benchmarks import harness as H
from psdrt.benchmarks.readme_sections import README, section_body, update_readme

RESULTS = Path(__file__).resolve().parent / "results"
#: result files rendered first, in this order; other harness-schema files follow alphabetically
ORDER = ("runtime_cpu",)
#: who writes each known result file (named in the section)
WRITERS = {"runtime_cpu": "python -m psdrt.benchmarks.bm_runtime"}

_BACKENDS = {
    "c-session-cpu": "C session (ONNX Runtime CPU)", "c-session-cuda": "C session (ONNX Runtime CUDA)",
    "ort-cpu": "ONNX Runtime CPU", "ort-cuda": "ONNX Runtime CUDA", "ort-tensorrt": "ONNX Runtime TensorRT",
    "ort-auto": "ONNX Runtime", "kernels-cpu": "CPU kernel library", "torch": "PyTorch backends",
    "torch-reference": "PyTorch reference",
}


def result_files(results_dir=RESULTS) -> List[Path]:
    """Harness-schema result files in ``results_dir``, in section order (other JSON files are skipped)."""
    found = {}
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("schema") == H.SCHEMA:
            found[p.stem] = p
    return [found[n] for n in ORDER if n in found] + [found[n] for n in sorted(found) if n not in ORDER]


def _what(run: dict, gates: dict) -> str:
    p = run.get("params", {})
    mode, backend, prec = p.get("mode"), p.get("backend", ""), p.get("precision")
    be = _BACKENDS.get(backend, backend)
    if mode == "propagation":
        return f"propagation alone (alignment + dual-space propagation), {be}"
    if mode == "guided":
        return f"`guided` (no weights), {be}, end to end"
    text = f"`{mode}`, networks on {be} {str(prec).upper()}, end to end"
    size = p.get("size")
    g = gates.get(f"{size[0]}x{size[1]}", {}) if size else {}
    parts = ("encoder", "head") if mode == "psd" else ("encoder",)
    failed = [part for part in parts if g.get(f"{part}.{prec}.onnx", {}).get("passed") is False]
    if failed:
        text += f" ({' and '.join(failed)} failed the gate with random weights: latency only)"
    return text


def _size(run: dict) -> str:
    s = run.get("params", {}).get("size")
    return f"{s[0]}x{s[1]}" if s else "-"


def _measured(env: dict) -> str:
    git = env.get("git") or {}
    commit = f", psdrt {git['commit'][:7]}" if isinstance(git, dict) and git.get("commit") else ""
    cpu = f"{env.get('cpu_model') or 'unknown CPU'}, {env.get('cpu_cores') or '?'} cores"
    gpus = env.get("gpus") or []
    gpu = ", " + ", ".join(str(g.get("name")) for g in gpus) if gpus else ", no GPU"
    return f"{str(env.get('timestamp') or '?')[:10]}, {cpu}{gpu}{commit}"


def render_file(path: Path) -> str:
    """The Performance block of one result file."""
    doc = H.load_results(path)
    env = doc["environment"]
    ex = doc.get("extra") or {}
    gates = ex.get("gates") or {}
    shares = {s["run"]: s for s in ex.get("issue5") or []}
    base = {c["run"]: c for c in doc.get("comparisons", [])}
    runs = {r["name"]: r for r in doc["runs"]}
    ver = env.get("versions") or {}
    tools = ", ".join(f"{k} {ver[k]}" for k in ("onnxruntime", "torch") if ver.get(k))
    writer = WRITERS.get(path.stem, "psdrt bench --out")
    threads = ex.get("threads")
    lines = [
        f"Measured by `{writer}` ({doc.get('title') or 'psdrt bench'}); every number and the full per-stage "
        f"tables are in `benchmarks/results/{path.stem}.md`. {tools}"
        + (f", {threads} threads" if threads else "") + ". Latency is p50 over the timed frames "
        "(percentiles by linear interpolation); speed-up = PyTorch reference p50 / psdrt p50; \"outside the "
        "networks\" = share of the mean frame time not spent in the encoder/head inference.",
        "",
        "| what was measured | size | p50 ms | PyTorch reference p50 ms | speed-up | outside the networks | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    load0, load1 = (env.get("load_avg") or [None])[0], (ex.get("load_avg_end") or [None])[0]
    if load0 is not None:
        lines[0] += (f" Load average (1 min) {load0}" + (f" at the start, {load1} at the end" if load1 is not None else "")
                     + f" on {env.get('cpu_cores') or '?'} cores: above about 1, other jobs shared the CPU and the "
                     "numbers are inflated (the PyTorch reference more than psdrt, so the ratios too).")
    when = _measured(env)
    for r in doc["runs"]:
        if r["params"].get("backend") == "torch-reference":
            continue
        c = base.get(r["name"])
        ref = runs.get(c["baseline"]) if c else None
        s = shares.get(r["name"])
        lines.append(
            f"| {_what(r, gates)} | {_size(r)} | {r['total']['p50_ms']:.1f} | "
            f"{'-' if ref is None else format(ref['total']['p50_ms'], '.1f')} | "
            f"{'-' if not c or c.get('total') is None else format(c['total'], '.2f') + 'x'} | "
            f"{'-' if s is None else format(100 * s['share_outside'], '.1f') + ' %'} | {when} |")
    if shares:
        over = [s for s in shares.values() if not s["meets_target"] and not s["run"].startswith("reference")]
        ok = [s for s in shares.values() if s["meets_target"] and not s["run"].startswith("reference")]
        def where(s):
            part, ms = max(s["outside_ms"].items(), key=lambda kv: kv[1])
            return f"{s['run']} {100 * s['share_outside']:.1f} % ({part} {ms:.1f} of {s['outside_mean_ms']:.1f} ms)"

        verdict = ("all psdrt variants meet it" if not over else
                   f"{len(ok)} of {len(ok) + len(over)} psdrt variants meet it; over: " + ", ".join(map(where, over)))
        lines += ["", f"Issue 5 target, at most 10 % of the frame time outside the two network inferences "
                  f"(CPU, ViT-S, 228x304): {verdict}."]
    ctx = ex.get("propagation_in_context") or {}
    if ctx:
        cells = [f"{name} {v['call_wall_ms']:.1f} ms" + (f" (thread CPU {v['call_cpu_ms']:.1f})"
                                                          if v.get("call_cpu_ms") is not None else "")
                 for name, v in ctx.items()]
        lines += ["", "The propagation kernel call, p50 per frame inside each pipeline and alone: " + "; ".join(cells)
                  + "."]
    plots = sorted((Path(path).parent / "plots").glob(f"{path.stem}_*.png"))
    if plots:
        lines += [""] + [f"![{p.stem}](benchmarks/results/plots/{p.name})" for p in plots]
    return "\n".join(lines)


def render_performance(results_dir=RESULTS) -> str:
    """Markdown of the Performance section (a note naming the script when there are no results)."""
    files = result_files(results_dir)
    if not files:
        return ("No performance results yet: run `python -m psdrt.benchmarks.bm_runtime` "
                "(writes `benchmarks/results/runtime_cpu.json`).")
    return "\n\n".join(render_file(p) for p in files)


def _accuracy_renderer() -> Optional[Callable[..., str]]:
    """``eval_report.render_accuracy`` when that module exists (None otherwise; a broken one raises)."""
    name = f"{__package__ or 'psdrt.benchmarks'}.eval_report"
    if importlib.util.find_spec(name) is None:
        return None
    return getattr(importlib.import_module(name), "render_accuracy", None)


def render_logs(results_dir=RESULTS) -> str:
    """Markdown of the many-frames section (``bm_logs``: psdrt run, run --bag, batch)."""
    from psdrt.benchmarks.bm_logs import RESULT_STEM, render_table

    p = Path(results_dir) / f"{RESULT_STEM}.json"
    if not p.is_file():
        return f"No results yet: run `python -m psdrt.benchmarks.bm_logs` (writes `benchmarks/results/{p.name}`)."
    return render_table(json.loads(p.read_text()))


def render_sections(results_dir=RESULTS) -> Dict[str, str]:
    """``{section name: body}`` of every section this module can render."""
    out = {"performance": render_performance(results_dir), "logs": render_logs(results_dir)}
    acc = _accuracy_renderer()
    if acc is not None:
        out["accuracy"] = acc(results_dir)
    return out


def stale_sections(results_dir=RESULTS, readme: Path = README) -> List[str]:
    """Names of the README sections that differ from their render."""
    text = Path(readme).read_text()
    return [name for name, body in render_sections(results_dir).items()
            if section_body(text, name) != body.strip("\n")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Render the README Performance (and Accuracy) sections from "
                                 "benchmarks/results/")
    ap.add_argument("--results", default=str(RESULTS), help="results folder (default benchmarks/results)")
    ap.add_argument("--readme", default=str(README), help="README to update (default the repository's)")
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 when a section differs from the render of the results")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_sections(args.results, Path(args.readme))
        if stale:
            print(f"README section(s) {', '.join(stale)} differ from benchmarks/results: run "
                  "python -m psdrt.benchmarks.report", file=sys.stderr)
            return 1
        print("README generated sections are up to date")
        return 0
    for name, body in render_sections(args.results).items():
        changed = update_readme(name, body, Path(args.readme))
        print(f"README {name} section {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
