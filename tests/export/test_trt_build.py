"""Engine building and the TensorRT backend.

Without TensorRT (our CI) the build chain, the manifest/fingerprint handling and TrtBackend's
name-based execution are run against a fake ``tensorrt`` module and a fake CUDA runtime; the fakes
record every builder call, so the v8/v10 decisions are checked where they are made. The test at the
end builds and runs a real engine and only runs where TensorRT and a GPU exist.
"""

import json
from types import SimpleNamespace as NS

import numpy as np
import pytest

from psdrt.export import trt_build as tb
from psdrt.runtime.backends import _trt_compat as compat
from psdrt.runtime.backends import trt as trt_backend
from psdrt.runtime.errors import ArtifactError, BackendUnavailable, InputError
from psdrt.runtime.gate_check import GoldenCase, GoldenInputs
from psdrt.runtime.manifest import read_manifest, sha256_file


# ------------------------------------------------------------------------------------------------
# fakes


class FakeMemory:
    """Device memory as a dict of byte arrays; pointers are small ints."""

    def __init__(self):
        self.blocks, self.next = {}, 0x1000

    def alloc(self, n):
        self.next += 0x1000
        self.blocks[self.next] = np.zeros(max(n, 1), np.uint8)
        return self.next


def fake_cuda(mem, gpu=("FakeGPU", "8.7")):
    class DeviceBuffer:
        def __init__(self, nbytes=0):
            self.ptr, self.nbytes = 0, 0
            self.ensure(nbytes)

        def ensure(self, nbytes):
            if nbytes > self.nbytes:
                self.ptr, self.nbytes = mem.alloc(nbytes), nbytes
            return self.ptr

        def close(self):
            mem.blocks.pop(self.ptr, None)
            self.ptr = 0

    class Stream:
        handle = 77

        def synchronize(self):
            pass

        def close(self):
            pass

    def htod(dst, src, stream):
        mem.blocks[dst][: src.nbytes] = np.frombuffer(src.tobytes(), np.uint8)

    def dtoh(dst, src, stream):
        dst.view(np.uint8).reshape(-1)[:] = mem.blocks[src][: dst.nbytes]

    return NS(device_name=lambda d=0: gpu[0], compute_capability=lambda d=0: gpu[1], Stream=Stream,
              DeviceBuffer=DeviceBuffer, memcpy_htod_async=htod, memcpy_dtoh_async=dtoh,
              stream_synchronize=lambda s: None)


