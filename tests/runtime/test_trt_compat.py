"""_trt_compat's flags and forks against fake ``tensorrt`` module trees (no TensorRT needed)."""

import sys
from types import SimpleNamespace as NS

import pytest

from psdrt.runtime.backends import _trt_compat as compat
from psdrt.runtime.errors import ArtifactError, BackendUnavailable

_ANY = object()


def fake_trt(version="10.3.0", *, v10=True, enqueue_v3=True, fp16_flag=True):
    """The attribute tree _trt_compat looks at, shaped like TensorRT 8.6 (v10=False) or 10.x."""
    ctx = {"set_input_shape": _ANY, "set_tensor_address": _ANY}
    if enqueue_v3:
        ctx["execute_async_v3"] = _ANY
    else:  # TensorRT <= 8.4: bindings only
        ctx = {"execute_async_v2": _ANY}
    ncf = {"EXPLICIT_BATCH": 0}
    if v10:
        ncf["STRONGLY_TYPED"] = 1
    flags = {"INT8": "INT8", "GPU_FALLBACK": "GPU_FALLBACK", "TF32": "TF32"}
    if fp16_flag:
        flags["FP16"] = "FP16"
    return NS(
        __version__=version,
        IExecutionContext=NS(**ctx),
        ICudaEngine=NS(num_io_tensors=_ANY, get_tensor_name=_ANY) if enqueue_v3 else NS(num_bindings=_ANY),
        IBuilder=NS() if v10 else NS(max_batch_size=_ANY),
        IBuilderConfig=NS(set_memory_pool_limit=_ANY, create_timing_cache=_ANY, set_timing_cache=_ANY),
        MemoryPoolType=NS(WORKSPACE="WORKSPACE"),
        NetworkDefinitionCreationFlag=NS(**ncf),
        BuilderFlag=NS(**flags),
        DeviceType=NS(GPU="GPU", DLA="DLA"),
        TensorIOMode=NS(INPUT="INPUT", OUTPUT="OUTPUT"),
    )


def test_features_v8_vs_v10():
    v8 = compat.features(fake_trt("8.6.2", v10=False))
    v10 = compat.features(fake_trt("10.3.0"))
    assert v8.has_tensor_api and v8.has_enqueue_v3 and v10.has_tensor_api and v10.has_enqueue_v3
    assert v8.has_implicit_batch and not v8.has_strongly_typed
    assert not v10.has_implicit_batch and v10.has_strongly_typed
    assert v8.version == "8.6.2" and v10.has_dla and v10.has_timing_cache and v10.has_memory_pools
    old = compat.features(fake_trt("8.4.3", v10=False, enqueue_v3=False))
    assert not old.has_enqueue_v3 and not old.has_tensor_api


def test_network_flags_fork():
    assert compat.network_flags(False, fake_trt("8.6.2", v10=False)) == 1 << 0  # EXPLICIT_BATCH
    assert compat.network_flags(False, fake_trt("10.3.0")) == 0
    assert compat.network_flags(True, fake_trt("10.3.0")) == 1 << 1  # STRONGLY_TYPED
    with pytest.raises(BackendUnavailable, match="strongly typed.*8.6.2"):
        compat.network_flags(True, fake_trt("8.6.2", v10=False))


def test_builder_flags_fork():
    v8, v10 = fake_trt("8.6.2", v10=False), fake_trt("10.3.0")
    assert compat.builder_flags("fp32", False, trt=v8) == []
    assert compat.builder_flags("fp16", False, trt=v8) == ["FP16"]
    assert compat.builder_flags("int8", False, trt=v8) == ["FP16", "INT8"]
    # strongly typed: the ONNX's types decide, no precision flags
    assert compat.builder_flags("fp16", True, trt=v10) == []
    assert compat.builder_flags("int8", True, dla=True, trt=v10) == ["GPU_FALLBACK"]
    # a future TensorRT without the deprecated FP16 flag: weakly typed fp16 is refused, typed works
    nofp16 = fake_trt("11.0.0", fp16_flag=False)
    with pytest.raises(BackendUnavailable, match="BuilderFlag.FP16.*11.0.0"):
        compat.builder_flags("fp16", False, trt=nofp16)
    assert compat.builder_flags("fp16", True, trt=nofp16) == []


def test_set_workspace_uses_the_memory_pool():
    calls = []
    config = NS(set_memory_pool_limit=lambda pool, n: calls.append((pool, n)))
    compat.set_workspace(config, 1 << 30, fake_trt())
    assert calls == [("WORKSPACE", 1 << 30)]


def test_execute_enqueues_v3_and_reports_failure():
    seen = []
    compat.execute(NS(execute_async_v3=lambda s: seen.append(s) or True), 1234)
    assert seen == [1234]
    with pytest.raises(ArtifactError, match="optimisation profile"):
        compat.execute(NS(execute_async_v3=lambda s: False), 0)


def test_io_names_and_modes():
    engine = NS(num_io_tensors=2, get_tensor_name=["rgb", "rel_inv"].__getitem__,
                get_tensor_mode=lambda n: "INPUT" if n == "rgb" else "OUTPUT")
    assert compat.io_tensor_names(engine) == ["rgb", "rel_inv"]
    assert compat.is_input(engine, "rgb", fake_trt()) and not compat.is_input(engine, "rel_inv", fake_trt())


def test_unavailable_names_feature_and_version():
    err = compat.unavailable("DLA", fake_trt("8.5.2"))
    assert isinstance(err, BackendUnavailable) and "DLA" in str(err) and "8.5.2" in str(err)


def test_import_without_tensorrt_is_a_clean_typed_error(monkeypatch):
    monkeypatch.setattr(compat, "_TRT", None)
    monkeypatch.setattr(compat, "_trt_module", compat.lazy_import("tensorrt"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails even where TensorRT exists
    with pytest.raises(BackendUnavailable) as e:
        compat.import_trt()
    msg = str(e.value)
    assert msg.startswith("tensorrt not importable:")
    assert "TensorRT is not on PyPI for your platform: install it from JetPack or NVIDIA's TensorRT packages" in msg


def test_import_refuses_a_tensorrt_without_the_name_based_api(monkeypatch):
    old = fake_trt("8.4.3", v10=False, enqueue_v3=False)
    monkeypatch.setattr(compat, "_TRT", None)
    monkeypatch.setattr(compat, "_trt_module", NS(load=lambda: old))
    with pytest.raises(BackendUnavailable, match=r"execute_async_v3.*8\.4\.3"):
        compat.import_trt()
    new = fake_trt("10.3.0")
    monkeypatch.setattr(compat, "_trt_module", NS(load=lambda: new))
    assert compat.import_trt() is new
