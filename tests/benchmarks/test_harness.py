"""psdrt.benchmarks.harness / plots / report and the ``psdrt bench`` command."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import time
import types

import numpy as np
import pytest

from _support import REPO_ROOT
from psdrt.benchmarks import harness as H
from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError

# ------------------------------------------------------------------------------------------------
# statistics


@pytest.mark.parametrize("values, q, want", [
    ([1, 2, 3, 4], 50, 2.5),                      # position 1.5: halfway between 2 and 3
    (list(range(1, 11)), 90, 9.1),                # position 8.1: 9 + 0.1 * (10 - 9)
    (list(range(1, 11)), 99, 9.91),               # position 8.91
    ([7, 1, 3], 50, 3.0),                         # unsorted input; odd n: the middle sample
    ([5.0], 99, 5.0),                             # one sample: every percentile is that sample
    ([10, 20, 30, 40], 0, 10.0),
    ([10, 20, 30, 40], 100, 40.0),
    ([10, 20, 30, 40], 25, 17.5),                 # position 0.75
])
def test_percentile_hand_computed(values, q, want):
    assert H.percentile(values, q) == pytest.approx(want, abs=1e-12)


def test_percentile_equals_numpy_linear():
    rng = np.random.default_rng(3)
    for n in (2, 3, 17, 100):
        x = rng.exponential(5.0, n)
        for q in (1, 50, 90, 99, 37.5):
            assert H.percentile(x, q) == pytest.approx(float(np.percentile(x, q)), rel=1e-12)


def test_percentile_rejects_bad_input():
    with pytest.raises(InputError, match="no samples"):
        H.percentile([], 50)
    with pytest.raises(InputError, match=r"outside \[0, 100\]"):
        H.percentile([1.0], 101)
    with pytest.raises(InputError, match="NaN/Inf"):
        H.percentile([1.0, float("nan")], 50)


def test_summarize():
    s = H.summarize([10.0, 20.0, 30.0, 40.0])
    assert set(s) == set(H.STAT_KEYS)
    assert s["n"] == 4 and s["mean_ms"] == 25.0 and s["min_ms"] == 10.0 and s["max_ms"] == 40.0
    assert s["std_ms"] == pytest.approx(math.sqrt(500.0 / 3.0))  # sample std (ddof=1)
    assert s["p50_ms"] == 25.0 and s["p90_ms"] == pytest.approx(37.0) and s["p99_ms"] == pytest.approx(39.7)
    assert s["fps"] == pytest.approx(40.0)
    assert H.summarize([3.0])["std_ms"] == 0.0


class ScriptedClock:
    """A clock whose stop() returns scripted durations, so that measure()'s statistics are exact."""

    name = "scripted"

    def __init__(self, durations):
        self.durations = list(durations)

    def start(self):
        return None

    def stop(self, _token):
        return self.durations.pop(0)


