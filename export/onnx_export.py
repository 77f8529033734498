"""PyTorch -> ONNX export of the foundation-model encoder and the PSD correction head.

Two graphs per working resolution, so that the parameter-free propagation (CUDA kernels) can run
between them:

* encoder: ``rgb`` (1 x 3 x Hm x Wm, ImageNet-normalised) -> ``rel_inv`` (1 x 1 x Hm x Wm) and
  ``feat0..feat3`` (the DPT fusion features, coarse to fine: Hm/14, Hm/7, 2Hm/7, 4Hm/7);
* head: ``sparse``, ``depth_diff`` (1 x 1 x H x W) and ``feat0..feat3`` -> ``depth_pix``, ``fd0``
  (what post-processing needs), plus the cheap intermediates ``depth_residual`` and ``depth_img``.

Exporter choice (measured here, torch 2.13 CPU, ViT-S encoder at 392 x 518): the TorchScript-based
exporter (``dynamo=False``) exports in 3.6 s, writes opset 17 / IR 8 directly and needs no
onnxscript; the dynamo exporter takes 10.7 s, writes IR 10 and reaches opset 17 only through
onnx's C version converter (its own converter does not support the step). Both give the same
numbers against PyTorch (max relative error 7e-6 on every output). The legacy exporter is the
default; ``exporter="dynamo"`` is kept for newer opsets and for when the legacy path is removed.

Clean-up: onnxslim (constant folding of the position-embedding matrices, shape inference, dead-node
removal; 1101 -> 477 nodes for ViT-S) on the exported graph; it leaves outputs bit-identical on
ORT CPU for the graphs above, and the tests compare the cleaned graph with PyTorch.

Static shapes are the default and the supported configuration for TensorRT (one engine per working
resolution, as on JetPack). ``dynamic=True`` marks H and W (not the batch) symbolic; see the
caveats in :func:`export_encoder` and :func:`export_head`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from psdrt.export.models.completion_head import MIN_SPATIAL, CorrectionHead
from psdrt.export.models.registry import PATCH_SIZE
from psdrt.runtime.preprocess import fm_input_size

__all__ = [
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "HEAD_INPUTS",
    "HEAD_OUTPUTS",
    "DEFAULT_OPSET",
    "DEFAULT_IR_VERSION",
    "encoder_feat_sizes",
    "EncoderForExport",
    "HeadForExport",
    "export_encoder",
    "export_head",
    "export_module",
    "check_graph",
    "GraphCheckError",
]

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("rgb",)
ENCODER_OUTPUTS = ("rel_inv", "feat0", "feat1", "feat2", "feat3")
HEAD_INPUTS = ("sparse", "depth_diff", "feat0", "feat1", "feat2", "feat3")
HEAD_OUTPUTS = ("depth_pix", "fd0", "depth_residual", "depth_img")
#: TensorRT 8.5 (JetPack 5) parses opset 17 / IR version 8 (docs/platform.md section 1)
DEFAULT_OPSET = 17
DEFAULT_IR_VERSION = 8
#: protobuf's hard limit on one serialized message
_PROTOBUF_LIMIT = 2**31
#: the graph and headroom beside the weights
_SIZE_MARGIN = 64 * 2**20


class GraphCheckError(ValueError):
    """An exported graph breaks an invariant that TensorRT or numerical parity relies on."""


def encoder_feat_sizes(size: Tuple[int, int]) -> Tuple[Tuple[int, int], ...]:
    """Spatial sizes of ``feat0..feat3`` for an encoder input of ``size``.

    Args:
        size (tuple[int, int]): encoder input (Hm, Wm), multiples of 14.

    Returns:
        tuple: four (h, w) pairs, coarse to fine: (Hm/14, Wm/14) times 1, 2, 4, 8.
    """
    ph, pw = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
    return tuple((ph * 2**i, pw * 2**i) for i in range(4))


class EncoderForExport(nn.Module):
    """Flattens ``DepthAnythingV2``'s ``(rel_inv, (f0..f3))`` into five graph outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rgb: torch.Tensor):
        rel_inv, feats = self.model(rgb)
        return (rel_inv, *feats)


