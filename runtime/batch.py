"""Whole datasets through ``psdrt run``'s per-frame code on Ray Data (``psdrt batch``, the ``ray`` extra).

The inputs are any that ``psdrt run`` reads (folders of RGB + sparse depth paired by stem, or point
clouds with ``--calib``/``--extrinsics``) or an evaluation dataset's layout (``runtime.datasets``,
``--dataset NAME --root DIR``). Every frame goes through ``run_cmd.read_frame`` (or the dataset
reader), ``run_cmd.complete_frame`` and ``run_cmd.write_frame``, so a frame's files are byte-identical
to what ``psdrt run`` writes for it, with the same names.

Execution: a Ray Data ``map_batches`` over small batches of frame descriptions (paths, never pixels:
the driver holds no image), with a callable class: each Ray actor builds its pipeline once from
picklable arguments (``BatchSpec.pipeline``: the model flags of ``build_pipeline``), on one GPU
(``num_gpus=1``) where the cluster has GPUs, else with ``--threads`` CPU threads. The results stream
back to the driver, which counts them, prints progress and records failures as they come.

Idempotent and resumable: before any work is scheduled, a frame whose output files all exist is
skipped. A frame's files are written into ``<out>/.psdrt-batch-tmp/<unique>/`` and then renamed
into place (``os.replace``, atomic on one filesystem), so a killed job never leaves a half-written
file under an output name; a frame interrupted between its renames lacks a file, so it is redone.
One job per output folder at a time: a starting job removes the temporary folder a killed one left.

Failures: a frame that raises is recorded in ``<out>/failures.jsonl`` (one JSON object per line:
stem, input files, error, exit code; rewritten by each run, so it lists the latest run's failures,
which a rerun retries) and does not stop the job. ``<out>/summary.json`` (written at the end,
atomically) has the frame counts (done, skipped, failed, unmatched), wall time, throughput and the
per-stage times of the pipeline's ``DepthResult.info['timings_ms']``.

Ray is imported lazily: ``import psdrt.runtime`` works without it; ``run_batch`` raises
``BackendUnavailable`` naming ``pip install 'psdrt[ray]'``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ._lazy import lazy_import
from .errors import InputError, PsdError

__all__ = ["BatchSpec", "run_batch", "execute", "frame_outputs", "FAILURES", "SUMMARY", "TMP_DIR",
           "MIN_RAY_VERSION"]

log = logging.getLogger(__name__)

#: the oldest Ray accepted: 2.40.0 measured working with numpy 2 / pyarrow 26, 2.9.3 not (pyproject's [ray])
MIN_RAY_VERSION = "2.40"
ray = lazy_import("ray", MIN_RAY_VERSION, extra="ray")

FAILURES = "failures.jsonl"
SUMMARY = "summary.json"
TMP_DIR = ".psdrt-batch-tmp"

#: the model flags ``run_cmd.build_pipeline`` reads (what a Ray actor receives to build its pipeline)
PIPELINE_FLAGS = ("mode", "artifacts", "precision", "engine", "checkpoint", "encoder", "head", "preset", "guided_kind")


@dataclass
class BatchSpec:
    """Everything a Ray actor needs, picklable: how to build the pipeline and read/write a frame."""

    out: str
    formats: tuple
    pipeline: dict  # PIPELINE_FLAGS -> value, an argparse.Namespace for build_pipeline
    ply_stride: int = 1
    convention: Optional[str] = None
    fit: Optional[str] = None
    sparse_scale: Optional[float] = None
    K: Optional[np.ndarray] = None
    projection: Any = None  # run_cmd.Projection
    reader: Any = None  # a runtime.datasets reader without its entries (the rows carry them)
    pattern: Optional[str] = None
    seed: int = 0
    threads: Optional[int] = None
    source: str = "the pipeline"
    extra: dict = field(default_factory=dict)


def frame_outputs(out, stem: str, formats) -> list[Path]:
    """The files ``psdrt run`` writes for frame ``stem`` (``runtime.outputs.FORMATS``); a stem with
    ``/`` (a dataset frame's name) lands in that sub-folder of ``out``."""
    from .outputs import FORMATS

    rel = Path(stem)
    folder = Path(out) / rel.parent
    return [folder / FORMATS[f].format(stem=rel.name) for f in formats]


def _is_done(out, stem: str, formats) -> bool:
    return all(p.is_file() for p in frame_outputs(out, stem, formats))


# ------------------------------------------------------------------------------------------------ actor


class FrameWorker:
    """The per-actor callable of ``map_batches``: builds the pipeline once, then completes batches
    of frame rows. A frame's error is returned in its row (``ok`` False), never raised."""

    def __init__(self, spec: BatchSpec) -> None:
        if spec.threads:
            # OpenMP (the kernel library) reads it when it starts, which is after this in a fresh actor
            os.environ["OMP_NUM_THREADS"] = str(spec.threads)
            import cv2

            cv2.setNumThreads(int(spec.threads))
        from .cli.run_cmd import build_pipeline

        self.spec = spec
        self.convention = None
        if spec.convention:
            from .datasets import get_convention

            self.convention = get_convention(spec.convention)
        self.pipe = build_pipeline(argparse.Namespace(**spec.pipeline), self.convention)
        self.tmp_root = Path(spec.out) / TMP_DIR

    def _complete(self, row: dict):
        from .cli.run_cmd import FrameJob, complete_frame, read_frame

        s = self.spec
        if s.reader is not None:
            from .datasets import _Entry, sample_sparse

            opt = lambda k: Path(row[k]) if row[k] else None  # noqa: E731
            entry = _Entry(row["stem"], Path(row["rgb"]), opt("gt"), opt("sparse"), opt("intrinsics"))
            sample = s.reader.load(entry)
            rgb, sparse, K, notes = sample.rgb, sample_sparse(sample, s.pattern, s.seed), sample.K, []
        else:
            job = FrameJob(row["stem"], Path(row["rgb"]), Path(row["sparse"]),
                           Path(row["intrinsics"]) if row["intrinsics"] else None)
            rgb, sparse, K, notes = read_frame(job, s.K, s.sparse_scale, convention=self.convention,
                                               projection=s.projection)
        result, rgb, K, seconds, more = complete_frame(self.pipe, rgb, sparse, K, row["stem"],
                                                       convention=self.convention, fit=s.fit, source=s.source)
        return result, rgb, K, seconds, notes + more

    def _write(self, result, rgb, K, stem: str) -> list:
        """``run_cmd.write_frame`` into a private temporary folder, then each file renamed into place."""
        from .cli.run_cmd import write_frame

        tmp = self.tmp_root / f"{os.getpid()}-{uuid.uuid4().hex}"
        base = Path(stem).name
        try:
            files, notes = write_frame(result, tmp, base, rgb, K, self.spec.formats, self.spec.ply_stride)
            dests = frame_outputs(self.spec.out, stem, self.spec.formats)
            dests[0].parent.mkdir(parents=True, exist_ok=True)
            by_name = {p.name: p for p in files.values()}
            for dest in dests:
                os.replace(by_name[dest.name], dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return notes

    def __call__(self, batch: dict) -> dict:
        n = len(batch["stem"])
        out = {"stem": [], "ok": [], "error": [], "exit_code": [], "seconds": [], "timings": [], "notes": [],
               "mode": []}
        for i in range(n):
            row = {k: (str(v[i]) if k != "i" else int(v[i])) for k, v in batch.items()}
            stem = row["stem"]
            try:
                result, rgb, K, seconds, notes = self._complete(row)
                notes += self._write(result, rgb, K, stem)
                ok, err, code, mode = True, "", 0, result.mode
                timings = json.dumps(result.info.get("timings_ms", {}))
            except PsdError as exc:
                ok, err, code, seconds, timings, notes, mode = False, str(exc), exc.exit_code, 0.0, "{}", [], ""
            except Exception as exc:  # a bad frame must not stop the job; reported with its type
                ok, err, code, seconds, timings, notes, mode = (False, f"{type(exc).__name__}: {exc}", 1, 0.0, "{}",
                                                                [], "")
            for k, v in (("stem", stem), ("ok", ok), ("error", err), ("exit_code", code), ("seconds", seconds),
                         ("timings", timings), ("notes", "; ".join(notes)), ("mode", mode)):
                out[k].append(v)
        return {"stem": np.array(out["stem"], dtype=object), "ok": np.array(out["ok"], dtype=bool),
                "error": np.array(out["error"], dtype=object), "exit_code": np.array(out["exit_code"], np.int64),
                "seconds": np.array(out["seconds"], np.float64), "timings": np.array(out["timings"], dtype=object),
                "notes": np.array(out["notes"], dtype=object), "mode": np.array(out["mode"], dtype=object)}


# ------------------------------------------------------------------------------------------------ driver


def _rows_and_spec(args, formats):
    """(rows, spec, unmatched, what) from the parsed ``psdrt batch`` arguments, checked before Ray starts."""
    from .cli import run_cmd

    # absolute paths: a Ray worker's working directory is not the driver's (on a cluster, not even its machine)
    args = copy.copy(args)
    for name in ("out", "rgb", "sparse", "points", "intrinsics", "root", "list_file", "sparse_dir", "artifacts",
                 "checkpoint", "encoder", "head"):
        if getattr(args, name, None):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    pipeline = {k: getattr(args, k) for k in PIPELINE_FLAGS}
    source = f"the build directory {args.artifacts}" if args.artifacts else "the pipeline"
    common = dict(out=str(args.out), formats=tuple(formats), ply_stride=int(args.ply_stride), fit=args.fit,
                  threads=args.threads, source=source)
    if args.dataset:
        bad = [f for f, v in (("--rgb", args.rgb), ("--sparse", args.sparse), ("--points", args.points),
                              ("--convention", args.convention), ("--sparse-scale", args.sparse_scale),
                              ("--intrinsics", args.intrinsics), ("--calib", args.calib),
                              ("--extrinsics", args.extrinsics))
               + tuple((f"--{n}", getattr(args, n)) for n in ("fx", "fy", "cx", "cy")) if v is not None]
        if bad:
            raise InputError(f"--dataset reads the frames, their K and depth scale from the dataset's layout: drop "
                             f"{', '.join(bad)}")
        from .datasets import STORED, get_reader, parse_patterns

        reader = get_reader(args.dataset)(root=args.root, list_file=args.list_file, limit=args.limit,
                                          crop=not args.no_crop, sparse_dir=args.sparse_dir)
        if args.pattern is None and not reader.has_sparse:
            raise InputError(f"{reader.title} ({args.root or 'built-in'}) has no stored sparse files: pass --pattern "
                             "random1, random0.1, pseudo_hole or harris (made from the ground truth, seeded by --seed "
                             "and the frame name, as psdrt eval does)")
        pattern = STORED if args.pattern is None else args.pattern
        pats = parse_patterns(pattern, reader.has_sparse)
        if len(pats) != 1:
            raise InputError(f"--pattern {args.pattern!r}: psdrt batch writes one output per frame, give one pattern")
        if pipeline["preset"] is None and reader.key:
            pipeline["preset"] = reader.key  # the dataset's propagation preset, as psdrt eval uses it
        rows = [{"i": i, "stem": e.name, "rgb": str(e.rgb), "sparse": str(e.sparse) if e.sparse else "",
                 "gt": str(e.gt) if e.gt else "", "intrinsics": str(e.K) if e.K else ""}
                for i, e in enumerate(reader.entries)]
        shell = copy.copy(reader)
        shell.entries = []  # the rows carry them
        desc = reader.describe()
        spec = BatchSpec(pipeline=pipeline, reader=shell, pattern=pats[0], seed=int(args.seed), **common)
        return rows, spec, [], f"{desc['title']} ({desc['root']}), pattern {pats[0]}"
    for f, v in (("--root", args.root), ("--list", args.list_file), ("--limit", args.limit),
                 ("--sparse-dir", args.sparse_dir), ("--pattern", args.pattern)):
        if v is not None:
            raise InputError(f"{f} reads an evaluation dataset: pass --dataset NAME too (or drop it)")
    if not args.rgb or not (args.sparse or args.points):
        raise InputError("give the frames: --rgb DIR with --sparse DIR or --points DIR (paired by stem), or "
                         "--dataset NAME [--root DIR]")
    convention, K, projection, jobs, unmatched = run_cmd.prepare_frames(args)
    rows = [{"i": i, "stem": j.stem, "rgb": str(j.rgb), "sparse": str(j.sparse), "gt": "",
             "intrinsics": str(j.intrinsics) if j.intrinsics else ""} for i, j in enumerate(jobs)]
    spec = BatchSpec(pipeline=pipeline, convention=args.convention, sparse_scale=args.sparse_scale, K=K,
                     projection=projection, **common)
    what = run_cmd._scale_text(jobs, args.sparse_scale, convention, projection)
    return rows, spec, unmatched, what


def _init_ray(args):
    r = ray.load()
    if r.is_initialized():
        return r, False
    kw = {"log_to_driver": bool(args.verbose_workers)}
    if args.address:
        if args.num_cpus is not None:
            raise InputError("--num-cpus sizes a local Ray started by psdrt batch; with --address the cluster has "
                             "its own resources: drop it")
        r.init(address=args.address, **kw)
    else:
        r.init(num_cpus=args.num_cpus, include_dashboard=False, **kw)
    return r, True


def _stats(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "total": float(a.sum())}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def execute(args, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run ``psdrt batch`` for parsed arguments (see ``run_batch``) and return the summary."""
    from .cli import run_cmd

    say = progress or (lambda line: None)
    from .cli.common import check_out_dir

    formats = run_cmd.check_common(args)
    check_out_dir(args.out)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads} must be at least 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.actors is not None and args.actors < 1:
        raise InputError(f"--actors {args.actors} must be at least 1")
    if args.gpus not in ("auto", "0", "1"):
        raise InputError(f"--gpus {args.gpus!r}: use auto (one GPU per actor where the cluster has GPUs), 1 or 0")
    rows, spec, unmatched, what = _rows_and_spec(args, formats)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)  # what a killed job left (one job per --out)
    todo = [r for r in rows if not _is_done(out, r["stem"], formats)]
    skipped = len(rows) - len(todo)
    for msg in unmatched:
        say(f"unmatched: {msg}")
    (out / FAILURES).write_text("")
    failures: list[dict] = []
    times, stage_ms = [], {}
    done = 0
    t_all = time.perf_counter()
    actors, placement, modes = 0, "none", set()
    t_run = None
    if todo:
        r, started = _init_ray(args)
        t_run = time.perf_counter()
        restore: list = []
        try:
            import ray.data as rd

            ctx = rd.DataContext.get_current()
            if not args.ray_progress:  # restored below: a caller's own Ray Data keeps its settings
                data_log = logging.getLogger("ray.data")
                restore.append((data_log.setLevel, data_log.level))
                data_log.setLevel(logging.WARNING)
                for name in ("enable_progress_bars", "enable_operator_progress_bars"):
                    if hasattr(ctx, name):
                        restore.append((lambda v, n=name: setattr(ctx, n, v), getattr(ctx, name)))
                        setattr(ctx, name, False)
            res = r.cluster_resources()
            gpus = int(res.get("GPU", 0))
            use_gpu = args.gpus == "1" or (args.gpus == "auto" and gpus > 0)
            if use_gpu:
                if gpus < 1:
                    raise InputError("--gpus 1: the Ray cluster has no GPU; use --gpus auto or 0 (CPU actors)")
                remote = {"num_gpus": 1, "num_cpus": 1}
                actors = args.actors or gpus
                placement = "1 GPU per actor"
            else:
                threads = spec.threads or 1
                spec.threads = threads
                remote = {"num_cpus": threads}
                actors = args.actors or max(1, int(res.get("CPU", 1)) // threads)
                placement = f"CPU, {threads} thread(s) per actor"
            blocks = -(-len(todo) // args.batch_size)
            actors = max(1, min(actors, blocks))  # an actor without a block would only start up
            say(f"psdrt batch: {len(rows)} frame(s), {skipped} already done, {len(todo)} to do; {what}; "
                f"{actors} Ray actor(s) ({placement}), batches of {args.batch_size}; outputs in {out}")
            ds = rd.from_items(todo, override_num_blocks=blocks) \
                if _has_param(rd.from_items, "override_num_blocks") else rd.from_items(todo)
            # compute=ActorPoolStrategy(size=n): `concurrency=n` is deprecated from Ray 2.51 on
            ds = ds.map_batches(FrameWorker, fn_constructor_args=(spec,), batch_size=args.batch_size,
                                batch_format="numpy", compute=rd.ActorPoolStrategy(size=actors), **remote)
            with open(out / FAILURES, "a") as fail_file:
                by_stem = {row["stem"]: row for row in todo}
                k = 0
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for j in range(len(batch["stem"])):
                        k += 1
                        stem = str(batch["stem"][j])
                        if bool(batch["ok"][j]):
                            done += 1
                            modes.add(str(batch["mode"][j]))
                            sec = float(batch["seconds"][j])
                            times.append(sec)
                            for name, ms in json.loads(str(batch["timings"][j])).items():
                                stage_ms.setdefault(name, []).append(float(ms))
                            notes = str(batch["notes"][j])
                            say(f"[{skipped + k}/{len(rows)}] {stem}: {sec * 1000:.1f} ms" + (f"; {notes}" if notes
                                                                                               else ""))
                        else:
                            src = by_stem.get(stem, {})
                            rec = {"stem": stem, "rgb": src.get("rgb"), "sparse": src.get("sparse") or None,
                                   "error": str(batch["error"][j]), "exit_code": int(batch["exit_code"][j])}
                            failures.append(rec)
                            fail_file.write(json.dumps(rec) + "\n")
                            fail_file.flush()
                            say(f"[{skipped + k}/{len(rows)}] {stem}: FAILED: {rec['error']}")
        except PsdError:
            raise
        except Exception as exc:  # e.g. an actor whose pipeline could not be built
            cause = _root_cause(exc)
            if isinstance(cause, PsdError):
                raise type(cause)(f"a Ray actor failed: {cause}") from exc
            raise PsdError(f"the Ray job failed: {type(cause).__name__}: {cause}") from exc
        finally:
            for undo, value in restore:
                undo(value)
            if started:
                r.shutdown()
    else:
        say(f"psdrt batch: {len(rows)} frame(s), all already done; outputs in {out}")
    t_end = time.perf_counter()
    wall = t_end - t_all
    run_s = t_end - t_run if t_run is not None else 0.0
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)
    summary = {
        "frames": len(rows), "done": done, "skipped": skipped, "failed": len(failures), "unmatched": len(unmatched),
        # run_seconds: from Ray ready to the last result (actor start-up included, Ray's own start not)
        "wall_seconds": wall, "run_seconds": run_s, "frames_per_second": done / run_s if done and run_s > 0 else 0.0,
        "pipeline_ms": _stats(np.asarray(times) * 1000.0),
        "stage_ms": {name: _stats(v) for name, v in stage_ms.items()},
        "mode": ",".join(sorted(modes)) or spec.pipeline.get("mode"), "actors": actors, "placement": placement,
        "formats": list(formats), "out": str(out), "failures_file": str(out / FAILURES),
        "exit_code": failures[0]["exit_code"] if failures else 0,
    }
    _atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def _has_param(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__
        if nxt is None or not isinstance(nxt, BaseException):
            break
        exc = nxt
    return exc


def run_batch(out, progress: Optional[Callable[[str], None]] = None, **options) -> dict:
    """Complete a whole folder or dataset on Ray Data; what ``psdrt batch`` does.

    Args:
        out (str | Path): output folder (``--out``).
        progress (callable | None): called with each progress line (default: none).
        **options: the long options of ``psdrt batch`` with ``_`` for ``-``: ``rgb``, ``sparse``,
            ``points``, ``calib``, ``extrinsics``, ``intrinsics``, ``fx``..``cy``, ``sparse_scale``,
            ``convention``, ``dataset``, ``root``, ``list_file``, ``limit``, ``pattern``, ``seed``,
            ``mode``, ``artifacts``, ``precision``, ``formats``, ``fit``, ``address``,
            ``num_cpus``, ``gpus``, ``actors``, ``threads``, ``batch_size``... (``psdrt batch -h``).
            Uses the running Ray where one is initialised in this process, else starts one
            (``address`` / ``num_cpus``) and shuts it down at the end.

    Returns:
        dict: the summary also written to ``<out>/summary.json``.

    Raises:
        BackendUnavailable: Ray is missing (``pip install 'psdrt[ray]'``).
        InputError: bad options or inputs (before any work is scheduled).
    """
    from .cli.batch_cmd import namespace

    ray.load()
    return execute(namespace(out=str(out), **options), progress)
