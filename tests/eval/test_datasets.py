"""runtime.datasets: every reader on a tiny folder in its layout, file lists, crops, encodings, errors."""

from __future__ import annotations

import numpy as np
import pytest

from _eval_layout import decode, min_size, write_frame, write_list
from _support import SHARED_DATA, SHARED_LIDAR, requires_shared_data, requires_shared_lidar
from psdrt.runtime.datasets import (
    DATASETS,
    K_KITTIDC_LIDAR,
    K_NYU,
    K_NYU_FULL,
    Sample,
    get_reader,
    hypersim_distance_to_depth,
    open_dataset,
    parse_patterns,
    pattern_seed,
    sample_sparse,
)
from psdrt.runtime.errors import BackendUnavailable, InputError, ShapeError
from psdrt.runtime.io import MissingFileError, load_shared_frame, read_depth, read_rgb, write_depth_png16
from psdrt.runtime.patterns import PATTERNS
from psdrt.runtime.visualize import write_png

PSD_SETS = [n for n in DATASETS if not n.endswith("-shared")]

#: the official hard-coded intrinsics (fx, fy, cx, cy), typed in from the official loaders
OFFICIAL_K = {
    "nyu": K_NYU,
    "hypersim": (886.81, 886.81, 512.0, 384.0),
    "diode-out": (886.81, 927.06, 512.0, 384.0),
    "diode-in": (886.81, 927.06, 512.0, 384.0),
    "diml-in": (540.5, 540.5, 352.0, 198.0),
    "tofdc": (496.2276, 497.8638, 270.6038, 212.7232),
    "vkitti2": (725.0087, 725.0087, 620.5, 187.0),
    "kitti360": (1336.3220825849971, 1335.7883350012958, 700.0, 700.0),
}
#: open GT ranges of the evaluation masks (docs/psd_method.md §6.2); others: gt > 0
MASK_RANGE = {"void": (0.2, 5.0), "diode-out": (1.0, 250.0), "vkitti2": (1.0, 250.0),
              "cityscapes": (1.0, 250.0), "tofdc": (0.0, 6.0)}


def test_registry_holds_the_18_psd_sets():
    assert len(PSD_SETS) == 18
    assert {DATASETS[n].key for n in PSD_SETS} == {
        "NYUv2", "KITTI", "ARGOVERSE", "Cityscape", "DIMLi", "DIODEi", "DIODEo", "DrivingStereo", "ETH3D",
        "HYPERSIM", "KITTI360", "MIDDLEBURY", "SCANNET", "Stanford", "SUNRGBD", "TOFDC", "VKITTI2", "VOID1500"}
    assert get_reader("VOID1500") is DATASETS["void"]
    assert get_reader("Cityscapes") is get_reader("cityscape") is DATASETS["cityscapes"]
    assert get_reader("DIODE_outdoor") is DATASETS["diode-out"]
    assert get_reader("KITTI-360") is DATASETS["kitti360"]
    with pytest.raises(InputError, match="unknown dataset 'diml-out'.*kitti"):
        get_reader("diml-out")


@pytest.mark.parametrize("name", PSD_SETS)
def test_reader_reads_its_layout(tmp_path, name):
    """Two frames in the PSD-val layout with the official list: values, units, K, mask and names."""
    cls = DATASETS[name]
    size = min_size(cls) if name != "nyu" else (228, 304)
    frames = [write_frame(cls, tmp_path, f"{i:04d}", size, seed=i) for i in range(2)]
    write_list(tmp_path / "filename" / cls.list_name, frames)
    reader = open_dataset(name, root=tmp_path, crop=False)
    assert len(reader) == 2 and reader.has_sparse and reader.list_path == tmp_path / "filename" / cls.list_name
    assert reader.sparse_source == cls.sparse_kind
    for f, s in zip(frames, reader):
        assert isinstance(s, Sample) and s.name == f["name"] and s.dataset == cls.key
        np.testing.assert_array_equal(s.rgb, f["rgb"])
        gt = decode(f["gt_int"], cls.depth_offset)
        np.testing.assert_array_equal(s.gt, gt)
        np.testing.assert_array_equal(s.sparse, decode(f["sparse_int"], cls.depth_offset))
        if f["K"] is not None:
            np.testing.assert_allclose(s.K, f["K"], rtol=1e-8)
        else:
            fx, fy, cx, cy = OFFICIAL_K.get(name, (None,) * 4)
            if fx is not None:
                np.testing.assert_allclose(s.K[[0, 1, 0, 1], [0, 1, 2, 2]], (fx, fy, cx, cy), rtol=1e-12)
        lo, hi = MASK_RANGE.get(name, (0.0, np.inf))
        expected = (gt > lo) & (gt < hi) if name in MASK_RANGE else gt > 0
        np.testing.assert_array_equal(reader.eval_mask(s.gt), expected)
        np.testing.assert_array_equal(s.mask, expected)
    assert (DATASETS[name].cam_params is not None) == (name == "kitti360")


