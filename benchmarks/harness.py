"""Latency harness shared by ``psdrt bench`` and the benchmark scripts.

One measurement = ``warmup`` untimed calls, then ``iters`` timed calls of a function. Reported per
run: end-to-end and per-stage p50/p90/p99, mean, min, max, std and throughput; host RSS (peak and
growth) and device memory when a CUDA clock is used. Results are one versioned JSON schema
(``SCHEMA``/``SCHEMA_VERSION``), rendered to a markdown table here and to PNG plots by
``psdrt.benchmarks.plots``.

Definitions (the tests check them):

* **percentiles**: linear interpolation between closest ranks, the NumPy default
  (``method="linear"``, Hyndman & Fan type 7): sort the n samples, take the position
  ``(n - 1) * q / 100`` and interpolate between the two neighbouring samples. p50 of [1, 2, 3, 4]
  is 2.5; p90 of [1 .. 10] is 9.1.
* **std**: sample standard deviation (``ddof=1``); 0 for a single sample.
* **throughput (fps)**: ``1000 / mean_ms``: frames per second of back-to-back calls on one stream.
* **stage "other"**: per iteration, end-to-end time minus the sum of the reported stages (the glue
  between the stages: argument checks, copies, dict building).
* **clock**: ``time.perf_counter_ns`` (monotonic) on the CPU; CUDA events on the given stream
  (``cudaEventElapsedTime``) when ``clock="cuda"``, for CUDA backends. The event pair brackets the
  call: with a backend that returns host arrays (synchronous), it measures the call's wall time as
  seen by the GPU.
* **memory**: current RSS from ``/proc/self/status`` (``VmRSS``); peak RSS from ``VmHWM`` after
  resetting it (``/proc/self/clear_refs``, Linux) so that it covers this measurement, else the
  process's lifetime ``ru_maxrss`` (``memory.peak_scope`` says which). ``rss_growth_mb`` is the
  RSS change over the timed iterations (after warm-up): a leak shows here.

Nothing heavy is imported at module import: no torch, no onnxruntime, no matplotlib.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from psdrt.runtime.errors import ArtifactError, InputError

__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "PERCENTILE_METHOD", "percentile", "summarize", "CpuClock",
    "CudaEventClock", "Measurement", "measure", "measure_interleaved", "pipeline_stages", "timed_calls",
    "reference_stage_targets",
    "rss_mb", "peak_rss_mb", "reset_peak_rss", "capture_environment", "new_results", "validate_results",
    "save_results", "load_results", "ratios", "markdown_table", "stage_table", "comparison_table",
    "render_markdown", "machine_summary",
]

#: the ``schema`` field of every result file written through this module
SCHEMA = "psdrt-bench"
#: bumped when a field changes meaning or disappears (adding optional fields keeps the version)
SCHEMA_VERSION = 1
#: how percentiles are computed (see the module docstring)
PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy 'linear', Hyndman-Fan type 7)"
#: summary fields of one sample series
STAT_KEYS = ("n", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms", "fps")
#: the stage that collects end-to-end time not covered by the reported stages
OTHER = "other"


# ------------------------------------------------------------------------------------------------
# statistics


def _finite_samples(values: Iterable[float], what: str) -> List[float]:
    xs = [float(v) for v in values]
    if not xs:
        raise InputError(f"{what}: no samples; measure with iters >= 1")
    if not all(math.isfinite(v) for v in xs):
        raise InputError(f"{what}: samples contain NaN/Inf; pass finite timings in milliseconds")
    return xs


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by linear interpolation between closest ranks.

    Same result as ``numpy.percentile(values, q)`` (method ``"linear"``).

    Args:
        values (Iterable[float]): finite samples (at least one).
        q (float): percentile in [0, 100].

    Returns:
        float: the interpolated percentile.

    Raises:
        InputError: no samples, a non-finite sample, or ``q`` outside [0, 100].
    """
    if not (isinstance(q, (int, float)) and 0.0 <= float(q) <= 100.0):
        raise InputError(f"percentile q={q!r} is outside [0, 100]; pass e.g. 50, 90 or 99")
    xs = sorted(_finite_samples(values, "percentile"))
    pos = (len(xs) - 1) * float(q) / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_ms: Iterable[float]) -> Dict[str, float]:
    """Summary statistics of timings in milliseconds (fields ``STAT_KEYS``).

    Raises:
        InputError: no samples or a non-finite sample.
    """
    xs = _finite_samples(samples_ms, "summarize")
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {
        "n": n, "mean_ms": mean, "std_ms": std, "min_ms": min(xs), "max_ms": max(xs),
        "p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90), "p99_ms": percentile(xs, 99),
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
    }


