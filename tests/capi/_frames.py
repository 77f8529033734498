"""Raw ctypes helpers for the session tests: frames in/out from NumPy, status + message checks."""

from __future__ import annotations

import ctypes as C
import shutil
from pathlib import Path

import numpy as np

from psdrt.runtime import session as S

#: working size of the test artefacts (conftest.artifacts)
SIZE = (56, 84)


class Frame:
    """One psd_frame_in / psd_frame_out pair over NumPy arrays (kept alive here)."""

    def __init__(self, rgb, sparse, K, depth_mm: bool = False):
        self.rgb = np.ascontiguousarray(rgb, np.uint8)
        self.sparse = np.ascontiguousarray(sparse, np.float32)
        self.K = np.ascontiguousarray(K, np.float64)
        h, w = self.sparse.shape
        self.depth = np.full((h, w), -1.0, np.float32)
        self.mm = np.zeros((h, w), np.uint16) if depth_mm else None
        self.fin = S.FrameIn(C.sizeof(S.FrameIn), 0, h, w, self.rgb.ctypes.data, 0, self.sparse.ctypes.data, 0,
                             self.K.ctypes.data, S.DTYPE_FLOAT64, 0)
        self.fout = S.FrameOut()
        self.fout.struct_size = C.sizeof(S.FrameOut)
        self.fout.depth = self.depth.ctypes.data
        if self.mm is not None:
            self.fout.depth_mm = self.mm.ctypes.data

    def run(self, lib, handle) -> int:
        return lib.psd_session_run(handle, C.byref(self.fin), C.byref(self.fout))


def last_error(lib) -> str:
    return (lib.psd_last_error() or b"").decode()


def create(lib, artifact_dir=None, **fields):
    """(status, handle, message) of psd_session_create with option fields set by name."""
    o = S.SessionOptions()
    assert lib.psd_session_options_init(C.byref(o)) == 0
    keep = []
    for k, v in fields.items():
        if isinstance(v, str):
            keep.append(v.encode())
            v = keep[-1]
        setattr(o, k, v)
    h = C.c_void_p()
    d = None if artifact_dir is None else str(artifact_dir).encode()
    st = lib.psd_session_create(d, C.byref(o), C.byref(h))
    return st, h, last_error(lib) if st else ""


def status_name(lib, st: int) -> str:
    return lib.psd_status_string(st).decode()


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (cheap; a path inside the new directory, as the artefact rules require) or a copy."""
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def copy_artifacts(src: Path, dst: Path) -> Path:
    """An editable copy of an artefact directory: manifest.json copied, the other files hard-linked
    (symlinks out of a directory are refused by the artefact rules)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "manifest.json":
            shutil.copyfile(p, dst / p.name)
        elif p.is_file():
            link_or_copy(p.resolve(), dst / p.name)
    return dst


def shared_frame(dataset: str, frame_id: str, size=SIZE):
    """A shared KITTI/NYU frame fitted to `size` with 1 % random sparse depth from its ground truth."""
    from _support import SHARED_DATA

    from psdrt.export.gate import fit_frame
    from psdrt.runtime.io import load_shared_frame
    from psdrt.runtime.patterns import make_sparse

    rgb, gt, K = fit_frame(load_shared_frame(SHARED_DATA, dataset, frame_id), size)
    sparse = make_sparse("random1", rgb, gt, 0)
    if (sparse > 0).sum() < 3:  # tiny frames of sparse LiDAR ground truth: keep a few points
        sparse = np.where(gt > 0, gt, 0).astype(np.float32)
    return rgb, sparse, K, gt


def onnxruntime_problem(lib, tmp: Path) -> str | None:
    """None when the library can run ONNX Runtime models, else the library's reason.

    A one-byte "encoder" with the right hash: ONNX Runtime loads and refuses it (PSD_E_BACKEND)
    unless the library was built without ONNX Runtime headers or finds no ONNX Runtime library
    (PSD_E_BACKEND_UNAVAILABLE)."""
    import hashlib
    import json

    (tmp / "encoder.fp32.onnx").write_bytes(b"\0")
    art = {"name": "encoder.fp32.onnx", "file": "encoder.fp32.onnx", "part": "encoder", "precision": "fp32",
           "sha256": hashlib.sha256(b"\0").hexdigest(), "gate": {"passed": True}}
    (tmp / "manifest.json").write_text(json.dumps({"format": 1, "size": list(SIZE), "model": {"mode": "propagate"},
                                                   "preprocess": "official", "artifacts": [art]}))
    st, _, msg = create(lib, tmp)
    if st == 12:  # ONNX Runtime loaded and refused the byte: it runs here
        return None
    # only a missing ONNX Runtime may skip the ONNX tests; anything else (e.g. a probe manifest that
    # the artefact rules refuse) is a bug of this probe and must not silently skip them
    assert st == 11, f"ONNX Runtime probe failed with status {st}, not 11 (backend unavailable): {msg}"
    return msg