class HeadForExport(nn.Module):
    """Positional-input wrapper of ``CorrectionHead`` returning :data:`HEAD_OUTPUTS` in order."""

    def __init__(self, head: CorrectionHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, sparse, depth_diff, feat0, feat1, feat2, feat3):
        out = self.head(sparse, depth_diff, (feat0, feat1, feat2, feat3))
        return tuple(out[name] for name in HEAD_OUTPUTS)


def _param_bytes(module: nn.Module) -> int:
    seen = {}
    for t in list(module.parameters()) + list(module.buffers()):
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def _min_ir_version(opset: int) -> int:
    import onnx

    for row in onnx.helper.VERSION_TABLE:  # (release, ir_version, ai.onnx opset, ml opset[, training])
        if row[2] >= opset:
            return int(row[1])
    return int(onnx.IR_VERSION)


def _export_raw(module, args, input_names, output_names, opset, dynamic_axes, exporter):
    import onnx

    with tempfile.TemporaryDirectory(prefix="psdrt_export_") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter warns that it is legacy and about trace-time shape constants,
            # which are intended here (static shapes per working resolution).
            warnings.simplefilter("ignore")
            if exporter == "torchscript":
                torch.onnx.export(
                    module,
                    args,
                    str(raw),
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
            else:
                dyn_shapes = None
                if dynamic_axes:
                    dyn_shapes = {n: {a: torch.export.Dim.AUTO for a in dynamic_axes.get(n, {})} for n in input_names}
                torch.onnx.export(
                    module,
                    args,
                    str(raw),
                    dynamo=True,
                    external_data=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_shapes=dyn_shapes,
                )
        model = onnx.load(str(raw))
    return model


def export_module(
    module: nn.Module,
    args: Tuple[torch.Tensor, ...],
    path: Union[str, os.PathLike],
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    opset: int = DEFAULT_OPSET,
    ir_version: Optional[int] = DEFAULT_IR_VERSION,
    dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None,
    exporter: str = "torchscript",
    simplify: bool = True,
    metadata: Optional[Dict[str, str]] = None,
) -> Path:
    """Export ``module`` to one self-contained ONNX file, clean it up and check its invariants.

    Args:
        module (nn.Module): put in eval mode by the caller; its parameters are not changed.
        args (tuple[torch.Tensor, ...]): example inputs fixing the static shapes.
        path (str | os.PathLike): output ``.onnx`` file (parent folders are created).
        input_names (Sequence[str]): graph input names, in ``args`` order.
        output_names (Sequence[str]): graph output names, in the module's output order.
        opset (int): ai.onnx opset. Defaults to 17.
        ir_version (int, optional): IR version written to the file; must be at least the one the
            opset needs. Defaults to 8 (TensorRT 8.5). None keeps the exporter's.
        dynamic_axes (dict, optional): ``{name: {axis: symbol}}`` as in ``torch.onnx.export``.
            Defaults to None (all shapes static).
        exporter (str): ``"torchscript"`` (``dynamo=False``) or ``"dynamo"``. Defaults to
            "torchscript" (see the module docstring for the measurement).
        simplify (bool): run onnxslim (constant folding, shape inference). Defaults to True.
        metadata (dict, optional): extra ``metadata_props`` entries. Defaults to None.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: weights beyond the 2 GB protobuf limit, an IR version too old for the opset,
            or an unknown exporter.
        GraphCheckError: the exported graph violates :func:`check_graph`.
    """
    import onnx

    path = Path(path)
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    if ir_version is not None and ir_version < _min_ir_version(opset):
        raise ValueError(
            f"opset {opset} needs IR version >= {_min_ir_version(opset)}, got ir_version={ir_version}; "
            "raise ir_version or lower the opset"
        )
    nbytes = _param_bytes(module)
    if nbytes + _SIZE_MARGIN > _PROTOBUF_LIMIT:
        # ViT-G (~1.1e9 parameters, 4.5 GB in FP32). A single-file export is impossible and an
        # external-data export is not validated here (no machine to run it against PyTorch).
        raise ValueError(
            f"{type(module).__name__} holds {nbytes / 2**30:.2f} GiB of weights, beyond the 2 GiB protobuf "
            "limit of a single ONNX file; external-data export is not supported yet: export ViT-L or a "
            "smaller encoder, or convert the weights to FP16 before export"
        )
    path.parent.mkdir(parents=True, exist_ok=True)

    # Export in eval mode and give the caller's modules back in their own modes. The legacy
    # exporter restores the *top* module's mode recursively, so a fresh (training-mode) wrapper
    # would otherwise leave the wrapped model's BatchNorm layers in training mode.
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        model = _export_raw(module, args, input_names, output_names, opset, dynamic_axes, exporter)
    finally:
        for m, mode in modes.items():
            m.training = mode

    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    if ir_version is not None:
        model.ir_version = int(ir_version)
    for key, value in {"psdrt.exporter": exporter, "psdrt.opset": str(opset), **(metadata or {})}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    check_graph(model, input_names=input_names, output_names=output_names, opset=opset)
    onnx.save(model, str(path))
    return path


def check_graph(
    model,
    *,
    input_names: Optional[Iterable[str]] = None,
    output_names: Optional[Iterable[str]] = None,
    opset: Optional[int] = None,
) -> None:
    """Check the invariants every exported psdrt graph must hold.

    * graph inputs/outputs have exactly the expected names, in order;
    * the ai.onnx opset is the requested one;
    * no ``Resize`` uses ``antialias`` (TensorRT and older opsets cannot express it; PyTorch's
      ``antialias=False`` is what the models use);
    * every cubic ``Resize`` is ``cubic_coeff_a=-0.75`` with ``half_pixel`` coordinates
      (PyTorch's bicubic with ``align_corners=False``);
    * every ``Pad`` is constant or reflect (PSD's ``padding_mode="reflect"`` convolutions).

    Args:
        model (onnx.ModelProto | str | os.PathLike): the model or its file.
        input_names (Iterable[str], optional): expected input names. Defaults to None (not checked).
        output_names (Iterable[str], optional): expected output names. Defaults to None.
        opset (int, optional): expected ai.onnx opset. Defaults to None.

    Raises:
        GraphCheckError: naming the offending node and the export setting to fix.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    g = model.graph
    if input_names is not None:
        initializers = {i.name for i in g.initializer}
        got = [i.name for i in g.input if i.name not in initializers]
        if got != list(input_names):
            raise GraphCheckError(f"graph inputs are {got}, expected {list(input_names)}")
    if output_names is not None:
        got = [o.name for o in g.output]
        if got != list(output_names):
            raise GraphCheckError(f"graph outputs are {got}, expected {list(output_names)}")
    if opset is not None:
        have = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        if have.get("ai.onnx") != opset:
            raise GraphCheckError(f"graph opset is {have.get('ai.onnx')}, expected {opset}")
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "Resize":
            if attrs.get("antialias", 0):
                raise GraphCheckError(
                    f"Resize node {node.name!r} uses antialias; interpolate with antialias=False"
                )
            if attrs.get("mode") == "cubic":
                a = attrs.get("cubic_coeff_a", -0.75)
                ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
                if abs(a + 0.75) > 1e-6 or ctm != "half_pixel":
                    raise GraphCheckError(
                        f"cubic Resize node {node.name!r} has cubic_coeff_a={a}, coordinate mode {ctm!r}; "
                        "PyTorch bicubic needs -0.75 and half_pixel (align_corners=False)"
                    )
        elif node.op_type == "Pad":
            mode = attrs.get("mode", "constant")
            if mode not in ("constant", "reflect"):
                raise GraphCheckError(f"Pad node {node.name!r} has mode {mode!r}; expected constant or reflect")


def _check_size(size: Sequence[int], name: str) -> Tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"{name} must be (H, W) positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def export_encoder(
    model: nn.Module,
    path: Union[str, os.PathLike],
    size: Tuple[int, int] = (392, 518),
    opset: int = DEFAULT_OPSET,
    ir_version: Optional[int] = DEFAULT_IR_VERSION,
    dynamic: bool = False,
    *,
    exporter: str = "torchscript",
    simplify: bool = True,
) -> Path:
    """Export a Depth Anything V2 encoder (ViT + DPT) for one working resolution.

    Graph: input ``rgb`` float32 1 x 3 x Hm x Wm (ImageNet-normalised, as produced by
    ``runtime.preprocess.preprocess_rgb``); outputs ``rel_inv`` 1 x 1 x Hm x Wm and ``feat0..feat3``
    1 x features x (Hm/14, Wm/14) * (1, 2, 4, 8), coarse to fine.

    Args:
        model (nn.Module): ``DepthAnythingV2`` (or ``PSDModel.foundation``), weights loaded.
        path (str | os.PathLike): output ``.onnx`` file.
        size (tuple[int, int]): (Hm, Wm), both multiples of 14, any aspect ratio (NYU 392 x 518,
            KITTI 392 x 1862). Defaults to (392, 518).
        opset (int): ai.onnx opset. Defaults to 17.
        ir_version (int, optional): IR version. Defaults to 8. None keeps the exporter's.
        dynamic (bool): make Hm and Wm symbolic. Valid for ONNX Runtime with Hm and Wm multiples of 14
            other than the 518 x 518 training grid; the position-embedding matrices are then built
            in-graph. Not exact at 518 x 518, where PyTorch returns the stored table unresampled (a
            trace-time branch), and therefore refused for ``size == (518, 518)``. TensorRT needs an
            optimisation profile for a dynamic model; the deployment path uses static exports.
            Defaults to False.
        exporter (str): ``"torchscript"`` or ``"dynamo"``. Defaults to "torchscript".
        simplify (bool): onnxslim clean-up. Defaults to True.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: a size that is not a multiple of 14, a model too large for one file (ViT-G),
            or a dynamic export traced at the training grid.
    """
    hm, wm = _check_size(size, "size")
    if hm % PATCH_SIZE or wm % PATCH_SIZE:
        raise ValueError(
            f"encoder size {size} must be multiples of {PATCH_SIZE}; use runtime.preprocess.fm_input_size(h, w)"
        )
    grid = getattr(getattr(model, "pretrained", None), "grid_size", None)
    if dynamic and grid is not None and (hm // PATCH_SIZE, wm // PATCH_SIZE) == (grid, grid):
        raise ValueError(
            f"a dynamic encoder must be traced at a size other than the training grid {grid * PATCH_SIZE}x"
            f"{grid * PATCH_SIZE} (the position embeddings take another branch there); pass e.g. size=(392, 518)"
        )
    x = torch.zeros(1, 3, hm, wm)
    axes = None
    if dynamic:
        axes = {"rgb": {2: "Hm", 3: "Wm"}, "rel_inv": {2: "Hm", 3: "Wm"}}
        axes.update({f"feat{i}": {2: f"fh{i}", 3: f"fw{i}"} for i in range(4)})
    meta = {
        "psdrt.kind": "encoder",
        "psdrt.encoder": str(getattr(model, "encoder", "")),
        "psdrt.size": f"{hm}x{wm}",
        "psdrt.dynamic": str(bool(dynamic)),
    }
    return export_module(
        EncoderForExport(model),
        (x,),
        path,
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        opset=opset,
        ir_version=ir_version,
        dynamic_axes=axes,
        exporter=exporter,
        simplify=simplify,
        metadata=meta,
    )


def export_head(
    head: CorrectionHead,
    path: Union[str, os.PathLike],
    size: Tuple[int, int] = (228, 304),
    fm_channels: Optional[int] = None,
    feat_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    opset: int = DEFAULT_OPSET,
    ir_version: Optional[int] = DEFAULT_IR_VERSION,
    dynamic: bool = False,
    *,
    exporter: str = "torchscript",
    simplify: bool = True,
) -> Path:
    """Export the PSD correction head for one working resolution.

    Graph: inputs ``sparse``, ``depth_diff`` float32 1 x 1 x H x W (metres, 0 = no sparse sample)
    and ``feat0..feat3`` float32 1 x fm_channels x h_i x w_i (the encoder's outputs); outputs
    ``depth_pix`` 1 x 1 x H x W (stage 3), ``fd0`` 1 x 128 x ceil(H/2) x ceil(W/2) (for
    post-processing), ``depth_residual`` and ``depth_img`` 1 x 1 x H x W (stages 1 and 2).

    Args:
        head (CorrectionHead): the head (or a ``PSDModel``, which is one), weights loaded.
        path (str | os.PathLike): output ``.onnx`` file.
        size (tuple[int, int]): (H, W), at least 17 each (NYU 228 x 304, KITTI 256 x 1216).
            Defaults to (228, 304).
        fm_channels (int, optional): DPT width of the features; must equal ``head.fm_channels``.
            Defaults to None (``head.fm_channels``).
        feat_sizes (Sequence[tuple[int, int]], optional): (h, w) of feat0..feat3. Defaults to None:
            the encoder's sizes for ``fm_input_size(H, W)``, which is what the pipeline feeds.
        opset (int): ai.onnx opset. Defaults to 17.
        ir_version (int, optional): IR version. Defaults to 8.
        dynamic (bool): make H, W and the feature sizes symbolic (ONNX Runtime; the head has no
            size-dependent branches). TensorRT needs an optimisation profile. Defaults to False.
        exporter (str): ``"torchscript"`` or ``"dynamo"``. Defaults to "torchscript".
        simplify (bool): onnxslim clean-up. Defaults to True.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: ``fm_channels`` disagreeing with the head, a size below 17, or bad feat_sizes.
    """
    h, w = _check_size(size, "size")
    if h < MIN_SPATIAL or w < MIN_SPATIAL:
        raise ValueError(f"head size {size} must be at least {MIN_SPATIAL} x {MIN_SPATIAL}")
    channels = head.fm_channels if fm_channels is None else int(fm_channels)
    if channels != head.fm_channels:
        raise ValueError(
            f"fm_channels={fm_channels} but the head was built with fm_channels={head.fm_channels}; "
            "build CorrectionHead(fm_channels=...) for this foundation model"
        )
    if feat_sizes is None:
        feat_sizes = encoder_feat_sizes(fm_input_size(h, w))
    feat_sizes = [tuple(int(v) for v in s) for s in feat_sizes]
    if len(feat_sizes) != 4 or any(len(s) != 2 or min(s) < 1 for s in feat_sizes):
        raise ValueError(f"feat_sizes must be four (h, w) pairs, coarse to fine, got {feat_sizes!r}")
    args = (torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)) + tuple(
        torch.zeros(1, channels, fh, fw) for fh, fw in feat_sizes
    )
    axes = None
    if dynamic:
        axes = {"sparse": {2: "H", 3: "W"}, "depth_diff": {2: "H", 3: "W"}}
        axes.update({f"feat{i}": {2: f"fh{i}", 3: f"fw{i}"} for i in range(4)})
        axes.update({n: {2: "H", 3: "W"} for n in ("depth_pix", "depth_residual", "depth_img")})
        axes["fd0"] = {2: "H2", 3: "W2"}
    meta = {
        "psdrt.kind": "head",
        "psdrt.fm_channels": str(channels),
        "psdrt.size": f"{h}x{w}",
        "psdrt.feat_sizes": ";".join(f"{a}x{b}" for a, b in feat_sizes),
        "psdrt.dynamic": str(bool(dynamic)),
    }
    return export_module(
        HeadForExport(head),
        args,
        path,
        HEAD_INPUTS,
        HEAD_OUTPUTS,
        opset=opset,
        ir_version=ir_version,
        dynamic_axes=axes,
        exporter=exporter,
        simplify=simplify,
        metadata=meta,
    )