def sample_ms(fn: Callable[[], Any], n: int, warmup: int = 1) -> List[float]:
    """Wall time of ``n`` calls of ``fn`` in milliseconds, after ``warmup`` untimed calls (the
    one timing loop of the stand-alone benchmark scripts; :func:`measure` times whole pipelines)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


# ------------------------------------------------------------------------------------------------
# clocks


class CpuClock:
    """Monotonic host clock (``time.perf_counter_ns``)."""

    name = "perf_counter"

    def start(self) -> int:
        return time.perf_counter_ns()

    def stop(self, token: int) -> float:
        """Milliseconds since ``token`` (from :meth:`start`)."""
        return (time.perf_counter_ns() - token) / 1e6

    def close(self) -> None:
        pass


class CudaEventClock:
    """CUDA events on ``stream`` (``cudaEventRecord`` before and after the call,
    ``cudaEventSynchronize`` on the end event, ``cudaEventElapsedTime``).

    Through ``psdrt.runtime._cuda`` (ctypes over libcudart): no torch, no cuda-python needed.

    Args:
        stream (int): ``cudaStream_t`` as int; 0 = the legacy default stream, which orders with
            every blocking stream. Defaults to 0.

    Raises:
        BackendUnavailable: no CUDA runtime or no driver (the error names the fix).
    """

    name = "cuda_event"

    def __init__(self, stream: int = 0) -> None:
        from psdrt.runtime import _cuda

        self._cuda = _cuda
        lib = _cuda.load_cudart()
        vp = ctypes.c_void_p
        # cudaError_t cudaEventCreate(cudaEvent_t*); cudaEventRecord(cudaEvent_t, cudaStream_t);
        # cudaEventSynchronize(cudaEvent_t); cudaEventElapsedTime(float*, cudaEvent_t, cudaEvent_t);
        # cudaEventDestroy(cudaEvent_t)
        lib.cudaEventCreate.argtypes = [ctypes.POINTER(vp)]
        lib.cudaEventRecord.argtypes = [vp, vp]
        lib.cudaEventSynchronize.argtypes = [vp]
        lib.cudaEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), vp, vp]
        lib.cudaEventDestroy.argtypes = [vp]
        for fn in ("cudaEventCreate", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
                   "cudaEventDestroy"):
            getattr(lib, fn).restype = ctypes.c_int
        self._lib, self._stream = lib, vp(int(stream))
        self._events = []
        for _ in range(2):
            ev = vp()
            _cuda._check(lib.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")
            self._events.append(ev)

    def start(self) -> None:
        self._cuda._check(self._lib.cudaEventRecord(self._events[0], self._stream), "cudaEventRecord")

    def stop(self, _token=None) -> float:
        lib, check = self._lib, self._cuda._check
        check(lib.cudaEventRecord(self._events[1], self._stream), "cudaEventRecord")
        check(lib.cudaEventSynchronize(self._events[1]), "cudaEventSynchronize")
        ms = ctypes.c_float(0.0)
        check(lib.cudaEventElapsedTime(ctypes.byref(ms), self._events[0], self._events[1]), "cudaEventElapsedTime")
        return float(ms.value)

    def close(self) -> None:
        events, self._events = self._events, []
        for ev in events:
            self._lib.cudaEventDestroy(ev)


def cuda_memory_mb() -> Optional[Dict[str, float]]:
    """Device memory in use / total (``cudaMemGetInfo``) in MiB, or None without CUDA."""
    try:
        from psdrt.runtime import _cuda

        lib = _cuda.load_cudart()
        lib.cudaMemGetInfo.argtypes = [ctypes.POINTER(ctypes.c_size_t)] * 2
        lib.cudaMemGetInfo.restype = ctypes.c_int
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
            return None
        return {"used_mb": (total.value - free.value) / 2**20, "total_mb": total.value / 2**20}
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------
# host memory


def _proc_status_mb(key: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> Optional[float]:
    """Current resident set size of this process in MiB (``VmRSS``), or None where unknown."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS in MiB: ``VmHWM`` (resettable, Linux), else ``ru_maxrss`` (process lifetime)."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024.0  # bytes on macOS, kB elsewhere


