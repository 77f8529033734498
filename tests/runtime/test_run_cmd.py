"""psdrt run: single files and folders in guided mode, unmatched files, bad frames, exit codes."""

import numpy as np
import pytest
from PIL import Image

from psdrt.runtime.cli.__main__ import main
from psdrt.runtime.io import intrinsics_matrix, read_depth, read_intrinsics, read_rgb, write_depth_png16
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.visualize import write_png

H, W = 40, 56
FX, FY, CX, CY = 50.0, 52.0, 27.5, 19.5


def _write_frame(folder, stem, seed=0, size=(H, W), rgb_dir=None, sparse_dir=None):
    """A random RGB PNG, a KITTI-style 16-bit sparse PNG (scale 256) and an intrinsics .txt."""
    rng = np.random.default_rng(seed)
    h, w = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sparse = np.zeros((h, w), np.float32)
    pick = rng.random((h, w)) < 0.06
    sparse[pick] = rng.uniform(1.0, 20.0, int(pick.sum()))
    rgb_dir = rgb_dir or folder / "rgb"
    sparse_dir = sparse_dir or folder / "sparse"
    rgb_dir.mkdir(parents=True, exist_ok=True)
    sparse_dir.mkdir(parents=True, exist_ok=True)
    paths = {"rgb": rgb_dir / f"{stem}.png", "sparse": sparse_dir / f"{stem}.png", "K": folder / f"{stem}.txt"}
    write_png(paths["rgb"], rgb)
    write_depth_png16(paths["sparse"], sparse, scale=256.0)
    paths["K"].write_text(f"{FX} {FY} {CX} {CY}\n")
    return paths


def _expected(paths):
    return Pipeline("guided")(read_rgb(paths["rgb"]), read_depth(paths["sparse"], 256.0),
                              read_intrinsics(paths["K"]))


def test_single_frame_guided_matches_pipeline(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "frame0")
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]),
               "--intrinsics", str(paths["K"]), "--out", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "1 of 1 frame(s) completed" in cap.out and "pipeline time per frame" in cap.out
    assert "[1/1] frame0" in cap.err
    assert sorted(p.name for p in out.iterdir()) == [
        "frame0.ply", "frame0_depth.npy", "frame0_depth_color.png", "frame0_depth_mm.png"]
    ref = _expected(paths)
    np.testing.assert_array_equal(np.load(out / "frame0_depth.npy"), ref.depth)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "frame0_depth_mm.png")).astype(np.uint16),
                                  ref.depth_mm())
    assert np.asarray(Image.open(out / "frame0_depth_color.png")).shape == (H, W, 3)
    assert b"element vertex %d" % (H * W) in (out / "frame0.ply").read_bytes()[:300]


def test_fx_flags_and_format_subset(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--fx", str(FX),
               "--fy", str(FY), "--cx", str(CX), "--cy", str(CY), "--out", str(out), "--formats", "npy"])
    assert rc == 0
    assert [p.name for p in out.iterdir()] == ["f_depth.npy"]
    np.testing.assert_array_equal(np.load(out / "f_depth.npy"), _expected(paths).depth)


def test_folder_mode_pairs_by_stem_and_reports_unmatched(tmp_path, capsys):
    src = tmp_path / "in"
    frames = [_write_frame(src, s, seed=i, rgb_dir=src / "rgb", sparse_dir=src / "sparse")
              for i, s in enumerate(("a", "b"))]
    write_png(src / "rgb" / "lonely.png", np.zeros((H, W, 3), np.uint8))  # no sparse partner
    (src / "rgb" / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(src / "rgb"), "--sparse", str(src / "sparse"), "--intrinsics", str(src / "a.txt"),
               "--out", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "unmatched" in cap.err and "lonely.png" in cap.err
    assert "2 of 2 frame(s) completed" in cap.out and "1 unmatched" in cap.out
    for stem, paths in zip("ab", frames):
        np.testing.assert_array_equal(np.load(out / f"{stem}_depth.npy"), _expected(paths).depth)
    assert not list(out.glob("lonely*"))


def test_folder_mode_continues_past_a_bad_frame(tmp_path, capsys):
    src = tmp_path / "in"
    _write_frame(src, "a", rgb_dir=src / "rgb", sparse_dir=src / "sparse")
    _write_frame(src, "b", seed=1, size=(H, W + 8), rgb_dir=src / "rgb", sparse_dir=src / "sparse")
    # frame b: sparse at another size than its RGB
    write_depth_png16(src / "sparse" / "b.png", np.full((H, W), 5.0, np.float32), scale=256.0)
    _write_frame(src, "c", seed=2, rgb_dir=src / "rgb", sparse_dir=src / "sparse")
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(src / "rgb"), "--sparse", str(src / "sparse"), "--intrinsics", str(src),
               "--out", str(out)])  # per-frame <stem>.txt from a folder
    assert rc == 2
    cap = capsys.readouterr()
    assert "b: FAILED" in cap.err and "2 of 3 frame(s) completed" in cap.out and "failed: b" in cap.out
    assert (out / "a_depth.npy").is_file() and (out / "c_depth.npy").is_file()
    assert not (out / "b_depth.npy").exists()


@pytest.mark.parametrize("content, fix", [
    ("500 500 320\n", "write 4"),                    # wrong count
    ("fx fy cx cy\n", "non-numeric"),
    ("-50 50 27.5 19.5\n", "must be > 0"),           # negative focal length
    ("50 50 2750 1950\n", "scale fx, cx by the width ratio"),  # K of another resolution
])
def test_bad_intrinsics_exit_2_with_the_fix(tmp_path, capsys, content, fix):
    paths = _write_frame(tmp_path / "in", "f")
    paths["K"].write_text(content)
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics", str(paths["K"]),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fix in err


def test_missing_intrinsics_and_partial_flags_exit_2(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    base = ["run", "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--out", str(tmp_path / "o")]
    assert main(base) == 2
    assert "--intrinsics FILE" in capsys.readouterr().err
    assert main(base + ["--fx", "50"]) == 2
    assert "must be given together" in capsys.readouterr().err


def test_mismatched_sizes_exit_2(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    write_depth_png16(paths["sparse"], np.full((H + 2, W), 3.0, np.float32), scale=256.0)
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics", str(paths["K"]),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "RGB is 56x40 but sparse depth is 56x42" in capsys.readouterr().err


def test_npy_sparse_and_model_flags(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    npy = tmp_path / "in" / "f_sparse.npy"
    np.save(npy, read_depth(paths["sparse"], 256.0))
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(npy), "--intrinsics", str(paths["K"]),
               "--out", str(out), "--formats", "npy"])
    assert rc == 0
    np.testing.assert_array_equal(np.load(out / "f_depth.npy"), _expected(paths).depth)
    # propagate without weights: exit 2 and the two ways to give them
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(npy), "--intrinsics", str(paths["K"]),
               "--out", str(out), "--mode", "propagate"])
    assert rc == 2 and "--checkpoint PATH or --encoder" in capsys.readouterr().err