def test_cityscapes_encoding_is_value_minus_one():
    cls = DATASETS["cityscapes"]
    stored = np.array([[0, 1, 257, 513]], np.uint16)
    out = cls.__new__(cls)._read_depth_file  # bound method of a bare reader
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.png"
        write_png(p, stored)
        np.testing.assert_array_equal(out(p), [[0.0, 0.0, 1.0, 2.0]])


def test_drivingstereo_keeps_the_skewed_unshifted_K(tmp_path):
    cls = DATASETS["drivingstereo"]
    write_frame(cls, tmp_path, "a", min_size(cls), distinct_names=False)
    s = open_dataset("drivingstereo", root=tmp_path)[0]
    np.testing.assert_array_equal(s.K, [[2063.2, -0.5, 978.3], [0.0, 2062.4, 584.7], [0.0, 0.0, 1.0]])


def test_discovery_one_column_lists_and_comments(tmp_path):
    cls = DATASETS["eth3d"]
    frames = [write_frame(cls, tmp_path, s, (12, 16), seed=i, distinct_names=False, rgb_ext=".jpg")
              for i, s in enumerate(("b", "a", "c"))]
    reader = open_dataset("eth3d", root=tmp_path)  # no list anywhere: every RGB image, sorted
    assert reader.list_path is None and [e.name for e in reader.entries] == ["seq/a", "seq/b", "seq/c"]
    np.testing.assert_array_equal(reader[1].rgb, frames[0]["rgb"])  # JPEG decoded by PIL, stem-matched .png GT
    lst = tmp_path / "mine.txt"
    lst.write_text("# two frames\n\nseq/c.jpg\nseq/a.jpg\n")
    reader = open_dataset("eth3d", root=tmp_path, list_file=lst, limit=1)
    assert [e.name for e in reader.entries] == ["seq/c"] and reader.describe()["frames_available"] == 2
    np.testing.assert_array_equal(reader[0].gt, decode(frames[2]["gt_int"]))


def test_list_errors_name_the_fix(tmp_path):
    cls = DATASETS["kitti"]
    f = write_frame(cls, tmp_path, "x", (12, 16))
    bad = tmp_path / "bad.txt"
    bad.write_text(" ".join(f["tokens"][:2]) + "\n")
    with pytest.raises(InputError, match=r"bad.txt:1 has 2 columns; KITTI lists have 4 columns"):
        open_dataset("kitti", root=tmp_path, list_file=bad)
    missing = tmp_path / "missing.txt"
    missing.write_text(" ".join(f["tokens"][:2] + ["seq/nope.png", f["tokens"][3]]) + "\n")
    with pytest.raises(MissingFileError, match=r"1 file\(s\) of the KITTI list are missing: ground truth .*nope.png"):
        open_dataset("kitti", root=tmp_path, list_file=missing)
    with pytest.raises(MissingFileError, match="file list .*absent.txt does not exist"):
        open_dataset("kitti", root=tmp_path, list_file=tmp_path / "absent.txt")
    # discovery cannot pair differently named files: it says which are missing
    with pytest.raises(MissingFileError, match="ground truth"):
        open_dataset("kitti", root=tmp_path)


