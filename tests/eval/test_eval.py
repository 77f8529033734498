"""psdrt eval: hand-computed dataset scores, configuration syntax, CLI end to end, error exits."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from _eval_layout import decode, write_frame, write_list
from _support import SHARED_LIDAR, requires_shared_lidar
from psdrt.runtime.classical import ip_basic_fill, nearest_fill
from psdrt.runtime.cli.__main__ import main
from psdrt.runtime.datasets import DATASETS, open_dataset, sample_sparse
from psdrt.runtime.errors import InputError
from psdrt.runtime.evaluation import evaluate, parse_config, parse_configs, read_result, write_outputs
from psdrt.runtime.guided import input_kind
from psdrt.runtime.io import read_depth
from psdrt.runtime.metrics import METRIC_KEYS, depth_edge_band, depth_metrics, edge_band_rmse, eval_mask
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.visualize import write_png


def _scannet_frame(root, stem, gt, sparse):
    """A ScanNet-layout frame (2x2 unless gt is larger) with exact /256 values and an identity-ish K."""
    for kind, arr in (("depth", gt), ("sparse/scatter_001", sparse)):
        p = root / kind / "Scannet" / f"{stem}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_png(p, np.rint(np.asarray(arr) * 256).astype(np.uint16))
    p = root / "rgb" / "Scannet" / f"{stem}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    write_png(p, np.full(np.asarray(gt).shape + (3,), 128, np.uint8))
    k = root / "intrinsics" / "Scannet" / f"{stem}.txt"
    k.parent.mkdir(parents=True, exist_ok=True)
    k.write_text("2 0 0.5\n0 2 0.5\n0 0 1\n")


def test_dataset_score_is_the_mean_of_per_image_values_by_hand(tmp_path):
    """Nearest fill of a single sparse point is that depth everywhere, so every number is by hand.

    Image A: gt (1, 2) valid, prediction 1 -> errors 0, -1000 mm:
      MAE 500, RMSE sqrt(1e6 / 2) = 707.107, inverse errors 0, 500 -> iMAE 250, iRMSE 353.553,
      REL (0 + 0.5) / 2 = 25 %, ratios 1, 2 -> delta1 50 %.
    Image B: gt (4, 4) valid, prediction 2 -> MAE = RMSE = 2000, inverse 250, 250 -> iMAE = iRMSE = 250,
      REL 50 %, ratio 2 -> delta1 0 %.
    Dataset = mean of the two (RMSE 1353.553), not the pooled RMSE sqrt(9e6 / 4) = 1500.
    """
    _scannet_frame(tmp_path, "a", [[1, 2], [0, 0]], [[1, 0], [0, 0]])
    _scannet_frame(tmp_path, "b", [[4, 4], [0, 0]], [[0, 0], [2, 0]])
    result = evaluate(open_dataset("scannet", root=tmp_path), parse_configs(["nearest"]))
    a, b = result["rows"]
    assert (a["frame"], b["frame"], a["points"], b["pattern"]) == ("a", "b", 1, "stored")
    hand_a = {"mae": 500, "rmse": math.sqrt(5e5), "imae": 250, "irmse": math.sqrt(125000), "rel": 25, "d1": 50}
    hand_b = {"mae": 2000, "rmse": 2000, "imae": 250, "irmse": 250, "rel": 50, "d1": 0}
    for row, hand in ((a, hand_a), (b, hand_b)):
        for k, v in hand.items():
            assert row[k] == pytest.approx(v, rel=1e-6), k
    (s,) = result["summary"]
    assert s["frames"] == 2 and s["rmse"] == pytest.approx((math.sqrt(5e5) + 2000) / 2, rel=1e-6)
    assert s["rmse"] != pytest.approx(1500.0, rel=1e-3)
    assert s["irmse"] == pytest.approx((math.sqrt(125000) + 250) / 2, rel=1e-6)
    assert (s["d1"], s["rel"]) == (pytest.approx(25.0), pytest.approx(37.5))


def _step_frames(root):
    """Frame "step": a 12x16 step edge (1 m | 3 m) with four isolated points, two on each side;
    frame "flat": 2 m everywhere (no depth edge) with one horizontal run of points (a scan line)."""
    gt = np.ones((12, 16))
    gt[:, 8:] = 3.0
    sparse = np.zeros_like(gt)
    for y, x in ((2, 2), (9, 5), (3, 11), (8, 14)):
        sparse[y, x] = gt[y, x]
    _scannet_frame(root, "step", gt, sparse)
    flat = np.full((12, 16), 2.0)
    line = np.zeros_like(flat)
    line[6, 2:14] = 2.0
    _scannet_frame(root, "flat", flat, line)
    return gt, sparse, flat, line


def test_edge_rmse_is_edge_band_rmse_and_its_mean_skips_edgeless_frames(tmp_path):
    gt, sparse, flat, line = _step_frames(tmp_path)
    result = evaluate(open_dataset("scannet", root=tmp_path), parse_configs(["nearest"]))
    rows = {r["frame"]: r for r in result["rows"]}
    pred = nearest_fill(sparse.astype(np.float32))
    band = depth_edge_band(gt)
    assert band.sum() == 12 * 8  # columns 4..11 (3 px either side of the step between 7 and 8)
    want = edge_band_rmse(pred, gt)
    # nearest fill puts the step where the points' Voronoi cells meet, not at x = 7.5: a real error
    assert math.isfinite(want) and want > 0
    assert rows["step"]["edge_rmse"] == want
    e = 1000.0 * (pred[band] - gt[band])
    assert want == pytest.approx(math.sqrt(np.mean(e * e)), rel=1e-12)
    assert rows["step"]["rmse"] == depth_metrics(pred, gt)["rmse"]  # the official metrics are unchanged
    assert math.isnan(rows["flat"]["edge_rmse"]) and rows["flat"]["rmse"] == 0.0
    assert (rows["step"]["kind"], rows["flat"]["kind"]) == ("scattered", "scan")
    assert rows["flat"]["kind"] == input_kind(line.astype(np.float32))
    (s,) = result["summary"]
    assert s["frames"] == 2 and s["edge_frames"] == 1 and s["edge_rmse"] == want  # NaN frame ignored
    assert s["rmse"] == pytest.approx(rows["step"]["rmse"] / 2, rel=1e-12)  # both frames in the official mean
    assert s["kinds"] == {"scattered": 1, "scan": 1}
    paths = write_outputs(result, tmp_path / "out", "e")
    csv_rows = {r["frame"]: r for r in _csv_rows(paths["csv"])}
    assert float(csv_rows["step"]["edge_rmse"]) == want and csv_rows["flat"]["edge_rmse"] == "nan"
    assert (csv_rows["step"]["kind"], csv_rows["flat"]["kind"]) == ("scattered", "scan")
    back = read_result(paths["json"])
    back_rows = {r["frame"]: r for r in back["rows"]}
    assert back["summary"][0]["edge_rmse"] == want and math.isnan(back_rows["flat"]["edge_rmse"])
    md = paths["md"].read_text()
    assert "| edge RMSE |" in md and f"| {want:.1f} (1) |" in md and "| scan 1, scattered 1 |" in md
    assert "has no depth edge (NaN) are left out of its mean" in md


def test_edge_rmse_of_a_frame_without_any_edge_is_nan_in_the_summary(tmp_path):
    _step_frames(tmp_path)
    (tmp_path / "rgb" / "Scannet" / "step.png").unlink()
    result = evaluate(open_dataset("scannet", root=tmp_path), parse_configs(["nearest"]))
    (s,) = result["summary"]
    assert s["frames"] == 1 and s["edge_frames"] == 0 and math.isnan(s["edge_rmse"]) and s["rmse"] == 0.0


def test_edge_band_is_found_among_the_evaluated_pixels_only(tmp_path):
    """VOID scores 0.2 < gt < 5: a 1 m | 10 m step has no edge inside the mask, so edge_rmse is NaN
    (edge_band_rmse of the unmasked ground truth would score the 10 m pixels the mask excludes)."""
    gt = np.ones((6, 8))
    gt[:, 4:] = 10.0
    for kind, arr in (("depth", gt), ("sparse/raw", np.where(np.arange(8) == 1, 1.0, 0.0)[None].repeat(6, 0))):
        p = tmp_path / kind / "VOID1500" / "f.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_png(p, np.rint(arr * 256).astype(np.uint16))
    (tmp_path / "rgb" / "VOID1500").mkdir(parents=True)
    write_png(tmp_path / "rgb" / "VOID1500" / "f.png", np.zeros((6, 8, 3), np.uint8))
    (tmp_path / "intrinsics" / "VOID1500").mkdir(parents=True)
    (tmp_path / "intrinsics" / "VOID1500" / "f.txt").write_text("3 3 4 3")
    (row,) = evaluate(open_dataset("void", root=tmp_path), parse_configs(["nearest"]))["rows"]
    assert math.isnan(row["edge_rmse"]) and row["mae"] == 0.0
    assert math.isfinite(edge_band_rmse(np.ones((6, 8)), gt))


def test_void_mask_bounds_by_hand(tmp_path):
    """VOID scores only 0.2 < gt < 5: gt (0.25, 1, 5, 0), prediction 2 everywhere, the 5 m pixel is out."""
    cls = DATASETS["void"]
    for kind, arr in (("depth", [[0.25, 1, 5, 0]]), ("sparse/raw", [[0, 0, 0, 2]])):
        p = tmp_path / kind / "VOID1500" / "f.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_png(p, np.rint(np.asarray(arr) * 256).astype(np.uint16))
    (tmp_path / "rgb" / "VOID1500").mkdir(parents=True)
    write_png(tmp_path / "rgb" / "VOID1500" / "f.png", np.zeros((1, 4, 3), np.uint8))
    (tmp_path / "intrinsics" / "VOID1500").mkdir(parents=True)
    (tmp_path / "intrinsics" / "VOID1500" / "f.txt").write_text("3 3 1.5 0.5")
    assert cls.key == "VOID1500"
    (row,) = evaluate(open_dataset("void", root=tmp_path), parse_configs(["nearest"]))["rows"]
    # 0.25 m and 1 m are inside (0.2, 5), 5 m is not: errors 1750 and 1000 mm
    assert row["mae"] == pytest.approx(1375.0) and row["rel"] == pytest.approx(100 * (7.0 + 1.0) / 2)


def test_frames_without_valid_gt_are_skipped_not_averaged(tmp_path):
    _scannet_frame(tmp_path, "a", [[1, 2], [0, 0]], [[1, 0], [0, 0]])
    _scannet_frame(tmp_path, "b", [[0, 0], [0, 0]], [[0, 0], [2, 0]])
    result = evaluate(open_dataset("scannet", root=tmp_path), parse_configs(["nearest"]))
    assert [r["frame"] for r in result["rows"]] == ["a"]
    assert result["skipped"] == [{"frame": "b", "pattern": "stored",
                                  "reason": "empty evaluation mask (no valid ground truth in range)"}]
    assert result["summary"][0]["frames"] == 1 and math.isfinite(result["summary"][0]["rmse"])


def test_config_syntax(tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "enc.onnx").write_bytes(b"")
    (tmp_path / "head.onnx").write_bytes(b"")
    (tmp_path / "m.ckpt").write_bytes(b"")
    c = parse_config(f"psd:{tmp_path / 'art'}:int8")
    assert (c.kind, c.path, c.option, c.label) == ("psd", str(tmp_path / "art"), "int8", "psd:art:int8")
    c = parse_config(f"psd:{tmp_path / 'art'}:INT8+fp32")  # ENC+HEAD: INT8 encoder, FP32 head
    assert (c.path, c.option, c.label) == (str(tmp_path / "art"), "int8+fp32", "psd:art:int8+fp32")
    c = parse_config(f"q=psd:{tmp_path / 'art'}")
    assert (c.label, c.option) == ("q", None)
    c = parse_config(f"onnx:{tmp_path / 'enc.onnx'}:{tmp_path / 'head.onnx'}")
    assert (c.path, c.option, c.label) == (str(tmp_path / "enc.onnx"), str(tmp_path / "head.onnx"),
                                            "onnx:enc.onnx:head.onnx")
    c = parse_config(f"ref:{tmp_path / 'm.ckpt'}:propagate")
    assert (c.kind, c.option) == ("ref", "propagate")
    assert parse_config("IP-Basic").kind == "ip_basic" and parse_config("guided").label == "guided"
    assert [c.label for c in parse_configs(None, baselines=True)] == ["guided", "ip_basic", "nearest"]
    for bad, msg in ((f"psd:{tmp_path / 'art'}:int4", "'int4' is not one of fp32, fp16, int8"),
                     (f"psd:{tmp_path / 'art'}:int8+int4", "unknown precision 'int8\\+int4'"),
                     ("psd:/no/such/dir", "does not exist"), ("psd", "needs a path"),
                     ("guided:x", "takes no arguments"), ("trt:x", "unknown kind 'trt'"),
                     ("=guided", "empty label")):
        with pytest.raises(InputError, match=msg):
            parse_config(bad)
    with pytest.raises(InputError, match="two configurations are labelled 'guided'"):
        parse_configs(["guided", "guided"])


def test_kitti360_refuses_pipelines_that_need_its_camera():
    c = parse_config("ip_basic")
    assert c.build("KITTI360")(None, np.ones((2, 2), np.float32), None).shape == (2, 2)
    with pytest.raises(InputError, match="MEI camera"):
        parse_config(f"ckpt:{__file__}").build("KITTI360")


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_middlebury_end_to_end(tmp_path, capsys):
    rc = main(["eval", "--dataset", "middlebury", "--pattern", "random0.1,harris", "--baselines",
               "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    files = {ext: tmp_path / f"eval_middlebury.{ext}" for ext in ("csv", "md", "json")}
    assert all(p.is_file() for p in files.values())
    rows = _csv_rows(files["csv"])
    assert [(r["pattern"], r["config"]) for r in rows] == [
        (p, c) for p in ("random0.1", "harris") for c in ("guided", "ip_basic", "nearest")]
    sample = open_dataset("middlebury")[0]
    pipe = Pipeline("guided", preset="MIDDLEBURY")
    for r in rows:
        sparse = sample_sparse(sample, r["pattern"], seed=0)
        pred = {"guided": lambda s: pipe(sample.rgb, s, sample.K).depth, "ip_basic": ip_basic_fill,
                "nearest": nearest_fill}[r["config"]](sparse)
        m = depth_metrics(pred, sample.gt, sample.mask)
        assert int(r["points"]) == np.count_nonzero(sparse)
        for k in METRIC_KEYS:
            assert float(r[k]) == m[k] or (math.isinf(m[k]) and r[k] == "inf"), (r["config"], k)
    result = read_result(files["json"])
    assert result["meta"]["dataset"]["dataset"] == "middlebury" and result["meta"]["shapes"] == [[500, 741]]
    for s in result["summary"]:
        (row,) = [r for r in rows if (r["pattern"], r["config"]) == (s["pattern"], s["config"])]
        assert s["rmse"] == float(row["rmse"]) and s["frames"] == 1
    md = files["md"].read_text()
    g = next(s for s in result["summary"] if (s["pattern"], s["config"]) == ("harris", "guided"))
    assert "| harris | guided | 1 | " in md and f"{g['rmse']:.1f}" in md
    assert md in out  # the summary goes to stdout


def test_cli_kitti_layout_end_to_end(tmp_path, capsys):
    """Two frames in the KITTI layout with the official list, cropped to 256x1216, stored raw sparse."""
    cls = DATASETS["kitti"]
    data = tmp_path / "data"
    frames = [write_frame(cls, data, f"{i:010d}", (258, 1218), seed=i) for i in range(2)]
    write_list(data / "filename" / "val_kitti.txt", frames)
    rc = main(["eval", "--dataset", "KITTI", "--root", str(data), "--baselines", "--config", "g=guided",
               "--out", str(tmp_path / "out"), "--name", "k"])
    err = capsys.readouterr().err
    assert rc == 0 and "[2/2] seq/0000000001 stored" in err
    rows = _csv_rows(tmp_path / "out" / "k.csv")
    assert [(r["frame"], r["config"]) for r in rows] == [
        (f["name"], c) for f in frames for c in ("g", "ip_basic", "nearest")]
    pipe = Pipeline("guided", preset="KITTI")
    y0, x0 = 2, 1  # (258 - 256, (1218 - 1216) // 2)
    for f, r in zip([f for f in frames for _ in range(3)], rows):
        gt = decode(f["gt_int"])[y0:, x0:x0 + 1216]
        sparse = decode(f["sparse_int"])[y0:, x0:x0 + 1216]
        K = f["K"].copy()
        K[:2, 2] -= (x0, y0)
        if r["config"] == "g":
            pred = pipe(f["rgb"][y0:, x0:x0 + 1216], sparse, K).depth
        else:
            pred = (ip_basic_fill if r["config"] == "ip_basic" else nearest_fill)(sparse)
        m = depth_metrics(pred, gt, gt > 0)
        for k in METRIC_KEYS:
            v = float(r[k])
            assert v == m[k] or (math.isinf(v) and math.isinf(m[k])), (r["config"], k)
    data_json = json.loads((tmp_path / "out" / "k.json").read_text())
    assert data_json["meta"]["patterns"] == ["stored"] and data_json["meta"]["dataset"]["sparse"] == "raw"
    assert data_json["meta"]["dataset"]["working_size"] == [256, 1216]
    (g,) = [s for s in data_json["summary"] if s["config"] == "g"]
    assert g["mae"] == pytest.approx(np.mean([float(r["mae"]) for r in rows if r["config"] == "g"]), rel=1e-12)


@requires_shared_lidar
def test_cli_kitti_lidar_shared_scores_the_real_lidar_input(tmp_path, capsys):
    """The shared real-LiDAR frame out of the box (no --root): one frame, scan input, and the
    baselines' numbers are the metrics of the baselines on the stored LiDAR map, computed here."""
    rc = main(["eval", "--dataset", "kitti-lidar-shared", "--baselines", "--out", str(tmp_path), "--no-plot"])
    err = capsys.readouterr().err
    assert rc == 0 and "[1/1] kittidc_a stored (" in err and "scan)" in err
    rows = _csv_rows(tmp_path / "eval_kitti-lidar-shared.csv")
    assert [(r["frame"], r["pattern"], r["config"], r["kind"]) for r in rows] == [
        ("kittidc_a", "stored", c, "scan") for c in ("guided", "ip_basic", "nearest")]
    sparse = read_depth(SHARED_LIDAR / "kittidc_a_lidar.png", 256.0)
    gt = read_depth(SHARED_LIDAR / "kittidc_a_gt.png", 256.0)
    row = {r["config"]: r for r in rows}
    for name, fill in (("nearest", nearest_fill), ("ip_basic", ip_basic_fill)):
        pred = fill(sparse)
        m = depth_metrics(pred, gt, eval_mask("KITTI", gt))
        assert float(row[name]["rmse"]) == m["rmse"] and float(row[name]["mae"]) == m["mae"], name
        assert float(row[name]["d1"]) == m["d1"] and float(row[name]["edge_rmse"]) == edge_band_rmse(pred, gt), name
    assert int(row["nearest"]["points"]) == np.count_nonzero(sparse)
    assert 2000 < float(row["nearest"]["rmse"]) < 3500  # a real KITTI error level, not a degenerate 0
    result = read_result(tmp_path / "eval_kitti-lidar-shared.json")
    meta = result["meta"]
    assert meta["patterns"] == ["stored"] and meta["shapes"] == [[352, 1216]]
    assert (meta["dataset"]["frames"], meta["dataset"]["sparse"], meta["dataset"]["working_size"]) == (1, "raw", None)
    assert all(s["frames"] == 1 and s["kinds"] == {"scan": 1} and s["edge_frames"] == 1 for s in result["summary"])


