"""Throughput of the three ways to complete many frames: ``psdrt run`` over a folder (one process),
``psdrt run --bag`` over a rosbag2 MCAP of the same frames, and ``psdrt batch`` (Ray Data, local
Ray) over the same folder; in guided mode and in psd mode (random-weight ViT-S artefacts: the
speed of the real model, meaningless depth).

Each command runs as a fresh process, as a user runs it, and is timed from start to exit (wall
clock), so its start-up (imports, loading the model, starting Ray) is included. Each command runs
over ``n`` and ``2n`` frames; reported per command:

* ``fps_total`` = frames / wall time of the ``2n`` run (what a user sees for this many frames);
* ``fps_steady`` = n / (wall(2n) - wall(n)): the rate once started, start-up cancelled out;
* ``startup_s`` = wall(n) - n / fps_steady: the fixed cost.

The commands are interleaved (run, bag, batch, run, bag, ...) over ``--repeats`` rounds and the
median wall time of each is used, so that load from other processes hits all alike. Frames: the
NYU frame 00000 of ../shared/data when present, else the embedded Middlebury frame, at 228x304
(the psd artefacts' working size), with a new random 1 % sparse pattern per frame (seeded).
Writes benchmarks/results/logs_throughput_cpu.{json,md}.

    python -m psdrt.benchmarks.bm_logs [--frames 150] [--psd-frames 6] [--repeats 2] [--no-psd]

Needs the ``ros`` and ``ray`` extras (rosbags writes the input bag; ``psdrt batch`` needs Ray),
and torch for the psd artefacts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
RESULT_STEM = "logs_throughput_cpu"
SIZE = (228, 304)
TOPICS = {"image": "/cam/image_raw", "info": "/cam/camera_info", "depth": "/cam/sparse_depth"}
STAMP0, DT = 1_700_000_000 * 10**9, 100_000_000


def _base_frame():
    from psdrt.export.gate import fit_frame
    from psdrt.runtime.config import shared_data_dir
    from psdrt.runtime.io import load_middlebury, load_shared_frame

    root = shared_data_dir()
    if root is not None and (Path(root) / "nyu" / "00000_rgb.jpg").is_file():
        frame, name = load_shared_frame(root, "NYUv2", "00000"), "NYUv2 00000"
    else:
        frame, name = load_middlebury(), "Middlebury Motorcycle"
    rgb, gt, K = fit_frame(frame, SIZE)
    return rgb, gt, K, name


def write_inputs(root: Path, n: int) -> dict:
    """``n`` frames as a folder (rgb/*.png, sparse/*.npy metres, K.txt) and as a rosbag2 MCAP
    (Image rgb8, CameraInfo, sparse depth Image 32FC1) with the same contents."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from psdrt.runtime.patterns import make_sparse
    from psdrt.runtime.visualize import write_png

    rgb, gt, K, _ = _base_frame()
    h, w = SIZE
    (root / "rgb").mkdir(parents=True)
    (root / "sparse").mkdir()
    np.savetxt(root / "K.txt", K)
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    bag = root / "bag"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as wr:
        c_img = wr.add_connection(TOPICS["image"], "sensor_msgs/msg/Image", typestore=ts)
        c_info = wr.add_connection(TOPICS["info"], "sensor_msgs/msg/CameraInfo", typestore=ts)
        c_sp = wr.add_connection(TOPICS["depth"], "sensor_msgs/msg/Image", typestore=ts)
        for i in range(n):
            stamp = STAMP0 + i * DT
            sparse = make_sparse("random1", rgb, gt, seed=i).astype(np.float32)
            name = f"{i:05d}"
            write_png(root / "rgb" / f"{name}.png", rgb)
            np.save(root / "sparse" / f"{name}.npy", sparse)
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                  nanosec=stamp % 10**9),
                                           frame_id="cam")
            img = T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                             step=3 * w, data=np.ascontiguousarray(rgb).reshape(-1))
            dep = T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding="32FC1", is_bigendian=0,
                                             step=4 * w, data=sparse.astype("<f4").view(np.uint8).reshape(-1))
            P = np.zeros((3, 4))
            P[:, :3] = K
            info = T["sensor_msgs/msg/CameraInfo"](
                header=hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
                k=np.asarray(K, np.float64).reshape(9), r=np.eye(3).reshape(9), p=P.reshape(12), binning_x=0,
                binning_y=0, roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                       do_rectify=False))
            wr.write(c_info, stamp, ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            wr.write(c_sp, stamp, ts.serialize_cdr(dep, "sensor_msgs/msg/Image"))
            wr.write(c_img, stamp, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return {"dir": root, "bag": bag, "K": root / "K.txt"}


def commands(inp: dict, out: Path, artifacts, threads: int) -> dict:
    """The three commands over the same frames (guided without ``artifacts``)."""
    cli = [sys.executable, "-m", "psdrt.runtime.cli"]
    model = ["--artifacts", str(artifacts)] if artifacts else []
    folder = ["--rgb", str(inp["dir"] / "rgb"), "--sparse", str(inp["dir"] / "sparse"), "--intrinsics", str(inp["K"])]
    return {
        "psdrt run (folder)": cli + ["run", *folder, *model, "--formats", "npy", "--out", str(out / "run")],
        "psdrt run --bag (MCAP)": cli + ["run", "--bag", str(inp["bag"]), "--image-topic", TOPICS["image"],
                                         "--camera-info-topic", TOPICS["info"], "--depth-topic", TOPICS["depth"],
                                         *model, "--out", str(out / "bag_out")],
        "psdrt batch (Ray, 2 CPUs)": cli + ["batch", *folder, *model, "--formats", "npy", "--num-cpus", "2",
                                            "--threads", str(threads), "--out", str(out / "batch")],
    }


def _wall(cmd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def measure(mode: str, n: int, repeats: int, tmp: Path, artifacts, threads: int) -> list:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    sets = {m: write_inputs(tmp / f"{mode}_in{m}", m) for m in (n, 2 * n)}
    walls: dict = {}
    for r in range(repeats):
        for m in (n, 2 * n):
            out = tmp / f"{mode}_out{m}_{r}"
            for name, cmd in commands(sets[m], out, artifacts, threads).items():
                walls.setdefault((name, m), []).append(_wall(cmd, env))
                print(f"  {mode} {name} {m} frames: {walls[(name, m)][-1]:.1f} s", flush=True)
    rows = []
    for name in commands(sets[n], tmp, artifacts, threads):
        w1, w2 = statistics.median(walls[(name, n)]), statistics.median(walls[(name, 2 * n)])
        steady = n / (w2 - w1) if w2 > w1 else float("nan")
        rows.append({"mode": mode, "command": name, "frames": [n, 2 * n], "wall_s": {str(n): walls[(name, n)],
                                                                                       str(2 * n): walls[(name, 2 * n)]},
                     "fps_total": 2 * n / w2, "fps_steady": steady, "startup_s": w1 - n / steady})
    return rows


def _psd_artifacts(tmp: Path) -> Path:
    from psdrt.benchmarks.bm_capi_overhead import _artifacts

    tmp.mkdir(parents=True, exist_ok=True)
    return _artifacts(tmp)


def render_table(doc: dict) -> str:
    """The README's many-frames section (``benchmarks.report``) and the body of the .md file."""
    from psdrt.benchmarks.harness import machine_summary

    env = doc["environment"]
    commit = (doc.get("commit") or "?")[:10]
    lines = [f"Measured by `python -m psdrt.benchmarks.bm_logs` on {machine_summary(env)}, commit {commit}, load "
             f"average {env.get('load_avg')} before and {doc['load_after']} after. Frames: {doc['frame']} at "
             f"{SIZE[0]}x{SIZE[1]}, random 1 % sparse. Each command is a fresh process timed from start to exit "
             "(median of the repeats); steady frames/s cancels the start-up out (runs over n and 2n frames).", "",
             "| mode | command | frames/s, start-up included | steady frames/s | start-up (s) |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['mode']} | {r['command']} | {r['fps_total']:.2f} ({r['frames'][1]} frames) | "
                     f"{r['fps_steady']:.2f} | {r['startup_s']:.1f} |")
    lines += ["", *[f"- {n}" for n in doc["notes"]]]
    return "\n".join(lines) + "\n"


def render(doc: dict) -> str:
    return f"# {doc['title']}\n\n" + render_table(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="n for the guided mode (runs over n and 2n frames)")
    ap.add_argument("--psd-frames", type=int, default=6, help="n for the psd mode")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per Ray actor (psdrt batch --threads)")
    ap.add_argument("--no-psd", action="store_true", help="guided mode only (no torch needed)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    from psdrt.benchmarks.harness import capture_environment

    env = capture_environment(ort_providers=False)
    with tempfile.TemporaryDirectory(prefix="psdrt_bm_logs_") as t:
        tmp = Path(t)
        rows = measure("guided", a.frames, a.repeats, tmp, None, a.threads)
        if not a.no_psd:
            art = _psd_artifacts(tmp / "psd")
            rows += measure("psd", a.psd_frames, a.repeats, tmp, art, a.threads)
    _, _, _, frame = _base_frame()
    doc = {"title": "Many frames: psdrt run, psdrt run --bag and psdrt batch (CPU)", "environment": env,
           "commit": (env.get("git") or {}).get("commit"), "load_after": [round(x, 2) for x in os.getloadavg()],
           "frame": frame, "rows": rows,
           "notes": ["psd rows: a random-weight ViT-S PSD checkpoint built at 228x304 (the real model's speed; its "
                     "depth is meaningless); the C session runs it (Pipeline.from_artifacts' default engine).",
                     "psdrt batch starts a local Ray (2 CPUs, one actor per CPU, --threads per actor); its start-up "
                     "includes Ray's.",
                     "psdrt run --bag writes a rosbag2 MCAP (32FC1 depth + camera info); psdrt run and psdrt batch "
                     "write one .npy per frame."]}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{RESULT_STEM}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{RESULT_STEM}.md").write_text(render(doc))
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