def reset_peak_rss() -> bool:
    """Reset the peak RSS (``VmHWM``) to the current RSS; True when the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# measurement


@dataclass
class Measurement:
    """One measured configuration (see the module docstring for the definitions).

    ``params`` describes what was measured (mode, backend, precision, size, ...); ``total`` and
    ``stages`` are ``summarize`` dicts; ``samples_ms`` are the raw end-to-end samples.
    """

    name: str
    params: Dict[str, Any]
    clock: str
    warmup: int
    iters: int
    total: Dict[str, float]
    stages: Dict[str, Dict[str, float]] = field(default_factory=dict)
    memory: Dict[str, Any] = field(default_factory=dict)
    samples_ms: List[float] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "clock": self.clock, "warmup": self.warmup,
                "iters": self.iters, "total": dict(self.total), "stages": {k: dict(v) for k, v in self.stages.items()},
                "memory": dict(self.memory), "samples_ms": [round(x, 4) for x in self.samples_ms]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        return cls(name=d["name"], params=dict(d.get("params", {})), clock=d["clock"], warmup=int(d["warmup"]),
                   iters=int(d["iters"]), total=dict(d["total"]),
                   stages={k: dict(v) for k, v in d.get("stages", {}).items()},
                   memory=dict(d.get("memory", {})), samples_ms=list(d.get("samples_ms", [])))


def pipeline_stages(result) -> Mapping[str, float]:
    """Stage timings of a ``DepthResult`` (``result.info['timings_ms']``), for ``measure``; the C
    session's ``total`` (its whole call, not a stage) is left out so that stages never overlap."""
    return {k: v for k, v in result.info.get("timings_ms", {}).items() if k != "total"}


def _progress_printer(label: str, stream=sys.stderr) -> Callable[[int, int, Sequence[float]], None]:
    step_state = {"last": -1.0}

    def show(i: int, n: int, samples: Sequence[float]) -> None:
        now = time.monotonic()
        if i < n and now - step_state["last"] < 2.0:  # at most one line every 2 s, plus the last
            return
        step_state["last"] = now
        p50 = percentile(samples, 50) if samples else float("nan")
        print(f"  {label}: {i}/{n} timed, p50 {p50:.1f} ms", file=stream, flush=True)

    return show


