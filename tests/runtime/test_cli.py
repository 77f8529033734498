"""The psdrt command: demo (the README's main job), inspect, help without optional backends."""

import json
import subprocess
import sys

import numpy as np
import pytest

from psdrt.runtime.cli.__main__ import main
from psdrt.runtime.cli.demo import run_demo


@pytest.mark.parametrize("pattern", ["random1", "random0.1"])
def test_guided_beats_classical_fills_on_middlebury(tmp_path, pattern):
    res = run_demo(pattern, seed=0, out_dir=tmp_path)
    rows = res["rows"]
    assert rows["guided"]["rmse"] < rows["nearest"]["rmse"]
    assert rows["guided"]["rmse"] < rows["ip_basic"]["rmse"]
    # random patterns favour nearest-neighbour fill over IP-Basic (tuned for LiDAR rows)
    assert rows["nearest"]["rmse"] < rows["ip_basic"]["rmse"]
    expected_points = int({"random1": 0.01, "random0.1": 0.001}[pattern] * 500 * 741)
    assert res["points"] == expected_points


def test_demo_command_prints_table_and_writes_images(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "guided" in out and "ip_basic" in out and "nearest" in out and "RMSE mm" in out
    rows = json.loads(out[out.index("{"):])
    assert set(rows) == {"guided", "ip_basic", "nearest"}
    from PIL import Image

    for name in ("depth_guided.png", "error_guided.png"):
        img = np.asarray(Image.open(tmp_path / name))
        assert img.shape[0] == 500 and img.shape[1] > 741 and img.shape[2] == 3  # the frame + its colour bar
        assert img[:, :741].std() > 5  # a real picture, not a blank


def test_inspect_environment_and_errors(tmp_path, capsys):
    assert main(["inspect"]) == 0
    assert "numpy" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "missing.pth")]) == 2
    (tmp_path / "x.txt").write_text("hi")
    assert main(["inspect", str(tmp_path / "x.txt")]) == 2
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    assert main(["inspect", str(tmp_path / "bad.pth")]) == 3
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "psdrt.runtime.cli", "-h"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "inspect" in out.stdout


def test_onnxruntime_extras_conflict_is_reported():
    from psdrt.runtime.cli.inspect_cmd import onnxruntime_conflict

    assert onnxruntime_conflict({"onnxruntime", "numpy"}) is None
    msg = onnxruntime_conflict({"onnxruntime", "onnxruntime-gpu"})
    assert "keep one" in msg and "psdrt[cpu]" in msg


# ------------------------------------------------------------------------------ hardening (CLI issue)


def test_version_and_exit_code_table_in_help(capsys):
    from psdrt import __version__
    from psdrt.runtime import errors

    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0 and capsys.readouterr().out.strip() == f"psdrt {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "exit codes:" in help_text
    for cls in (errors.InputError, errors.CheckpointError, errors.BackendUnavailable, errors.ArtifactError,
                errors.CalibrationError):  # every code from the classes themselves
        assert f"  {cls.exit_code:<4} " in help_text and f"[{cls.__name__}]" in help_text
    assert "  0    success" in help_text and "  130  interrupted" in help_text and "HxW" in help_text
    assert "  7    a frame needs more memory" in help_text  # meanings start lower-case, "INT8 ..." stays
    assert "  6    INT8 calibration" in help_text


def test_readme_exit_code_table_lists_every_code_of_the_cli():
    import re
    from pathlib import Path

    from psdrt.runtime.cli.__main__ import exit_code_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("### Sizes and exit codes"):]
    table = table[:table.index("\n## ")]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", table, re.M))
    assert sorted(int(c) for c in rows) == [code for code, _ in exit_code_table()]
    for code, text in exit_code_table():  # each error class is named in its row
        for name in re.findall(r"\[(\w+)\]", text):
            assert f"`{name}`" in rows[str(code)], (code, name)


