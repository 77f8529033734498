"""Soak: 1000+ frames through Pipeline("guided") and through the deployment pipeline
(``Pipeline.from_artifacts``: the C session over a tiny propagate-mode directory, ONNX Runtime
included) on the CPU path: bit-identical output, bounded memory.

Resident memory is read from /proc/self/statm (current RSS; ru_maxrss only ever grows) after a
warm-up of 50 frames and again at the end. A per-frame leak of even 8 KB would show as 8 MB here.
"""

import gc
import os
import resource
import sys
import time

import numpy as np
import pytest

from psdrt.runtime.io import intrinsics_matrix
from psdrt.runtime.pipeline import Pipeline

FRAMES = 1000
WARMUP = 50
BOUND_MB = 8.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _guided(tmp_path):
    return Pipeline("guided"), (48, 64)


def _deployment(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from _tiny_artifacts import make_artifacts

    from psdrt.runtime.session import CSession

    pipe = Pipeline.from_artifacts(make_artifacts(tmp_path / "deploy", size=(28, 42), fm_lower=28))
    assert isinstance(pipe, CSession)
    return pipe, (28, 42)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("make", [_guided, _deployment], ids=["guided", "from_artifacts-c-session"])
def test_soak_identical_output_and_bounded_rss(make, tmp_path):
    pipe, (h, w) = make(tmp_path)
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sparse = np.zeros((h, w), np.float32)
    pick = rng.random((h, w)) < 0.05
    sparse[pick] = rng.uniform(0.5, 10.0, int(pick.sum())).astype(np.float32)
    K = intrinsics_matrix(60.0, 60.0, w / 2, h / 2)
    ref = pipe(rgb, sparse, K).depth.copy()
    inputs = (rgb.copy(), sparse.copy())

    for _ in range(WARMUP):
        assert np.array_equal(pipe(rgb, sparse, K).depth, ref)
    gc.collect()
    rss_warm = _rss_mb()
    t0 = time.perf_counter()
    for i in range(FRAMES):
        out = pipe(rgb, sparse, K).depth
        if not np.array_equal(out, ref):
            raise AssertionError(f"frame {i}: output differs from frame 0 by up to {np.abs(out - ref).max()} m")
    seconds = time.perf_counter() - t0
    gc.collect()
    rss_end = _rss_mb()
    growth = rss_end - rss_warm
    print(f"\nsoak: {FRAMES} frames {h}x{w} after {WARMUP} warm-up, {seconds / FRAMES * 1000:.2f} ms/frame; "
          f"RSS {rss_warm:.1f} MB -> {rss_end:.1f} MB (growth {growth:+.2f} MB, bound {BOUND_MB} MB); "
          f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    # the pipeline must not write into its inputs either
    assert np.array_equal(rgb, inputs[0]) and np.array_equal(sparse, inputs[1])
    assert growth < BOUND_MB, f"RSS grew {growth:.2f} MB over {FRAMES} frames"
