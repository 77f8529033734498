"""The Triton Inference Server model repository (runtime.triton, ``psdrt build --triton``).

* Layout: both variants in every mode pass ``check_model_repository`` (configs parsed with
  tritonclient's ``model_config_pb2``), and broken repositories are reported, rule by rule.
* Stages without a server: the Python stages chained as the ensemble chains them give
  ``Pipeline``'s depth bit for bit.
* Served: the python variant (guided, propagate, psd over tiny artefacts) on the CPU
  ``tritonserver`` of the ``nvidia-pytriton`` wheel, on 127.0.0.1 at free ports, queried with
  ``TritonClient``: bit-identical to ``Pipeline`` (the C session for the artefact modes), bad input
  answered with the typed error; bounded (readiness 120 s, 60 s per request, a handful of requests)
  and the server is always stopped. Skips with the reason where the binary, its stub for this
  Python, or the stub's libpython is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError, ShapeError

pytest.importorskip("tritonclient.http", reason="the triton extra is not installed: pip install 'psdrt[triton]'")

from psdrt.runtime import triton as tr  # noqa: E402

SIZE = (28, 42)


def _frame(seed=0, size=SIZE, density=0.2):
    rng = np.random.default_rng(seed)
    h, w = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sparse = np.zeros((h, w), np.float32)
    m = rng.random((h, w)) < density
    sparse[m] = rng.uniform(1.0, 5.0, int(m.sum())).astype(np.float32)
    K = np.array([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]])
    return rgb, sparse, K


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    from _tiny_artifacts import make_artifacts

    root = tmp_path_factory.mktemp("triton_arts")
    # SUNRGBD: 6 post-processing sweeps, so the head's fd0 is used
    return {"psd": make_artifacts(root / "psd", size=SIZE, fm_lower=28, preset="SUNRGBD", mode="psd"),
            "propagate": make_artifacts(root / "prop", size=SIZE, fm_lower=28)}


def _configs(repo):
    pb2 = tr.model_config_pb2()
    return {d.name: tr._load_config(d / "config.pbtxt", pb2) for d in Path(repo).iterdir() if d.is_dir()}


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("variant", tr.VARIANTS)
def test_written_repositories_pass_the_checker(arts, tmp_path, variant):
    repo = tmp_path / "repo"
    res = tr.write_model_repository(arts["psd"], repo, variant=variant)
    assert res.checked == [] and res.entry == "psd"
    assert set(res.models) == {"psd", "psd_preprocess", "psd_encoder", "psd_propagate", "psd_head", "psd_post"}
    tr.write_model_repository(arts["propagate"], repo, variant=variant, name="prop")
    tr.write_model_repository(None, repo, variant=variant, name="guided", size=SIZE)
    assert tr.check_model_repository(repo) == []
    cfg = _configs(repo)
    assert cfg["psd"].platform == "ensemble" and [s.model_name for s in cfg["psd"].ensemble_scheduling.step] == [
        "psd_preprocess", "psd_encoder", "psd_propagate", "psd_head", "psd_post"]
    assert [s.model_name for s in cfg["prop"].ensemble_scheduling.step] == ["prop_preprocess", "prop_encoder",
                                                                             "prop_propagate"]
    net = "python" if variant == "python" else "onnxruntime_onnx"
    assert (cfg["psd_encoder"].backend or cfg["psd_encoder"].platform) == net
    assert (repo / "psd_encoder" / "1" / "model.onnx").read_bytes() == (arts["psd"] / "encoder.fp32.onnx").read_bytes()
    assert (repo / "psd_head" / "1" / "model.onnx").is_file() and (repo / "psd_post" / "1" / "model.py").is_file()
    # static batch-1 networks: the ensemble does not batch; guided does, with dynamic batching
    assert all(cfg[n].max_batch_size == 0 and not cfg[n].HasField("dynamic_batching") for n in res.models)
    assert cfg["guided"].max_batch_size == 8 and cfg["guided"].HasField("dynamic_batching")
    assert list(cfg["guided"].input[0].dims) == [28, 42, 3] and list(cfg["psd_encoder"].input[0].dims) == [1, 3, 28, 42]
    kinds = {n: [g.kind for g in c.instance_group] for n, c in cfg.items()}
    pb2 = tr.model_config_pb2()
    assert kinds["psd"] == [] and kinds["psd_post"] == [pb2.ModelInstanceGroup.KIND_CPU]
    want = pb2.ModelInstanceGroup.KIND_CPU if variant == "python" else pb2.ModelInstanceGroup.KIND_GPU
    assert kinds["psd_encoder"] == kinds["psd_head"] == [want]
    params = {k: v.string_value for k, v in cfg["psd_propagate"].parameters.items()}
    assert params == {"psdrt_stage": "propagate", "mode": "psd", "height": "28", "width": "42", "preset": "SUNRGBD",
                      "seed": "0", "fm_lower": "28", "preprocess": "official"}


def test_cpu_kind_and_tensorrt_plans(arts, tmp_path):
    repo = tmp_path / "cpu"
    tr.write_model_repository(arts["psd"], repo, kind="cpu", instances=2)
    pb2 = tr.model_config_pb2()
    for name, cfg in _configs(repo).items():
        if name != "psd":
            assert [(g.kind, g.count) for g in cfg.instance_group] == [(pb2.ModelInstanceGroup.KIND_CPU, 2)]
    with pytest.raises(ArtifactError, match="tensorrt"):  # the directory has no engines
        tr.write_model_repository(arts["propagate"], tmp_path / "trt", backend="tensorrt")
    # a directory with an (opaque) engine of the encoder: model.plan is that file, platform tensorrt_plan
    d = tmp_path / "with_engine"
    shutil.copytree(arts["propagate"], d)
    (d / "engines").mkdir()
    (d / "engines" / "encoder.fp32.engine").write_bytes(b"plan bytes")
    m = json.loads((d / "manifest.json").read_text())
    import hashlib

    m["artifacts"].append({"name": "encoder.fp32.engine", "file": "engines/encoder.fp32.engine", "part": "encoder",
                           "precision": "fp32", "backend": "tensorrt", "usable": True, "requested": True,
                           "sha256": hashlib.sha256(b"plan bytes").hexdigest(), "gate": {"passed": True, "why": ""}})
    (d / "manifest.json").write_text(json.dumps(m))
    res = tr.write_model_repository(d, tmp_path / "trt", backend="tensorrt")
    assert res.checked == []
    cfg = _configs(tmp_path / "trt")["psd_encoder"]
    assert cfg.platform == "tensorrt_plan" and list(cfg.input[0].dims) == [1, 3, 28, 42]
    assert (tmp_path / "trt" / "psd_encoder" / "1" / "model.plan").read_bytes() == b"plan bytes"
    with pytest.raises(InputError, match="python variant"):
        tr.write_model_repository(d, tmp_path / "x", variant="python", backend="tensorrt")


def test_batchable_networks_batch_everywhere(arts, tmp_path):
    """A network with a symbolic batch dimension: every model gets max_batch_size, dims lose the batch."""
    import hashlib

    import onnx

    d = tmp_path / "dyn"
    shutil.copytree(arts["propagate"], d)
    model = onnx.load(str(d / "encoder.fp32.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(d / "encoder.fp32.onnx"))
    m = json.loads((d / "manifest.json").read_text())
    m["artifacts"][0]["sha256"] = hashlib.sha256((d / "encoder.fp32.onnx").read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))
    res = tr.write_model_repository(d, tmp_path / "repo", variant="python", max_batch_size=4)
    assert res.checked == []
    cfg = _configs(tmp_path / "repo")
    assert {n: c.max_batch_size for n, c in cfg.items()} == dict.fromkeys(cfg, 4)
    assert list(cfg["psd_encoder"].input[0].dims) == [3, 28, 42] and list(cfg["psd"].input[0].dims) == [28, 42, 3]
    assert all(c.HasField("dynamic_batching") for n, c in cfg.items() if n != "psd")
    # the stages of a batch of 2 frames = each frame alone (the networks run the batch at once)
    from psdrt.runtime.pipeline import Pipeline

    frames = [_frame(1), _frame(2)]
    batch = {"RGB": np.stack([f[0] for f in frames]), "SPARSE": np.stack([f[1] for f in frames]),
             "K": np.stack([f[2] for f in frames])}
    out = _chain(tmp_path / "repo", "psd", batch, batched=True)
    pipe = Pipeline.from_artifacts(arts["propagate"])
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(out[i], pipe(*f).depth)


def _break(repo: Path, model: str, old: str, new: str) -> None:
    p = repo / model / "config.pbtxt"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


def test_broken_repositories_are_reported(arts, tmp_path):
    src = tmp_path / "good"
    tr.write_model_repository(arts["psd"], src)

    def broken(tag):
        dst = tmp_path / tag
        shutil.copytree(src, dst)
        return dst

    r = broken("name")
    _break(r, "psd_head", 'name: "psd_head"', 'name: "head"')
    assert any("psd_head: config name 'head' differs from its folder name" in p for p in tr.check_model_repository(r))
    r = broken("version")
    shutil.rmtree(r / "psd_post" / "1")
    assert any("psd_post: no version folder" in p for p in tr.check_model_repository(r))
    r = broken("file")
    (r / "psd_encoder" / "1" / "model.onnx").unlink()
    assert any("psd_encoder: version 1 has no model.onnx" in p for p in tr.check_model_repository(r))
    r = broken("map")
    _break(r, "psd", 'input_map { key: "depth_diff" value: "depth_diff" }',
           'input_map { key: "depth_diff" value: "depth_dif" }')
    probs = tr.check_model_repository(r)
    assert any("input 'depth_diff' maps to 'depth_dif', which is neither" in p for p in probs)
    assert any("tensor 'depth_diff' (from step psd_propagate) is unused" in p for p in probs)
    r = broken("dtype")
    _break(r, "psd_post", '{ name: "fd0" data_type: TYPE_FP32', '{ name: "fd0" data_type: TYPE_FP16')
    probs = tr.check_model_repository(r)
    assert any("step psd_post input 'fd0' is TYPE_FP16" in p for p in probs)
    r = broken("dims")
    _break(r, "psd_head", "dims: [ 1, 128, 14, 21 ]", "dims: [ 1, 128, -1, 21 ]")
    probs = tr.check_model_repository(r)
    assert any("psd_head: tensor 'fd0' dims [1, 128, -1, 21] are not explicit" in p for p in probs)
    assert any("psd_head: tensor 'fd0' is TYPE_FP32 [1, 128, -1, 21] in the config but" in p for p in probs)
    r = broken("batch")
    _break(r, "psd", "max_batch_size: 0", "max_batch_size: 4")
    _break(r, "psd_post", "max_batch_size: 0", "max_batch_size: 0\ndynamic_batching { }")
    probs = tr.check_model_repository(r)
    assert any("psd: max_batch_size 4 exceeds step psd_encoder's 0" in p for p in probs)
    assert any("psd_post: dynamic_batching needs max_batch_size > 0" in p for p in probs)
    r = broken("parse")
    _break(r, "psd_pre" + "process", "max_batch_size: 0", "max_batch_size: zero")
    assert any("psd_preprocess: config.pbtxt does not parse" in p for p in tr.check_model_repository(r))
    with pytest.raises(ArtifactError, match="breaks Triton's rules"):
        tr.check_model_repository(r, strict=True)
    assert tr.check_model_repository(src) == []


def test_bad_arguments_are_typed(arts, tmp_path):
    with pytest.raises(InputError, match="size"):
        tr.write_model_repository(None, tmp_path / "g")
    with pytest.raises(InputError, match="needs a `psdrt build` directory"):
        tr.write_model_repository(None, tmp_path / "g", mode="psd", size=SIZE)
    for kw in ({"variant": "docker"}, {"backend": "openvino"}, {"kind": "tpu"}, {"name": "a/b"}):
        with pytest.raises(InputError):
            tr.write_model_repository(arts["psd"], tmp_path / "x", **kw)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        tr.write_model_repository(None, tmp_path / "file", size=SIZE)
    with pytest.raises(ArtifactError):  # not a psdrt build directory: psd_artifacts_read's message
        tr.write_model_repository(tmp_path, tmp_path / "y")


def test_missing_tritonclient_names_the_extra(monkeypatch):
    import importlib.util

    monkeypatch.delitem(sys.modules, "tritonclient.grpc.model_config_pb2", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'psdrt\[triton\]'"):
        tr.model_config_pb2()


def test_server_errors_become_psdrt_errors():
    from tritonclient.utils import InferenceServerException

    e = tr._server_error(InferenceServerException("[500] ShapeError: frame is 10x10 but ...; resize the frame"))
    assert isinstance(e, ShapeError) and str(e) == "frame is 10x10 but ...; resize the frame"
    e = tr._server_error(InferenceServerException("in ensemble 'psd', InputError: no sparse point"))
    assert type(e) is InputError and str(e) == "no sparse point"
    assert type(tr._server_error(InferenceServerException("model not ready"))).__name__ == "PsdError"


def test_cli_writes_the_repository(arts, tmp_path, capsys):
    from psdrt.runtime.cli.__main__ import main

    repo = tmp_path / "repo"
    assert main(["build", "--from", str(arts["propagate"]), "--triton", str(repo), "--triton-variant", "python",
                 "--triton-kind", "cpu", "--triton-name", "prop"]) == 0
    out = capsys.readouterr().out
    assert "prop_encoder: python (onnx)" in out and "checked against Triton's rules: OK" in out
    assert main(["build", "--triton", str(repo), "--size", "28x42", "--triton-name", "guided",
                 "--triton-max-batch", "2"]) == 0
    assert _configs(repo)["guided"].max_batch_size == 2 and tr.check_model_repository(repo) == []
    with pytest.raises(SystemExit) as usage:  # --from without --triton: argparse's usage error
        main(["build", "--from", str(arts["propagate"])])
    assert usage.value.code == 2
    assert main(["build", "--triton", str(repo), "--from", str(tmp_path)]) == 5  # not an artefact directory
    (tmp_path / "f").write_text("")
    assert main(["build", "--triton", str(tmp_path / "f"), "--size", "28x42"]) == 2
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------ stages


def _chain(repo: Path, entry: str, frame: dict, batched: bool = False):
    """Run an ensemble's steps as Triton would, with each model's ``_Stage`` over its config."""
    cfg = _configs(repo)
    ens = cfg[entry]
    tensors = dict(frame)
    for step in ens.ensemble_scheduling.step:
        sub = cfg[step.model_name]
        params = {k: v.string_value for k, v in sub.parameters.items()}
        stage = tr._Stage(params, repo / step.model_name / "1")
        out = stage.run({k: tensors[v] for k, v in step.input_map.items()}, batched)
        tensors.update({v: out[k] for k, v in step.output_map.items()})
    return tensors[tr.FRAME_OUTPUT]


@pytest.mark.parametrize("mode", ["psd", "propagate"])
def test_stages_chained_equal_the_pipeline(arts, tmp_path, mode):
    from psdrt.runtime.pipeline import Pipeline

    repo = tmp_path / "repo"
    tr.write_model_repository(arts[mode], repo, variant="python")
    pipe = Pipeline.from_artifacts(arts[mode])
    for seed in (3, 4):
        rgb, sparse, K = _frame(seed)
        got = _chain(repo, "psd", {"RGB": rgb, "SPARSE": sparse, "K": K})
        want = pipe(rgb, sparse, K).depth
        assert got.dtype == np.float32 and got.shape == SIZE
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="no valid point"):
        _chain(repo, "psd", {"RGB": rgb, "SPARSE": np.zeros_like(sparse), "K": K})


# ------------------------------------------------------------------------------------------------ served


def _pytriton_server():
    """(tritonserver, its libraries, the python backend dir, the stub for this Python), or the skip reason."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None:
        return "nvidia-pytriton (its CPU tritonserver) is not installed: pip install --no-deps nvidia-pytriton==0.7.0"
    root = Path(spec.submodule_search_locations[0])
    server = root / "tritonserver" / "bin" / "tritonserver"
    backend = root / "tritonserver" / "backends" / "python"
    stub = root / "tritonserver" / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
        "triton_python_backend_stub"
    libs = root.parent / "nvidia_pytriton.libs"
    for p in (server, backend / "libtriton_python.so", stub, libs):
        if not p.exists():
            return f"{p} is missing from the nvidia-pytriton wheel"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    ldd = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=env, timeout=30)
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if ldd.returncode or missing:
        return (f"the python backend stub cannot load {', '.join(missing) or ldd.stderr.strip()}: install the "
                f"system's libpython{sys.version_info[0]}.{sys.version_info[1]} (apt-get install "
                f"libpython{sys.version_info[0]}.{sys.version_info[1]})")
    return server, libs, backend, stub


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stub_python(dst: Path) -> Path:
    """A virtual environment for the stub's embedded Python: its ``bin/python3`` is this interpreter
    and a ``.pth`` adds this process's import path (site-packages with their .pth files, and the
    rest as is). The stub links the system's libpython (whose frozen ``site`` knows only Debian's
    dist-packages) and runs isolated (PYTHONPATH ignored); it derives its prefix from the first
    ``python3`` on PATH, and a venv's site-packages is processed."""
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    exe = Path(os.path.realpath(sys.executable))
    (dst / "bin").mkdir(parents=True)
    (dst / "bin" / "python3").symlink_to(exe)
    (dst / "pyvenv.cfg").write_text(f"home = {exe.parent}\ninclude-system-site-packages = false\n")
    site_dir = dst / "lib" / ver / "site-packages"
    site_dir.mkdir(parents=True)
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    sites = [p for p in paths if Path(p).name in ("site-packages", "dist-packages")]
    # one statement in the exec scope of site.addpackage (a comprehension would not see `site`)
    lines = [f"import site; list(map(site.addsitedir, {sites!r}))"] + [p for p in paths if p not in sites]
    (site_dir / "psdrt_test.pth").write_text("\n".join(lines) + "\n")
    return dst / "bin"


