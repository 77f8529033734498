"""The prepared GPU check: everything a lent NVIDIA machine should run, in one command.

    python -m psdrt.benchmarks.gpu_check --out DIR          # on a machine with a GPU and nvcc
    python -m psdrt.benchmarks.gpu_check --out DIR --emulated   # the same steps on the CPU (dry run)

Steps (each one's status, time and output go to ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``;
a failed step does not stop the others):

1. **build**: the CPU library and the CUDA library for this machine's GPU only (``nvcc
   -arch=native``; with ``--emulated`` the emulated CUDA build instead), with the session API
   (guided mode; no ONNX Runtime headers are assumed) in a build folder outside ``DIR``.
2. **cuda_tests**: ``pytest tests/cuda`` against that library (``PSD_CUDA_TEST_LIB``): every
   kernel family CUDA vs CPU, the session on the device, streams and the Python binding. On a
   real GPU the emulator-only tests skip and the comparisons use the FMA tolerance.
3. **memcheck**, **racecheck**: ``compute-sanitizer`` over the kernel tests; reported as skipped
   where the tool is missing or refuses the device.
4. **timings**: CUDA events (p50/p90) of the propagation kernel, the guided mode and the whole
   ``psd`` frame with the PyTorch networks on the GPU (random ViT-S weights: the speed of the
   architecture, not of trained weights) at NYU 228x304 and KITTI 256x1216 (guided also at the
   full KITTI 375x1242). With ``--emulated`` this is a dry run at a tiny size: the kernel timings
   run on the emulated CUDA runtime and the frame on the CPU, and none of it is a GPU number.

Needs on the GPU machine: nvcc, a CUDA build of PyTorch, this source checkout (run it from the
repository, ``psdrt`` importable). No ONNX Runtime GPU build and no TensorRT are assumed. It is
sized to finish in under 8 minutes on one GPU (``--budget-s``: steps that would start after the
budget is spent are skipped and say so), so that a failed first try leaves time for a rerun
within 15 minutes of GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from psdrt.benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SCHEMA = "psdrt-gpu-check"
SCHEMA_VERSION = 1

#: (name, H, W) of the timed sizes
SIZES = (("NYU", 228, 304), ("KITTI", 256, 1216))
GUIDED_SIZES = SIZES + (("KITTI full", 375, 1242),)
DRY_SIZES = (("tiny", 56, 84),)
#: goals the timings are compared with (issue "First contact with a real GPU")
GOALS_MS = {("propagation", "NYU"): 0.5, ("propagation", "KITTI"): 2.0, ("guided", "KITTI"): 1.0}


def _say(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


class Check:
    """The report being built: steps with status, seconds and details; timings as runs."""

    def __init__(self, out: Path, emulated: bool, budget_s: float):
        self.out, self.emulated, self.budget_s = out, emulated, budget_s
        self.t0 = time.monotonic()
        self.steps: Dict[str, Dict[str, Any]] = {}
        self.runs: List[Dict[str, Any]] = []
        self.libs: Dict[str, Path] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def step(self, name: str, fn: Callable[[], Dict[str, Any]], needs: tuple = ()) -> None:
        missing = [n for n in needs if self.steps.get(n, {}).get("status") != "passed"]
        if missing:
            self.steps[name] = {"status": "skipped", "why": f"needs {', '.join(missing)}", "seconds": 0.0}
            _say(f"{name}: skipped (needs {', '.join(missing)})")
            return
        if self.elapsed() > self.budget_s:
            self.steps[name] = {"status": "skipped", "seconds": 0.0,
                                "why": f"time budget of {self.budget_s:.0f} s spent ({self.elapsed():.0f} s)"}
            _say(f"{name}: skipped (budget spent)")
            return
        _say(f"{name}: running ({self.elapsed():.0f} s so far)")
        t = time.monotonic()
        try:
            res = fn()
        except Exception as exc:  # a failed step is reported, the others still run
            res = {"status": "failed", "why": f"{type(exc).__name__}: {exc}"}
        res["seconds"] = round(time.monotonic() - t, 1)
        self.steps[name] = res
        _say(f"{name}: {res['status']} in {res['seconds']} s" + (f" ({res['why']})" if res.get("why") else ""))

    def remaining(self, cap: float) -> float:
        return max(30.0, min(cap, self.budget_s - self.elapsed()))


# ------------------------------------------------------------------------------------------------
# steps
def step_build(c: Check, build_dir: Path, jobs: int) -> Dict[str, Any]:
    from psdrt import build

    build_dir.mkdir(parents=True, exist_ok=True)
    sess = build.prepare_session(build_dir, fetch=False)
    cpu = build.build_cpu(build_dir, jobs=jobs, session=sess)
    if c.emulated:
        cuda = build.build_cuda_emulation(build_dir, jobs=jobs, session=sess)
        archs = "emulated"
    else:
        nvcc = build.find_nvcc()
        if not nvcc:
            return {"status": "failed", "why": "nvcc not found: install the CUDA toolkit or set CUDA_HOME"}
        cuda = build.build_cuda(build_dir, nvcc, ("native",), jobs=jobs, session=sess)
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        archs = "native, " + (version[-1] if version else "nvcc")
    c.libs = {"cpu": cpu, "cuda": cuda}
    from psdrt.runtime import _capi

    lib = _capi.KernelLibrary(cuda)
    n, err = lib.cuda_device_count()
    if n == 0:
        return {"status": "failed", "why": f"the CUDA library sees no device (cudaGetDeviceCount error {err})",
                "libraries": {k: str(v) for k, v in c.libs.items()}}
    return {"status": "passed", "libraries": {k: str(v) for k, v in c.libs.items()}, "archs": archs,
            "devices": n, "onnxruntime_headers": bool(sess.ort_include)}


def _test_env(c: Check) -> Dict[str, str]:
    env = dict(os.environ)
    env["PSD_CUDA_TEST_LIB"] = str(c.libs["cuda"])
    env["PSD_KERNEL_LIB"] = str(c.libs["cpu"])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _junit(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = failed[:30]
    return counts


def step_cuda_tests(c: Check, select: List[str]) -> Dict[str, Any]:
    if not (TESTS / "cuda").is_dir():
        return {"status": "skipped", "why": f"{TESTS / 'cuda'} not found: run from a source checkout"}
    xml = c.out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", str(TESTS / "cuda"), "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *select]
    proc = subprocess.run(cmd, cwd=ROOT, env=_test_env(c), capture_output=True, text=True,
                          timeout=c.remaining(240))
    res = _junit(xml)
    xml.unlink(missing_ok=True)
    res.update(status="passed" if proc.returncode == 0 else "failed", returncode=proc.returncode,
               output_tail=_tail(proc.stdout + proc.stderr, 3000))
    if proc.returncode != 0:
        res["why"] = f"{res.get('failures', '?')} failed, {res.get('errors', '?')} errors"
    return res


def find_sanitizer() -> Optional[str]:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for d in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        p = Path(d) / "bin" / "compute-sanitizer"
        if d and p.is_file():
            return str(p)
    return None


def step_sanitizer(c: Check, tool: str) -> Dict[str, Any]:
    san = find_sanitizer()
    if san is None:
        return {"status": "skipped", "why": "compute-sanitizer not found (CUDA toolkit's bin/)"}
    if c.emulated:
        return {"status": "skipped", "why": "the emulated build runs no GPU code to sanitize"}
    cmd = [san, "--tool", tool, "--target-processes", "all", "--error-exitcode", "86", sys.executable, "-m",
           "pytest", str(TESTS / "cuda" / "test_kernels_cuda.py"), "-q", "-x", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_test_env(c), capture_output=True, text=True,
                              timeout=c.remaining(150))
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return {"status": "failed", "why": "timed out", "output_tail": _tail(out, 2000)}
    text = proc.stdout + proc.stderr
    summary = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    res = {"returncode": proc.returncode, "errors": int(summary[-1]) if summary else None,
           "output_tail": _tail(text, 3000)}
    if "Device not supported" in text or "device not supported" in text.lower():
        res.update(status="skipped", why="compute-sanitizer refused the device (Device not supported)")
    elif proc.returncode == 86 or (summary and int(summary[-1]) > 0):
        res.update(status="failed", why=f"{res['errors']} {tool} errors")
    elif proc.returncode != 0:
        res.update(status="failed", why=f"the tests failed under {tool} (exit {proc.returncode})")
    else:
        res.update(status="passed")
    return res


# ------------------------------------------------------------------------------------------------
# timings
class _Dev:
    """Device memory for the kernel timings through runtime._cuda (libcudart, or the emulated
    runtime with --emulated), shown to the kernel library by ``__cuda_array_interface__``."""

    live: List["_Dev"] = []  # closed by _kernel_timings while its runtime is still bound

    def __init__(self, shape, dtype=np.float32):
        from psdrt.runtime import _cuda

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.buf = _cuda.DeviceBuffer(int(np.prod(self.shape)) * self.dtype.itemsize)
        _Dev.live.append(self)

    @classmethod
    def of(cls, a: np.ndarray, stream: int) -> "_Dev":
        from psdrt.runtime import _cuda

        a = np.ascontiguousarray(a)
        d = cls(a.shape, a.dtype)
        _cuda.memcpy_htod_async(d.buf.ptr, a, stream)
        _cuda.stream_synchronize(stream)
        return d

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buf.ptr, False), "version": 3,
                "strides": None}


def _propagation_inputs(h: int, w: int, seed: int = 0):
    from psdrt.runtime.preprocess import fm_input_size

    rng = np.random.default_rng(seed)
    hm, wm = fm_input_size(h, w)
    sparse = np.where(rng.random((h, w)) < 0.05, rng.uniform(0.5, 80, (h, w)), 0).astype(np.float32)
    rel = rng.uniform(0.1, 1.0, (hm, wm)).astype(np.float32)
    feat = rng.standard_normal((64, hm // 14, wm // 14)).astype(np.float32)  # ViT-S feat0 (DPT features 64)
    K = np.array([[w * 0.85, 0, w / 2], [0, w * 0.85, h / 2], [0, 0, 1]], np.float32)
    return rel, sparse, feat, K


def _guided_inputs(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.clip(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1) + rng.normal(0, 5, (h, w, 3)), 0, 255)
    sparse = np.where(rng.random((h, w)) < 0.05, 2 + xx / w * 30, 0).astype(np.float32)
    return rgb.astype(np.uint8), sparse


def kernel_timings(c: Check, sizes, warmup: int, iters: int) -> List[Dict[str, Any]]:
    """CUDA-event timings of psd_propagate and psd_guided on device arrays, on one stream."""
    from psdrt.runtime import _cuda

    bound = _cuda._LIB
    if c.emulated:  # device memory and events of the emulated runtime; unbound again below
        _cuda.use_runtime(c.libs["cuda"])
    try:
        return _kernel_timings(c, sizes, warmup, iters)
    finally:
        _cuda._LIB = bound


def _kernel_timings(c: Check, sizes, warmup: int, iters: int) -> List[Dict[str, Any]]:
    from psdrt.runtime import _capi

    lib = _capi.KernelLibrary(c.libs["cuda"])
    runs = []
    try:
        _measure_kernels(lib, c, sizes, warmup, iters, runs)
    finally:
        for d in _Dev.live:
            d.buf.close()
        _Dev.live.clear()
    return runs


def _measure_kernels(lib, c: Check, sizes, warmup: int, iters: int, runs: List[Dict[str, Any]]) -> None:
    import ctypes as C

    from psdrt.runtime import _capi, _cuda

    with _cuda.Stream() as stream:
        s = stream.handle
        for name, h, w in sizes:
            rel, sparse, feat, K = _propagation_inputs(h, w)
            d = [_Dev.of(a, s) for a in (rel, sparse, feat)]
            desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, h, w, *rel.shape, *feat.shape)
            ws = _Dev((lib.propagate_workspace_size(desc, lib._params(), False, _capi.DEVICE_CUDA),), np.uint8)
            out = _Dev((h, w))
            m = harness.measure(lambda: lib.propagate(*d, K, out=out, workspace=ws, stream=s), warmup, iters,
                                name=f"propagation {name}", clock="cuda", stream=s,
                                params={"what": "propagation", "size": name, "hw": [h, w], "preset": "NYUv2",
                                        "stream": "user"})
            runs.append(m.to_dict())
        for name, h, w in (GUIDED_SIZES if not c.emulated else sizes):
            rgb, sparse = _guided_inputs(h, w)
            d_rgb, d_sp = _Dev.of(rgb, s), _Dev.of(sparse, s)
            ws = _Dev((lib.guided_workspace_size(h, w, device=_capi.DEVICE_CUDA),), np.uint8)
            out = _Dev((h, w))
            m = harness.measure(lambda: lib.guided(d_rgb, d_sp, out=out, workspace=ws, stream=s), warmup, iters,
                                name=f"guided {name}", clock="cuda", stream=s,
                                params={"what": "guided", "size": name, "hw": [h, w]})
            runs.append(m.to_dict())


def psd_frame_timings(c: Check, sizes, warmup: int, iters: int) -> List[Dict[str, Any]]:
    """The whole psd frame: the kernel library's preprocessing, propagation and post-processing
    around the PyTorch encoder and head (random ViT-S weights), every stage on one CUDA stream
    and timed with CUDA events (on the CPU for --emulated, host clock)."""
    import torch

    from psdrt.export.models.psd import PSDModel
    from psdrt.export.models.random_weights import randomize_head_
    from psdrt.export.onnx_export import EncoderForExport, HeadForExport
    from psdrt.runtime import _capi
    from psdrt.runtime.presets import PRESETS
    from psdrt.runtime.preprocess import fm_input_size

    cuda = not c.emulated
    dev = torch.device("cuda" if cuda else "cpu")
    lib = _capi.KernelLibrary(c.libs["cuda"] if cuda else c.libs["cpu"])
    torch.manual_seed(0)
    model = randomize_head_(PSDModel("vits"), 0).eval()
    enc, head = EncoderForExport(model.foundation).to(dev).eval(), HeadForExport(model).to(dev).eval()
    preset = PRESETS["NYUv2"]
    runs = []
    for name, h, w in sizes:
        rng = np.random.default_rng(1)
        rgb_np, sparse_np = _guided_inputs(h, w)
        K = np.array([[w * 0.85, 0, w / 2], [0, w * 0.85, h / 2], [0, 0, 1]], np.float32)
        hm, wm = fm_input_size(h, w, lower=392 if cuda else 56)
        rgb = torch.from_numpy(rgb_np).to(dev)
        sparse = torch.from_numpy(sparse_np).to(dev)
        x = torch.empty((1, 3, hm, wm), device=dev)
        del rng
        # a stream of its own: PyTorch's default stream is the legacy one (handle 0), which the
        # library would read as cudaStreamPerThread
        torch_stream = torch.cuda.Stream() if cuda else None
        stream = torch_stream.cuda_stream if cuda else None
        ws_cache: Dict[str, Any] = {}
        prm = lib._params(**_capi.preset_kwargs(preset))

        def frame():
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(6)] if cuda else None
            marks = [time.perf_counter()]

            def mark(i):
                if cuda:
                    ev[i].record()
                else:
                    marks.append(time.perf_counter())

            if cuda:
                ev[0].record()
            with torch.inference_mode():
                if cuda:
                    lib.preprocess_rgb(rgb, size=(hm, wm), out=x, stream=stream)
                else:
                    x.copy_(torch.from_numpy(lib.preprocess_rgb(rgb_np, size=(hm, wm))))
                mark(1)
                rel, f0, f1, f2, f3 = enc(x)
                mark(2)
                if cuda:
                    diff = torch.empty((h, w), device=dev)
                    if "prop" not in ws_cache:
                        import ctypes as C

                        desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, h, w, rel.shape[2], rel.shape[3],
                                               *f0.shape[1:])
                        nbytes = lib.propagate_workspace_size(desc, prm, False, _capi.DEVICE_CUDA)
                        ws_cache["prop"] = torch.empty(nbytes, dtype=torch.uint8, device=dev)
                    lib.propagate(rel[0, 0].contiguous(), sparse, f0[0].contiguous(), K, out=diff,
                                  workspace=ws_cache["prop"], stream=stream, **_capi.preset_kwargs(preset))
                else:
                    diff = torch.from_numpy(lib.propagate(rel[0, 0].numpy(), sparse_np, f0[0].numpy(), K,
                                                          **_capi.preset_kwargs(preset)))
                mark(3)
                depth_pix, fd0 = head(sparse[None, None], diff[None, None], f0, f1, f2, f3)[:2]
                mark(4)
                if cuda:
                    out = torch.empty((h, w), device=dev)
                    if "post" not in ws_cache:
                        import ctypes as C

                        desc = _capi.FrameDesc(C.sizeof(_capi.FrameDesc), 0, h, w, 0, 0, *fd0.shape[1:])
                        nbytes = C.c_size_t()
                        lib._check(lib._lib.psd_post_process_workspace_size(1, C.byref(desc), 32, preset.post_iters,
                                                                            C.byref(nbytes)))
                        ws_cache["post"] = torch.empty(max(1, nbytes.value), dtype=torch.uint8, device=dev)
                    lib.post_process(fd0[0].contiguous(), depth_pix[0, 0].contiguous(), sparse, preset.post_iters,
                                     out=out, workspace=ws_cache["post"], stream=stream)
                else:
                    lib.post_process(fd0[0].numpy(), depth_pix[0, 0].numpy(), sparse_np, preset.post_iters)
                mark(5)
            names = ("preprocess", "encoder", "propagation", "head", "post")
            if cuda:
                ev[5].synchronize()
                return {n: ev[i].elapsed_time(ev[i + 1]) for i, n in enumerate(names)}
            return {n: (marks[i + 1] - marks[i]) * 1e3 for i, n in enumerate(names)}

        def on_stream():
            if not cuda:
                return frame()
            with torch.cuda.stream(torch_stream):
                return frame()

        m = harness.measure(on_stream, warmup, iters, stage_timings=lambda r: r, name=f"psd frame {name}",
                            clock="cuda" if cuda else "cpu", stream=stream or 0,
                            params={"what": "psd frame", "size": name, "hw": [h, w], "encoder": "vits",
                                    "fm_size": [hm, wm], "networks": f"PyTorch {torch.__version__} "
                                    + ("CUDA FP32" if cuda else "CPU FP32 (dry run)"), "weights": "random"})
        runs.append(m.to_dict())
    return runs


def step_timings(c: Check, warmup: int, iters: int) -> Dict[str, Any]:
    sizes = DRY_SIZES if c.emulated else SIZES
    c.runs = kernel_timings(c, sizes, warmup, iters)
    try:
        c.runs += psd_frame_timings(c, sizes, warmup, iters)
        frame_note = ""
    except ImportError as exc:
        frame_note = f"psd frame not timed: {exc} (needs PyTorch)"
    res = {"status": "passed", "runs": len(c.runs)}
    if frame_note:
        res["why"] = frame_note
    return res


def step_session(c: Check, warmup: int, iters: int) -> Dict[str, Any]:
    """``psdrt bench --engine c --backend cuda`` on the built CUDA library: the C session's guided
    mode on host frames, on device frames, and on device frames replayed as a CUDA graph (the
    session's own CUDA-event stage times), at the check's sizes."""
    from psdrt.runtime import _capi
    from psdrt.runtime.cli.__main__ import build_parser
    from psdrt.runtime.cli.bench_cmd import run_bench

    sizes = DRY_SIZES if c.emulated else SIZES
    size = ",".join(f"{h}x{w}" for _, h, w in sizes)
    saved = _capi._CACHE.get("cuda")
    _capi._CACHE["cuda"] = _capi.KernelLibrary(c.libs["cuda"])  # the library this check built
    n = 0
    try:
        for extra in ([], ["--frames", "device"], ["--frames", "device", "--cuda-graph"]):
            argv = ["bench", "--engine", "c", "--backend", "cuda", "--size", size, "--warmup", str(max(2, warmup)),
                    "--iters", str(iters)] + extra
            for run in run_bench(build_parser().parse_args(argv))["runs"]:
                run["kind"] = "session"
                c.runs.append(run)
                n += 1
    finally:
        if saved is None:
            _capi._CACHE.pop("cuda", None)
        else:
            _capi._CACHE["cuda"] = saved
    return {"status": "passed", "runs": n}


# ------------------------------------------------------------------------------------------------
# report
def goals(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for run in runs:
        key = (run["params"].get("what"), run["params"].get("size"))
        if run.get("kind") == "session" or key not in GOALS_MS:
            continue
        p50 = run["total"]["p50_ms"]
        rows.append({"what": key[0], "size": key[1], "p50_ms": p50, "goal_ms": GOALS_MS[key],
                     "met": bool(p50 <= GOALS_MS[key])})
    return rows


def render_markdown(doc: Dict[str, Any]) -> str:
    env = doc["environment"]
    gpus = ", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in env.get("gpus") or []) or "none"
    lines = [f"# psdrt GPU check{' (DRY RUN: emulated CUDA on the CPU, no GPU numbers)' if doc['emulated'] else ''}",
             "", f"- device: {gpus}; CUDA (driver): {env.get('cuda')}",
             f"- machine: {harness.machine_summary(env)}; load {env.get('load_avg')}",
             f"- psdrt commit {(env.get('git') or {}).get('commit')} (dirty: {(env.get('git') or {}).get('dirty')}); "
             f"torch {(env.get('versions') or {}).get('torch')}; {doc['finished']}; {doc['seconds']:.0f} s in all",
             "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    for name, st in doc["steps"].items():
        detail = st.get("why", "")
        if name == "cuda_tests" and "tests" in st:
            detail = (f"{st['passed']} passed, {st['failures'] + st['errors']} failed, {st['skipped']} skipped"
                      + (f"; {detail}" if detail else ""))
        lines.append(f"| {name} | {st['status']} | {st['seconds']} | {detail} |")
    if doc["runs"]:
        lines += ["", "| run | size (HxW) | clock | iters | p50 ms | p90 ms | stages (p50 ms) |", "|---|---|---|---|---|---|---|"]
        for r in doc["runs"]:
            hw = "x".join(str(v) for v in r["params"].get("hw") or r["params"].get("size") or [])
            stages = ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in r["stages"].items() if k != harness.OTHER)
            lines.append(f"| {r['name']} | {hw} | {r['clock']} | {r['iters']} | {r['total']['p50_ms']:.3f} | "
                         f"{r['total']['p90_ms']:.3f} | {stages or '-'} |")
    if doc["goals"]:
        lines += ["", "| goal | p50 ms | target ms | met |", "|---|---|---|---|"]
        for g in doc["goals"]:
            lines.append(f"| {g['what']} at {g['size']} | {g['p50_ms']:.3f} | {g['goal_ms']} | {'yes' if g['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psdrt.benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--emulated", action="store_true",
                    help="dry run on the CPU: the emulated CUDA build, a tiny size, no GPU numbers")
    ap.add_argument("--build-dir", default=None,
                    help="build folder (default kernels/_build/gpu_check, or .../gpu_check_emu with --emulated)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="steps that would start after this many seconds are skipped (default 420)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 30; 3 with --emulated)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 5; 1 with --emulated)")
    ap.add_argument("--skip", default="", help="comma list of steps to skip (build is never skipped)")
    ap.add_argument("--tests", default="", help="extra pytest arguments for the cuda_tests step, e.g. '-k kernels'")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    c = Check(out, a.emulated, a.budget_s)
    from psdrt import build

    bdir = Path(a.build_dir) if a.build_dir else build.DEFAULT_BUILD_DIR / ("gpu_check_emu" if a.emulated else "gpu_check")
    jobs = max(1, min(16, os.cpu_count() or 1))
    iters = a.iters or (3 if a.emulated else 30)
    warmup = a.warmup if a.warmup is not None else (1 if a.emulated else 5)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}

    def maybe(name, fn, needs=("build",)):
        if name in skip:
            c.steps[name] = {"status": "skipped", "why": "--skip", "seconds": 0.0}
            return
        c.step(name, fn, needs)

    c.step("build", lambda: step_build(c, bdir, jobs))
    maybe("cuda_tests", lambda: step_cuda_tests(c, a.tests.split()))
    maybe("memcheck", lambda: step_sanitizer(c, "memcheck"))
    maybe("racecheck", lambda: step_sanitizer(c, "racecheck"))
    maybe("timings", lambda: step_timings(c, warmup, iters))
    maybe("session", lambda: step_session(c, warmup, iters))
    env = harness.capture_environment(ort_providers=False)
    doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "emulated": a.emulated,
           "finished": env.get("timestamp"), "seconds": round(c.elapsed(), 1), "environment": env,
           "steps": c.steps, "runs": c.runs, "goals": goals(c.runs),
           "notes": ["random ViT-S weights: the speed of the architecture, not of trained weights",
                     "kernel timings: CUDA events around each call on one user stream (device arrays, warm)",
                     "psd frame: the kernel library's preprocess/propagation/post-processing with the PyTorch "
                     "encoder and head on the current PyTorch stream; stages from CUDA events"]}
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=harness._json_default) + "\n")
    (out / "gpu_check.md").write_text(render_markdown(doc))
    _say(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({c.elapsed():.0f} s)")
    failed = [n for n, s in c.steps.items() if s["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
