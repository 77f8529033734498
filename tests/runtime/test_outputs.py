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
    assert color.shape == (4, 5, 3) and (color[0, 0] == 0).all()
    assert _read_ply(files["ply"])[1].size == 18  # the zero and the former NaN are skipped


def test_save_outputs_subset_and_unknown_format(tmp_path):
    depth, rgb, K = _frame()
    files = save_outputs(depth, tmp_path, "x", None, K, formats=("png16",))
    assert list(files) == ["png16"] and sorted(p.name for p in tmp_path.iterdir()) == ["x_depth_mm.png"]
    with pytest.raises(InputError, match="choose from"):
        save_outputs(depth, tmp_path, "x", None, K, formats=("jpg",))
