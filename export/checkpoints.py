"""Loading, describing and saving checkpoints: official PSD, official Depth Anything V2, ours.

Formats recognised (always read with ``torch.load(weights_only=True)``):

* **official PSD** (``checkpoint_%06d.ckpt``): ``{'epoch': int, 'model': state_dict,
  'optimizer': ...}``; keys may carry a DataParallel ``module.`` prefix; the foundation model is
  stored under ``mde.net.*`` (docs/psd_method.md §9). The optimizer state is ignored.
* **official Depth Anything V2** (``depth_anything_v2_vit{s,b,l,g}.pth``): a bare state_dict with
  ``pretrained.*`` and ``depth_head.*`` keys.
* **psdrt**: ``{'format': 'psdrt-checkpoint', 'version': 1, 'kind': 'psd'|'dav2',
  'encoder': ..., 'state_dict': ...}`` written by :func:`save_checkpoint`.

Loading is strict: a mismatch raises :class:`CheckpointError` listing missing, unexpected and
mis-shaped keys together with what the file looks like.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from ..runtime.errors import CheckpointError
from .models.registry import MODEL_CONFIGS, detect_dav2_encoder

PathLike = Union[str, os.PathLike]

FORMAT_TAG = "psdrt-checkpoint"
FORMAT_VERSION = 1

#: file suffixes of checkpoints (official PSD .ckpt, Depth Anything V2 .pth, psdrt .pt)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")

_HEAD_PREFIXES = ("rb.", "ib.", "pb.", "sds.")
_HEAD_SCALARS = ("alpha1", "beta1", "alpha2", "beta2")


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds.

    Attributes:
        path (str): the file.
        format (str): ``'psd-official'``, ``'dav2-official'`` or ``'psdrt'``.
        kind (str): ``'psd'`` (foundation model + correction head) or ``'dav2'`` (foundation only).
        encoder (str | None): Depth Anything V2 size (``'vits'``...), None if unrecognised.
        foundation (str): foundation model family as recognised from the keys.
        licence (str | None): licence of the foundation model weights of that size.
        tensors (int): number of entries in the state_dict.
        parameters (int): number of elements over all entries.
        head_parameters (int): elements in the correction head entries (0 for ``'dav2'``).
        epoch (int | None): training epoch stored by the official trainer.
        has_optimizer (bool): an optimizer state is present (ignored when loading).
        stripped_module_prefix (bool): DataParallel ``module.`` prefixes were removed.
        notes (list[str]): anything else worth telling the user.
    """

    path: str
    format: str
    kind: str
    encoder: Optional[str]
    foundation: str
    licence: Optional[str]
    tensors: int
    parameters: int
    head_parameters: int = 0
    epoch: Optional[int] = None
    has_optimizer: bool = False
    stripped_module_prefix: bool = False
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        """A short multi-line human-readable description (what ``psdrt inspect`` prints)."""
        fm = f"Depth Anything V2 {self.encoder}" if self.encoder else self.foundation
        lines = [
            f"checkpoint:   {self.path}",
            f"format:       {self.format}",
            f"contents:     {'PSD (foundation model + correction head)' if self.kind == 'psd' else 'foundation model only'}",
            f"foundation:   {fm}" + (f"  [weights licence: {self.licence}]" if self.licence else ""),
            f"tensors:      {self.tensors} ({self.parameters / 1e6:.2f} M elements"
            + (f", head {self.head_parameters / 1e6:.2f} M" if self.kind == "psd" else "")
            + ")",
        ]
        if self.epoch is not None:
            lines.append(f"epoch:        {self.epoch}")
        if self.has_optimizer:
            lines.append("optimizer:    present (ignored)")
        if self.stripped_module_prefix:
            lines.append("prefix:       DataParallel 'module.' stripped")
        lines += [f"note:         {n}" for n in self.notes]
        return "\n".join(lines)


#: what torch's weights_only unpickler says when it refuses a Python object (torch 2.6-2.13: "Unsupported
#: global: GLOBAL m.C was not an allowed global", "Trying to load unsupported GLOBAL posix.system whose
#: module posix is blocked", "Can only build Tensor, ... allowlisted via `add_safe_globals`", "Trying to
#: call reduce for unrecognized function"); a damaged file gives "Unsupported operand", EOF or zip errors
_REFUSED_OBJECT = re.compile(r"unsupported global|safe_globals|unrecognized function", re.IGNORECASE)


def _refusal_detail(text: str) -> str:
    """The part of torch's long message that names the refused object or the damage."""
    m = re.search(r"(Unsupported global: GLOBAL \S+|unsupported GLOBAL \S+|Can only \w+ [^.]*|Trying to call reduce "
                  r"for unrecognized function \S+|Unsupported operand \S+|String is too long)", text)
    if m:
        return m.group(1).rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "no detail"