def test_root_and_layout_errors(tmp_path):
    with pytest.raises(MissingFileError, match="data root .*nowhere does not exist"):
        open_dataset("void", root=tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match=r"not a VOID1500 folder: expected .*rgb/VOID1500/ and .*depth/VOID1500/"):
        open_dataset("void", root=tmp_path)
    with pytest.raises(InputError, match="needs --root"):
        open_dataset("kitti")
    (tmp_path / "rgb" / "VOID1500").mkdir(parents=True)
    with pytest.raises(InputError, match="no ground-truth folder"):
        open_dataset("void", root=tmp_path)
    (tmp_path / "depth" / "VOID1500").mkdir(parents=True)
    with pytest.raises(InputError, match="per-frame intrinsics"):
        open_dataset("void", root=tmp_path)


def test_flat_layout_without_sparse_generates_patterns(tmp_path):
    cls = DATASETS["scannet"]
    frames = [write_frame(cls, tmp_path, s, (24, 32), seed=i, sparse=False, flat=True, distinct_names=False)
              for i, s in enumerate(("f0", "f1"))]
    reader = open_dataset("scannet", root=tmp_path)
    assert not reader.has_sparse and reader.sparse_source is None
    assert parse_patterns(None, reader.has_sparse) == list(PATTERNS)
    s0, s1 = reader[0], reader[1]
    assert s0.sparse is None
    np.testing.assert_array_equal(s0.gt, decode(frames[0]["gt_int"]))
    a = sample_sparse(s0, "random1", seed=3)
    assert np.count_nonzero(a) == int(0.01 * 24 * 32)
    np.testing.assert_array_equal(a[a > 0], s0.gt[a > 0])  # sparse values are GT values
    np.testing.assert_array_equal(a, sample_sparse(open_dataset("scannet", root=tmp_path)[0], "random1", seed=3))
    assert not np.array_equal(a, sample_sparse(s0, "random1", seed=4))
    assert pattern_seed(3, s0.name) != pattern_seed(3, s1.name)
    # a frame's map does not depend on which frames are read around it
    only = open_dataset("scannet", root=tmp_path, list_file=_one(tmp_path, "seq/f0.png"))
    np.testing.assert_array_equal(sample_sparse(only[0], "random1", 3), a)
    with pytest.raises(InputError, match="no sparse files, so pattern 'stored' is unavailable"):
        parse_patterns("stored", reader.has_sparse)
    with pytest.raises(InputError, match="has no stored sparse depth"):
        sample_sparse(s0, "stored")


def _one(root, rel):
    p = root / "one.txt"
    p.write_text(rel + "\n")
    return p


def test_parse_patterns():
    assert parse_patterns(None, True) == ["stored"]
    assert parse_patterns("all", True) == ["stored", *PATTERNS]
    assert parse_patterns("random1, pseudo-hole,random1", False) == ["random1", "pseudo_hole"]
    with pytest.raises(InputError, match="unknown sparse pattern 'random5'"):
        parse_patterns("random5", True)


def test_kitti_bottom_crop_shifts_K(tmp_path):
    cls = DATASETS["kitti"]
    f = write_frame(cls, tmp_path, "k", (259, 1221))
    write_list(tmp_path / "filename" / cls.list_name, [f])
    s = open_dataset("kitti", root=tmp_path)[0]
    y0, x0 = 259 - 256, (1221 - 1216) // 2  # 3, 2
    assert s.rgb.shape == (256, 1216, 3)
    np.testing.assert_array_equal(s.rgb, f["rgb"][y0:, x0:x0 + 1216])
    np.testing.assert_array_equal(s.gt, decode(f["gt_int"])[y0:, x0:x0 + 1216])
    np.testing.assert_array_equal(s.sparse, decode(f["sparse_int"])[y0:, x0:x0 + 1216])
    np.testing.assert_allclose(s.K[:2, 2], f["K"][:2, 2] - (x0, y0))
    assert open_dataset("kitti", root=tmp_path, crop=False)[0].rgb.shape == (259, 1221, 3)
    g = write_frame(cls, tmp_path / "small", "k", (40, 64))
    write_list(tmp_path / "small" / "filename" / cls.list_name, [g])
    with pytest.raises(ShapeError, match="smaller than the 256x1216 working size.*--no-crop"):
        open_dataset("kitti", root=tmp_path / "small")[0]


