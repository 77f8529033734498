"""The correctness gate: golden inputs from the FP32 reference, acceptance of a correct ONNX Runtime
export, rejection (with the comparison table) of a perturbed ONNX and of a scaled backend, and the
NumPy-only gate run from a saved .npz without torch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from psdrt.export import gate as G
from psdrt.export.models.psd import PSDModel
from psdrt.export.models.random_weights import randomize_head_
from psdrt.export.onnx_export import ENCODER_OUTPUTS, HEAD_INPUTS, HEAD_OUTPUTS, export_encoder
from psdrt.runtime.backends.ort import OrtBackend
from psdrt.runtime.errors import ArtifactError, InputError
from psdrt.runtime.gate_check import THRESHOLDS, GoldenInputs, check_backend

SIZE = (70, 98)  # encoder input, multiples of 14; the golden frame is fitted to it


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_head_(PSDModel("vits"), seed=1).eval()


@pytest.fixture(scope="module")
def golden(model):
    return G.make_golden_inputs(model, "encoder", SIZE, frames=G.golden_frames(shared=False))


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_encoder(model.foundation, tmp_path_factory.mktemp("gate") / "enc.onnx", size=SIZE)


class Scaled:
    """A Backend fake: another backend with one output scaled (or poisoned)."""

    def __init__(self, inner, name, factor):
        self.inner, self.name, self.factor = inner, name, factor

    def input_specs(self):
        return self.inner.input_specs()

    def output_specs(self):
        return self.inner.output_specs()

    def run(self, feeds, stream=None):
        out = dict(self.inner.run(feeds))
        out[self.name] = out[self.name] * self.factor
        return out

    def close(self):
        pass


def test_golden_inputs_are_deterministic_and_round_trip(model, golden, tmp_path):
    case = golden.cases[0]
    assert case.name == "middlebury/motorcycle"
    assert case.feeds["rgb"].shape == (1, 3, *SIZE) and case.feeds["rgb"].dtype == np.float32
    assert tuple(case.expected) == ENCODER_OUTPUTS
    assert case.depth.shape == SIZE and case.rgb.shape == (*SIZE, 3) and np.isfinite(case.depth).all()
    again = G.make_golden_inputs(model, "encoder", SIZE, frames=G.golden_frames(shared=False))
    assert again.sha256() == golden.sha256()
    path = golden.save(tmp_path / "golden.npz")
    back = GoldenInputs.load(path)
    assert back.sha256() == golden.sha256() and back.meta["mode"] == "psd"
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="regenerate"):
        GoldenInputs.load(tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="not found"):
        GoldenInputs.load(tmp_path / "missing.npz")


def test_head_golden_records_what_the_pipeline_feeds_the_head(model):
    g = G.make_golden_inputs(model, "head", (34, 46), frames=G.golden_frames(shared=False), fm_lower=42)
    case = g.cases[0]
    assert tuple(case.feeds) == HEAD_INPUTS and tuple(case.expected) == HEAD_OUTPUTS
    with torch.no_grad():
        t = {k: torch.from_numpy(v) for k, v in case.feeds.items()}
        out = model(t["sparse"], t["depth_diff"], tuple(t[f"feat{i}"] for i in range(4)))
    np.testing.assert_array_equal(out["depth_pix"].numpy(), case.expected["depth_pix"])
    with pytest.raises(InputError):
        G.make_golden_inputs(model.foundation, "head", (34, 46), frames=G.golden_frames(shared=False))


def test_gate_accepts_a_correct_ort_fp32_export(model, golden, onnx_path):
    with OrtBackend(str(onnx_path)) as be:
        report = G.gate_artifact(be, golden, "fp32", model=model, artifact="enc.onnx")
    assert report.passed and len(report.tensors) == 5 and len(report.depth) == 1
    d = json.loads(report.to_json())
    assert d["passed"] is True and d["thresholds"]["tensor_rel_l2"] == THRESHOLDS["fp32"].tensor_rel_l2
    assert max(r["rel_l2"] for r in d["tensors"]) < 1e-5  # measured ~1e-6
    assert "PASS" in report.to_markdown()


def test_gate_rejects_an_onnx_with_one_weight_perturbed(golden, onnx_path, tmp_path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(onnx_path))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # one weight tensor
    w = numpy_helper.to_array(init).copy()
    w.flat[int(np.argmax(np.abs(w)))] *= 1.5  # one weight
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(m, str(bad))
    with OrtBackend(str(bad)) as be, pytest.raises(ArtifactError) as e:
        check_backend(be, golden, "fp32", artifact="perturbed.onnx")
    msg = str(e.value)
    assert "perturbed.onnx failed the fp32 correctness gate" in msg and "**FAIL**" in msg
    assert "| case | tensor | shape | rel-L2" in msg and "NO: " in msg


def test_gate_rejects_a_scaled_output_with_the_table(model, golden, onnx_path):
    with OrtBackend(str(onnx_path)) as be:
        for precision, fn in (("fp32", G.gate_artifact), ("fp16", check_backend)):
            kw = {"model": model} if precision == "fp32" else {}
            with pytest.raises(ArtifactError) as e:
                fn(Scaled(be, "feat2", 1.02), golden, precision, **kw)  # fp16 rel-L2 limit: 1e-2
            msg = str(e.value)
            assert "| middlebury/motorcycle | feat2 |" in msg and "NO: rel-L2 >" in msg
            assert "| middlebury/motorcycle | feat0 |" in msg and "| yes |" in msg  # the whole table
            assert ("depth RMSE mm" in msg) == (precision == "fp32")  # end-to-end only with the model
        rep = check_backend(Scaled(be, "rel_inv", np.nan), golden, "int8", raise_on_fail=False)
    assert not rep.passed and "non-finite" in rep.to_markdown()
    json.loads(rep.to_json())  # inf/nan stay JSON-serialisable


@pytest.mark.parametrize("precision, passes, fails", [("fp16", 1.005, 1.02), ("int8", 1.05, 1.15)])
def test_each_precision_limit_separates_small_from_large_errors(golden, onnx_path, precision, passes, fails):
    # an output scaled by f has rel-L2 |f - 1|: fp16 allows 1e-2, int8 1e-1 (a limit loosened to
    # 1e9 would let the 15 % error through)
    with OrtBackend(str(onnx_path)) as be:
        assert check_backend(Scaled(be, "feat2", passes), golden, precision, raise_on_fail=False).passed
        rep = check_backend(Scaled(be, "feat2", fails), golden, precision, raise_on_fail=False)
    assert not rep.passed and "NO: rel-L2 >" in rep.to_markdown()


def test_gate_runs_from_the_npz_without_torch(golden, onnx_path, tmp_path):
    path = golden.save(tmp_path / "golden.npz")
    code = textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch blocked")
        sys.meta_path.insert(0, _Block())
        from psdrt.runtime.backends.ort import OrtBackend
        from psdrt.runtime.gate_check import GoldenInputs, check_backend
        rep = check_backend(OrtBackend({str(onnx_path)!r}), GoldenInputs.load({str(path)!r}), "fp32")
        print(rep.passed, "torch" in sys.modules)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False"]
