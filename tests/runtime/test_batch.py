"""psdrt batch (runtime.batch) on a local Ray: same files as psdrt run, resumable after SIGKILL, failures
recorded, dataset layouts. One Ray per module (2 CPUs); the killed job connects to it with --address."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from PIL import Image  # noqa: E402

from psdrt.runtime import batch  # noqa: E402
from psdrt.runtime.cli.__main__ import main  # noqa: E402
from psdrt.runtime.errors import InputError  # noqa: E402
from psdrt.runtime.outputs import FORMATS  # noqa: E402

FMTS = list(FORMATS)[:4]  # the default npy,png16,color,ply


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _frames(root: Path, n: int, hw=(24, 32), seed=0):
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True)
    (root / "sparse").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, hw + (3,), dtype=np.uint8)).save(root / "rgb" / f"{i:04d}.png")
        sp = np.zeros(hw, np.float32)
        m = rng.random(hw) < 0.08
        sp[m] = rng.uniform(0.5, 8.0, int(m.sum()))
        np.save(root / "sparse" / f"{i:04d}.npy", sp)
    (root / "K.txt").write_text(f"{hw[1]} {hw[1]} {hw[1] / 2} {hw[0] / 2}\n")
    return root


def _outputs(out: Path, stem: str):
    return batch.frame_outputs(out, stem, FMTS)


@pytest.fixture(scope="module")
def frames200(tmp_path_factory):
    return _frames(tmp_path_factory.mktemp("b200"), 200)


def test_two_hundred_frames_equal_psdrt_run(ray_cluster, frames200, tmp_path):
    d, out = frames200, tmp_path / "out"
    lines = []
    s = batch.run_batch(out, rgb=str(d / "rgb"), sparse=str(d / "sparse"), intrinsics=str(d / "K.txt"),
                        progress=lines.append)
    assert (s["frames"], s["done"], s["skipped"], s["failed"]) == (200, 200, 0, 0)
    assert s["exit_code"] == 0 and s["frames_per_second"] > 0 and "guided" in s["stage_ms"]
    assert s["mode"] == "guided" and s["actors"] == 2
    assert json.loads((out / "summary.json").read_text())["done"] == 200
    assert (out / "failures.jsonl").read_text() == ""
    assert sum(ln.startswith("[") and "/200]" in ln for ln in lines) == 200  # one progress line per frame
    for i in range(200):
        assert all(p.is_file() for p in _outputs(out, f"{i:04d}"))
    assert not (out / batch.TMP_DIR).exists()
    # psdrt run on a sample of 10 frames (a folder of links to them): the same bytes
    sample = [f"{i:04d}" for i in range(0, 200, 20)]
    sub = tmp_path / "sub"
    for kind, ext in (("rgb", ".png"), ("sparse", ".npy")):
        (sub / kind).mkdir(parents=True)
        for stem in sample:
            os.symlink(d / kind / f"{stem}{ext}", sub / kind / f"{stem}{ext}")
    ref = tmp_path / "ref"
    assert main(["run", "--rgb", str(sub / "rgb"), "--sparse", str(sub / "sparse"), "--intrinsics",
                 str(d / "K.txt"), "--out", str(ref)]) == 0
    for stem in sample:
        for a, b in zip(_outputs(ref, stem), _outputs(out, stem)):
            assert a.read_bytes() == b.read_bytes(), b
    # a second run schedules nothing and changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.glob("*_depth.npy")}
    s2 = batch.run_batch(out, rgb=str(d / "rgb"), sparse=str(d / "sparse"), intrinsics=str(d / "K.txt"))
    assert (s2["done"], s2["skipped"], s2["actors"]) == (0, 200, 0)
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*_depth.npy")}


def _done_frames(out: Path, n: int) -> dict:
    done = {}
    for i in range(n):
        files = _outputs(out, f"{i:04d}")
        if all(p.is_file() for p in files):
            done[f"{i:04d}"] = {p: p.stat().st_mtime_ns for p in files}
    return done


def _cli(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "psdrt.runtime.cli", "batch", *args], env


def test_sigkill_then_restart_resumes_without_redoing(ray_cluster, tmp_path):
    n = 40
    d = _frames(tmp_path / "in", n, hw=(120, 160), seed=1)
    out = tmp_path / "out"
    args = ["--rgb", str(d / "rgb"), "--sparse", str(d / "sparse"), "--intrinsics", str(d / "K.txt"),
            "--out", str(out), "--address", ray_cluster, "--actors", "1", "--batch-size", "1", "--quiet"]
    cmd, env = _cli(args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    try:
        while len(_done_frames(out, n)) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() - t0 < 60, "no output within 60 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Ray ends the dead driver's actor; wait until no more files appear
    snap = _done_frames(out, n)
    for _ in range(40):
        time.sleep(0.5)
        now = _done_frames(out, n)
        if now == snap:
            break
        snap = now
    assert 4 <= len(snap) < n, len(snap)
    # a frame with only some of its files (as a kill between two renames leaves it) is not done
    half = sorted(snap)[0]
    _outputs(out, half)[-1].unlink()
    del snap[half]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert (s["frames"], s["failed"], s["skipped"], s["done"]) == (n, 0, len(snap), n - len(snap))
    after = _done_frames(out, n)
    assert len(after) == n
    for stem, files in snap.items():  # not redone
        assert after[stem] == files, stem
    expected = {p.name for i in range(n) for p in _outputs(out, f"{i:04d}")} | {"failures.jsonl", "summary.json"}
    assert {p.name for p in out.iterdir()} == expected  # no temporary or partial file left
    assert f"{s['done']} frame(s) completed, {s['skipped']} skipped" in res.stdout


def test_corrupt_frame_is_recorded_and_the_rest_complete(ray_cluster, tmp_path, monkeypatch):
    d = _frames(tmp_path / "in", 6, seed=2)
    png = d / "rgb" / "0003.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # relative paths: the Ray workers' working directory is another one
    rc = main(["batch", "--rgb", "in/rgb", "--sparse", "in/sparse", "--intrinsics", "in/K.txt", "--out", "out",
               "--quiet"])
    assert rc == InputError.exit_code  # the first failed frame's code, as psdrt run over a folder
    s = json.loads((out / "summary.json").read_text())
    assert (s["done"], s["failed"], s["skipped"], s["exit_code"]) == (5, 1, 0, InputError.exit_code)
    recs = [json.loads(ln) for ln in (out / "failures.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["stem"] == "0003" and recs[0]["rgb"] == str(png)
    assert "truncated" in recs[0]["error"] and recs[0]["exit_code"] == InputError.exit_code
    assert not any(p.exists() for p in _outputs(out, "0003"))
    assert all(p.is_file() for i in (0, 1, 2, 4, 5) for p in _outputs(out, f"{i:04d}"))
    # fixed, a rerun completes only that frame and clears the failure list
    Image.open(d / "rgb" / "0002.png").save(png)
    assert main(["batch", "--rgb", str(d / "rgb"), "--sparse", str(d / "sparse"), "--intrinsics",
                 str(d / "K.txt"), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["done"], s["failed"], s["skipped"]) == (1, 0, 5)
    assert (out / "failures.jsonl").read_text() == ""


def test_dataset_layout_runs_through_the_same_job(ray_cluster, tmp_path):
    from psdrt.runtime.datasets import open_dataset, sample_sparse

    out = tmp_path / "out"
    s = batch.run_batch(out, dataset="middlebury", pattern="random1", formats="npy,png16")
    assert (s["frames"], s["done"], s["failed"]) == (1, 1, 0)
    reader = open_dataset("middlebury")
    stem = reader.entries[0].name
    files = batch.frame_outputs(out, stem, ["npy", "png16"])
    assert all(p.is_file() for p in files)
    # psdrt run on the same frame written to files (PNG RGB, float .npy sparse, the 3x3 K) writes the same
    # bytes, with the dataset's preset
    smp = reader[0]
    d = tmp_path / "frame"
    d.mkdir()
    Image.fromarray(smp.rgb).save(d / f"{stem}.png")
    np.save(d / f"{stem}.npy", sample_sparse(smp, "random1", 0))
    (d / "K.txt").write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in smp.K) + "\n")
    ref = tmp_path / "ref"
    assert main(["run", "--rgb", str(d / f"{stem}.png"), "--sparse", str(d / f"{stem}.npy"), "--intrinsics",
                 str(d / "K.txt"), "--preset", reader.key, "--formats", "npy,png16", "--out", str(ref)]) == 0
    for a, b in zip(batch.frame_outputs(ref, stem, ["npy", "png16"]), files):
        assert a.read_bytes() == b.read_bytes(), b
    # a dataset without stored sparse files needs --pattern
    with pytest.raises(InputError, match="--pattern"):
        batch.run_batch(tmp_path / "o2", dataset="middlebury")


def test_psd_val_layout_folder(ray_cluster, tmp_path):
    # a one-dataset PSD-val folder (rgb/, depth/, sparse/, intrinsics/) of the VOID reader, 16-bit PNGs / 256
    rng = np.random.default_rng(3)
    root = tmp_path / "void"
    for sub in ("rgb", "depth", "sparse", "intrinsics"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "rgb" / f"f{i}.png")
        gt = (rng.uniform(0.5, 4.0, (24, 32)) * 256).astype(np.uint16)
        Image.fromarray(gt).save(root / "depth" / f"f{i}.png")
        sp = np.where(rng.random((24, 32)) < 0.1, gt, 0).astype(np.uint16)
        Image.fromarray(sp).save(root / "sparse" / f"f{i}.png")
        (root / "intrinsics" / f"f{i}.txt").write_text("30 0 16 0 30 12 0 0 1\n")
    out = tmp_path / "out"
    s = batch.run_batch(out, dataset="void", root=str(root), formats="npy")
    assert (s["frames"], s["done"], s["failed"]) == (3, 3, 0), (out / "failures.jsonl").read_text()
    assert all((out / f"f{i}_depth.npy").is_file() for i in range(3))


def test_options_are_checked_before_ray_work(ray_cluster, tmp_path):
    with pytest.raises(TypeError, match="unknown option"):
        batch.run_batch(tmp_path, rgbs="x")
    with pytest.raises(InputError, match="--dataset"):
        batch.run_batch(tmp_path, dataset="middlebury", pattern="random1", rgb=str(tmp_path))
    with pytest.raises(InputError, match="give the frames"):
        batch.run_batch(tmp_path)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match="is an existing file, not a folder"):
        batch.run_batch(tmp_path / "taken", dataset="middlebury", pattern="random1")


def test_point_cloud_folder_equals_psdrt_run(ray_cluster, tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "rgb").mkdir()
    (tmp_path / "pts").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "rgb" / f"p{i}.png")
        z = rng.uniform(1.0, 6.0, 300)
        xyz = np.stack([rng.uniform(-0.5, 0.5, 300) * z, rng.uniform(-0.4, 0.4, 300) * z, z], 1)
        np.save(tmp_path / "pts" / f"p{i}.npy", xyz.astype(np.float32))
    (tmp_path / "K.txt").write_text("32 32 16 12\n")
    flags = ["--rgb", str(tmp_path / "rgb"), "--points", str(tmp_path / "pts"), "--extrinsics", "identity",
             "--intrinsics", str(tmp_path / "K.txt"), "--formats", "npy,ply", "--guided-kind", "scan"]
    assert main(["batch", *flags, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert main(["run", *flags, "--out", str(tmp_path / "ref")]) == 0
    for i in range(5):
        for a, b in zip(batch.frame_outputs(tmp_path / "ref", f"p{i}", ["npy", "ply"]),
                        batch.frame_outputs(tmp_path / "out", f"p{i}", ["npy", "ply"])):
            assert a.read_bytes() == b.read_bytes(), b
