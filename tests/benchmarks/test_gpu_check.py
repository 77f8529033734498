"""The prepared GPU check, as a dry run on the CPU (``--emulated``): every step runs or says why
not, the report files are written, and the goals are judged from the p50s. The real run needs a
GPU (``python -m psdrt.benchmarks.gpu_check --out DIR``); nothing of it is a GPU number here."""

from __future__ import annotations

import json

import pytest

from psdrt import build
from psdrt.benchmarks import gpu_check


@pytest.mark.slow
def test_dry_run_writes_a_complete_report(tmp_path):
    pytest.importorskip("torch")
    # the default build folder: CI has built both libraries there, so the build step only checks
    rc = gpu_check.main(["--out", str(tmp_path), "--emulated", "--build-dir", str(build.DEFAULT_BUILD_DIR),
                         "--tests", "-k sparse_pool"])
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = doc["steps"]
    assert rc == 0, steps
    assert doc["schema"] == "psdrt-gpu-check" and doc["emulated"] is True
    assert steps["build"]["status"] == "passed" and steps["build"]["archs"] == "emulated"
    assert steps["cuda_tests"]["status"] == "passed" and steps["cuda_tests"]["passed"] >= 2
    for tool in ("memcheck", "racecheck"):
        assert steps[tool]["status"] == "skipped" and steps[tool]["why"]
    assert steps["timings"]["status"] == "passed"
    assert steps["session"]["status"] == "passed" and steps["session"]["runs"] == 3
    names = {r["name"] for r in doc["runs"] if r.get("kind") != "session"}
    assert names == {"propagation tiny", "guided tiny", "psd frame tiny"}
    session = [r for r in doc["runs"] if r.get("kind") == "session"]
    assert [(r["params"]["frames"], r["params"]["cuda_graph"]) for r in session] == [
        ("host", False), ("device", False), ("device", True)]
    assert session[2]["params"]["graph"]["state"] == "ready"
    for r in doc["runs"]:
        assert r["total"]["p50_ms"] > 0 and r["iters"] == 3
    frame = next(r for r in doc["runs"] if r["name"] == "psd frame tiny")
    assert set(frame["stages"]) >= {"preprocess", "encoder", "propagation", "head", "post"}
    assert doc["environment"]["git"]["commit"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in md and "| timings | passed |" in md


def test_goals_are_judged_from_the_p50():
    runs = [{"params": {"what": "propagation", "size": "NYU"}, "total": {"p50_ms": 0.4}},
            {"params": {"what": "propagation", "size": "KITTI"}, "total": {"p50_ms": 2.5}},
            {"params": {"what": "guided", "size": "NYU"}, "total": {"p50_ms": 9.0}}]
    assert gpu_check.goals(runs) == [
        {"what": "propagation", "size": "NYU", "p50_ms": 0.4, "goal_ms": 0.5, "met": True},
        {"what": "propagation", "size": "KITTI", "p50_ms": 2.5, "goal_ms": 2.0, "met": False}]


def test_a_step_over_budget_or_after_a_failed_build_is_skipped_with_the_reason(tmp_path):
    c = gpu_check.Check(tmp_path, emulated=True, budget_s=0.0)
    c.steps["build"] = {"status": "failed", "why": "nvcc not found", "seconds": 0.0}
    c.step("cuda_tests", lambda: {"status": "passed"}, needs=("build",))
    assert c.steps["cuda_tests"] == {"status": "skipped", "why": "needs build", "seconds": 0.0}
    c.step("timings", lambda: {"status": "passed"})
    assert c.steps["timings"]["status"] == "skipped" and "budget" in c.steps["timings"]["why"]
    c.budget_s = 1e9
    c.step("boom", lambda: 1 / 0)
    assert c.steps["boom"]["status"] == "failed" and "ZeroDivisionError" in c.steps["boom"]["why"]
