"""``psdrt inspect``: what a file or folder is, or what this machine can run.

* a checkpoint (``.pth/.pt/.ckpt/.bin``): foundation model, size, head, licence (needs torch);
* a ``psdrt build`` directory (or its ``manifest.json``): parts, precisions, gate results, file
  sizes, preset, working and encoder sizes, preprocessing, kernels (stdlib only);
* an ONNX file: inputs and outputs (names, shapes, dtypes), opsets, IR version, producer, size
  (the ``onnx`` package, imported here only);
* a TensorRT engine: what its sidecar manifest says it was built for (TensorRT not needed);
* nothing: the environment.
"""

from __future__ import annotations

import importlib
import json
import platform
from pathlib import Path

from ..errors import ArtifactError, BackendUnavailable, InputError
from .common import format_size

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}


def _preprocess_text(method, a: float) -> str:
    """How a manifest's ``preprocess`` resizes (docs/preprocessing.md)."""
    if method == "official":
        return "'official': RGB uint8, scikit-image resize(order=3) (cubic B-spline, as the official loaders)"
    if method == "bicubic":
        return f"'bicubic': RGB uint8 / 255, bicubic resize (a = {a}, PyTorch semantics)"
    return (f"none recorded ({method!r}): a psdrt 0.1 directory with the bicubic input, which this psdrt "
            "refuses; rebuild it with `psdrt build ... --force`")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="describe a checkpoint, a psdrt build directory, an ONNX file or a TensorRT engine, or "
        "the environment",
        description="Describe a checkpoint (foundation model, size, head, licence), a psdrt build "
        "directory (parts, precisions, gate results, file sizes, preset, working size, encoder size, "
        "preprocessing, kernels), an ONNX file (inputs/outputs, opset, IR version, producer, size) or a "
        "TensorRT engine (what its sidecar manifest says it was built for; TensorRT itself is not needed), "
        "or with no argument the environment (which optional backends are importable and why not).",
    )
    p.add_argument("path", nargs="?",
                   help="checkpoint (.pth/.pt/.ckpt), build directory, .onnx or .engine; omit for the environment")
    p.add_argument("--verify", action="store_true",
                   help="build directory / engine: also check the SHA-256 of every file against its manifest")
    p.set_defaults(func=run)