def fake_trt(mem, version="10.3.0.30", v10=True, input_shape=(2, 3), dtype="HALF", qdq=False, scale=2.0):
    """Builder + runtime fakes: the 'engine' computes y = scale * x on the fake device memory."""
    log = {"builds": 0}
    any_ = object()

    class Network:
        def __init__(self, flags):
            log["network_flags"] = flags
            self.num_inputs, self.num_layers = 1, 2

        def get_input(self, i):
            return NS(name="x", shape=input_shape)

        def get_layer(self, i):
            kind = "QUANTIZE" if (qdq and i == 0) else "ELEMENTWISE"
            return NS(type=kind, num_outputs=1, get_output=lambda j: NS(dtype=f"DataType.{dtype}"))

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.default_device_type, self.DLA_core = [], [], "GPU", -1

        def set_memory_pool_limit(self, pool, n):
            log["workspace"] = (pool, n)

        def set_flag(self, f):
            self.flags.append(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p.shapes)

        def create_timing_cache(self, data):
            log["cache_in"] = data
            return NS(data=data)

        def set_timing_cache(self, cache, ignore_mismatch):
            return cache.data != b"foreign"

        def get_timing_cache(self):
            return NS(serialize=lambda: b"timing-cache")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            p = NS(shapes={})
            p.set_shape = lambda name, a, b, c: p.shapes.__setitem__(name, (a, b, c))
            return p

        def build_serialized_network(self, network, config):
            log["builds"] += 1
            log["config"] = config
            return json.dumps({"scale": scale, "flags": config.flags}).encode()

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse(self, data):
            if data.startswith(b"bad"):
                self.num_errors = 1
                return False
            return True

        def get_error(self, i):
            return "In node 0: unsupported op Foo"

    class Context:
        def __init__(self, s):
            self.scale, self.shapes, self.addr = s, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return len(shape) == 2 and shape[1] == 3

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            log["stream"] = stream
            n = int(np.prod(self.shapes["x"])) * 4
            x = mem.blocks[self.addr["x"]][:n].view(np.float32)
            mem.blocks[self.addr["y"]][:n] = (x * self.scale).astype(np.float32).view(np.uint8)
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, s):
            self.s = s

        def get_tensor_name(self, i):
            return ["x", "y"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "x" else "OUTPUT"

        def get_tensor_shape(self, name):
            return (-1, 3)

        def get_tensor_dtype(self, name):
            return np.float32

        def create_execution_context(self):
            return Context(self.s)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            try:
                return Engine(json.loads(bytes(plan))["scale"])
            except ValueError:
                return None

    ncf = {"EXPLICIT_BATCH": 0, **({"STRONGLY_TYPED": 1} if v10 else {})}
    mod = NS(
        __version__=version,
        Logger=NS(WARNING=2, __call__=None),
        Builder=Builder, OnnxParser=Parser, Runtime=Runtime,
        IExecutionContext=NS(set_input_shape=any_, set_tensor_address=any_, execute_async_v3=any_),
        ICudaEngine=NS(num_io_tensors=any_, get_tensor_name=any_),
        IBuilder=NS() if v10 else NS(max_batch_size=any_),
        IBuilderConfig=NS(set_memory_pool_limit=any_, create_timing_cache=any_, set_timing_cache=any_),
        MemoryPoolType=NS(WORKSPACE="WORKSPACE"),
        NetworkDefinitionCreationFlag=NS(**ncf),
        BuilderFlag=NS(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK"),
        DeviceType=NS(GPU="GPU", DLA="DLA"),
        TensorIOMode=NS(INPUT="INPUT", OUTPUT="OUTPUT"),
        LayerType=NS(QUANTIZE="QUANTIZE"),
        nptype=lambda dt: dt,
    )
    mod.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    return mod, log


@pytest.fixture
def fakes(monkeypatch):
    """Install fake TensorRT + CUDA; returns a function to (re)install another fake TensorRT/GPU."""
    mem = FakeMemory()

    def install(gpu=("FakeGPU", "8.7"), **kw):
        mod, log = fake_trt(mem, **kw)
        monkeypatch.setattr(compat, "_TRT", mod)
        cuda = fake_cuda(mem, gpu)
        monkeypatch.setattr(tb, "_cuda", cuda)
        monkeypatch.setattr(trt_backend, "_cuda", cuda)
        return mod, log

    return install


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "tiny.onnx"
    p.write_bytes(b"not-really-onnx-but-the-fake-parser-accepts-it")
    return p


# ------------------------------------------------------------------------------------------------
# chain of functions, on fakes


def test_build_v10_fp16_strongly_typed_names_and_manifest(fakes, onnx_file, tmp_path):
    _, log = fakes()
    cache = tmp_path / "timing.cache"
    cfg = tb.BuildConfig(precision="fp16", profiles=({"x": tb.ShapeRange((1, 3), (2, 3), (8, 3))},), timing_cache=cache)
    path, m = tb.build_engine(onnx_file, tmp_path / "engines", cfg)
    assert log["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert log["config"].flags == []  # types from the FP16 ONNX, no deprecated FP16 flag
    assert log["workspace"] == ("WORKSPACE", tb.DEFAULT_WORKSPACE)
    assert log["config"].profiles == [{"x": ((1, 3), (2, 3), (8, 3))}]
    assert cache.read_bytes() == b"timing-cache"
    assert path.name == f"tiny-fp16-{m.fingerprint[:16]}.engine"
    back = read_manifest(path)
    assert back == m
    assert (m.trt_version, m.gpu_name, m.compute_capability, m.precision) == ("10.3.0.30", "FakeGPU", "8.7", "fp16")
    assert m.onnx_sha256 == sha256_file(onnx_file) and m.engine_sha256 == sha256_file(path)
    assert m.builder_options == {"workspace": tb.DEFAULT_WORKSPACE, "dla_core": None, "strongly_typed": True}
    # same inputs: reused without building; the cache written before is loaded next time
    again, _ = tb.build_engine(onnx_file, tmp_path / "engines", cfg)
    assert again == path and log["builds"] == 1
    tb.build_engine(onnx_file, tmp_path / "engines", cfg, force=True)
    assert log["builds"] == 2 and log["cache_in"] == b"timing-cache"


def test_build_v8_fp16_uses_the_builder_flag(fakes, onnx_file, tmp_path):
    _, log = fakes(version="8.6.2", v10=False, dtype="FLOAT")
    path, m = tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="fp16"))
    assert log["network_flags"] == 1 << 0  # EXPLICIT_BATCH
    assert log["config"].flags == ["FP16"]
    assert m.builder_options["strongly_typed"] is False and m.trt_version == "8.6.2"


def test_build_int8_needs_qdq(fakes, onnx_file, tmp_path):
    fakes(dtype="FLOAT")
    with pytest.raises(ArtifactError, match="Q/DQ"):
        tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="int8"))
    _, log = fakes(version="8.6.2", v10=False, dtype="FLOAT", qdq=True)
    tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="int8"))
    assert log["config"].flags == ["FP16", "INT8"]


def test_build_refuses_silent_precision_mistakes(fakes, onnx_file, tmp_path):
    fakes(dtype="FLOAT")  # FP32 ONNX on TensorRT 10: strongly typed 'fp16' would be FP32
    with pytest.raises(ArtifactError, match="FP16 ONNX"):
        tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="fp16"))
    _, log = fakes(dtype="FLOAT")
    tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="fp16", strongly_typed=False))
    assert log["config"].flags == ["FP16"] and log["network_flags"] == 0


