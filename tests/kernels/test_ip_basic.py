"""psd_ip_basic (kernels/ip_basic) against the reference ``runtime.classical.ip_basic_fill`` (OpenCV,
parity-tested against the official code in tests/runtime/test_classical.py): bit for bit, on random
maps of several densities and sizes (odd and even widths, 1-pixel sides), LiDAR-like scan lines,
a real KITTI LiDAR map, and the edge cases, in every ISA variant of the CPU paths (PSD_MAX_CPU_ISA);
the median network is proven on every 0-1 input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _support import SHARED_DATA, requires_shared_lidar

from psdrt.runtime.classical import ip_basic_fill
from psdrt.runtime.errors import InputError, ShapeError

IMPL = Path(__file__).resolve().parents[2] / "kernels" / "ip_basic" / "ip_basic_impl.h"


def random_map(rng, h, w, density, lo=0.05, hi=80.0):
    sp = np.where(rng.random((h, w)) < density, rng.uniform(lo, hi, (h, w)), 0).astype(np.float32)
    if not (sp > 0.1).any():
        sp[h // 2, w // 2] = 7.5
    return sp


def scan_map(rng, h, w, lines=16):
    """LiDAR-like: points on a few rows of the lower part, depth growing towards the horizon, gaps."""
    sp = np.zeros((h, w), np.float32)
    rows = np.linspace(h * 0.4, h - 1, lines).astype(int)
    for r in rows:
        keep = rng.random(w) < 0.6
        sp[r, keep] = (3.0 + 60.0 * (h - r) / h + rng.normal(0, 0.3, keep.sum())).astype(np.float32)
    return sp


def check(lib, sp):
    want = ip_basic_fill(sp)
    got = lib.ip_basic(sp)
    assert got.dtype == np.float32 and got.shape == want.shape and np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)
    return got


# sides around the CPU paths' switches: doubling for windows of radius >= 3 from 2r + 1 = 7 and
# 31 pixels, median vectors of 4 / 8 / 16 lanes from 8 / 12 / 20 columns
SHAPES = [(60, 80), (45, 77), (31, 9), (7, 130), (5, 5), (3, 4), (2, 17), (1, 40), (40, 1), (1, 1),
          (30, 31), (32, 30), (8, 7), (6, 12), (9, 19), (11, 20), (13, 21)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.003, 0.05, 0.3, 1.0])
def test_random_maps_equal_the_reference(lib, shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    check(lib, random_map(rng, *shape, density))


_VARIANT_SCRIPT = """
import sys
import numpy as np
sys.path[:0] = sys.argv[1:]
from _kernel_reference import kernel_lib
from psdrt.runtime.classical import ip_basic_fill
from test_ip_basic import SHAPES, random_map, scan_map
lib = kernel_lib()
rng = np.random.default_rng(11)
maps = [random_map(rng, h, w, d) for h, w in SHAPES for d in (0.05, 0.5)]
maps += [scan_map(rng, 64, 201), random_map(rng, 120, 400, 0.05, 1.0, 80.0)]
bad = [m.shape for m in maps if not np.array_equal(lib.ip_basic(m), ip_basic_fill(m))]
print("mismatch", bad) if bad else print("equal", len(maps), lib.cpu_isa)
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_every_isa_variant_equals_the_reference(isa):
    """The CPU paths pick their vector width once per process (the widest the CPU has); a capped
    PSD_MAX_CPU_ISA runs the narrower variants, which must give the same bits."""
    if isa == "avx2" and not _has_flags("avx2", "fma"):
        pytest.skip("this CPU has no AVX2 with FMA")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PSD_MAX_CPU_ISA=isa)
    run = subprocess.run([sys.executable, "-c", _VARIANT_SCRIPT, str(here), str(here.parent)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[0] == "equal", run.stdout
    assert run.stdout.split()[2] == isa  # psd_cpu_isa reports the capped variant


def test_cpu_isa_is_the_widest_the_cpu_has(lib):
    if "PSD_MAX_CPU_ISA" in os.environ:
        pytest.skip("PSD_MAX_CPU_ISA caps the variant in this process")
    want = "avx512" if _has_flags("avx512f") else "avx2" if _has_flags("avx2", "fma") else "baseline"
    assert lib.cpu_isa == want


def _has_flags(*flags):
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return all(f in line.split() for f in flags)


def test_scan_lines_and_kitti_size(lib):
    rng = np.random.default_rng(4)
    for h, w in ((64, 201), (120, 400)):
        out = check(lib, scan_map(rng, h, w))
        assert (out[:5] > 0.1).mean() > 0.9  # the top rows come from the column extrapolation
    # the working size of KITTI (an even width: OpenCV's fused row pass everywhere)
    check(lib, random_map(rng, 375, 1242, 0.05, 1.0, 80.0))


@requires_shared_lidar
def test_real_kitti_lidar_map(lib):
    from psdrt.runtime.io import read_depth

    sp = read_depth(SHARED_DATA / "lidar" / "kittidc_a_lidar.png", 256.0)
    assert 0.02 < (sp > 0).mean() < 0.1  # the raw LiDAR input (about 4.7 % of pixels)
    out = check(lib, sp)
    assert (out > 0.1).mean() > 0.9


def test_equals_the_official_fill_when_available(lib):
    """The kernel against the official ``fill_in_fast`` itself (shenglunch/PSD datasets/ip_basic.py)."""
    import importlib.util

    import _support

    why = _support.official_missing("shenglunch/PSD", "PSD_OFFICIAL_DIR", "PSD", ("datasets/ip_basic.py",))
    if why:
        pytest.skip(why)
    spec = importlib.util.spec_from_file_location(
        "_official_ip_basic", _support.official_psd_dir() / "datasets" / "ip_basic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(8)
    for sp in (scan_map(rng, 64, 201), random_map(rng, 45, 77, 0.05), random_map(rng, 30, 41, 0.3, 0.01, 5.0)):
        want = mod.fill_in_fast(sp.copy(), max_depth=sp.max())
        np.testing.assert_array_equal(lib.ip_basic(sp), want)


def test_edge_cases(lib):
    one = np.zeros((20, 30), np.float32)
    one[12, 7] = 4.0  # one point: inverted to 0, so nothing is ever "valid"
    check(lib, one)
    check(lib, np.full((9, 11), 3.25, np.float32))  # all equal
    tiny = random_map(np.random.default_rng(5), 30, 41, 0.2, 0.01, 0.1)  # values in (0, 0.1] take part
    tiny[4, 4], tiny[20, 30] = 2.0, 0.1
    check(lib, tiny)
    near = np.full((8, 8), 1.0, np.float32)  # within 0.1 m of the maximum: comes out ~0 (quirk)
    near[0, 0] = 1.05
    out = check(lib, near)
    assert out.max() < 0.1
    sp = random_map(np.random.default_rng(6), 33, 47, 0.1)
    before = sp.copy()
    check(lib, sp)
    np.testing.assert_array_equal(sp, before)  # input untouched
    np.testing.assert_array_equal(lib.ip_basic(sp[None]), ip_basic_fill(sp))  # (1, H, W)
    out = np.full((33, 47), np.nan, np.float32)
    assert lib.ip_basic(sp, out=out) is out
    np.testing.assert_array_equal(out, ip_basic_fill(sp))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 5), np.float32), "0.1 m"),
    (np.full((5, 5), 0.1, np.float32), "0.1 m"),
    (np.array([[np.nan, 1.0]], np.float32), "NaN"),
    (np.array([[np.inf, 1.0]], np.float32), "NaN/Inf"),
    (np.array([[-1.0, 1.0]], np.float32), "negative"),
    (np.ones((5, 5), np.uint16), "float"),
])
def test_invalid_input_is_an_input_error(lib, bad, match):
    with pytest.raises(InputError, match=match):
        lib.ip_basic(bad)
    with pytest.raises(InputError):
        ip_basic_fill(bad)  # the reference refuses the same maps