def _version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
        return getattr(mod, "__version__", "installed")
    except Exception as exc:  # report, never fail: this is a diagnostic
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def environment_report() -> str:
    from ... import __version__

    rows = [("psdrt", __version__), ("python", platform.python_version()), ("machine", platform.machine())]
    for name in ("numpy", "cv2", "torch", "onnx", "onnxruntime", "tensorrt"):
        rows.append((name, _version(name)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    problem = onnxruntime_conflict()
    if problem:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def onnxruntime_conflict(installed=None):
    """A message when both onnxruntime and onnxruntime-gpu are installed (they overwrite each other).

    Args:
        installed (set[str], optional): distribution names to check; defaults to the environment's.
    """
    if installed is None:
        from importlib import metadata

        installed = {d.metadata["Name"].lower() for d in metadata.distributions() if d.metadata["Name"]}
    if {"onnxruntime", "onnxruntime-gpu"} <= set(installed):
        return ("both onnxruntime and onnxruntime-gpu are installed and write the same package folder; "
                "keep one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'psdrt[cpu]' (or [gpu])")
    return None


# ------------------------------------------------------------------------------------------ files


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def _num(v, fmt="{:.2e}") -> str:
    return "-" if v is None else fmt.format(float(v))


def _rows(rows: list) -> list:
    """Left-aligned columns."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def describe_build_dir(root, verify: bool = False) -> str:
    """What a ``psdrt build`` directory holds, from its ``manifest.json`` (no torch, no onnxruntime).

    Raises:
        ArtifactError: no or an unreadable manifest.
    """
    root = Path(root)
    mpath = root / "manifest.json"
    fix = f"rebuild it with `psdrt build --checkpoint CKPT --size HxW --out {root}`"
    if not mpath.is_file():
        raise ArtifactError(f"{root} has no manifest.json, so it is not a psdrt build directory; {fix}")
    try:
        m = json.loads(mpath.read_text())
        size, arts = tuple(m["size"]), list(m.get("artifacts") or [])
        model = m.get("model") or {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{mpath} is unreadable or corrupt ({type(exc).__name__}: {exc}); {fix}") from None
    from ..preprocess import BICUBIC_A, IMAGENET_MEAN, IMAGENET_STD

    fm = m.get("fm_size")
    fm_text = format_size(fm) if fm else "?"
    lines = [
        f"build directory: {root}",
        f"format:          {m.get('format')} (psdrt {m.get('psdrt_version', '?')}, created {m.get('created', '?')})",
        f"model:           {model.get('kind', '?')} checkpoint {model.get('checkpoint', '?')}, encoder "
        f"{model.get('encoder', '?')}" + (f" [weights licence: {model['licence']}]" if model.get("licence") else ""),
        f"mode:            {model.get('mode', '?')} (parts: {'encoder + head' if model.get('mode') == 'psd' else 'encoder'})",
        f"working size:    {format_size(size)} (frames must have it; `psdrt run --fit resize|crop` adapts others)",
        f"encoder input:   {fm_text} (fm_lower {m.get('fm_lower', '?')})",
        f"preprocessing:   {_preprocess_text(m.get('preprocess'), BICUBIC_A)} to {fm_text}, "
        f"ImageNet mean {IMAGENET_MEAN} / std {IMAGENET_STD}, NCHW float32 (runtime.preprocess)",
        f"preset:          {m.get('preset', '?')}",
        f"target:          {m.get('target', '?')}; precisions requested: {', '.join(m.get('precisions') or []) or '?'}",
        f"opset:           {m.get('opset', '?')}",
    ]
    tools = m.get("tools") or {}
    if tools:
        lines.append("tools:           " + ", ".join(f"{k} {v}" for k, v in tools.items()))
    rows = [("artefact", "part", "precision", "backend", "size", "gate", "max rel", "max abs", "depth RMSE mm",
             "file")]
    usable = {}
    for a in arts:
        if not isinstance(a, dict):
            continue
        gate = a.get("gate") or {}
        f = root / str(a.get("file")) if a.get("file") else None
        state = "no file"
        nbytes = "-"
        if f is not None and f.is_file():
            nbytes = _mb(f.stat().st_size)
            state = "ok"
            if verify:
                from ..manifest import sha256_file

                state = "sha256 ok" if sha256_file(f) == a.get("sha256") else "SHA-256 MISMATCH"
        elif f is not None:
            state = "MISSING"
        passed = bool(gate.get("passed"))
        rows.append((a.get("name", "?"), a.get("part", "?"), a.get("precision", "?"), a.get("backend", "onnxruntime"),
                     nbytes, "passed" if passed else "FAILED", _num(gate.get("max_rel")), _num(gate.get("max_abs")),
                     _num(gate.get("depth_rmse_mm"), "{:.2f}"), state))
        if passed and a.get("usable", True) and state in ("ok", "sha256 ok"):
            usable.setdefault(a.get("precision"), set()).add(a.get("part"))
        if not passed and gate.get("why"):
            rows.append(("", "", "", "", "", f"why: {str(gate['why'])[:120]}", "", "", "", ""))
    lines.append("artefacts:")
    lines += _rows(rows) if len(rows) > 1 else ["  none"]
    kernels = m.get("kernels") or {}
    if kernels:
        ks = []
        for kind, k in kernels.items():
            f = root / str(k.get("file", ""))
            ks.append(f"{kind} {k.get('file')} ({_mb(f.stat().st_size) if f.is_file() else 'MISSING'})")
        lines.append("kernels:         " + "; ".join(ks))
    else:
        lines.append("kernels:         none in the directory (the installed kernel library is used)")
    parts = {"encoder", "head"} if model.get("mode") == "psd" else {"encoder"}
    runnable = [p for p, have in usable.items() if parts <= have]
    lines.append("runs as:         " + (", ".join(f"psdrt run --artifacts {root} --precision {p}" for p in runnable)
                                       if runnable else "nothing usable (every precision misses a part or failed its gate)"))
    return "\n".join(lines)


def _onnx_type(type_proto, onnx) -> tuple[str, str]:
    t = type_proto.tensor_type
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
    return ("x".join(dims) if dims else "scalar"), dtype


def describe_onnx(path) -> str:
    """Inputs, outputs, opsets, IR version, producer and size of an ONNX file (needs ``onnx``).

    Raises:
        BackendUnavailable: the ``onnx`` package is missing (the message says ``pip install onnx``).
        ArtifactError: not a readable ONNX model.
    """
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(f"reading ONNX files needs the onnx package ({exc}): pip install onnx "
                                 "(or pip install 'psdrt[export]')") from None
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for damaged files
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]}); "
                            "re-export it (`psdrt build`, or psdrt.export.onnx_export) or download it again") from None
    g = model.graph
    init = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in init]
    kinds = {i.name for i in ins}
    kind = ("psdrt encoder" if "rgb" in kinds else "psdrt correction head" if {"sparse", "depth_diff"} <= kinds
            else "unknown role")
    ops = {n.op_type for n in g.node}
    elem = {i.data_type for i in g.initializer}
    precision = ("INT8 Q/DQ" if "QuantizeLinear" in ops else "FP16" if onnx.TensorProto.FLOAT16 in elem else
                 "FP32" if elem else "?")
    params = 0
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        params += n
    lines = [
        f"onnx file:   {path} ({_mb(path.stat().st_size)})",
        f"graph:       {g.name or '?'}: {kind}, {len(g.node)} nodes, {params / 1e6:.2f} M weights, {precision}",
        f"producer:    {model.producer_name or '?'} {model.producer_version or ''}".rstrip(),
        f"IR version:  {model.ir_version}",
        "opsets:      " + ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
        "inputs:",
    ]
    lines += _rows([(i.name, *_onnx_type(i.type, onnx)) for i in ins]) if ins else ["  none"]
    lines.append("outputs:")
    lines += _rows([(o.name, *_onnx_type(o.type, onnx)) for o in g.output]) if g.output else ["  none"]
    return "\n".join(lines)


def describe_engine(path, verify: bool = False) -> str:
    """What a TensorRT engine's sidecar manifest says it was built for (TensorRT is not imported).

    Raises:
        ArtifactError: no sidecar manifest, or an unreadable or edited one.
    """
    from ..manifest import manifest_path, read_manifest, sha256_file

    path = Path(path)
    m = read_manifest(path)  # ArtifactError naming the fix when missing, corrupt or edited
    gate = m.gate or {}
    state = "not checked (--verify)"
    if verify and m.engine_sha256:
        state = "matches the manifest" if sha256_file(path) == m.engine_sha256 else "DIFFERS from the manifest"
    def dims(v):
        if isinstance(v, (list, tuple)):
            return "x".join(map(str, v))
        if isinstance(v, dict):  # an optimisation profile
            return ", ".join(f"{k} {dims(x)}" for k, x in v.items())
        return str(v)

    shapes = "; ".join(f"{k} {dims(v)}" for k, v in (m.shapes or {}).items())
    lines = [
        f"tensorrt engine: {path} ({_mb(path.stat().st_size)}), manifest {manifest_path(path).name}",
        f"built with:      TensorRT {m.trt_version} on {m.gpu_name} (compute capability {m.compute_capability})",
        f"precision:       {m.precision}",
        f"shapes:          {shapes or '?'}",
        f"builder options: {json.dumps(dict(m.builder_options or {}), sort_keys=True)}",
        f"source onnx:     {m.onnx_path or '?'} (sha256 {m.onnx_sha256[:16]}...)",
        f"engine sha256:   {(m.engine_sha256 or '?')[:16]}... ({state})",
        f"fingerprint:     {m.fingerprint[:16]}... (consistent with the manifest's fields)",
        "gate:            " + ("passed" if gate.get("passed") else "FAILED" if gate else "not run"),
        f"created:         {m.created}",
        f"loads only with TensorRT {m.trt_version} on the GPU {m.gpu_name} (sm {m.compute_capability}); elsewhere rebuild "
        "it with `psdrt build --target desktop-gpu|orin` on the target (engines are not portable)",
    ]
    return "\n".join(lines)


def run(args) -> int:
    if not args.path:
        print(environment_report())
        return 0
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path} does not exist; pass a checkpoint, a psdrt build directory, an .onnx or an "
                         ".engine file (or nothing, for the environment)")
    verify = getattr(args, "verify", False)
    if path.is_dir() and (path / "manifest.json").is_file():
        print(describe_build_dir(path, verify))
        return 0
    if path.is_file() and path.name == "manifest.json":
        print(describe_build_dir(path.parent, verify))
        return 0
    suffix = path.suffix.lower()
    if path.is_dir() and suffix not in CHECKPOINT_SUFFIXES:
        raise ArtifactError(f"{path} is a folder without manifest.json, not a psdrt build directory; pass one "
                            "written by `psdrt build --checkpoint CKPT --size HxW --out DIR`, or a file")
    if suffix == ".onnx":
        print(describe_onnx(path))
        return 0
    if suffix in (".engine", ".plan"):
        print(describe_engine(path, verify))
        return 0
    if suffix in CHECKPOINT_SUFFIXES:  # a folder named like a checkpoint is reported as a folder there
        try:
            from ...export.checkpoints import inspect_checkpoint
        except ImportError as exc:
            raise BackendUnavailable(
                f"reading checkpoints needs PyTorch ({exc}); install the CPU build: pip install torch"
            ) from None
        print(inspect_checkpoint(path).describe())
        return 0
    raise InputError(
        f"{path}: unknown file type {path.suffix!r}; psdrt inspect reads checkpoints "
        f"({', '.join(sorted(CHECKPOINT_SUFFIXES))}), psdrt build directories, .onnx and .engine files, or, "
        "with no argument, the environment"
    )