@pytest.mark.parametrize("command", [["demo"], ["demo", "--save-inputs"], ["build", "--checkpoint", "c.ckpt"],
                                     ["calibrate", "--export", "encoder", "--random-weights", "vits"],
                                     ["eval", "--dataset", "middlebury"], ["bench"]])
def test_out_naming_an_existing_file_is_a_typed_error(tmp_path, capsys, command):
    f = tmp_path / "taken"
    f.write_text("not a folder")
    flag = [] if command[-1] == "--save-inputs" else ["--out"]
    assert main(command + flag + [str(f)]) == 2  # used to end in a FileExistsError traceback
    err = capsys.readouterr().err
    assert "is an existing file, not a folder" in err and "pass a folder path" in err
    assert f.read_text() == "not a folder"
    assert main(command + flag + [str(f / "sub")]) == 2  # a parent that is a file
    assert f"cannot be created: {f} is a file" in capsys.readouterr().err


def test_build_help_says_how_to_build_for_your_camera(capsys):
    assert main(["build", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out  # build.py's own flags first
    assert "your camera's frame size" in out and "--size HxW" in out and "--fit resize|crop" in out


def test_demo_help_says_where_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "./psdrt_demo" in out and "--out DIR" in out


def test_calibrate_size_takes_hxw_and_the_old_pair():
    from psdrt.runtime.cli.common import parse_size
    from psdrt.runtime.errors import InputError

    parser_args = __import__("psdrt.runtime.cli.__main__", fromlist=["build_parser"]).build_parser()
    for given in (["228x304"], ["228", "304"]):
        args = parser_args.parse_args(["calibrate", "m.onnx", "--size", *given])
        assert parse_size(args.size) == (228, 304)
    for bad in (["228"], ["228", "304", "5"], ["228x"], ["axb"]):
        with pytest.raises(InputError, match="HxW"):
            parse_size(bad)


# ------------------------------------------------------------------------------ psdrt inspect


@pytest.fixture()
def tiny_dir(tmp_path):
    pytest.importorskip("onnx")
    from _tiny_artifacts import make_artifacts

    return make_artifacts(tmp_path / "deploy", size=(28, 42), fm_lower=28)


def test_inspect_build_directory(tiny_dir, capsys):
    assert main(["inspect", str(tiny_dir), "--verify"]) == 0
    out = capsys.readouterr().out
    for want in ("working size:    28x42", "encoder input:   28x42 (fm_lower 28)", "mode:            propagate",
                 "preset:          NYUv2", "'official': RGB uint8, scikit-image resize(order=3)", "ImageNet", "encoder.fp32.onnx", "passed", "1.50e-06",
                 "sha256 ok", "kB", f"psdrt run --artifacts {tiny_dir} --precision fp32"):
        assert want in out, want
    # a damaged copy shows up with --verify
    (tiny_dir / "encoder.fp32.onnx").write_bytes((tiny_dir / "encoder.fp32.onnx").read_bytes() + b"x")
    assert main(["inspect", str(tiny_dir / "manifest.json"), "--verify"]) == 0
    assert "SHA-256 MISMATCH" in capsys.readouterr().out
    empty = tiny_dir.parent / "empty"
    empty.mkdir()
    assert main(["inspect", str(empty)]) == 5
    assert "not a psdrt build directory" in capsys.readouterr().err
    # the preprocessing shown is the one the manifest records
    from _tiny_artifacts import make_artifacts

    bicubic = make_artifacts(tiny_dir.parent / "bicubic", size=(28, 42), fm_lower=28, preprocess="bicubic")
    assert main(["inspect", str(bicubic)]) == 0
    out = capsys.readouterr().out
    assert "'bicubic': RGB uint8 / 255, bicubic resize (a = -0.75" in out and "scikit-image" not in out


def test_inspect_onnx_file(tiny_dir, capsys, monkeypatch):
    path = tiny_dir / "encoder.fp32.onnx"
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for want in ("IR version:  8", "ai.onnx 17", "psdrt-test 0.1", "psdrt encoder", "rgb  1x3x28x42  float",
                 "rel_inv", "feat3    1x3x16x24  float", "kB"):
        assert want in out, want
    bad = tiny_dir / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    assert main(["inspect", str(bad)]) == 5
    assert "not a readable ONNX model" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["inspect", str(path)]) == 4
    assert "pip install onnx" in capsys.readouterr().err


def test_inspect_engine_reads_its_sidecar_without_tensorrt(tmp_path, capsys):
    from psdrt.runtime.manifest import EngineManifest, fingerprint, sha256_file, write_manifest

    engine = tmp_path / "encoder-fp16-0123456789abcdef.engine"
    engine.write_bytes(b"\0" * 2048)
    kw = dict(onnx_sha256="a" * 64, precision="fp16", shapes={"rgb": [1, 3, 392, 518]}, trt_version="10.13.0",
              compute_capability="8.7", builder_options={"workspace": 1 << 30})
    write_manifest(engine, EngineManifest(fingerprint=fingerprint(**kw), gpu_name="Orin", onnx_path="encoder.fp16.onnx",
                                          engine_sha256=sha256_file(engine), gate={"passed": True}, **kw))
    assert main(["inspect", str(engine), "--verify"]) == 0
    out = capsys.readouterr().out
    for want in ("TensorRT 10.13.0 on Orin (compute capability 8.7)", "precision:       fp16", "rgb 1x3x392x518",
                 "matches the manifest", "gate:            passed", '"workspace": 1073741824'):
        assert want in out, want
    lonely = tmp_path / "other.engine"
    lonely.write_bytes(b"\0")
    assert main(["inspect", str(lonely)]) == 5
    assert "has no manifest" in capsys.readouterr().err


def test_inspect_a_folder_named_like_a_checkpoint(tmp_path, capsys):
    pytest.importorskip("torch")
    d = tmp_path / "x.ckpt"
    d.mkdir()
    assert main(["inspect", str(d)]) == 3
    err = capsys.readouterr().err
    assert "is a directory" in err and "not found" not in err


# ------------------------------------------------------------------------------ psdrt eval plot


def test_eval_writes_an_rmse_bar_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from psdrt.benchmarks.plots import plot_eval_metric
    from psdrt.runtime.evaluation import read_result

    assert main(["eval", "--dataset", "middlebury", "--pattern", "random1,pseudo_hole", "--baselines", "--quiet",
                 "--out", str(tmp_path)]) == 0
    png = tmp_path / "eval_middlebury_rmse.png"
    assert str(png) in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = read_result(tmp_path / "eval_middlebury.json")
    fig = plot_eval_metric(result, tmp_path / "again.png")
    bars = {c.get_label(): [b.get_height() for b in c] for c in fig.axes[0].containers}
    want = {}
    for r in result["summary"]:
        want.setdefault(r["config"], []).append(float(r["rmse"]))
    assert set(bars) == {"guided", "ip_basic", "nearest"}
    for cfg, heights in bars.items():
        np.testing.assert_allclose(heights, want[cfg])
    assert "RMSE (mm)" in fig.axes[0].get_ylabel()


def test_eval_without_matplotlib_skips_the_plot_with_a_note(tmp_path, monkeypatch, caplog):
    from psdrt.benchmarks import plots
    from psdrt.runtime.errors import BackendUnavailable

    class Missing:
        def load(self):
            raise BackendUnavailable("matplotlib is not installed; install the [bench] extra")

    monkeypatch.setattr(plots, "_mpl", Missing())
    with caplog.at_level("WARNING"):
        assert main(["eval", "--dataset", "middlebury", "--pattern", "random1", "--quiet", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "eval_middlebury.csv").is_file() and not (tmp_path / "eval_middlebury_rmse.png").exists()
    assert any("psdrt[bench]" in r.getMessage() for r in caplog.records)
