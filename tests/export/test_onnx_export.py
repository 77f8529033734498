"""ONNX export of the encoder and the head: ORT CPU FP32 against PyTorch, graph invariants, rewrites.

Error metric everywhere: max|ort - torch| / max|torch| per output ("relative"), tolerance 1e-4.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

import torch.nn.functional as F  # noqa: E402

from psdrt.export.models.completion_head import Conv2D, CorrectionHead  # noqa: E402
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2  # noqa: E402
from psdrt.export.models.dinov2 import resample_pos_grid  # noqa: E402
from psdrt.export.models.random_weights import randomize_head_  # noqa: E402
from psdrt.export.onnx_export import (  # noqa: E402
    ENCODER_OUTPUTS,
    HEAD_INPUTS,
    HEAD_OUTPUTS,
    GraphCheckError,
    check_graph,
    encoder_feat_sizes,
    export_encoder,
    export_head,
    export_module,
)
from psdrt.runtime.backends.ort import OrtBackend  # noqa: E402
from psdrt.runtime.preprocess import fm_input_size  # noqa: E402

TOL = 1e-4


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    # random ViT-L weights give an all-zero rel_inv (final ReLU): 0/0 counts as a match
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(0)
    return DepthAnythingV2("vits").eval()


@pytest.fixture(scope="module")
def head():
    h = CorrectionHead(64)
    randomize_head_(h, 0)
    return h.eval()


def head_inputs(size, channels=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.rand(1, 1, *size, generator=g) * 10
    sparse = sparse * (torch.rand(1, 1, *size, generator=g) < 0.05)
    depth_diff = torch.rand(1, 1, *size, generator=g) * 10 + 1
    feats = [torch.randn(1, channels, *s, generator=g) for s in encoder_feat_sizes(fm_input_size(*size))]
    return sparse, depth_diff, feats


def head_feeds(sparse, depth_diff, feats):
    return dict(sparse=sparse.numpy(), depth_diff=depth_diff.numpy(), **{f"feat{i}": f.numpy() for i, f in enumerate(feats)})


# 392x518 NYU, 392x1862 KITTI, 266x350 a second non-square size with the same code
@pytest.mark.parametrize("size", [(392, 518), (392, 1862), (266, 350)])
def test_encoder_matches_pytorch(vits, tmp_path, size):
    path = export_encoder(vits, tmp_path / "enc.onnx", size)
    model = onnx.load(str(path))
    assert model.ir_version == 8 and {o.domain: o.version for o in model.opset_import}[""] == 17
    check_graph(model, input_names=["rgb"], output_names=ENCODER_OUTPUTS, opset=17)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        rel, feats = vits(x)
    with OrtBackend(path, threads=2) as b:
        assert [s.shape for s in b.output_specs()][1:] == [(1, 64, h, w) for h, w in encoder_feat_sizes(size)]
        out = b.run({"rgb": x.numpy()})
    for name, ref in zip(ENCODER_OUTPUTS, (rel, *feats)):
        assert rel_err(out[name], ref) < TOL, name
    assert not vits.training  # export leaves the caller's mode alone


@pytest.mark.parametrize("size", [(228, 304), (256, 1216)])
def test_head_matches_pytorch(head, tmp_path, size):
    path = export_head(head, tmp_path / "head.onnx", size)
    check_graph(path, input_names=HEAD_INPUTS, output_names=HEAD_OUTPUTS, opset=17)
    assert not any(m.training for m in head.modules())  # regression: BN left in training mode
    sparse, depth_diff, feats = head_inputs(size)
    with torch.no_grad():
        ref = head(sparse, depth_diff, feats)
    with OrtBackend(path, threads=2) as b:
        out = b.run(head_feeds(sparse, depth_diff, feats))
    assert out["fd0"].shape == (1, 128, (size[0] + 1) // 2, (size[1] + 1) // 2)
    for name in HEAD_OUTPUTS:
        assert rel_err(out[name], ref[name]) < TOL, name
    pads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Pad"]
    assert pads and all(
        onnx.helper.get_attribute_value(a) == b"reflect" for n in pads for a in n.attribute if a.name == "mode"
    )


def test_head_dynamic_runs_other_size(head, tmp_path):
    path = export_head(head, tmp_path / "head_dyn.onnx", (48, 64), dynamic=True)
    size = (64, 96)
    sparse, depth_diff, feats = head_inputs(size, seed=3)
    with torch.no_grad():
        ref = head(sparse, depth_diff, feats)
    with OrtBackend(path, threads=2) as b:
        assert b.input_specs()[0].shape[2:] == ("H", "W")
        out = b.run(head_feeds(sparse, depth_diff, feats))
    for name in HEAD_OUTPUTS:
        assert rel_err(out[name], ref[name]) < TOL, name


@pytest.mark.parametrize("grid", [(28, 37), (28, 133), (19, 25)])
def test_pos_embed_rewrite_matches_scale_factor_interpolation(grid):
    # DINOv2's original: bicubic with scale_factor = (h + 0.1) / n (the shape-specialised form)
    g = torch.Generator().manual_seed(4)
    table = torch.randn(1, 384, 37, 37, generator=g)
    h, w = grid
    ref = F.interpolate(table, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic", antialias=False)
    assert ref.shape[-2:] == grid
    assert rel_err(resample_pos_grid(table, grid), ref) < 1e-5


def test_reflect_pad_conv_exports_as_pad_reflect(tmp_path):
    torch.manual_seed(5)
    conv = Conv2D(3, 8, act="lrelu").eval()
    x = torch.randn(1, 3, 17, 23)
    path = export_module(conv, (x,), tmp_path / "conv.onnx", ["x"], ["y"])
    modes = [
        onnx.helper.get_attribute_value(a)
        for n in onnx.load(str(path)).graph.node
        if n.op_type == "Pad"
        for a in n.attribute
        if a.name == "mode"
    ]
    assert modes == [b"reflect"]
    with OrtBackend(path) as b, torch.no_grad():
        assert rel_err(b.run({"x": x.numpy()})["y"], conv(x)) < TOL


class _Bicubic(torch.nn.Module):
    def forward(self, x):
        return F.interpolate(x, size=(31, 45), mode="bicubic", align_corners=False, antialias=False)


def test_bicubic_exports_as_pytorch_cubic(tmp_path):
    x = torch.randn(1, 2, 20, 30, generator=torch.Generator().manual_seed(6))
    path = export_module(_Bicubic(), (x,), tmp_path / "cubic.onnx", ["x"], ["y"])
    (node,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["mode"] == b"cubic" and attrs["cubic_coeff_a"] == pytest.approx(-0.75)
    assert attrs["coordinate_transformation_mode"] == b"half_pixel" and not attrs.get("antialias", 0)
    with OrtBackend(path) as b:
        assert rel_err(b.run({"x": x.numpy()})["y"], _Bicubic()(x)) < TOL


def _resize_graph(**attrs):
    h = onnx.helper
    node = h.make_node("Resize", ["x", "", "scales"], ["y"], name="r", **attrs)
    graph = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [h.make_tensor("scales", onnx.TensorProto.FLOAT, [4], [1, 1, 2, 2])],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_check_graph_rejects_antialias_and_wrong_cubic():
    check_graph(_resize_graph(mode="cubic", cubic_coeff_a=-0.75))
    with pytest.raises(GraphCheckError, match="antialias"):
        check_graph(_resize_graph(mode="linear", antialias=1))
    with pytest.raises(GraphCheckError, match="-0.75"):
        check_graph(_resize_graph(mode="cubic", cubic_coeff_a=-0.5))
    with pytest.raises(GraphCheckError, match="outputs"):
        check_graph(_resize_graph(mode="nearest"), output_names=["z"])


def test_bad_arguments(vits, head, tmp_path):
    with pytest.raises(ValueError, match="multiples of 14"):
        export_encoder(vits, tmp_path / "x.onnx", (390, 518))
    with pytest.raises(ValueError, match="training grid"):
        export_encoder(vits, tmp_path / "x.onnx", (518, 518), dynamic=True)
    with pytest.raises(ValueError, match="IR version"):
        export_encoder(vits, tmp_path / "x.onnx", (392, 518), opset=21, ir_version=8)
    with pytest.raises(ValueError, match="fm_channels"):
        export_head(head, tmp_path / "x.onnx", (228, 304), fm_channels=256)
    with pytest.raises(ValueError, match="at least 17"):
        export_head(head, tmp_path / "x.onnx", (16, 304))
    assert not list(tmp_path.iterdir())


def test_vitg_refused_before_export(tmp_path):
    with torch.device("meta"):
        giant = DepthAnythingV2("vitg")
    with pytest.raises(ValueError, match="2 GiB protobuf"):
        export_encoder(giant, tmp_path / "g.onnx", (392, 518))


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("PSD_RUN_VITL"),
    reason="ViT-L export needs ~10 GB RAM and several minutes on 2 cores; set PSD_RUN_VITL=1",
)
def test_vitl_encoder_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = DepthAnythingV2("vitl").eval()
    path = export_encoder(model, tmp_path / "vitl.onnx", (392, 518))
    x = torch.randn(1, 3, 392, 518, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        rel, feats = model(x)
    del model
    with OrtBackend(path, threads=2) as b:
        out = b.run({"rgb": x.numpy()})
    for name, ref in zip(ENCODER_OUTPUTS, (rel, *feats)):
        assert rel_err(out[name], ref) < TOL, name