def test_c_statuses(lib):
    import ctypes as C

    sp = random_map(np.random.default_rng(7), 12, 14, 0.2)
    out = np.zeros_like(sp)
    n = C.c_size_t()
    assert lib._lib.psd_ip_basic_workspace_size(0, 12, 14, C.byref(n)) == 0
    assert n.value >= 2 * 12 * 14 * 4
    ws = np.zeros(n.value, np.uint8)
    call = lib._lib.psd_ip_basic
    assert call(0, 12, 14, sp.ctypes.data, ws.ctypes.data, n.value, None, out.ctypes.data) == 0
    np.testing.assert_array_equal(out, ip_basic_fill(sp))
    assert call(0, 12, 14, sp.ctypes.data, ws.ctypes.data, n.value - 300, None, out.ctypes.data) == 4
    assert call(0, 12, 14, sp.ctypes.data, ws.ctypes.data, n.value, None, sp.ctypes.data) == 1  # aliasing
    assert "alias" in lib.last_error()
    assert call(0, 12, 14, None, ws.ctypes.data, n.value, None, out.ctypes.data) == 2
    assert call(0, 0, 14, sp.ctypes.data, ws.ctypes.data, n.value, None, out.ctypes.data) == 3
    assert call(7, 12, 14, sp.ctypes.data, ws.ctypes.data, n.value, None, out.ctypes.data) == 1
    assert lib._lib.psd_ip_basic_workspace_size(0, 12, -1, C.byref(n)) == 3
    zeros = np.zeros_like(sp)
    assert call(0, 12, 14, zeros.ctypes.data, ws.ctypes.data, n.value, None, out.ctypes.data) == 1
    assert "at least one sparse depth > 0.1 m" in lib.last_error()
    with pytest.raises(ShapeError):
        lib.ip_basic(np.ones((2, 3, 4), np.float32))


def test_median_network_selects_the_median_of_every_0_1_input():
    """The 0-1 principle: a comparator network that puts the rank-12 value of all 2^25 inputs of 0s
    and 1s on wire 12 does so for every input. Bit-sliced: wire k holds input bit k of all 2^25
    inputs as 2^19 uint64 words; a comparator is AND (min) and OR (max)."""
    pairs = [(int(a), int(b)) for a, b in re.findall(r"cs\((\d+), (\d+)\);", IMPL.read_text())]
    assert len(pairs) == 103 and all(0 <= a < b < 25 for a, b in pairs)
    words = 1 << 19
    wires = []
    for k in range(25):
        if k < 6:  # within a word: bit i of the word is input index i's bit k
            pattern = sum(1 << i for i in range(64) if (i >> k) & 1)
            wires.append(np.full(words, pattern, np.uint64))
        else:  # whole words alternate in runs of 2^(k-6)
            run = 1 << (k - 6)
            wires.append(np.tile(np.repeat(np.array([0, ~np.uint64(0)], np.uint64), run), words // (2 * run)))
    for a, b in pairs:
        wires[a], wires[b] = wires[a] & wires[b], wires[a] | wires[b]
    count = np.bitwise_count(np.arange(1 << 25, dtype=np.uint32))
    want = np.packbits(count >= 13, bitorder="little").view(np.uint64)  # the 13th smallest is 1
    np.testing.assert_array_equal(wires[12], want)