def test_dynamic_inputs_need_a_profile_and_dla_options(fakes, onnx_file, tmp_path):
    fakes(input_shape=(-1, 3))
    with pytest.raises(InputError, match="dynamic axes"):
        tb.build_engine(onnx_file, tmp_path, tb.BuildConfig())
    with pytest.raises(InputError, match="DLA runs fp16 or int8"):
        tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(precision="fp32", dla_core=0))
    _, log = fakes()
    _, m = tb.build_engine(onnx_file, tmp_path, tb.BuildConfig(dla_core=1))
    cfg = log["config"]
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1 and cfg.flags == ["GPU_FALLBACK"]
    assert m.builder_options["dla_core"] == 1


def test_parser_errors_foreign_timing_cache_and_missing_onnx(fakes, tmp_path):
    fakes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"bad model")
    with pytest.raises(ArtifactError, match="unsupported op Foo"):
        tb.build_engine(bad, tmp_path, tb.BuildConfig())
    good = tmp_path / "good.onnx"
    good.write_bytes(b"ok")
    (tmp_path / "t.cache").write_bytes(b"foreign")
    with pytest.raises(ArtifactError, match="timing cache"):
        tb.build_engine(good, tmp_path, tb.BuildConfig(timing_cache=tmp_path / "t.cache"))
    with pytest.raises(ArtifactError, match="not found"):
        tb.load_onnx(tmp_path / "missing.onnx")


def test_trt_backend_runs_through_the_name_based_api(fakes, onnx_file, tmp_path):
    _, log = fakes()
    path, _ = tb.build_engine(onnx_file, tmp_path, tb.BuildConfig())
    with trt_backend.TrtBackend(path) as be:
        assert [str(s) for s in be.input_specs()] == ["x: float32[?x3]"]
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(be.run({"x": x})["y"], 2 * x)
        x4 = np.ones((4, 3), np.float32)
        np.testing.assert_array_equal(be.run({"x": x4}, stream=NS(ptr=5))["y"], 2 * x4)
        assert log["stream"] == 5
        with pytest.raises(InputError):
            be.run({"x": x.astype(np.float64)})


def test_trt_backend_refuses_an_engine_from_another_gpu_or_trt(fakes, onnx_file, tmp_path):
    fakes()
    path, _ = tb.build_engine(onnx_file, tmp_path, tb.BuildConfig())
    fakes(gpu=("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(ArtifactError) as e:
        trt_backend.TrtBackend(path)
    assert "8.7 (FakeGPU)" in str(e.value) and "9.0 (NVIDIA H100 80GB HBM3)" in str(e.value)
    assert "psdrt build" in str(e.value)
    fakes(version="10.13.0.35")
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.3\.0\.30.*TensorRT 10\.13\.0\.35.*psdrt build"):
        trt_backend.TrtBackend(path)


def _golden(scale):
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    return GoldenInputs((GoldenCase("c0", {"x": x}, {"y": scale * x}),), {"kind": "toy"})


def test_build_with_gate_records_the_report_and_rejects_a_wrong_engine(fakes, onnx_file, tmp_path):
    fakes()
    path, m = tb.build_engine(onnx_file, tmp_path / "a", tb.BuildConfig(), golden=_golden(2.0))
    assert m.gate["passed"] is True and read_manifest(path).gate["precision"] == "fp16"
    fakes(scale=2.5)  # a 'miscompiled' engine
    with pytest.raises(ArtifactError) as e:
        tb.build_engine(onnx_file, tmp_path / "b", tb.BuildConfig(), golden=_golden(2.0))
    assert "| c0 | y |" in str(e.value) and "rejected" in str(e.value)
    assert list((tmp_path / "b").glob("*.engine.rejected")) and not list((tmp_path / "b").glob("*.engine"))


def test_without_tensorrt_everything_fails_cleanly(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setattr(compat, "_TRT", None)
    monkeypatch.setattr(compat, "_trt_module", NS(load=lambda: (_ for _ in ()).throw(
        BackendUnavailable("tensorrt not importable: ModuleNotFoundError: x"))))
    with pytest.raises(BackendUnavailable, match="JetPack or NVIDIA's TensorRT packages"):
        tb.build_engine(onnx_file, tmp_path, tb.BuildConfig())
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="no manifest"):  # checked before TensorRT is needed
        trt_backend.TrtBackend(engine)
    with pytest.raises(BackendUnavailable, match="JetPack"):
        trt_backend.TrtBackend(engine, check_manifest=False)


# ------------------------------------------------------------------------------------------------
# real TensorRT (skipped where it is absent: every CI machine of this project)


def test_real_engine_build_and_run(tmp_path):
    trt = pytest.importorskip("tensorrt")
    from psdrt.runtime import _cuda

    try:
        _cuda.device_count()
    except BackendUnavailable as exc:
        pytest.skip(f"no usable GPU: {exc}")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    cfg = tb.BuildConfig(precision="fp32", workspace=1 << 26, profiles=({"x": tb.ShapeRange((1, 3), (4, 3), (16, 3))},),
                         timing_cache=tmp_path / "timing.cache")
    engine, manifest = tb.build_engine(path, tmp_path / "engines", cfg)
    assert manifest.trt_version == trt.__version__ and (tmp_path / "timing.cache").is_file()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    with trt_backend.TrtBackend(engine) as be:
        y = be.run({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-3, atol=1e-3)
