"""benchmarks.eval_report: the README Accuracy section is the render of the committed result files."""

from __future__ import annotations

import math

import pytest

from _support import REPO_ROOT
from psdrt.benchmarks.eval_report import RESULTS, main, render_accuracy, result_files, write_readme
from psdrt.benchmarks.readme_sections import section_body
from psdrt.runtime.evaluation import write_outputs
from psdrt.runtime.metrics import METRIC_KEYS

ENV = {"timestamp": "2031-02-03T04:05:06Z", "cpu_model": "Test CPU 9000", "cpu_cores": 4,
       "git": {"commit": "0123456789abcdef", "dirty": False}}


def _result(name, title, rows, shape=(10, 20), working=None, env=ENV):
    """A result as evaluate() returns it, with the summary given as {(pattern, config): (rmse, mae, d1)}."""
    patterns = list(dict.fromkeys(p for p, _ in rows))
    configs = list(dict.fromkeys(c for _, c in rows))
    summary = [{"pattern": p, "config": c, "frames": 2, "points": 5.0, "seconds": 0.5,
                **{k: 1.0 for k in METRIC_KEYS}, "rmse": v[0], "mae": v[1], "d1": v[2]}
               for (p, c), v in rows.items()]
    meta = {"dataset": {"dataset": name, "title": title, "frames": 2, "root": "/x", "working_size": working},
            "patterns": patterns, "seed": 7, "shapes": [list(shape)], "environment": env,
            "configs": [{"label": c} for c in configs]}
    return {"meta": meta, "rows": [], "summary": summary, "skipped": []}


def test_render_rows_say_what_where_when(tmp_path):
    other = _result("zz-other", "Other", {("random1", "guided"): (5.0, 2.0, 99.0)})
    write_outputs(other, tmp_path, "accuracy_zz-other")
    write_outputs(_result("middlebury", "Middlebury Motorcycle", {
        ("random1", "guided"): (182.63, 71.84, 98.156), ("random1", "ip_basic"): (312.4, 109.3, 95.42),
        ("harris", "guided"): (448.0, 263.3, 90.3), ("harris", "ip_basic"): (math.inf, 1.0, 1.0)},
        shape=(500, 741)), tmp_path, "accuracy_middlebury")
    assert [p.name for p in result_files(tmp_path)] == ["accuracy_middlebury.json", "accuracy_zz-other.json"]
    text = render_accuracy(tmp_path)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows[0] == "| data | sparse | guided | IP-Basic | measured |"
    when = "2031-02-03, Test CPU 9000, 4 cores, psdrt 0123456"
    assert rows[1] == (f"| Middlebury Motorcycle (2 frames, 500x741) | random 1 % | **182.6** / 71.8 / 98.16 | "
                       f"312.4 / 109.3 / 95.42 | {when} |")
    assert rows[2] == (f"| Middlebury Motorcycle (2 frames, 500x741) | Harris | 448.0 / 263.3 / 90.30 | "
                       f"inf / 1.0 / 1.00 | {when} |")  # a single finite RMSE is not "best"
    assert rows[3] == f"| Other (2 frames, 10x20) | random 1 % | 5.0 / 2.0 / 99.00 | – | {when} |"
    assert "seed 7" in text


def test_render_without_results_says_how_to_make_them(tmp_path):
    assert "python -m psdrt.benchmarks.bm_accuracy" in render_accuracy(tmp_path)


def test_write_readme_replaces_only_the_section(tmp_path):
    write_outputs(_result("middlebury", "M", {("random1", "guided"): (1.0, 1.0, 1.0)}), tmp_path, "accuracy_middlebury")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- psdrt:accuracy:begin -->\nold\n<!-- psdrt:accuracy:end -->\ntail\n")
    assert write_readme(tmp_path, readme) is True
    text = readme.read_text()
    assert section_body(text, "accuracy") == render_accuracy(tmp_path) and text.endswith("tail\n")
    assert write_readme(tmp_path, readme) is False
    assert main(["--results", str(tmp_path), "--readme", str(readme), "--check"]) == 0
    readme.write_text(text.replace("| M (", "| N ("))
    assert main(["--results", str(tmp_path), "--readme", str(readme), "--check"]) == 1


def test_readme_accuracy_section_equals_the_render():
    if not result_files(RESULTS):
        pytest.fail("benchmarks/results/accuracy_*.json are missing; run python -m psdrt.benchmarks.bm_accuracy")
    readme = (REPO_ROOT / "README.md").read_text()
    assert section_body(readme, "accuracy") == render_accuracy().strip("\n"), \
        "README Accuracy section is stale: run python -m psdrt.benchmarks.eval_report"