def test_nyu_full_frames_are_halved_and_cropped_to_K_nyu(tmp_path):
    from PIL import Image

    cls = DATASETS["nyu"]
    f = write_frame(cls, tmp_path, "n", (480, 640))
    s = open_dataset("nyu", root=tmp_path, list_file=write_list(tmp_path / "l.txt", [f]))[0]
    assert s.rgb.shape == (228, 304, 3)
    half = np.asarray(Image.fromarray(f["rgb"]).resize((320, 240), Image.BILINEAR))
    np.testing.assert_array_equal(s.rgb, half[6:234, 8:312])
    gt_half = decode(f["gt_int"])[1::2, 1::2]  # PIL nearest at scale 2 samples the odd pixels
    np.testing.assert_array_equal(s.gt, gt_half[6:234, 8:312])
    np.testing.assert_allclose(s.K, [[K_NYU[0], 0, K_NYU[2]], [0, K_NYU[1], K_NYU[3]], [0, 0, 1]])
    np.testing.assert_allclose(K_NYU, (259.42895, 259.73481, 154.79122, 120.86808), atol=1e-5)
    full = open_dataset("nyu", root=tmp_path, list_file=tmp_path / "l.txt", crop=False)[0]
    assert full.rgb.shape == (480, 640, 3) and full.K[0, 2] == K_NYU_FULL[2]
    g = write_frame(cls, tmp_path / "odd", "n", (100, 120))
    with pytest.raises(ShapeError, match="228x304, 240x320 or 480x640"):
        open_dataset("nyu", root=tmp_path / "odd", list_file=write_list(tmp_path / "odd.txt", [g]))[0]