def measure(
    fn: Callable[[], Any],
    warmup: int = 3,
    iters: int = 20,
    stage_timings: Optional[Callable[[Any], Mapping[str, float]]] = None,
    *,
    name: str = "run",
    params: Optional[Mapping[str, Any]] = None,
    clock: Any = "cpu",
    stream: int = 0,
    progress: Any = None,
    other_stage: bool = True,
) -> Measurement:
    """Time ``fn()``: ``warmup`` untimed calls, then ``iters`` timed ones.

    Args:
        fn (Callable[[], Any]): one frame (or one call) of the thing measured.
        warmup (int): untimed calls first (allocation, ORT/graph warm-up). Defaults to 3.
        iters (int): timed calls (>= 1). Defaults to 20.
        stage_timings (Callable, optional): maps ``fn``'s return value to ``{stage: ms}`` of that
            call, e.g. :func:`pipeline_stages`. Defaults to None (end to end only).
        name (str): run name in the results. Defaults to "run".
        params (Mapping, optional): what was measured (mode, backend, precision, size...).
        clock (str | clock object): ``"cpu"`` (perf_counter), ``"cuda"`` (CUDA events on
            ``stream``) or an object with ``start``/``stop``/``name``. Defaults to "cpu".
        stream (int): CUDA stream of the CUDA clock. Defaults to 0.
        progress (bool | Callable, optional): True prints progress lines to stderr; a callable
            gets ``(i, iters, samples_ms)`` after each timed call.
        other_stage (bool): add stage ``"other"`` = end-to-end minus the sum of the stages.

    Returns:
        Measurement: statistics, memory and the raw samples.

    Raises:
        InputError: ``iters < 1`` or ``warmup < 0``; a stage mapping with a non-finite value.
        BackendUnavailable: ``clock="cuda"`` without a CUDA runtime/driver.
    """
    if not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters={iters!r}: need at least 1 timed iteration (e.g. --iters 20)")
    if not isinstance(warmup, int) or warmup < 0:
        raise InputError(f"warmup={warmup!r}: pass 0 or more warm-up iterations")
    owned = False
    if clock == "cpu":
        clk = CpuClock()
    elif clock == "cuda":
        clk, owned = CudaEventClock(stream), True
    elif hasattr(clock, "start") and hasattr(clock, "stop"):
        clk = clock
    else:
        raise InputError(f"clock={clock!r}: use 'cpu', 'cuda' or an object with start()/stop()")
    show = _progress_printer(name) if progress is True else (progress or None)
    dev0 = cuda_memory_mb() if clk.name == "cuda_event" else None
    rss_start = rss_mb()
    try:
        for _ in range(warmup):
            fn()
        rss_warm = rss_mb()
        peak_scope = "measurement" if reset_peak_rss() else "process"
        totals: List[float] = []
        per_stage: Dict[str, List[float]] = {}
        for i in range(iters):
            token = clk.start()
            out = fn()
            ms = clk.stop(token)
            totals.append(ms)
            if stage_timings is not None:
                st = {str(k): float(v) for k, v in dict(stage_timings(out)).items()}
                if not all(math.isfinite(v) for v in st.values()):
                    raise InputError(f"stage timings of {name!r} contain NaN/Inf: {st}")
                for k, v in st.items():
                    per_stage.setdefault(k, []).append(v)
                if other_stage and st:
                    per_stage.setdefault(OTHER, []).append(ms - sum(st.values()))
            if show:
                show(i + 1, iters, totals)
        rss_end = rss_mb()
        peak = peak_rss_mb()
    finally:
        if owned:
            clk.close()
    memory: Dict[str, Any] = {"rss_start_mb": rss_start, "rss_after_warmup_mb": rss_warm, "rss_end_mb": rss_end,
                              "peak_rss_mb": peak, "peak_scope": peak_scope,
                              "rss_growth_mb": None if rss_end is None or rss_warm is None else rss_end - rss_warm}
    if dev0 is not None:
        dev1 = cuda_memory_mb()
        memory["device_used_mb"] = dev1["used_mb"] if dev1 else None
        memory["device_growth_mb"] = (dev1["used_mb"] - dev0["used_mb"]) if dev1 else None
    # stages present in every iteration keep their order of first appearance
    stages = {k: summarize(v) for k, v in per_stage.items() if len(v) == iters}
    return Measurement(name=name, params=dict(params or {}), clock=clk.name, warmup=warmup, iters=iters,
                       total=summarize(totals), stages=stages, memory=memory, samples_ms=totals)