class _LocalTriton:
    """tritonserver from the nvidia-pytriton wheel on 127.0.0.1, free ports; always stopped."""

    def __init__(self, repo: Path, work: Path, files, models, ready_s: float = 120.0) -> None:
        server, libs, backend, stub = files
        bdir = work / "backends" / "python"
        bdir.mkdir(parents=True)
        for f in backend.iterdir():
            if f.is_file():
                (bdir / f.name).symlink_to(f)
        shutil.copy(stub, bdir / "triton_python_backend_stub")  # the stub for this Python, as pytriton does
        self.http = _free_port()
        self.prefix = f"psdrt_test_{os.getpid()}_{self.http}"
        env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                   PATH=f"{_stub_python(work / 'stubenv')}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
        cmd = [str(server), f"--model-repository={repo}", f"--backend-directory={work / 'backends'}",
               "--http-address=127.0.0.1", f"--http-port={self.http}", "--allow-grpc=false", "--allow-metrics=false",
               f"--backend-config=python,shm-region-prefix-name={self.prefix}",
               "--backend-config=python,shm-default-byte-size=4194304",
               "--backend-config=python,shm-growth-byte-size=1048576", "--exit-timeout-secs=5"]
        self.log_path = work / "tritonserver.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"127.0.0.1:{self.http}"
        try:
            deadline = time.monotonic() + ready_s
            clients = [tr.TritonClient(self.url, m, timeout_s=10) for m in models]
            while not all(c.ready() for c in clients):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tritonserver not ready after {ready_s:.0f} s:\n{self.tail()}")
                time.sleep(0.5)
            for c in clients:
                c.close()
        except BaseException:
            self.stop()
            raise

    def tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its stubs (its own session)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.log.close()
        for f in Path("/dev/shm").glob(f"{self.prefix}*"):  # the python backend's regions, if left
            f.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def served(arts, tmp_path_factory):
    files = _pytriton_server()
    if isinstance(files, str):
        pytest.skip(files)
    work = tmp_path_factory.mktemp("triton_served")
    repo = work / "repo"
    tr.write_model_repository(None, repo, variant="python", name="guided", size=SIZE, max_batch_size=4)
    tr.write_model_repository(arts["propagate"], repo, variant="python", name="prop")
    tr.write_model_repository(arts["psd"], repo, variant="python", name="psd")
    t0 = time.monotonic()
    server = _LocalTriton(repo, work, files, ["guided", "prop", "psd"])
    print(f"tritonserver ready in {time.monotonic() - t0:.1f} s")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_served_outputs_equal_the_pipeline(served, arts):
    from psdrt.runtime.pipeline import Pipeline

    refs = {"guided": Pipeline(), "prop": Pipeline.from_artifacts(arts["propagate"]),
            "psd": Pipeline.from_artifacts(arts["psd"])}
    for model, pipe in refs.items():
        with tr.TritonClient(served.url, model) as client:
            for seed in (0, 1):
                rgb, sparse, K = _frame(seed)
                got = client.infer(rgb, sparse, K)
                want = pipe(rgb, sparse, K).depth
                assert got.dtype == np.float32 and got.shape == SIZE and np.isfinite(got).all()
                np.testing.assert_array_equal(got, want, err_msg=model)


@pytest.mark.slow
def test_served_errors_are_typed_and_batches_split(served):
    rgb, sparse, K = _frame(5)
    with tr.TritonClient(served.url, "psd") as client:
        with pytest.raises(InputError, match="no valid point"):
            client.infer(rgb, np.zeros_like(sparse), K)
        with pytest.raises(InputError, match="uint8"):
            client.infer(rgb.astype(np.float32), sparse, K)
    with pytest.raises(BackendUnavailable, match="does not serve model 'nope'"):
        tr.TritonClient(served.url, "nope").infer(rgb, sparse, K)
    # concurrent requests to the batching guided model (dynamic batching groups them): each its own answer
    from psdrt.runtime.pipeline import Pipeline

    frames = [_frame(10 + i) for i in range(4)]
    want = [Pipeline()(*f).depth for f in frames]
    got = [None] * len(frames)

    def one(i):
        with tr.TritonClient(served.url, "guided") as c:
            got[i] = c.infer(*frames[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