def test_stanford_resize_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    cls = DATASETS["stanford"]
    f = write_frame(cls, tmp_path, "p", (400, 800))
    s = open_dataset("stanford", root=tmp_path, list_file=write_list(tmp_path / "l.txt", [f]))[0]
    assert s.rgb.shape == (1024, 1664, 3)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None]
    ref_rgb = F.interpolate(t(f["rgb"]), size=(1024, 1664), mode="bilinear", align_corners=True)
    ref_rgb = ref_rgb[0].permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.mean(s.rgb != ref_rgb) < 1e-4  # float32 rounding order: a rare off-by-one at the truncation
    gt = decode(f["gt_int"])[..., None]
    ref_gt = F.interpolate(t(gt), size=(1024, 1664), mode="bilinear", align_corners=True)[0, 0].numpy()
    np.testing.assert_allclose(s.gt, ref_gt, rtol=0, atol=1e-4)  # metres; neighbours differ by up to 255 m
    sp = decode(f["sparse_int"])[..., None]
    ref_sp = F.interpolate(t(sp), size=(1024, 1664), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(s.sparse, ref_sp)
    # the official K expression: the resized height (1024) scales both axes
    sx, sy = 1024 / 800, 1024 / 400
    np.testing.assert_allclose(s.K[:2, :], [[540 * sx, 0, 540 * sx], [0, 540 * sy, 540 * sy]])


def test_h5_formats_need_h5py_or_read(tmp_path):
    # Hypersim ray distance -> planar depth, by hand: a 2x2 image has pixel centres at (+-0.5, +-0.5)
    d = hypersim_distance_to_depth(np.full((2, 2), 10.0, np.float32), focal=1.0)
    np.testing.assert_allclose(d, np.full((2, 2), 10.0 / np.sqrt(1.5)), rtol=1e-6)
    cls = DATASETS["hypersim"]
    f = write_frame(cls, tmp_path, "h", min_size(cls), distinct_names=False)
    gt_png = tmp_path / "depth" / "Hypersim" / "seq" / "h.png"
    gt_png.unlink()
    h5 = gt_png.with_suffix(".hdf5")
    dist = np.full((f["rgb"].shape[0], f["rgb"].shape[1]), 4.0, np.float32)
    try:
        import h5py
    except ImportError:
        h5.write_bytes(b"\x89HDF\r\n\x1a\n")  # the reader must say what is missing before opening it
        with pytest.raises(BackendUnavailable, match="needs h5py.*pip install h5py"):
            open_dataset("hypersim", root=tmp_path)[0]
        return
    with h5py.File(h5, "w") as fh:
        fh["dataset"] = dist
    s = open_dataset("hypersim", root=tmp_path)[0]
    np.testing.assert_allclose(s.gt, hypersim_distance_to_depth(dist), rtol=1e-6)


def test_middlebury_builtin_needs_no_root():
    r = open_dataset("middlebury")
    assert len(r) == 1 and not r.has_sparse and r.describe()["title"] == "Middlebury Motorcycle"
    s = r[0]
    assert s.rgb.shape == (500, 741, 3) and s.sparse is None and s.dataset == "MIDDLEBURY"
    np.testing.assert_array_equal(s.mask, s.gt > 0)
    assert 0.9 < s.mask.mean() < 0.95


@requires_shared_data
def test_shared_readers_use_the_working_sizes():
    k = open_dataset("kitti-shared", root=SHARED_DATA)
    assert len(k) == 3 and not k.has_sparse
    s = k[0]
    full = load_shared_frame(SHARED_DATA, "KITTI", s.name)
    assert s.rgb.shape == (256, 1216, 3)
    np.testing.assert_array_equal(s.gt, full.depth[119:, 13:1229])
    np.testing.assert_allclose(s.K[:2, 2], (604.0814 - 13, 180.5066 - 119))
    n = open_dataset("nyu-shared", root=SHARED_DATA, limit=2)
    assert len(n) == 2 and n[0].rgb.shape == (228, 304, 3)
    np.testing.assert_allclose(n[0].K[[0, 1, 0, 1], [0, 1, 2, 2]], K_NYU)
    assert open_dataset("nyu-shared", root=SHARED_DATA, crop=False)[0].rgb.shape == (480, 640, 3)
    with pytest.raises(InputError, match="do not apply"):
        open_dataset("kitti-shared", root=SHARED_DATA, list_file="x.txt")


def test_shared_reader_without_data_says_where(tmp_path):
    with pytest.raises(InputError, match="has no KITTI frames"):
        open_dataset("kitti-shared", root=tmp_path)
    write_depth_png16(tmp_path / "unused.png", np.ones((2, 2)))
    with pytest.raises(MissingFileError, match="PSD_SHARED_DATA"):
        open_dataset("nyu-shared", root=tmp_path / "absent")


def _lidar_folder(root, stem="kittidc_a", size=(352, 1216)):
    """A synthetic real-LiDAR folder: root/lidar/<stem>_{rgb,gt,lidar}.png, exact /256 values."""
    rng = np.random.default_rng(3)
    folder = root / "lidar"
    folder.mkdir(parents=True, exist_ok=True)
    gt = np.where(rng.random(size) < 0.1, np.rint(rng.uniform(5, 80, size) * 256) / 256, 0.0)
    lidar = np.zeros(size)
    lidar[200::4, 10:1200] = 12.5  # scan lines
    write_depth_png16(folder / f"{stem}_gt.png", gt, scale=256.0)
    write_depth_png16(folder / f"{stem}_lidar.png", lidar, scale=256.0)
    write_png(folder / f"{stem}_rgb.png", rng.integers(0, 256, size + (3,), dtype=np.uint8))
    return folder, gt.astype(np.float32), lidar.astype(np.float32)


def test_lidar_shared_reader_reads_the_stored_lidar_at_stored_size(tmp_path):
    folder, gt, lidar = _lidar_folder(tmp_path)
    for root in (tmp_path, folder):  # the shared data folder or its lidar/ folder
        r = open_dataset("kitti-lidar-shared", root=root)
        assert len(r) == 1 and r.has_sparse and r.key == "KITTI"
        desc = r.describe()
        assert (desc["sparse"], desc["working_size"], desc["crop"]) == ("raw", None, False)
        s = r[0]
        assert (s.name, s.dataset, s.rgb.shape) == ("kittidc_a", "KITTI", (352, 1216, 3))
        np.testing.assert_array_equal(s.gt, gt)
        np.testing.assert_array_equal(s.sparse, lidar)
        np.testing.assert_array_equal(s.mask, gt > 0)
        # KITTI's nominal K (721.5377, 609.5593, 172.854) shifted by the bottom-centre crop (13, 23)
        np.testing.assert_array_equal(s.K, [[721.5377, 0, 609.5593 - 13], [0, 721.5377, 172.854 - 23], [0, 0, 1]])
    assert open_dataset("kitti-lidar-shared", root=tmp_path, crop=False)[0].rgb.shape == (352, 1216, 3)
    assert parse_patterns(None, r.has_sparse) == ["stored"]
    assert parse_patterns("stored,random1", r.has_sparse) == ["stored", "random1"]
    gen = sample_sparse(s, "random1", seed=0)  # generated patterns sample the ground truth
    assert np.all(gen[gen > 0] == gt[gen > 0]) and 0 < np.count_nonzero(gen) < np.count_nonzero(gt)
    assert get_reader("KITTI-LiDAR-shared") is DATASETS["kitti-lidar-shared"]


def test_lidar_shared_reader_errors(tmp_path):
    with pytest.raises(InputError, match="no real-LiDAR frame"):
        open_dataset("kitti-lidar-shared", root=tmp_path)
    with pytest.raises(MissingFileError, match="lidar/"):
        open_dataset("kitti-lidar-shared", root=tmp_path / "absent")
    _lidar_folder(tmp_path, size=(256, 1216))
    with pytest.raises(ShapeError, match="not the 352x1216 KITTI crop"):
        open_dataset("kitti-lidar-shared", root=tmp_path)[0]
    with pytest.raises(InputError, match="do not apply"):
        open_dataset("kitti-lidar-shared", root=tmp_path, sparse_dir=tmp_path)


@requires_shared_lidar
def test_lidar_shared_reader_on_the_shared_frame():
    s = open_dataset("kitti-lidar-shared")[0]  # out of the box: ../shared/data or $PSD_SHARED_DATA
    np.testing.assert_array_equal(s.sparse, read_depth(SHARED_LIDAR / "kittidc_a_lidar.png", 256.0))
    np.testing.assert_array_equal(s.gt, read_depth(SHARED_LIDAR / "kittidc_a_gt.png", 256.0))
    np.testing.assert_array_equal(s.rgb, read_rgb(SHARED_LIDAR / "kittidc_a_rgb.png"))
    np.testing.assert_array_equal(s.K[[0, 1, 0, 1], [0, 1, 2, 2]], K_KITTIDC_LIDAR)
    assert 0.04 < np.mean(s.sparse > 0) < 0.055 and 0.09 < np.mean(s.gt > 0) < 0.12
    # PSD's 256-row bottom crop would drop only rows without ground truth or LiDAR (the reader's decision)
    assert not s.gt[:96].any() and not s.sparse[:96].any()


@requires_shared_lidar
def test_guided_accuracy_benchmark_uses_the_readers_k():
    """bm_guided_accuracy scores the same frame; its K must stay the reader's (one definition)."""
    pytest.importorskip("torch")
    from psdrt.benchmarks.bm_guided_accuracy import lidar_inputs

    dataset, name, _, rgb, sparse, gt, K = next(lidar_inputs(SHARED_DATA))
    s = open_dataset("kitti-lidar-shared")[0]
    assert (dataset, name) == (s.dataset, s.name)
    np.testing.assert_array_equal(K, s.K)
    np.testing.assert_array_equal(sparse, s.sparse)
    np.testing.assert_array_equal(gt, s.gt)