def _spread(n: int, rounds: int) -> List[int]:
    """``n`` samples spread evenly over ``rounds`` (counts per round, summing to ``n``)."""
    return [((r + 1) * n) // rounds - (r * n) // rounds for r in range(rounds)]


def measure_interleaved(cases: Sequence[Mapping[str, Any]], warmup: int = 3, iters: int = 20, *,
                        block: int = 1, settle: Optional[int] = None, progress: Any = None,
                        other_stage: bool = True) -> List[Measurement]:
    """Time several functions in turns, so that load from other processes hits all alike.

    Each case is a mapping with ``name``, ``fn`` and optionally ``stage_timings``, ``params``,
    ``iters`` (fewer samples for a slow case; default ``iters``) and ``warmup``. Warm-up calls run
    first, case by case. Then there are ``ceil(iters / block)`` rounds; in each round every case
    gets one visit: ``settle`` untimed calls (so that threads left spinning by the previous case
    do not land in its samples), then its share of the samples back to back (its samples are
    spread evenly over the rounds). ``block=1, settle=0`` is a pure round-robin. CPU clock only.

    Memory: the cases share one process, so RSS cannot be attributed to one of them; every
    measurement carries the group's values (``memory.peak_scope = "interleaved group"``).

    Args:
        block (int): samples per visit of a full-length case. Defaults to 1.
        settle (int, optional): untimed calls at the start of each visit. Defaults to 0 when
            ``block == 1``, else 1.

    Returns:
        list[Measurement]: in the order of ``cases``.
    """
    if not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters={iters!r}: need at least 1 timed iteration")
    if not isinstance(block, int) or block < 1:
        raise InputError(f"block={block!r}: pass at least 1 sample per visit")
    settle = (0 if block == 1 else 1) if settle is None else int(settle)
    rounds = -(-iters // block)
    clk = CpuClock()
    plans = []
    for c in cases:
        ci = int(c.get("iters", iters))
        if ci < 1 or ci > iters:
            raise InputError(f"case {c.get('name')!r}: iters {ci} must be in [1, {iters}]")
        plans.append(_spread(ci, rounds))
    rss_start = rss_mb()
    for c in cases:
        for _ in range(int(c.get("warmup", warmup))):
            c["fn"]()
    rss_warm = rss_mb()
    scope = "interleaved group" if reset_peak_rss() else "process"
    totals: List[List[float]] = [[] for _ in cases]
    stages: List[Dict[str, List[float]]] = [{} for _ in cases]
    if progress is True:
        def show(r, n, _samples):
            print(f"  round {r}/{n} done ({len(cases)} cases)", file=sys.stderr, flush=True)
    else:
        show = progress or None
    for r in range(rounds):
        for k, c in enumerate(cases):
            if not plans[k][r]:
                continue
            for _ in range(settle):
                c["fn"]()
            for _ in range(plans[k][r]):
                token = clk.start()
                out = c["fn"]()
                ms = clk.stop(token)
                totals[k].append(ms)
                st_fn = c.get("stage_timings")
                if st_fn is not None:
                    st = {str(a): float(b) for a, b in dict(st_fn(out)).items()}
                    for a, b in st.items():
                        stages[k].setdefault(a, []).append(b)
                    if other_stage and st:
                        stages[k].setdefault(OTHER, []).append(ms - sum(st.values()))
        if show:
            show(r + 1, rounds, totals[0])
    rss_end = rss_mb()
    memory = {"rss_start_mb": rss_start, "rss_after_warmup_mb": rss_warm, "rss_end_mb": rss_end,
              "peak_rss_mb": peak_rss_mb(), "peak_scope": scope,
              "rss_growth_mb": (rss_end - rss_warm) if rss_end is not None and rss_warm is not None else None}
    out = []
    for k, c in enumerate(cases):
        n = len(totals[k])
        out.append(Measurement(name=c["name"], params=dict(c.get("params") or {}), clock=clk.name,
                               warmup=int(c.get("warmup", warmup)), iters=n, total=summarize(totals[k]),
                               stages={a: summarize(v) for a, v in stages[k].items() if len(v) == n},
                               memory=dict(memory), samples_ms=totals[k]))
    return out


@contextmanager
def timed_calls(targets: Sequence[tuple], sink: Dict[str, float], clock: Callable[[], int] = time.perf_counter_ns):
    """Temporarily wrap attributes so that their call time adds up in ``sink[stage]`` (ms).

    Used to split a pipeline that reports no stage timings (the PyTorch reference) without
    changing it. Nested wrapped calls count once, in the outermost stage. The attributes are
    restored on exit. Not thread-safe (benchmarks are single-threaded).

    Args:
        targets (Sequence[tuple]): ``(owner, attribute name, stage)``: ``owner`` a module or an object.
        sink (dict): receives ``{stage: accumulated ms}``; clear it between calls.
        clock (Callable[[], int]): nanosecond clock; ``time.thread_time_ns`` gives the CPU time of
            the calling thread instead of wall time. Defaults to ``time.perf_counter_ns``.
    """
    depth = [0]
    saved = []

    def wrap(fn, stage):
        def timed(*a, **k):
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                sink[stage] = sink.get(stage, 0.0) + (clock() - t0) / 1e6

        return timed

    try:
        for owner, attr, stage in targets:
            saved.append((owner, attr, owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else _MISSING,
                          getattr(owner, attr)))
            setattr(owner, attr, wrap(getattr(owner, attr), stage))
        yield sink
    finally:
        for owner, attr, own, _orig in reversed(saved):
            if own is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)


_MISSING = object()


def reference_stage_targets(ref) -> List[tuple]:
    """``timed_calls`` targets that split a ``ReferencePipeline`` call into the deployment
    pipeline's stages: preprocess (validation + resize/normalise), encoder (foundation model),
    propagation (IP-Basic, rel. depth resize, alignment, dual-space propagation), head, post."""
    from psdrt.export.reference import pipeline as RP
    from psdrt.export.reference import propagation as P

    targets = [(RP, "validate_frame", "preprocess"), (RP, "preprocess_rgb", "preprocess")]
    if ref.mode == "guided":
        return []
    targets += [(ref, "fm", "encoder"), (RP, "ip_basic_fill", "propagation"), (P, "resize_bicubic", "propagation"),
                (P, "align_inverse_ls", "propagation"), (P, "align_median", "propagation"),
                (P, "dual_propagation", "propagation")]
    if ref.mode == "psd":
        targets += [(ref, "head", "head"), (P, "post_process", "post")]
    return targets


# ------------------------------------------------------------------------------------------------
# environment


def _run_text(cmd: Sequence[str], timeout: float = 5.0) -> Optional[str]:
    """stdout of ``cmd`` (stripped), or None when it is missing, fails or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def _first_line_of(cmd: Sequence[str], timeout: float = 3.0) -> Optional[str]:
    """First stdout line of a command that runs until killed (``tegrastats``)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None
    try:
        deadline = time.monotonic() + timeout
        line = None
        while time.monotonic() < deadline and p.stdout is not None:
            line = p.stdout.readline().strip()
            if line:
                break
        return line or None
    except Exception:
        return None
    finally:
        p.kill()
        p.wait(timeout=2)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _dist_version(name: str) -> Optional[str]:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def _versions() -> Dict[str, Optional[str]]:
    """Package versions from the installed metadata (no heavy import)."""
    import numpy

    out = {"numpy": numpy.__version__, "psdrt": _dist_version("psdrt")}
    for key, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")), ("torch", ("torch",)),
                       ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-libs")),
                       ("opencv", ("opencv-python-headless", "opencv-python")), ("matplotlib", ("matplotlib",))):
        out[key] = next((v for v in map(_dist_version, dists) if v), None)
    if out["tensorrt"] is None and "tensorrt" in sys.modules:  # JetPack installs it without metadata
        out["tensorrt"] = getattr(sys.modules["tensorrt"], "__version__", None)
    return out