def test_measure_statistics_stages_and_other():
    calls = []
    stage_of = [{"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 2.0}, {"a": 3.0, "b": 3.0}]

    def fn():
        calls.append(1)
        i = len(calls) - 3  # the first 2 calls are warm-up
        return stage_of[i] if i >= 0 else {"a": 99.0, "b": 99.0}

    m = H.measure(fn, warmup=2, iters=3, stage_timings=lambda st: st, clock=ScriptedClock([4.0, 5.0, 9.0]),
                  name="x", params={"size": [2, 3]})
    assert len(calls) == 5
    assert m.samples_ms == [4.0, 5.0, 9.0] and m.total["p50_ms"] == 5.0 and m.total["mean_ms"] == 6.0
    assert m.stages["a"]["mean_ms"] == 2.0 and m.stages["b"]["p50_ms"] == 2.0
    # other = total - sum(stages) per iteration: 1, 1, 3
    assert m.stages["other"]["mean_ms"] == pytest.approx(5.0 / 3.0) and m.stages["other"]["max_ms"] == 3.0
    assert list(m.stages) == ["a", "b", "other"] and m.clock == "scripted" and m.params == {"size": [2, 3]}


def test_measure_real_clock_and_errors():
    m = H.measure(lambda: time.sleep(0.003), warmup=0, iters=3)
    assert m.clock == "perf_counter" and 3.0 <= m.total["min_ms"] < 200.0 and m.stages == {}
    with pytest.raises(InputError, match="iters"):
        H.measure(lambda: None, iters=0)
    with pytest.raises(InputError, match="clock"):
        H.measure(lambda: None, clock="sundial")
    with pytest.raises(InputError, match="NaN/Inf"):
        H.measure(lambda: None, iters=1, stage_timings=lambda _: {"a": float("inf")})


def test_cuda_clock_without_a_gpu_is_a_clean_error():
    from psdrt.runtime import _cuda

    try:
        _cuda.device_count()
        pytest.skip("a CUDA device is usable here")
    except BackendUnavailable:
        pass
    with pytest.raises(BackendUnavailable):
        H.measure(lambda: None, iters=1, clock="cuda")


def test_measure_interleaved_spreads_samples():
    order = []
    cases = [{"name": "fast", "fn": lambda: order.append("f"), "params": {"k": 1}},
             {"name": "slow", "fn": lambda: order.append("s"), "iters": 3, "warmup": 0}]
    fast, slow = H.measure_interleaved(cases, warmup=1, iters=6, block=2, settle=1)
    assert (fast.iters, slow.iters) == (6, 3) and fast.params == {"k": 1}
    # warm-up f; 3 rounds: settle + 2 samples of fast, then settle + 1 sample of slow
    assert "".join(order) == "f" + "fffss" * 3
    assert H._spread(5, 4) == [1, 1, 1, 2] and sum(H._spread(20, 4)) == 20
    assert fast.memory["peak_scope"] in ("interleaved group", "process")


def test_timed_calls_splits_and_restores():
    mod = types.SimpleNamespace(inner=lambda: time.sleep(0.002), outer=None)
    mod.outer = lambda: (mod.inner(), time.sleep(0.002))
    orig_inner, orig_outer = mod.inner, mod.outer
    sink = {}
    with H.timed_calls([(mod, "outer", "A"), (mod, "inner", "B")], sink):
        mod.outer()  # inner is nested inside outer: counted once, in A
        mod.inner()
    assert set(sink) == {"A", "B"} and sink["A"] >= 4.0 and 2.0 <= sink["B"] < sink["A"]
    assert mod.inner is orig_inner and mod.outer is orig_outer


# ------------------------------------------------------------------------------------------------
# memory and environment


def _fresh_pages(mib):
    """``mib`` MiB of newly mapped, written pages: an anonymous mmap, so that no allocator can hand
    back pages that earlier tests freed and that are still resident (np.ones did, after a long run)."""
    import mmap

    m = mmap.mmap(-1, mib * 2**20)
    np.frombuffer(m, np.uint8)[::4096] = 1  # touch every page
    return m


def test_rss_capture_sees_an_allocation():
    before = H.rss_mb()
    assert before is not None and before > 10
    block = _fresh_pages(64)
    after = H.rss_mb()
    assert after - before > 50
    assert H.peak_rss_mb() >= after - 1
    block.close()
    keep = []
    m = H.measure(lambda: keep.append(_fresh_pages(40)), warmup=1, iters=5)
    assert m.memory["rss_growth_mb"] > 150 and m.memory["peak_rss_mb"] >= m.memory["rss_end_mb"] - 1
    assert m.memory["peak_scope"] in ("measurement", "process")


def test_capture_environment_keys():
    env = H.capture_environment()
    for key in ("timestamp", "cpu_model", "cpu_cores", "cpu_affinity", "machine", "os", "python", "versions",
                "ort_providers", "gpus", "cuda", "jetson", "load_avg", "git", "psdrt_threads"):
        assert key in env, key
    assert dt.datetime.fromisoformat(env["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert env["cpu_cores"] == os.cpu_count() and env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["versions"]["numpy"] == np.__version__
    if env["versions"]["onnxruntime"]:
        assert "CPUExecutionProvider" in env["ort_providers"]
    assert isinstance(env["gpus"], list)
    if env["git"] is not None:
        assert len(env["git"]["commit"]) == 40 and isinstance(env["git"]["dirty"], bool)
    json.dumps(env)  # plain JSON


def test_environment_gpu_and_jetson_probes(monkeypatch):
    outputs = {
        ("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"):
            "NVIDIA Orin, 540.3.0, 7620 MiB",
        ("nvidia-smi",): "| NVIDIA-SMI 540.3.0   Driver Version: 540.3.0   CUDA Version: 12.6     |",
        ("nvpmodel", "-q"): "NV Power Mode: MAXN\n0",
        ("jetson_clocks", "--show"): None,
    }
    monkeypatch.setattr(H, "_run_text", lambda cmd, timeout=5.0: outputs.get(tuple(cmd)))
    monkeypatch.setattr(H, "_first_line_of", lambda cmd, timeout=3.0: "RAM 2000/7620MB GR3D_FREQ 0%")
    env = H.capture_environment(ort_providers=False)
    assert env["gpus"] == [{"name": "NVIDIA Orin", "driver": "540.3.0", "memory": "7620 MiB"}]
    assert env["cuda"] == "12.6"
    assert env["jetson"] == {"nvpmodel": "NV Power Mode: MAXN\n0", "jetson_clocks": None,
                             "tegrastats": "RAM 2000/7620MB GR3D_FREQ 0%"}
    assert "NVIDIA Orin (driver 540.3.0)" in H.machine_summary(env) and "MAXN" in H.machine_summary(env)


# ------------------------------------------------------------------------------------------------
# result files and markdown

ENV = {"timestamp": "2031-02-03T04:05:06Z", "cpu_model": "Test CPU", "cpu_cores": 4, "os": "Linux",
       "python": "3.11.7", "versions": {"numpy": "2.0", "onnxruntime": "1.20"}, "gpus": [], "load_avg": [0.5],
       "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}}


def _runs():
    a = H.measure(lambda: {"enc": 6.0, "prop": 1.0}, 0, 2, stage_timings=lambda s: s,
                  clock=ScriptedClock([8.0, 8.0]), name="rt", params={"mode": "psd", "size": [228, 304],
                                                                      "precision": "fp32", "backend": "ort-cpu"})
    b = H.measure(lambda: {"enc": 30.0, "prop": 9.0}, 0, 2, stage_timings=lambda s: s,
                  clock=ScriptedClock([40.0, 40.0]), name="ref", params={"mode": "psd", "size": [228, 304],
                                                                         "backend": "torch-reference"})
    return a, b


def test_results_round_trip_and_schema(tmp_path):
    a, b = _runs()
    doc = H.new_results([a, b], ENV, title="t", comparisons=[H.ratios(a.to_dict(), b.to_dict())], notes=["n1"])
    paths = H.save_results(doc, tmp_path, "x")
    back = H.load_results(paths["json"])
    assert back == json.loads(json.dumps(doc))
    assert back["schema"] == H.SCHEMA and back["schema_version"] == H.SCHEMA_VERSION
    assert H.Measurement.from_dict(back["runs"][0]) == a
    bad = dict(back, schema_version=H.SCHEMA_VERSION + 1)
    with pytest.raises(ArtifactError, match="schema_version"):
        H.validate_results(bad)
    broken = json.loads(json.dumps(back))
    del broken["runs"][1]["total"]["p99_ms"]
    with pytest.raises(ArtifactError, match="p99_ms"):
        H.validate_results(broken)
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        H.load_results(tmp_path / "junk.json")
    with pytest.raises(ArtifactError, match="not a psdrt benchmark result"):
        H.validate_results({"schema": "other"})


def test_ratios_and_markdown():
    a, b = _runs()
    r = H.ratios(a.to_dict(), b.to_dict())
    assert r["total"] == 5.0 and r["stages"] == {"enc": 5.0, "prop": 9.0}  # 'other' is not compared
    table = H.markdown_table([a.to_dict()]).splitlines()
    assert table[0].startswith("| run | size | p50 ms | p90 ms | p99 ms | mean ms | min ms | std ms | fps |")
    assert table[2].startswith("| rt | 228x304 | 8.0 | 8.0 | 8.0 | 8.0 | 8.0 | 0.0 | 125.00 | ")
    st = H.stage_table([a.to_dict(), b.to_dict()]).splitlines()
    assert st[0] == "| run | enc p50 ms | prop p50 ms | other p50 ms | end-to-end p50 ms |"
    assert st[2] == "| rt | 6.0 (75 %) | 1.0 (12 %) | 1.0 (12 %) | 8.0 |"
    assert st[3] == "| ref | 30.0 (75 %) | 9.0 (22 %) | 1.0 (2 %) | 40.0 |"
    ct = H.comparison_table([r]).splitlines()
    assert ct[2] == "| rt | ref | 5.00x | 5.00x | 9.00x |"
    md = H.render_markdown(H.new_results([a, b], ENV, title="T", comparisons=[r], notes=["hello"]))
    assert md.startswith("# T\n") and "Test CPU (4 cores), no GPU; 2031-02-03" in md and "- hello" in md


# ------------------------------------------------------------------------------------------------
# plots


def _png_ok(path):
    from PIL import Image

    assert path.is_file() and 3_000 < path.stat().st_size < 100_000
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150


def _run(name, size, p50, stages=None, **params):
    tot = {"n": 3, "mean_ms": p50, "std_ms": 0.0, "min_ms": p50, "max_ms": p50, "p50_ms": p50,
           "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.2, "fps": 1000 / p50}
    st = {k: dict(tot, mean_ms=v, p50_ms=v) for k, v in (stages or {}).items()}
    return {"name": name, "params": {"size": list(size), **params}, "total": tot, "stages": st}


def test_plots_draw_the_input_data(tmp_path):
    pytest.importorskip("matplotlib")
    from psdrt.benchmarks import plots as P

    runs = [_run("a", (228, 304), 100.0, {"preprocess": 10.0, "encoder": 70.0, "other": 20.0}),
            _run("b", (228, 304), 50.0, {"preprocess": 5.0, "encoder": 40.0, "other": 5.0})]
    fig = P.plot_stage_breakdown(runs, tmp_path / "stages.png")
    _png_ok(tmp_path / "stages.png")
    bars = {c.get_label(): [p.get_width() for p in c.patches] for c in fig.axes[0].containers}
    assert bars == {"preprocess": [10.0, 5.0], "encoder": [70.0, 40.0], "other": [20.0, 5.0]}
    lefts = [p.get_x() for p in fig.axes[0].containers[2].patches]
    assert lefts == [80.0, 45.0]  # stacked: other starts after preprocess + encoder

    res = [_run("g1", (256, 1216), 300.0, series="guided"), _run("g0", (228, 304), 60.0, series="guided"),
           _run("p0", (228, 304), 800.0, series="psd")]
    fig = P.plot_latency_vs_resolution(res, tmp_path / "res.png")
    _png_ok(tmp_path / "res.png")
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in fig.axes[0].get_lines()}
    assert lines["guided"][0] == pytest.approx([228 * 304 / 1e6, 256 * 1216 / 1e6])
    assert lines["guided"][1] == [60.0, 300.0] and lines["psd"][1] == [800.0]

    prec = [_run("f32", (228, 304), 800.0, precision="fp32", mode="psd"),
            _run("i8", (228, 304), 400.0, precision="int8", mode="psd"),
            _run("pf32", (228, 304), 500.0, precision="fp32", mode="propagate")]
    fig = P.plot_precision_comparison(prec, tmp_path / "prec.png")
    _png_ok(tmp_path / "prec.png")
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in fig.axes[0].containers}
    assert heights == {"fp32": [800.0, 500.0], "int8": [400.0, 0.0]}
    assert "2.00x" in [t.get_text() for t in fig.axes[0].texts]  # speed-up of int8 over fp32


def test_plots_without_matplotlib_name_the_extra(monkeypatch, tmp_path):
    from psdrt.benchmarks import plots as P
    from psdrt.runtime._lazy import lazy_import

    monkeypatch.setattr(P, "_mpl", lazy_import("matplotlib_not_installed_here", extra="bench"))
    with pytest.raises(BackendUnavailable, match=r"psdrt\[bench\]"):
        P.plot_stage_breakdown([_run("a", (8, 8), 1.0)], tmp_path / "x.png")


# ------------------------------------------------------------------------------------------------
# psdrt bench


def test_psdrt_bench_guided_writes_json_md_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from psdrt.runtime.cli.__main__ import main

    out = tmp_path / "bench"
    rc = main(["bench", "--size", "48x64,64x96", "--warmup", "1", "--iters", "2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "| guided kernels-cpu fp32 48x64 | 48x64 |" in printed.out and "timed" in printed.err
    doc = H.load_results(out / "bench.json")
    assert [r["params"]["size"] for r in doc["runs"]] == [[48, 64], [64, 96]]
    for r in doc["runs"]:
        assert r["iters"] == 2 and r["warmup"] == 1 and r["params"]["mode"] == "guided"
        assert set(r["stages"]) == {"guided", "other"} and r["total"]["p50_ms"] > 0
        assert r["stages"]["guided"]["mean_ms"] <= r["total"]["mean_ms"]
    assert doc["environment"]["cpu_cores"] == os.cpu_count()
    assert (out / "bench.md").read_text() == H.render_markdown(doc)
    for png in ("bench_stages.png", "bench_resolution.png"):
        _png_ok(out / png)
    assert not (out / "bench_precision.png").exists()  # one precision: no precision plot


def test_psdrt_bench_compare_reference_guided(tmp_path):
    pytest.importorskip("torch")
    from psdrt.runtime.cli import bench_cmd
    from psdrt.runtime.cli.__main__ import build_parser

    args = build_parser().parse_args(["bench", "--size", "48x64", "--warmup", "0", "--iters", "2",
                                      "--compare-reference"])
    doc = bench_cmd.run_bench(args)
    assert [r["params"]["backend"] for r in doc["runs"]] == ["torch-reference", "kernels-cpu"]
    (c,) = doc["comparisons"]
    ref, rt = doc["runs"]
    assert c["total"] == pytest.approx(ref["total"]["p50_ms"] / rt["total"]["p50_ms"])


@pytest.mark.parametrize("argv, code, text", [
    (["--mode", "psd"], 2, "needs weights"),
    (["--size", "12x40"], 2, "at least 16"),
    (["--size", "big"], 2, "write HxW"),
    (["--iters", "0"], 2, "--iters"),
    (["--artifacts", "/nonexistent/dir"], 5, "no manifest.json"),
])
def test_psdrt_bench_bad_flags(argv, code, text, capsys):
    from psdrt.runtime.cli.__main__ import main

    assert main(["bench", *argv]) == code
    assert text in capsys.readouterr().err


def test_psdrt_bench_latency_only_times_an_ungated_artefact_and_says_so(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from _tiny_artifacts import make_artifacts
    from psdrt.runtime.cli.__main__ import main

    d = make_artifacts(tmp_path / "ungated", gate_passed=False)
    base = ["bench", "--artifacts", str(d), "--warmup", "0", "--iters", "2"]
    assert main(base) == 5  # refused: the gate failed; the hint names the flag
    err = capsys.readouterr().err
    assert "failed the correctness gate" in err and "--latency-only" in err
    out = tmp_path / "b"
    assert main(base + ["--latency-only", "--out", str(out), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "FAILED the correctness gate" in err and "must not be deployed" in err
    doc = H.load_results(out / "bench.json")
    (run,) = doc["runs"]
    assert "NOT GATE-APPROVED" in run["name"] and run["params"]["gate_approved"] is False
    assert run["iters"] == 2 and run["total"]["p50_ms"] > 0
    assert doc["extra"]["skipped"] == [] and len(doc["extra"]["not_gate_approved"]) == 1
    # an approved directory carries no such mark
    ok = make_artifacts(tmp_path / "gated")
    assert main(["bench", "--artifacts", str(ok), "--warmup", "0", "--iters", "1", "--latency-only", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "gate_approved" not in doc["runs"][0]["params"] and "NOT" not in doc["runs"][0]["name"]


def test_bench_precisions_take_enc_plus_head():
    from psdrt.runtime.cli.bench_cmd import parse_precisions

    assert parse_precisions("fp32,int8+fp32") == ["fp32", "int8+fp32"]
    for bad in ("int9", "int8+", ""):
        with pytest.raises(InputError, match="int8\\+fp32"):
            parse_precisions(bad)


# ------------------------------------------------------------------------------------------------
# README


def test_report_check_and_update(tmp_path):
    from psdrt.benchmarks import report

    a, b = _runs()
    doc = H.new_results([a, b], ENV, title="T", comparisons=[H.ratios(a.to_dict(), b.to_dict())])
    H.save_results(doc, tmp_path, "runtime_cpu")
    (tmp_path / "other.json").write_text('{"rows": []}')  # not harness schema: ignored
    body = report.render_performance(tmp_path)
    rows = [ln for ln in body.splitlines() if ln.startswith("| ")]
    assert rows[1] == ("| `psd`, networks on ONNX Runtime CPU FP32, end to end | 228x304 | 8.0 | 40.0 | 5.00x | - | "
                       "2031-02-03, Test CPU, 4 cores, no GPU, psdrt 0123456 |")
    assert len(rows) == 2  # header + one row: the reference is a column, not a row
    share = {"run": "rt", "mode": "psd", "total_mean_ms": 8.0, "networks_mean_ms": 6.0, "outside_mean_ms": 2.0,
             "share_outside": 0.25, "outside_ms": {"prop": 1.0, "other": 1.0}, "meets_target": False}
    doc["extra"]["issue5"] = [share, dict(share, run="reference", meets_target=True)]
    H.save_results(doc, tmp_path, "runtime_cpu")
    body = report.render_performance(tmp_path)
    assert "| 228x304 | 8.0 | 40.0 | 5.00x | 25.0 % |" in body
    assert "0 of 1 psdrt variants meet it; over: rt 25.0 % (prop 1.0 of 2.0 ms)." in body
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- psdrt:performance:begin -->\nold\n<!-- psdrt:performance:end -->\n"
                      "<!-- psdrt:accuracy:begin -->\n<!-- psdrt:accuracy:end -->\n"
                      "<!-- psdrt:logs:begin -->\n<!-- psdrt:logs:end -->\n")
    argv = ["--results", str(tmp_path), "--readme", str(readme)]
    assert report.main(argv + ["--check"]) == 1
    assert report.main(argv) == 0
    assert report.main(argv + ["--check"]) == 0
    assert body in readme.read_text()


def test_readme_performance_section_equals_the_render():
    from psdrt.benchmarks import report
    from psdrt.benchmarks.readme_sections import section_body

    assert report.result_files(), \
        "benchmarks/results/runtime_cpu.json is missing: run python -m psdrt.benchmarks.bm_runtime"
    readme = (REPO_ROOT / "README.md").read_text()
    assert section_body(readme, "performance") == report.render_performance().strip("\n"), \
        "README Performance section is stale: run python -m psdrt.benchmarks.report"


def test_readme_logs_section_equals_the_render():
    from psdrt.benchmarks import report
    from psdrt.benchmarks.readme_sections import section_body

    assert (report.RESULTS / "logs_throughput_cpu.json").is_file(), "run python -m psdrt.benchmarks.bm_logs"
    readme = (REPO_ROOT / "README.md").read_text()
    assert section_body(readme, "logs") == report.render_logs().strip("\n"), \
        "README many-frames section is stale: run python -m psdrt.benchmarks.report"


def test_bench_guided_runs_without_torch(tmp_path):
    """From a fresh install with no weights and no PyTorch: the harness and `psdrt bench` (guided)."""
    import subprocess

    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import psdrt.benchmarks.harness, psdrt.benchmarks.plots, psdrt.benchmarks.report\n"
        "from psdrt.runtime.cli.__main__ import main\n"
        "rc = main(['bench', '--size', '48x64', '--warmup', '0', '--iters', '1', '--no-plots',\n"
        f"           '--out', {str(tmp_path)!r}])\n"
        "assert 'torch' not in sys.modules\n"
        "raise SystemExit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert H.load_results(tmp_path / "bench.json")["runs"][0]["params"]["mode"] == "guided"


def test_sample_ms_times_n_calls_after_untimed_warmup():
    from psdrt.benchmarks.harness import sample_ms

    calls = []

    def fn():
        calls.append(time.perf_counter())
        time.sleep(0.002 if len(calls) > 2 else 0.0)

    ts = sample_ms(fn, 3, warmup=2)
    assert len(calls) == 5 and len(ts) == 3
    assert all(t >= 2.0 for t in ts) and all(t < 1000.0 for t in ts)  # milliseconds, the sleeps only