@pytest.mark.parametrize("argv, code, msg", [
    (["--dataset", "kitti", "--root", "/no/such/dir"], 2, "data root /no/such/dir does not exist"),
    (["--dataset", "kitti"], 2, "needs --root"),
    (["--dataset", "nope"], 2, "unknown dataset 'nope'"),
    (["--dataset", "middlebury", "--pattern", "stored"], 2, "pattern 'stored' is unavailable"),
    (["--dataset", "middlebury", "--config", "psd:/no/dir"], 2, "does not exist"),
    (["--dataset", "middlebury", "--limit", "0"], 2, "--limit must be at least 1"),
])
def test_cli_errors_exit_with_a_fix(tmp_path, capsys, argv, code, msg):
    assert main(["eval", *argv, "--out", str(tmp_path)]) == code
    assert msg in capsys.readouterr().err


def test_cli_wrong_layout(tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    assert main(["eval", "--dataset", "void", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "rgb/VOID1500/" in capsys.readouterr().err


def test_json_round_trips_infinite_metrics(tmp_path):
    """IP-Basic can leave 0 m pixels (its documented quirk): iMAE is inf, written as "inf", read back as inf."""
    result = {"meta": {"dataset": {"dataset": "x", "title": "X", "frames": 1, "root": None},
                       "patterns": ["random1"], "seed": 0, "environment": {}},
              "rows": [{"frame": "inf", "pattern": "random1", "config": "ip_basic", "points": 3, "seconds": 0.1,
                        **{k: (math.inf if k == "imae" else 1.0) for k in METRIC_KEYS}}],
              "summary": [{"pattern": "random1", "config": "ip_basic", "frames": 1, "points": 3.0, "seconds": 0.1,
                           **{k: (math.inf if k == "imae" else 1.0) for k in METRIC_KEYS}}],
              "skipped": []}
    paths = write_outputs(result, tmp_path, "r")
    text = paths["json"].read_text()
    assert '"imae": "inf"' in text and "Infinity" not in text
    back = read_result(paths["json"])
    assert back["summary"][0]["imae"] == math.inf and back["rows"][0]["frame"] == "inf"
    assert _csv_rows(paths["csv"])[0]["imae"] == "inf"
    assert "| random1 | ip_basic | 1 | 1.0 | 1.0 | 1.00 | inf |" in paths["md"].read_text()


def test_cli_model_configs_report_their_own_errors(tmp_path, capsys):
    """psd:DIR goes through Pipeline.from_artifacts (ArtifactError, exit 5); ref:CKPT through the
    checkpoint loader (CheckpointError, exit 3)."""
    (tmp_path / "art").mkdir()
    assert main(["eval", "--dataset", "middlebury", "--config", f"psd:{tmp_path / 'art'}", "--out", str(tmp_path)]) == 5
    assert "has no manifest.json" in capsys.readouterr().err
    pytest.importorskip("torch")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--dataset", "middlebury", "--config", f"ref:{bad}", "--out", str(tmp_path)]) == 3
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_edge_rmse_bar_chart(tmp_path):
    pytest.importorskip("matplotlib")
    from psdrt.benchmarks.plots import plot_eval_metric

    _step_frames(tmp_path)
    result = evaluate(open_dataset("scannet", root=tmp_path), parse_configs(["nearest"]))
    fig = plot_eval_metric(result, tmp_path / "edge.png", metric="edge_rmse")
    (bars,) = fig.axes[0].containers
    assert [b.get_height() for b in bars] == [result["summary"][0]["edge_rmse"]]
    assert fig.axes[0].get_ylabel() == "edge-band RMSE (mm), mean over frames with a depth edge"