def _git_commit() -> Optional[Dict[str, Any]]:
    repo = Path(__file__).resolve().parent.parent
    head = _run_text(["git", "-C", str(repo), "rev-parse", "HEAD"])
    if not head:
        return None
    status = _run_text(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": head, "dirty": bool(status)}


def _gpus() -> List[Dict[str, str]]:
    out = _run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def _cuda_version() -> Optional[str]:
    head = _run_text(["nvidia-smi"])
    if head and "CUDA Version:" in head:
        return head.split("CUDA Version:", 1)[1].split()[0].strip(" |")
    return None


def capture_environment(ort_providers: bool = True) -> Dict[str, Any]:
    """What the numbers were measured on; every probe is optional and never raises.

    Keys: ``timestamp`` (UTC ISO 8601), ``cpu_model``, ``cpu_cores`` (logical), ``cpu_affinity``
    (cores this process may use), ``machine``, ``os``, ``python``, ``versions`` (numpy, psdrt,
    onnxruntime, torch, tensorrt, opencv, matplotlib: None when not installed), ``ort_providers``,
    ``gpus`` (nvidia-smi: name, driver, memory), ``cuda`` (driver's CUDA version), ``jetson``
    (``nvpmodel -q``, ``jetson_clocks --show``, one ``tegrastats`` line; None off Jetson),
    ``load_avg``, ``git`` (commit, dirty) and ``psdrt_threads`` (PSD_NUM_THREADS).
    """
    env: Dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
    probes = {
        "cpu_model": _cpu_model,
        "cpu_cores": os.cpu_count,
        "cpu_affinity": lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine,
        "os": platform.platform,
        "python": platform.python_version,
        "versions": _versions,
        "gpus": _gpus,
        "cuda": _cuda_version,
        "load_avg": lambda: [round(x, 2) for x in os.getloadavg()],
        "git": _git_commit,
    }
    if ort_providers:
        probes["ort_providers"] = lambda: list(__import__("onnxruntime").get_available_providers())
    for key, probe in probes.items():
        try:
            env[key] = probe()
        except Exception:
            env[key] = None
    jetson = {}
    for key, cmd in (("nvpmodel", ["nvpmodel", "-q"]), ("jetson_clocks", ["jetson_clocks", "--show"])):
        try:
            jetson[key] = _run_text(cmd)
        except Exception:
            jetson[key] = None
    try:
        jetson["tegrastats"] = _first_line_of(["tegrastats", "--interval", "500"])
    except Exception:
        jetson["tegrastats"] = None
    env["jetson"] = jetson if any(jetson.values()) else None
    try:
        from psdrt.runtime import config

        env["psdrt_threads"] = config.num_threads()
    except Exception:
        env["psdrt_threads"] = None
    return env


def machine_summary(env: Mapping[str, Any]) -> str:
    """One line naming the machine of a result file: CPU (cores), GPU, OS, date."""
    bits = [f"{env.get('cpu_model') or 'unknown CPU'} ({env.get('cpu_cores') or '?'} cores)"]
    gpus = env.get("gpus") or []
    if gpus:
        bits.append(", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in gpus))
    else:
        bits.append("no GPU")
    if env.get("jetson") and env["jetson"].get("nvpmodel"):
        bits.append("Jetson " + env["jetson"]["nvpmodel"].splitlines()[0])
    stamp = str(env.get("timestamp") or "")[:10]
    return ", ".join(bits) + (f"; {stamp}" if stamp else "")


def provenance(load_before: float, script: str) -> Dict[str, Any]:
    """What every result file records (the README's numbers must be traceable): the environment
    (:func:`capture_environment`: date, machine, git commit and dirty flag, versions), the 1-minute
    load average before and after the measurement, and the script that made it."""
    env = capture_environment(ort_providers=False)
    return {"script": script, "environment": env, "load_before": round(float(load_before), 2),
            "load_after": round(os.getloadavg()[0], 2)}


def provenance_line(prov: Mapping[str, Any]) -> str:
    """One Markdown sentence of a :func:`provenance` record, for the head of a result file."""
    env = prov.get("environment") or {}
    git = env.get("git") or {}
    commit = str(git.get("commit") or "?")[:12] + (" (dirty tree)" if git.get("dirty") else "")
    cores = env.get("cpu_cores") or "?"
    return (f"Measured by `python -m psdrt.benchmarks.{prov.get('script', '?')}` on {machine_summary(env)} "
            f"(UTC {env.get('timestamp', '?')}), psdrt {commit}; load average {prov.get('load_before')} before / "
            f"{prov.get('load_after')} after on {cores} cores (above about 1 per core, other work shared the CPU).")


# ------------------------------------------------------------------------------------------------
# result files


def new_results(runs: Sequence[Any], environment: Optional[Mapping[str, Any]] = None, *, title: str = "",
                comparisons: Sequence[Mapping[str, Any]] = (), notes: Sequence[str] = (),
                extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A result document (schema ``SCHEMA`` v``SCHEMA_VERSION``) from measurements or their dicts."""
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "percentile_method": PERCENTILE_METHOD,
        "environment": dict(environment) if environment is not None else capture_environment(),
        "runs": [r.to_dict() if isinstance(r, Measurement) else dict(r) for r in runs],
        "comparisons": [dict(c) for c in comparisons],
        "notes": list(notes),
        "extra": dict(extra or {}),
    }
    validate_results(doc)
    return doc


def validate_results(doc: Any, source: str = "results") -> Dict[str, Any]:
    """Check a result document's schema; returns it.

    Raises:
        ArtifactError: another schema, a newer/older version, or missing/mistyped fields; the
            message says which and how to regenerate the file.
    """
    fix = "regenerate it with `psdrt bench --out DIR` or the benchmark script that wrote it"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ArtifactError(f"{source} is not a psdrt benchmark result (schema {SCHEMA!r} expected); {fix}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{source} has schema_version {doc.get('schema_version')!r}, this psdrt reads "
                            f"{SCHEMA_VERSION}; {fix}")
    for key, typ in (("environment", dict), ("runs", list), ("comparisons", list), ("notes", list)):
        if not isinstance(doc.get(key), typ):
            raise ArtifactError(f"{source}: field {key!r} is missing or not a {typ.__name__}; {fix}")
    for i, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise ArtifactError(f"{source}: run {i} is not an object; {fix}")
        for key in ("name", "params", "clock", "warmup", "iters", "total", "stages", "memory"):
            if key not in run:
                raise ArtifactError(f"{source}: run {i} ({run.get('name', '?')}) has no {key!r}; {fix}")
        for stats in (run["total"], *run["stages"].values()):
            missing = [k for k in STAT_KEYS if k not in stats]
            if missing:
                raise ArtifactError(f"{source}: run {run['name']!r} statistics lack {missing}; {fix}")
    return doc


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_results(doc: Mapping[str, Any], out_dir, stem: str = "bench") -> Dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; returns their paths."""
    validate_results(dict(doc))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    paths["md"].write_text(render_markdown(doc))
    return paths


def load_results(path) -> Dict[str, Any]:
    """Read and validate a result JSON file.

    Raises:
        ArtifactError: missing, unreadable or of another schema/version.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise ArtifactError(f"cannot read {p} ({exc}); run the benchmark that writes it") from None
    except ValueError as exc:
        raise ArtifactError(f"{p} is not valid JSON ({exc}); regenerate it") from None
    return validate_results(doc, str(p))


def ratios(run: Mapping[str, Any], baseline: Mapping[str, Any], stat: str = "p50_ms") -> Dict[str, Any]:
    """Speed-up of ``run`` over ``baseline`` (``baseline / run`` of ``stat``; > 1: ``run`` is faster),
    end to end and for every stage both have."""
    def r(b, a):
        return b / a if a > 0 else None

    out = {"run": run["name"], "baseline": baseline["name"], "stat": stat,
           "total": r(baseline["total"][stat], run["total"][stat]), "stages": {}}
    for k, v in run["stages"].items():
        if k in baseline["stages"] and k != OTHER:
            out["stages"][k] = r(baseline["stages"][k][stat], v[stat])
    return out


def _f(x, nd=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    return f"{x:.{nd}f}"


def _size(params: Mapping[str, Any]) -> str:
    s = params.get("size")
    return f"{s[0]}x{s[1]}" if isinstance(s, (list, tuple)) and len(s) == 2 else str(s or "-")


def markdown_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """End-to-end statistics, one row per run."""
    lines = ["| run | size | p50 ms | p90 ms | p99 ms | mean ms | min ms | std ms | fps | peak RSS MB "
             "| RSS growth MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        t, m = run["total"], run.get("memory", {})
        lines.append(f"| {run['name']} | {_size(run.get('params', {}))} | {_f(t['p50_ms'])} | {_f(t['p90_ms'])} | "
                     f"{_f(t['p99_ms'])} | {_f(t['mean_ms'])} | {_f(t['min_ms'])} | {_f(t['std_ms'])} | "
                     f"{_f(t['fps'], 2)} | {_f(m.get('peak_rss_mb'), 0)} | {_f(m.get('rss_growth_mb'), 1)} |")
    return "\n".join(lines) + "\n"


def stage_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per-stage p50 (ms) and share of the end-to-end mean, one row per run that has stages."""
    staged = [r for r in runs if r.get("stages")]
    if not staged:
        return ""
    names: List[str] = []
    for r in staged:
        names += [k for k in r["stages"] if k not in names and k != OTHER]
    if any(OTHER in r["stages"] for r in staged):
        names.append(OTHER)
    lines = ["| run | " + " | ".join(f"{n} p50 ms" for n in names) + " | end-to-end p50 ms |",
             "|---|" + "---|" * (len(names) + 1)]
    for r in staged:
        cells = []
        mean = r["total"]["mean_ms"]
        for n in names:
            s = r["stages"].get(n)
            cells.append("-" if s is None else f"{_f(s['p50_ms'])} ({100 * s['mean_ms'] / mean:.0f} %)")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {_f(r['total']['p50_ms'])} |")
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """Speed-up rows (``ratios`` dicts)."""
    if not comparisons:
        return ""
    names: List[str] = []
    for c in comparisons:
        names += [k for k in c["stages"] if k not in names]
    lines = ["| run | vs | end-to-end | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for c in comparisons:
        cells = [("-" if c["stages"].get(n) is None else f"{c['stages'][n]:.2f}x") for n in names]
        tot = "-" if c.get("total") is None else f"{c['total']:.2f}x"
        lines.append(f"| {c['run']} | {c['baseline']} | {tot} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The whole result document as markdown (title, machine, tables, notes)."""
    env = doc.get("environment", {})
    title = doc.get("title") or "psdrt bench"
    ver = env.get("versions") or {}
    tools = ", ".join(f"{k} {v}" for k, v in ver.items() if v and k in ("numpy", "onnxruntime", "torch", "tensorrt"))
    lines = [f"# {title}", "", f"Machine: {machine_summary(env)}; {env.get('os', '')}, Python {env.get('python', '')}; "
             f"{tools}. Load average at start: {(env.get('load_avg') or ['?'])[0]}.",
             f"Percentiles: {doc.get('percentile_method', PERCENTILE_METHOD)}; fps = 1000 / mean.", "",
             markdown_table(doc["runs"])]
    st = stage_table(doc["runs"])
    if st:
        lines += ["Per stage: p50 ms (share of the end-to-end mean); `other` = end to end minus the stages.", "", st]
    ct = comparison_table(doc.get("comparisons", []))
    if ct:
        lines += ["Speed-up (baseline p50 / run p50; > 1: the run is faster):", "", ct]
    for note in doc.get("notes", []):
        lines += [f"- {note}"]
    return "\n".join(lines).rstrip("\n") + "\n"
