"""runtime.outputs: the PLY point cloud (header, count, a point back-projected by hand) and save_outputs."""

import numpy as np
import pytest
from PIL import Image

from psdrt.runtime.errors import InputError
from psdrt.runtime.io import intrinsics_matrix, read_depth
from psdrt.runtime.outputs import save_outputs, write_ply
from psdrt.runtime.result import DepthResult


def _read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    props = [ln.split() for ln in header if ln.startswith("property")]
    dtype = np.dtype([(p[2], {"float": "<f4", "uchar": "u1"}[p[1]]) for p in props])
    n = int(next(ln for ln in header if ln.startswith("element vertex")).split()[-1])
    body = data[end:]
    assert len(body) == n * dtype.itemsize  # nothing missing, nothing trailing
    return header, np.frombuffer(body, dtype=dtype)


def _frame():
    depth = np.full((4, 5), 2.0, np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    depth[3, 4] = 4.0
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    K = intrinsics_matrix(10.0, 20.0, 2.0, 1.5)
    return depth, rgb, K


def test_ply_header_count_and_hand_point(tmp_path):
    depth, rgb, K = _frame()
    n = write_ply(tmp_path / "a.ply", depth, K, rgb=rgb)
    header, pts = _read_ply(tmp_path / "a.ply")
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    assert "element vertex 18" in header and n == 18  # 20 pixels minus a zero and a NaN
    assert [h.split()[-1] for h in header if h.startswith("property")] == ["x", "y", "z", "red", "green", "blue"]
    # pixel (u=4, v=3), z=4: x = (4-2)*4/10 = 0.8, y = (3-1.5)*4/20 = 0.3; it is the last pixel in scan order
    last = pts[-1]
    assert (last["x"], last["y"], last["z"]) == pytest.approx((0.8, 0.3, 4.0), abs=1e-6)
    assert (last["red"], last["green"], last["blue"]) == tuple(rgb[3, 4])
    # pixel (u=1, v=0), z=2: x = (1-2)*2/10 = -0.2, y = (0-1.5)*2/20 = -0.15 (first point: (0,0) is invalid)
    assert (pts[0]["x"], pts[0]["y"], pts[0]["z"]) == pytest.approx((-0.2, -0.15, 2.0), abs=1e-6)


def test_ply_without_colour_and_with_stride(tmp_path):
    depth, _, K = _frame()
    n = write_ply(tmp_path / "b.ply", depth, K, stride=2)
    header, pts = _read_ply(tmp_path / "b.ply")
    assert "property uchar red" not in header
    # pixels (0,0) (0,2) (0,4) (2,0) (2,2) (2,4); (0,0) is invalid
    assert n == 5 and pts.dtype.itemsize == 12
    assert pts["z"].tolist() == [2.0] * 5
    with pytest.raises(InputError):
        write_ply(tmp_path / "c.ply", depth, K, stride=0)


def test_save_outputs_writes_all_formats_and_png_reads_back(tmp_path):
    depth, rgb, K = _frame()
    depth[2, 2] = 70.0  # saturates at 65535 mm
    depth[2, 3] = 1.2344
    clean = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
    res = DepthResult(depth=clean, mode="guided")
    files = save_outputs(res, tmp_path / "out", "f0", rgb, K)
    assert {k: v.name for k, v in files.items()} == {
        "npy": "f0_depth.npy", "png16": "f0_depth_mm.png", "color": "f0_depth_color.png", "ply": "f0.ply"}
    np.testing.assert_array_equal(np.load(files["npy"]), clean)
    mm = np.asarray(Image.open(files["png16"]))
    assert mm.dtype == np.uint16 or mm.dtype == np.int32  # PIL reads 16-bit grey as I;16
    mm = mm.astype(np.uint16)
    np.testing.assert_array_equal(mm, res.depth_mm())
    assert mm[0, 0] == 0 and mm[2, 2] == 65535 and mm[2, 3] == 1234 and mm[0, 1] == 2000
    np.testing.assert_allclose(read_depth(files["png16"], 1000.0)[0, 1], 2.0)
    color = np.asarray(Image.open(files["color"]))
    assert color.shape[1] > 5 and (color[0, 0] == 0).all()  # the frame, then its colour bar
    assert _read_ply(files["ply"])[1].size == 18  # the zero and the former NaN are skipped


def test_save_outputs_subset_and_unknown_format(tmp_path):
    depth, rgb, K = _frame()
    files = save_outputs(depth, tmp_path, "x", None, K, formats=("png16",))
    assert list(files) == ["png16"] and sorted(p.name for p in tmp_path.iterdir()) == ["x_depth_mm.png"]
    with pytest.raises(InputError, match="choose from"):
        save_outputs(depth, tmp_path, "x", None, K, formats=("jpg",))


def test_png16_saturation_is_counted_and_warned(tmp_path, caplog):
    from psdrt.runtime.outputs import png16_saturation

    depth = np.full((4, 5), 10.0, np.float32)
    depth[0, :3] = (65.5354, 65.5356, 80.0)  # 65535.4 mm rounds to 65535 (kept), 65535.6 and 80 m clip
    _, _, K = _frame()
    assert png16_saturation(depth) == (2, 20)
    with caplog.at_level("WARNING", logger="psdrt.runtime.outputs"):
        save_outputs(depth, tmp_path, "s", None, K, formats=("png16",))
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(msgs) == 1 and "2 of 20 pixels (10.0 %) lie beyond 65.535 m" in msgs[0]
    assert "s_depth.npy (add npy to the formats)" in msgs[0]  # points at the lossless output
    caplog.clear()
    with caplog.at_level("WARNING", logger="psdrt.runtime.outputs"):
        save_outputs(np.full((4, 5), 65.0, np.float32), tmp_path, "ok", None, K, formats=("png16",))
    assert not caplog.records  # nothing clipped, nothing said


def test_tiff_is_lossless_float32_metres(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.0, 300.0, (6, 7)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.float32(1e-7)
    depth[2, 2] = np.nextafter(np.float32(65.535), np.float32(100))
    K = intrinsics_matrix(5.0, 5.0, 3.0, 2.5)
    files = save_outputs(depth, tmp_path, "t", None, K, formats=("tiff", "npy"))
    assert files["tiff"].name == "t_depth.tiff"
    back = cv2.imread(str(files["tiff"]), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.float32 and back.shape == depth.shape
    np.testing.assert_array_equal(back, depth)
    np.testing.assert_array_equal(np.asarray(Image.open(files["tiff"])), depth)  # PIL reads it too (mode F)


def test_color_output_has_a_colour_bar_in_metres(tmp_path):
    from psdrt.runtime.visualize import colormap_lut, colorize_depth

    depth, rgb, K = _frame()
    depth = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
    files = save_outputs(depth, tmp_path, "c", rgb, K, formats=("color",))
    img = np.asarray(Image.open(files["color"]))
    np.testing.assert_array_equal(img[:4, :5], colorize_depth(depth))  # the frame, pixel-aligned
    panel = img[:, 5:]
    lut = colormap_lut()
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    assert tuple(lut[0]) in colours and tuple(lut[255]) in colours  # the bar spans the colormap
