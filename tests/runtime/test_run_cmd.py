"""psdrt run: single files and folders in guided mode, unmatched files, bad frames, exit codes."""

import numpy as np
import pytest
from PIL import Image

from psdrt.runtime.errors import ArtifactError
from psdrt.runtime.cli.__main__ import main
from psdrt.runtime.io import intrinsics_matrix, read_depth, read_intrinsics, read_rgb, write_depth_png16
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.visualize import colorize_depth, write_png

H, W = 40, 56
FX, FY, CX, CY = 50.0, 52.0, 27.5, 19.5
#: `psdrt run` with the scale of _write_frame's KITTI-style sparse PNGs (16-bit PNGs need one)
RUN256 = ("run", "--sparse-scale", "256")


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
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]),
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
    color = np.asarray(Image.open(out / "frame0_depth_color.png"))
    assert color.shape[0] >= H and color.shape[1] > W  # the frame, then its colour bar to the right
    np.testing.assert_array_equal(color[:H, :W], colorize_depth(ref.depth))
    assert b"element vertex %d" % (H * W) in (out / "frame0.ply").read_bytes()[:300]


def test_fx_flags_and_format_subset(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    out = tmp_path / "out"
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--fx", str(FX),
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
    rc = main([*RUN256, "--rgb", str(src / "rgb"), "--sparse", str(src / "sparse"), "--intrinsics", str(src / "a.txt"),
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
    rc = main([*RUN256, "--rgb", str(src / "rgb"), "--sparse", str(src / "sparse"), "--intrinsics", str(src),
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
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics", str(paths["K"]),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert ("\n" + err).count("\nerror: ") == 1 and fix in err  # an 'error:' line (after the header, if any)


def test_missing_intrinsics_and_partial_flags_exit_2(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    base = [*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--out", str(tmp_path / "o")]
    assert main(base) == 2
    assert "--intrinsics FILE" in capsys.readouterr().err
    assert main(base + ["--fx", "50"]) == 2
    assert "must be given together" in capsys.readouterr().err


def test_mismatched_sizes_exit_2(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    write_depth_png16(paths["sparse"], np.full((H + 2, W), 3.0, np.float32), scale=256.0)
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics", str(paths["K"]),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "RGB is 40x56 (HxW) but sparse depth is 42x56" in capsys.readouterr().err


def test_npy_sparse_and_model_flags(tmp_path, capsys):
    paths = _write_frame(tmp_path / "in", "f")
    npy = tmp_path / "in" / "f_sparse.npy"
    np.save(npy, read_depth(paths["sparse"], 256.0))
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(npy), "--intrinsics", str(paths["K"]),
               "--out", str(out), "--formats", "npy"])  # .npy: metres, no scale needed
    assert rc == 0
    np.testing.assert_array_equal(np.load(out / "f_depth.npy"), _expected(paths).depth)
    # propagate without weights: exit 2 and the two ways to give them
    rc = main(["run", "--rgb", str(paths["rgb"]), "--sparse", str(npy), "--intrinsics", str(paths["K"]),
               "--out", str(out), "--mode", "propagate"])
    err = capsys.readouterr().err
    assert rc == 2 and "--artifacts DIR" in err and "--checkpoint PATH or --encoder" in err


# ------------------------------------------------------------------------------ sparse units (item 1)


def _room_mm(folder, stem="room", size=(H, W)):
    """An indoor frame whose sparse PNG is in millimetres (0.5 to 5 m)."""
    rng = np.random.default_rng(7)
    sparse = np.zeros(size, np.float32)
    pick = rng.random(size) < 0.06
    sparse[pick] = rng.uniform(0.5, 5.0, int(pick.sum()))
    paths = _write_frame(folder, stem, size=size)
    write_depth_png16(paths["sparse"], sparse, scale=1000.0)
    return paths


def test_png_sparse_without_a_scale_is_refused_with_both_fixes(tmp_path, capsys):
    paths = _room_mm(tmp_path / "in")
    out = tmp_path / "out"
    args = ["--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics", str(paths["K"]),
            "--out", str(out)]
    assert main(["run", *args]) == 2  # used to read millimetres as metres x 256: a room at 2-20 m, exit 0
    err = capsys.readouterr().err
    assert "--sparse-scale 256" in err and "--sparse-scale 1000" in err and "--convention" in err
    assert not out.exists()  # refused before any output
    # the whole folder is refused up front, not frame by frame
    assert main(["run", "--rgb", str(paths["rgb"].parent), "--sparse", str(paths["sparse"].parent),
                 "--intrinsics", str(paths["K"]), "--out", str(out)]) == 2
    assert "[1/1]" not in capsys.readouterr().err
    assert main(["run", *args, "--sparse-scale", "1000", "--formats", "npy"]) == 0
    assert "sparse PNGs / 1000" in capsys.readouterr().err
    depth = np.load(out / "room_depth.npy")
    want = Pipeline("guided")(read_rgb(paths["rgb"]), read_depth(paths["sparse"], 1000.0), read_intrinsics(paths["K"]))
    np.testing.assert_array_equal(depth, want.depth)
    assert 0.25 <= depth.min() and depth.max() <= 10.0  # a room, in metres
    assert main(["run", *args, "--sparse-scale", "0"]) == 2
    assert "positive" in capsys.readouterr().err


# ------------------------------------------------------------------------------ outputs (item 2)


def test_png16_clipping_is_reported_and_the_float_outputs_are_lossless(tmp_path, capsys, caplog):
    import cv2

    paths = _write_frame(tmp_path / "in", "far")
    far = np.zeros((H, W), np.float32)
    far[::3, ::3] = np.linspace(40.0, 120.0, far[::3, ::3].size).reshape(far[::3, ::3].shape)  # LiDAR at range
    write_depth_png16(paths["sparse"], far, scale=256.0)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]),
                   "--intrinsics", str(paths["K"]), "--out", str(out), "--formats", "npy,png16,tiff"])
    assert rc == 0
    depth = np.load(out / "far_depth.npy")
    clipped = int((np.rint(depth.astype(np.float64) * 1000) > 65535).sum())
    assert 0 < clipped < depth.size
    note = f"{clipped} of {H * W} pixels ({100 * clipped / (H * W):.1f} %) lie beyond 65.535 m"
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[1/1] far")][0]
    assert note in line and "far_depth.npy" in line and "far_depth.tiff" in line
    assert any(note in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    mm = cv2.imread(str(out / "far_depth_mm.png"), cv2.IMREAD_UNCHANGED)
    assert mm.max() == 65535 and int((mm == 65535).sum()) == clipped
    tiff = cv2.imread(str(out / "far_depth.tiff"), cv2.IMREAD_UNCHANGED)
    assert tiff.dtype == np.float32 and tiff.shape == (H, W)
    np.testing.assert_array_equal(tiff, depth)  # bit-exact, also beyond 65.535 m
    assert depth.max() > 65.535


# ------------------------------------------------------------------------------ conventions (item 5)


def _frame_at(folder, stem, size, scale, seed=3):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    sparse = np.zeros(size, np.float32)
    pick = rng.random(size) < 0.05
    sparse[pick] = rng.uniform(1.0, 30.0, int(pick.sum()))
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / f"{stem}.png", rgb)
    write_depth_png16(folder / f"{stem}_sparse.png", sparse, scale=scale)
    return folder / f"{stem}.png", folder / f"{stem}_sparse.png"


def test_kitti_convention_crops_like_the_reader_and_implies_the_scale(tmp_path, capsys):
    from psdrt.runtime.datasets import kitti_bottom_crop

    rgb_p, sp_p = _frame_at(tmp_path / "in", "k", (259, 1221), 256.0)
    K = intrinsics_matrix(707.0, 707.0, 604.0, 180.0)
    out = tmp_path / "out"
    rc = main(["run", "--rgb", str(rgb_p), "--sparse", str(sp_p), "--fx", "707", "--fy", "707", "--cx", "604",
               "--cy", "180", "--convention", "kitti", "--out", str(out), "--formats", "npy,ply"])
    assert rc == 0  # no --sparse-scale: the KITTI convention's PNGs are metres x 256
    err = capsys.readouterr().err
    assert "sparse PNGs / 256 (--convention kitti)" in err and "kitti 259x1221 -> 256x1216" in err
    rgb, Kc, sparse = kitti_bottom_crop(read_rgb(rgb_p), K, read_depth(sp_p, 256.0))
    np.testing.assert_array_equal(Kc[:2, 2], (604.0 - 2, 180.0 - 3))  # x0 = (1221 - 1216) // 2, y0 = 259 - 256
    want = Pipeline("guided", preset="KITTI")(rgb, sparse, Kc)
    np.testing.assert_array_equal(np.load(out / "k_depth.npy"), want.depth)
    # a .npy in metres stays metres under the convention (its 256 is for PNGs)
    npy = tmp_path / "in" / "k_sparse.npy"
    np.save(npy, read_depth(sp_p, 256.0))
    assert main(["run", "--rgb", str(rgb_p), "--sparse", str(npy), "--fx", "707", "--fy", "707", "--cx", "604",
                 "--cy", "180", "--convention", "kitti", "--out", str(tmp_path / "o2"), "--formats", "npy"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o2" / "k_depth.npy"), want.depth)


def test_nyu_convention_halves_and_crops_like_the_reader(tmp_path, capsys):
    from psdrt.runtime.datasets import K_NYU, K_NYU_FULL, NYUv2Reader, nyu_halve_crop

    rgb_p, sp_p = _frame_at(tmp_path / "in", "n", (480, 640), 256.0)
    K_full = intrinsics_matrix(*K_NYU_FULL)
    (tmp_path / "K.txt").write_text(" ".join(repr(v) for v in K_NYU_FULL))
    out = tmp_path / "out"
    assert main(["run", "--rgb", str(rgb_p), "--sparse", str(sp_p), "--intrinsics", str(tmp_path / "K.txt"),
                 "--convention", "nyu", "--out", str(out), "--formats", "npy"]) == 0
    rgb, Kc, sparse = nyu_halve_crop(read_rgb(rgb_p), K_full, read_depth(sp_p, 256.0))
    np.testing.assert_array_equal(Kc, intrinsics_matrix(*K_NYU))  # the reader's K_NYU, bit for bit
    # the reader uses the same function: same pixels
    reader = NYUv2Reader.__new__(NYUv2Reader)  # its transform only, without a dataset folder
    reader.crop = True
    r_rgb, r_gt, r_sp, r_K = reader._transform(read_rgb(rgb_p), read_depth(sp_p, 256.0), None, None, "n")
    np.testing.assert_array_equal(r_rgb, rgb)
    np.testing.assert_array_equal(r_gt, sparse)
    np.testing.assert_array_equal(r_K, Kc)
    want = Pipeline("guided", preset="NYUv2")(rgb, sparse, Kc)
    np.testing.assert_array_equal(np.load(out / "n_depth.npy"), want.depth)
    # another size is refused with the fix
    rgb_p2, sp_p2 = _frame_at(tmp_path / "in2", "odd", (100, 120), 256.0)
    assert main(["run", "--rgb", str(rgb_p2), "--sparse", str(sp_p2), "--fx", "80", "--fy", "80", "--cx", "60",
                 "--cy", "50", "--convention", "nyu", "--out", str(out)]) == 2
    assert "without --convention nyu" in capsys.readouterr().err


# ------------------------------------------------------------------------------ build directories (items 4, 5)


@pytest.fixture(scope="module")
def tiny_artifacts(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from _tiny_artifacts import make_artifacts

    return make_artifacts(tmp_path_factory.mktemp("tiny") / "deploy", size=(28, 42), fm_lower=28)


def _art_frame(folder, size):
    paths = _write_frame(folder, "cam", size=size)
    h, w = size
    paths["K"].write_text(f"{0.9 * w} {0.9 * w} {w / 2 - 0.5} {h / 2 - 0.5}\n")
    return paths


def _inputs(paths):
    return read_rgb(paths["rgb"]), read_depth(paths["sparse"], 256.0), read_intrinsics(paths["K"])


@pytest.mark.parametrize("engine", ["python", "c"])
def test_artifacts_directory_runs_with_the_manifest_mode(tmp_path, capsys, tiny_artifacts, engine):
    paths = _art_frame(tmp_path / "in", (28, 42))
    out = tmp_path / "out"
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics",
               str(paths["K"]), "--artifacts", str(tiny_artifacts), "--engine", engine, "--out", str(out),
               "--formats", "npy"])
    assert rc == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    assert "(propagate mode)" in cap.out and "working size 28x42" in cap.err  # the manifest's mode, no --mode
    want = Pipeline.from_artifacts(tiny_artifacts)(*_inputs(paths)).depth
    got = np.load(out / "cam_depth.npy")
    # the C session and the Python pipeline are the same computation (tests/capi/test_session_parity.py)
    np.testing.assert_array_equal(got, want)


def test_artifacts_size_mismatch_names_fit_and_mode_conflicts(tmp_path, capsys, tiny_artifacts):
    paths = _art_frame(tmp_path / "in", (40, 70))
    base = [*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics",
            str(paths["K"]), "--out", str(tmp_path / "out")]
    assert main(base + ["--artifacts", str(tiny_artifacts)]) == 2
    err = capsys.readouterr().err
    assert "frame is 40x70" in err and "28x42" in err and "--fit resize" in err and "--fit crop" in err
    assert "psdrt build --checkpoint CKPT --size 40x70" in err
    assert main(base + ["--artifacts", str(tiny_artifacts), "--mode", "psd"]) == ArtifactError.exit_code
    assert "built for mode propagate" in capsys.readouterr().err
    # the directory passed as an ONNX file: no nonexistent `psdrt export`, but --artifacts
    assert main(base + ["--encoder", str(tiny_artifacts)]) == 2
    err = capsys.readouterr().err
    assert f"--artifacts {tiny_artifacts}" in err and "psdrt export" not in err
    assert main(base + ["--precision", "int8"]) == 2
    assert "--artifacts DIR" in capsys.readouterr().err
    assert main(base + ["--artifacts", str(tiny_artifacts), "--precision", "int4"]) == 2
    assert "ENC+HEAD such as int8+fp32" in capsys.readouterr().err


def test_fit_resize_returns_depth_at_the_frame_size(tmp_path, capsys, tiny_artifacts):
    from psdrt.runtime.preprocess import resize_bilinear

    paths = _art_frame(tmp_path / "in", (40, 70))
    out = tmp_path / "out"
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics",
               str(paths["K"]), "--artifacts", str(tiny_artifacts), "--fit", "resize", "--out", str(out),
               "--formats", "npy,ply"])
    assert rc == 0
    assert "fit resize 40x70 -> 28x42 (sparse points" in capsys.readouterr().err
    got = np.load(out / "cam_depth.npy")
    assert got.shape == (40, 70)
    # the same, written out by hand: bilinear RGB, nearest sparse, K per axis, nearest back
    rgb, sparse, K = _inputs(paths)
    ys = ((np.arange(28) + 0.5) * 40 / 28).astype(int)
    xs = ((np.arange(42) + 0.5) * 70 / 42).astype(int)
    K2 = K.copy()
    K2[0] *= 42 / 70
    K2[1] *= 28 / 40
    rgb2 = np.clip(np.rint(resize_bilinear(rgb, 28, 42)), 0, 255).astype(np.uint8)
    work = Pipeline.from_artifacts(tiny_artifacts)(rgb2, sparse[ys][:, xs], K2).depth
    yb = np.minimum(((np.arange(40) + 0.5) * 28 / 40).astype(int), 27)
    xb = np.minimum(((np.arange(70) + 0.5) * 42 / 70).astype(int), 41)
    np.testing.assert_array_equal(got, work[yb][:, xb])
    assert b"element vertex %d" % (40 * 70) in (out / "cam.ply").read_bytes()[:300]  # the frame's own K and size


def test_fit_crop_returns_depth_at_the_frame_size_zero_outside(tmp_path, capsys, tiny_artifacts):
    from psdrt.runtime.inputs import fit_to_size

    paths = _art_frame(tmp_path / "in", (40, 70))
    out = tmp_path / "out"
    rc = main([*RUN256, "--rgb", str(paths["rgb"]), "--sparse", str(paths["sparse"]), "--intrinsics",
               str(paths["K"]), "--artifacts", str(tiny_artifacts), "--fit", "crop", "--out", str(out),
               "--formats", "npy"])
    assert rc == 0
    got = np.load(out / "cam_depth.npy")
    assert got.shape == (40, 70)
    # scale 0.7 -> 28x49, centre crop x0 = 3: frame columns 5..63 are inside, the others are not
    assert (got[:, :5] == 0).all() and (got[:, 64:] == 0).all() and (got[:, 5:64] > 0).all()
    rgb, sparse, K = _inputs(paths)
    rgb2, K2, sparse2 = fit_to_size(rgb, K, (28, 42), sparse)
    work = Pipeline.from_artifacts(tiny_artifacts)(rgb2, sparse2, K2).depth
    assert np.isin(got[:, 5:64], work).all()  # nearest resampling: the pipeline's values, no blends
    assert set(np.unique(work)) == set(np.unique(got[:, 5:64]))
