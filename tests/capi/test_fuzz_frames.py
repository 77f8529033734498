"""Fuzz-style frames: the Python Pipeline and the C session (guided, and psd over test artefacts)
get seeded random malformed frames and intrinsics. Every call must end, within a time limit, in
a typed psdrt error or a finite depth inside the documented range ([0.5 dmin, 2 dmax] of the
accepted sparse points); never a hang, never a crash (the cases run in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = r'''
import json, sys, time
import numpy as np
from psdrt.runtime import _capi
from psdrt.runtime.errors import PsdError
from psdrt.runtime.pipeline import Pipeline
from psdrt.runtime.session import CSession

seed, n, artifacts = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(seed)
lib = _capi.load()
pipes = {"py-guided": Pipeline("guided"), "c-guided": CSession.guided()}
if artifacts != "-":
    pipes["c-psd"] = CSession.from_artifacts(artifacts)
    pipes["py-psd"] = Pipeline.from_artifacts(artifacts, engine="python")

def size(pipe):
    fixed = getattr(pipe, "working_size", None)
    if fixed is not None and rng.random() < 0.85:
        return tuple(fixed)
    if rng.random() < 0.15:
        return tuple(int(v) for v in rng.choice([1, 2, 3, 4, 16, 17, 90, 400], 2))
    return int(rng.integers(4, 72)), int(rng.integers(4, 96))

def rgb_of(h, w):
    r = rng.random()
    if r < 0.06: return rng.random((h, w, 3)).astype(np.float32)
    if r < 0.10: return rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
    if r < 0.13: return rng.integers(0, 255, (h, w), dtype=np.uint8)
    if r < 0.16: return rng.integers(0, 255, (w, h, 3), dtype=np.uint8)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)

def sparse_of(h, w):
    s = np.where(rng.random((h, w)) < rng.choice([0.0, 0.002, 0.05, 0.5]), rng.uniform(0.5, 20, (h, w)), 0)
    s = s.astype(np.float32)
    r = rng.random()
    flat = s.reshape(-1)
    k = int(rng.integers(0, flat.size))
    if r < 0.08: flat[k] = np.nan
    elif r < 0.12: flat[k] = np.inf
    elif r < 0.16: flat[k] = -1.0
    elif r < 0.24: flat[k] = rng.choice([1e9, 1e5, 1e-7, 3e38])
    elif r < 0.28: s *= np.float32(rng.choice([1e-30, 1e6]))
    elif r < 0.32: s[:] = 0; flat[k] = 4.0
    elif r < 0.36: s[s > 0] = 2.5
    elif r < 0.38: s = s.astype(np.int32)
    elif r < 0.40: s = s[:, :-1] if w > 1 else s
    return s

def K_of(h, w):
    K = np.array([[w * rng.uniform(0.3, 3), 0, w / 2], [0, h * rng.uniform(0.3, 3), h / 2], [0, 0, 1]])
    r = rng.random()
    if r < 0.05: K[0, 1] = rng.choice([1e25, -1e3, 1e38])
    elif r < 0.10: K[0, 0] = rng.choice([1e-18, 0.0, -5.0, 1e18])
    elif r < 0.14: K[0, 2] = rng.choice([-w, 3.0 * w, np.nan])
    elif r < 0.17: K = K.T
    elif r < 0.20: K = K[:2]
    elif r < 0.22: K[2, 2] = 2.0
    return K

for i in range(n):
    name = list(pipes)[i % len(pipes)]
    h, w = size(pipes[name])
    rgb, sparse, K = rgb_of(h, w), sparse_of(h, w), K_of(h, w)
    t0 = time.perf_counter()
    rec = {"case": i, "pipe": name, "hw": [h, w]}
    try:
        out = pipes[name](rgb, sparse, K)
        d = out.depth
        rec.update(kind="ok", shape=list(d.shape), finite=bool(np.isfinite(d).all()))
        acc, st = lib.prepare_sparse(np.asarray(sparse, np.float32))
        rec.update(lo=float(d.min()), hi=float(d.max()), dmin=st["dmin"], dmax=st["dmax"])
    except PsdError as e:
        rec.update(kind="typed", error=type(e).__name__, msg=str(e)[:200])
    except Exception as e:  # noqa: BLE001 - what the test exists to catch
        rec.update(kind="untyped", error=type(e).__name__, msg=str(e)[:300])
    rec["seconds"] = time.perf_counter() - t0
    print(json.dumps(rec), flush=True)
'''


@pytest.mark.parametrize("seed", [0, 1])
def test_malformed_frames_give_typed_errors_or_bounded_depth(artifacts, tmp_path, seed):
    script = tmp_path / "fuzz.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(seed), "160", str(artifacts)], capture_output=True,
                          text=True, timeout=600)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"the child died (exit {proc.returncode}) after {len(recs)} cases:\n{proc.stderr[-3000:]}"
    assert len(recs) == 160
    untyped = [r for r in recs if r["kind"] == "untyped"]
    assert not untyped, untyped[:5]
    slow = [r for r in recs if r["seconds"] > 20]
    assert not slow, slow[:5]
    ok = [r for r in recs if r["kind"] == "ok"]
    for r in ok:
        assert r["finite"] and r["shape"] == r["hw"], r
        assert 0.5 * r["dmin"] * (1 - 1e-6) <= r["lo"] and r["hi"] <= 2 * r["dmax"] * (1 + 1e-6), r
    # the generator reaches both outcomes on every pipeline
    for pipe in ("py-guided", "c-guided", "c-psd", "py-psd"):
        kinds = {r["kind"] for r in recs if r["pipe"] == pipe}
        assert kinds == {"ok", "typed"}, (pipe, kinds)