def _torch_load(path: PathLike):
    p = Path(path)
    if p.is_dir():
        inside = sorted(q.name for q in p.iterdir() if q.is_file() and q.suffix.lower() in CHECKPOINT_SUFFIXES)[:3]
        raise CheckpointError(
            f"checkpoint {str(p)!r} is a directory, not a checkpoint file; pass the file itself"
            + (f" (it holds {', '.join(inside)})" if inside else
               " (e.g. checkpoint_000044.ckpt or depth_anything_v2_vits.pth)")
        )
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} not found; check the path")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if _REFUSED_OBJECT.search(text):
            raise CheckpointError(
                f"{p}: refused as unsafe: the pickle references Python objects beyond tensors and plain "
                f"containers ({_refusal_detail(text)}). psdrt loads checkpoints with "
                "torch.load(weights_only=True), which refuses them because unpickling them can run "
                "arbitrary code. Do not load a file of unknown origin; if you trust its source, re-save "
                "it as a plain state_dict in a trusted environment: torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(  # not an object we refused: a damaged file
            f"{p}: not a readable PyTorch checkpoint (truncated or corrupt download?); download it again. "
            f"Detail: {_refusal_detail(text)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint (truncated or corrupt download?); "
            f"download it again. Detail: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_module(sd: dict) -> tuple[dict, bool]:
    if any(k.startswith("module.") for k in sd):
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}, True
    return sd, False


def _classify(sd: dict) -> tuple[str, str, Optional[str], list]:
    """(kind, foundation family, encoder, notes) from the keys of a normalised state_dict."""
    notes = []
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    has_head = any(k.startswith(_HEAD_PREFIXES) for k in sd)
    if any(k.startswith("mde.net.pretrained.model.") or k.startswith("mde.net.scratch.") for k in sd):
        return ("psd" if has_head else "unknown"), "MiDaS v3.1 (Swin2-L)", None, notes
    if has_head or any(k.startswith("mde.") for k in sd):
        encoder = detect_dav2_encoder({k: s for k, s in shapes.items() if k.startswith("mde.net.")})
        if encoder is None:
            notes.append("foundation-model keys under 'mde.net.' match no Depth Anything V2 size")
        return "psd", "Depth Anything (DINOv2 + DPT)", encoder, notes
    encoder = detect_dav2_encoder(shapes)
    if encoder is not None or any(k.startswith("pretrained.") for k in sd):
        return "dav2", "Depth Anything (DINOv2 + DPT)", encoder, notes
    return "unknown", "unknown", None, notes


def read_checkpoint(path: PathLike) -> tuple[CheckpointInfo, dict]:
    """Read a checkpoint and normalise its state_dict to psdrt's module layout.

    Args:
        path (str | PathLike): checkpoint file.

    Returns:
        tuple: (``CheckpointInfo``, state_dict) where the state_dict keys are those of
        ``PSDModel`` (``kind == 'psd'``) or ``DepthAnythingV2`` (``kind == 'dav2'``).

    Raises:
        CheckpointError: unreadable file, unknown layout, or an unsupported foundation model.
    """
    obj = _torch_load(path)
    epoch, has_opt, fmt = None, False, None
    if isinstance(obj, dict) and obj.get("format") == FORMAT_TAG:
        if obj.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: psdrt checkpoint version {obj.get('version')!r} is not supported by this "
                f"psdrt (expects {FORMAT_VERSION}); upgrade psdrt or re-export the checkpoint"
            )
        sd, fmt = obj.get("state_dict"), "psdrt"
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd, fmt = obj["model"], "psd-official"
        epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
        has_opt = "optimizer" in obj
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd, fmt = obj["state_dict"], "state_dict-wrapper"
    else:
        sd, fmt = obj, None
    if not _is_state_dict(sd):
        raise CheckpointError(
            f"{path}: no state_dict of tensors found (top-level keys: "
            f"{sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__}); expected an "
            "official PSD checkpoint ({'model': state_dict, ...}), a Depth Anything V2 .pth file, "
            "or a psdrt checkpoint"
        )
    sd, stripped = _strip_module(sd)
    kind, family, encoder, notes = _classify(sd)
    if fmt is None or fmt == "state_dict-wrapper":
        fmt = "dav2-official" if kind == "dav2" else ("psd-official" if kind == "psd" else "state_dict")
    info = CheckpointInfo(
        path=str(path),
        format=fmt,
        kind=kind,
        encoder=encoder,
        foundation=family,
        licence=MODEL_CONFIGS[encoder].license if encoder else None,
        tensors=len(sd),
        parameters=sum(v.numel() for v in sd.values()),
        head_parameters=sum(v.numel() for k, v in sd.items() if not k.startswith("mde.")) if kind == "psd" else 0,
        epoch=epoch,
        has_optimizer=has_opt,
        stripped_module_prefix=stripped,
        notes=notes,
    )
    if kind == "unknown":
        raise CheckpointError(
            f"{path}: the keys match neither a PSD nor a Depth Anything V2 model (first keys: "
            f"{list(sd)[:5]}); pass an official PSD-Dv2 checkpoint, a depth_anything_v2_vit*.pth "
            "file, or a psdrt checkpoint\n" + info.describe()
        )
    if "MiDaS" in family:
        raise CheckpointError(
            f"{path}: this is a PSD-M checkpoint (MiDaS Swin2-L foundation model), which psdrt does "
            "not support; use a PSD checkpoint with a Depth Anything V2 foundation model (PSD-Dv2)\n"
            + info.describe()
        )
    return info, sd


