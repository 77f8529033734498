"""Fixtures of the session C API tests: the library, small artefact directories, frames.

The artefacts (a random-weight ViT-S PSD checkpoint, ``build_artifacts`` at 56x84 with
``fm_lower=56`` so the encoder also runs at 56x84, FP32) are built once per test session, in
about 25 s; ``$PSD_CAPI_ARTIFACTS`` points at an existing directory instead (the sanitizer test
passes its own so that its child pytest neither rebuilds nor imports torch).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _frames.py

from _frames import SIZE, link_or_copy, onnxruntime_problem  # noqa: E402


@pytest.fixture(scope="session")
def capi_lib():
    """The kernel library with the session API (built when missing)."""
    from psdrt.runtime.errors import BackendUnavailable
    from psdrt.runtime.session import session_library

    try:
        return session_library()
    except BackendUnavailable:
        from psdrt import build

        build.build_kernels(cuda=False)
        return session_library()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, capi_lib) -> Path:
    """A psd-mode deployable directory at SIZE (FP32 encoder + head). Skips (with the library's
    reason and fix) where the library cannot run ONNX Runtime, e.g. when build.py could not fetch
    the ONNX Runtime headers."""
    problem = onnxruntime_problem(capi_lib, tmp_path_factory.mktemp("ort_probe"))
    if problem:
        pytest.skip(f"the session library cannot run ONNX Runtime here: {problem}")
    given = os.environ.get("PSD_CAPI_ARTIFACTS")
    if given:
        return Path(given)
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch

    from psdrt import build as B
    from psdrt.export.checkpoints import save_official_psd
    from psdrt.export.models.psd import PSDModel
    from psdrt.export.models.random_weights import randomize_head_

    torch.manual_seed(0)
    model = randomize_head_(PSDModel("vits"), 0)
    root = tmp_path_factory.mktemp("capi")
    ckpt = root / "psd_vits.ckpt"
    save_official_psd(model, ckpt)
    out = root / "deploy"
    B.build_artifacts(ckpt, out, size=SIZE, precisions=("fp32",), golden_shared=False, fm_lower=56, kernels=False)
    return out


@pytest.fixture(scope="session")
def propagate_artifacts(artifacts, tmp_path_factory) -> Path:
    """The same encoder as a propagate-mode directory (what a Depth Anything V2 checkpoint builds)."""
    out = tmp_path_factory.mktemp("capi_prop") / "deploy"
    out.mkdir()
    m = json.loads((artifacts / "manifest.json").read_text())
    m["model"]["mode"] = "propagate"
    m["model"]["kind"] = "dav2"
    m["artifacts"] = [a for a in m["artifacts"] if a["part"] == "encoder"]
    for a in m["artifacts"]:
        link_or_copy(artifacts / a["file"], out / a["file"])
    (out / "manifest.json").write_text(json.dumps(m))
    return out


@pytest.fixture(scope="session")
def middlebury():
    """The Middlebury frame fitted to SIZE with 1 % random sparse depth: (rgb, sparse, K, gt)."""
    from psdrt.export.gate import fit_frame
    from psdrt.runtime.io import load_middlebury
    from psdrt.runtime.patterns import make_sparse

    rgb, gt, K = fit_frame(load_middlebury(), SIZE)
    return rgb, make_sparse("random1", rgb, gt, 0), K, gt
