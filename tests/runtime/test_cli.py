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
        assert img.shape == (500, 741, 3) and img.std() > 5  # a real picture, not a blank


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