def inspect_checkpoint(path: PathLike) -> CheckpointInfo:
    """Describe a checkpoint without building a model (what ``psdrt inspect`` prints)."""
    return read_checkpoint(path)[0]


def _mismatch_report(expected: dict, got: dict, limit: int = 12) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]

    def block(title, items):
        if not items:
            return ""
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more

    return block("missing keys", missing) + block("unexpected keys", unexpected) + block("shape mismatches", shapes)


def _build(kind: str, encoder: str, device=None):
    from .models.depth_anything_v2 import DepthAnythingV2
    from .models.psd import PSDModel

    cls = PSDModel if kind == "psd" else DepthAnythingV2
    if device is None:
        return cls(encoder)
    with torch.device(device):
        return cls(encoder)


def load_model(path: PathLike, kind: Optional[str] = None, encoder: Optional[str] = None):
    """Build the model a checkpoint describes and load it strictly.

    Args:
        path (str | PathLike): official PSD, official Depth Anything V2 or psdrt checkpoint.
        kind (str, optional): require ``'psd'`` or ``'dav2'``; a PSD checkpoint asked for as
            ``'dav2'`` yields its foundation model. Defaults to what the file holds.
        encoder (str, optional): require a foundation-model size; defaults to the detected one.

    Returns:
        tuple: (model in eval mode, ``CheckpointInfo``). The model is a ``PSDModel`` for
        ``kind='psd'`` and a ``DepthAnythingV2`` for ``kind='dav2'``.

    Raises:
        CheckpointError: unreadable, unknown, unsupported or mismatched checkpoint.
    """
    info, sd = read_checkpoint(path)
    want = kind or info.kind
    if want not in ("psd", "dav2"):
        raise CheckpointError(f"kind must be 'psd' or 'dav2', got {kind!r}")
    if want == "psd" and info.kind != "psd":
        raise CheckpointError(
            f"{path} holds only a foundation model (no correction head), so the 'psd' mode cannot "
            "run from it; use mode 'propagate' (foundation model + parameter-free propagation) or "
            "pass a PSD checkpoint\n" + info.describe()
        )
    if want == "dav2" and info.kind == "psd":
        sd = {k[len("mde.net."):]: v for k, v in sd.items() if k.startswith("mde.net.")}
    enc = encoder or info.encoder
    if enc is None:
        raise CheckpointError(
            f"{path}: could not recognise the Depth Anything V2 size from the keys; pass "
            f"encoder=one of {sorted(MODEL_CONFIGS)} to load it anyway and see the key diff\n"
            + info.describe()
        )
    if encoder is not None and info.encoder is not None and encoder != info.encoder:
        raise CheckpointError(
            f"{path} holds a Depth Anything V2 {info.encoder} foundation model but {encoder} was "
            f"requested; drop the encoder argument or pass the matching checkpoint\n" + info.describe()
        )
    expected = _build(want, enc, device="meta").state_dict()
    report = _mismatch_report(expected, sd)
    if report:
        raise CheckpointError(
            f"{path} does not match the psdrt {want} model with a {enc} foundation model:{report}\n"
            "What the file looks like:\n" + info.describe()
        )
    model = _build(want, enc)
    model.load_state_dict(sd, strict=True)
    return model.eval(), info


def save_checkpoint(model, path: PathLike) -> None:
    """Save a ``PSDModel`` or ``DepthAnythingV2`` in the psdrt checkpoint format."""
    from .models.psd import PSDModel

    kind = "psd" if isinstance(model, PSDModel) else "dav2"
    encoder = model.encoder
    torch.save(
        {"format": FORMAT_TAG, "version": FORMAT_VERSION, "kind": kind, "encoder": encoder,
         "state_dict": model.state_dict()},
        path,
    )


def save_official_psd(model, path: PathLike, epoch: int = 44, data_parallel: bool = False,
                      with_optimizer: bool = True) -> None:
    """Save a ``PSDModel`` the way the official trainer does (used to build test fixtures).

    Args:
        model (PSDModel): the model.
        path (str | PathLike): output ``.ckpt`` file.
        epoch (int): stored epoch. Defaults to 44 (the last of the official 45 epochs).
        data_parallel (bool): prefix keys with ``module.`` as a DataParallel model does.
        with_optimizer (bool): include an AdamW state dict, as the official file does.
    """
    sd = model.state_dict()
    if data_parallel:
        sd = {"module." + k: v for k, v in sd.items()}
    obj = {"epoch": epoch, "model": sd}
    if with_optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params[:4] or [torch.nn.Parameter(torch.zeros(1))], lr=1e-3, weight_decay=0.05)
        obj["optimizer"] = opt.state_dict()
    torch.save(obj, path)
