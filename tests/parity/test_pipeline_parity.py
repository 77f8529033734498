"""End to end from raw RGB: the official PSD ``DCNet`` against psdrt's reference, its ONNX Runtime
FP32 pipeline and its C session, on the same image, sparse depth and K.

Skipped unless the official checkout is found ($PSD_OFFICIAL_DIR or ../shared/official/PSD).

Inputs, as the official evaluation loaders prepare them:

* NYUv2: the shared NYU frame 00000 halved and centre-cropped to 228x304 (``nyu_halve_crop``), 1 %
  random sparse depth from its ground truth (seed 0);
* KITTI: the shared KITTI depth-completion frame ``lidar/kittidc_a`` with its **real raw LiDAR**,
  bottom-cropped to 256x1216 (``kitti_bottom_crop``), KITTI's nominal K;
* where the shared frames are absent, deterministic synthetic scenes of the same sizes.

The official side gets the loaders' own foundation-model input (scikit-image ``resize(order=3)``,
ImageNet normalisation in float64, float32: ``ResizeV4`` + ``ToTensor`` + ``NormalizeTensor`` +
``ConvertFloat``) and the official ``fill_in_fast`` IP-Basic; psdrt gets the raw RGB and does its
own preprocessing. Random official-format ViT-S weights (the official ``DCNet.state_dict()`` saved
as the official trainer does and loaded with ``load_model``).

The official spread. The official output is a discontinuous function of float rounding (the kNN
keeps other neighbours at near-ties), so "the official answer" is only defined up to what the
official code itself does under a rounding change. It is measured in the test: the official
forward once more with one ulp added to a random half of its input, and once with another thread
count (PyTorch splits reductions differently); the spread is the larger of the two changes of the
final depth.

What is asserted (in brackets: benchmarks/results/parity_official.md, 2-core CPU, random weights;
where near-ties flip depends on the machine's rounding, so other machines measure other values
within the same bounds):

* the reference's foundation-model input equals the official one and its output (relative depth
  and four features) is bit-identical: the reference computes upstream's eager attention and
  position-embedding resampling op for op;
* the reference's final depth is within 1e-4 m of the official at NYU size [1.9e-6] and within the
  official spread at both sizes [spread NYU 2.2e-4, KITTI 1.5e-2; reference KITTI 0]: its
  alignment and kNN are the official ones op for op, and only the CSPN's 8-neighbour sums round
  differently (the official sums them with a Conv3d);
* the ONNX Runtime FP32 pipeline (``Pipeline.from_artifacts``) and the C session (``CSession``)
  are bit-identical to each other;
* the kernels' propagation, given ONNX Runtime's FM output, against the official code given the
  same output: within the spread at NYU size [2.9e-6 m]; at both sizes within 0.3 m at the worst
  pixel and 0.3 % of the pixels beyond 1 cm [KITTI 1.5e-2 m, 0.03 %]: where their kNN (float64
  alignment sums, unfused distances, ties to the lower cell) keeps another neighbour at a near-tie
  than the official float32 arithmetic, the CSPN spreads that over hundreds of pixels, and the
  deployment path is the official method up to such flips, not bit for bit;
* end to end, the deployment path against the official: within 0.3 m at the worst pixel, RMSE
  5 mm, 0.3 % of the pixels beyond 1 cm [NYU 1.1e-5 m; KITTI 1.1e-2 m, RMSE 1.7e-4 m, 0.003 %].

Result file. With ``PSD_PARITY_RESULTS=DIR`` the measured figures are also written to
``DIR/parity_official.{json,md}`` with the commit, date, machine and load (the README's Fidelity
figures come from ``benchmarks/results/parity_official.md``, made so):

    PSD_PARITY_RESULTS=benchmarks/results python -m pytest -q -s tests/parity/test_pipeline_parity.py

Tie-breaking in the kNN. The official ``knnv1`` passes its (complete) candidate and query lists
through ``torch.randperm``, which only decides exact ties; the official forward here runs with
``torch.randperm`` returning the identity (a legitimate draw: the one ordering candidates by cell,
as the reference does).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

import _support
from parity import _official

pytestmark = pytest.mark.skipif(_official.official_problem() is not None,
                                reason=str(_official.official_problem()))

ENCODER = "vits"
#: official output list order (DCNet.forward, eval branch)
STAGES = ("ip", "depth_polyfit", "depth_diff", "depth_residual", "depth_img", "depth_pix", "depth_post")
#: the issue's bound at NYU size for the reference from raw RGB (metres)
NYU_ABS = 1e-4
CASES = {"nyu": ("NYUv2", (228, 304)), "kitti": ("KITTI", (256, 1216))}


def synthetic_frame(h: int, w: int, depth_range, seed: int = 0):
    """Structured RGB uint8, 5 % sparse depth of a plausible scene and K, all deterministic."""
    rng = np.random.default_rng(seed)
    near, far = depth_range
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v, u = yy / (h - 1), xx / (w - 1)
    t = np.clip((v - 0.42) / 0.58, 1e-3, 1.0)
    depth = np.minimum(np.where(v > 0.42, near / t, far), far).astype(np.float32)
    depth = np.where(u < 0.3, np.minimum(depth, near + (far - near) * (0.15 + 2 * u)), depth)
    for (u0, u1, v0, v1, d) in ((0.45, 0.6, 0.3, 0.8, 0.35), (0.7, 0.85, 0.2, 0.7, 0.6)):
        box = (u >= u0) & (u < u1) & (v >= v0) & (v < v1)
        depth = np.where(box, near + (far - near) * d + 0.3 * (u - u0), depth)
    depth = np.clip(depth, near, far).astype(np.float32)
    shade = 1.0 - (depth - near) / (far - near)
    checker = ((xx // 16 + yy // 16) % 2).astype(np.float32)
    rgb = np.stack([0.55 * shade + 0.25 * u + 0.15 * checker, 0.45 * shade + 0.30 * v + 0.10 * checker,
                    0.35 * shade + 0.35 * (1.0 - u) + 0.20 * np.sin(xx / 9.0) ** 2], -1)
    rgb = (np.clip(rgb + rng.normal(0.0, 0.02, rgb.shape), 0, 1) * 255).round().astype(np.uint8)
    noisy = depth * (1.0 + 0.01 * rng.standard_normal((h, w))).astype(np.float32)
    sparse = np.where(rng.random((h, w)) < 0.05, noisy, 0.0).astype(np.float32)
    f = 0.8 * w if w > 2 * h else 1.15 * w
    K = np.array([[f, 0.0, w / 2.0 - 0.5], [0.0, f, h / 2.0 - 0.5], [0.0, 0.0, 1.0]])
    return rgb, sparse, K


def frame(case: str):
    """(rgb uint8, sparse float32 metres, K float64, description) of a case."""
    from psdrt.runtime.datasets import kitti_bottom_crop, nyu_halve_crop
    from psdrt.runtime.io import intrinsics_matrix, load_shared_frame, read_depth, read_rgb
    from psdrt.runtime.patterns import make_sparse

    data = _support.SHARED_DATA
    lidar = None if data is None else data / "lidar"
    if case == "nyu" and data is not None:
        f = load_shared_frame(data, "NYUv2", "00000")
        rgb, K, gt = nyu_halve_crop(f.rgb, f.K, f.depth)
        return rgb, make_sparse("random1", rgb, gt, 0).astype(np.float32), K, "NYU 00000, 1 % random"
    if case == "kitti" and lidar is not None and (lidar / "kittidc_a_lidar.png").is_file():
        rgb = read_rgb(lidar / "kittidc_a_rgb.png")
        raw = read_depth(lidar / "kittidc_a_lidar.png", 256.0)
        K = intrinsics_matrix(721.5377, 721.5377, 609.5593, 172.854)  # KITTI's nominal values
        rgb, K, raw = kitti_bottom_crop(rgb, K, raw)
        return rgb, raw.astype(np.float32), K, "KITTI kittidc_a, raw LiDAR"
    h, w = CASES[case][1]
    rgb, sparse, K = synthetic_frame(h, w, (1.0, 8.0) if case == "nyu" else (4.0, 70.0))
    return rgb, sparse, K, "synthetic"


def official_fm_input(rgb: np.ndarray) -> np.ndarray:
    """The official loaders' FM input: skimage resize(order=3) (ResizeV4), ToTensor, Normalize in
    float64, ConvertFloat."""
    from skimage.transform import resize

    from psdrt.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, fm_input_size

    img = resize(rgb, fm_input_size(*rgb.shape[:2]), order=3)
    img = (img - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return np.ascontiguousarray(img.astype(np.float32).transpose(2, 0, 1)[None])


def _identity_randperm(n, *args, **kwargs):
    """A valid draw of ``torch.randperm(n)``: the identity permutation."""
    return torch.arange(int(n), dtype=torch.int64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(official DCNet, our model loaded from the official-format file, checkpoint path, official
    fill_in_fast)."""
    from psdrt.export.checkpoints import load_model
    from psdrt.export.models.random_weights import randomize_head_

    checkout = _official.official_checkout()
    official = _official.build_official_dcnet(checkout, ENCODER, seed=0)
    randomize_head_(official, seed=11)
    official.eval()
    sd = official.state_dict()
    optimizer = torch.optim.AdamW([p for p in official.parameters() if p.requires_grad], lr=1e-4)
    path = tmp_path_factory.mktemp("ckpt") / "psd_dav2_vits_random.ckpt"
    torch.save({"epoch": 44, "model": sd, "optimizer": optimizer.state_dict()}, path)
    model, info = load_model(path)
    assert info.kind == "psd" and info.encoder == ENCODER and info.format == "psd-official"
    assert info.epoch == 44 and info.has_optimizer
    ours_sd = model.state_dict()
    assert set(ours_sd) == set(sd) and all(torch.equal(ours_sd[k], sd[k]) for k in sd)
    spec = importlib.util.spec_from_file_location("_official_ip_basic", checkout / "datasets" / "ip_basic.py")
    ipb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ipb)
    return official, model, path, ipb.fill_in_fast


def run_official(official, fill_in_fast, rgb_mde, sparse, K, data, threads=None, fm_output=None):
    """Official ``DCNet.forward`` (eval); (stages by name, FM output (rel, feats)). ``fm_output``
    replaces its foundation model's output (rel, feats) with another engine's."""
    h, w = sparse.shape
    ip = fill_in_fast(sparse.copy(), max_depth=sparse.max())  # as the official datasets do
    inputs = {
        "rgb": torch.zeros(1, 3, h, w),  # read but unused by the DA-V2 path
        "rgb_mde": torch.from_numpy(rgb_mde),
        "sparse": torch.from_numpy(sparse)[None, None],
        "ip": torch.from_numpy(np.asarray(ip, np.float32))[None, None],
        "K": torch.from_numpy(np.asarray(K, np.float32))[None],
    }
    seen = {}
    def hook(mod, args, out):
        seen["fm"] = out
        if fm_output is not None:
            rel, feats = fm_output
            return rel.reshape(out[0].shape), list(feats)
        return None

    handle = official.mde.net.register_forward_hook(hook)
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        with torch.no_grad(), mock.patch.object(torch, "randperm", _identity_randperm):
            outputs = official(inputs, 0, True, data)
    finally:
        torch.set_num_threads(before)
        handle.remove()
    return {n: d[0, 0].numpy().copy() for n, d in zip(STAGES, outputs["depth"])}, seen["fm"]


#: the measured figures of each case, written to $PSD_PARITY_RESULTS at the end of the module
MEASURED: dict = {}


@pytest.fixture(scope="module", autouse=True)
def result_file():
    """Writes ``parity_official.{json,md}`` to ``$PSD_PARITY_RESULTS`` once every case has run."""
    load_before = round(os.getloadavg()[0], 2)
    yield
    out = os.environ.get("PSD_PARITY_RESULTS")
    if not out or not MEASURED:
        return
    from psdrt.benchmarks.harness import capture_environment, machine_summary

    env = capture_environment(ort_providers=False)
    doc = {"title": "official PSD DCNet vs psdrt from raw RGB (tests/parity/test_pipeline_parity.py)",
           "environment": env, "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
           "torch_threads": torch.get_num_threads(), "cases": MEASURED}
    git = env.get("git") or {}
    rows = [
        f"Measured by `tests/parity/test_pipeline_parity.py` (PSD_PARITY_RESULTS set) on {machine_summary(env)}, "
        f"psdrt {git.get('commit', '?')}{' (dirty tree)' if git.get('dirty') else ''}, load average "
        f"{doc['load_before']} before / {doc['load_after']} after, torch {torch.__version__} with "
        f"{doc['torch_threads']} threads. Random official-format ViT-S weights; max abs differences of the "
        "final depth (`depth_post`) in metres unless named otherwise; \"> 1 cm\" = share of pixels.",
        "", "| figure | " + " | ".join(f"{k} ({v['frame']}, {v['size']})" for k, v in MEASURED.items()) + " |",
        "|---|" + "---|" * len(MEASURED)]
    labels = (("official_spread_ulp", "official spread: 1 ulp on half its input"),
              ("official_spread_threads", "official spread: other thread count"),
              ("reference", "reference vs official"),
              ("reference_depth_diff", "reference vs official, propagation output (`depth_diff`)"),
              ("pipeline", "ONNX Runtime FP32 pipeline vs official"),
              ("pipeline_rmse", "ONNX Runtime FP32 pipeline vs official, RMSE"),
              ("pipeline_over_1cm", "ONNX Runtime FP32 pipeline vs official, > 1 cm"),
              ("c_vs_python", "C session vs Python pipeline"),
              ("engine_effect", "official given ONNX Runtime's FM output vs official"),
              ("kernels_depth_diff", "kernels' propagation vs official, same FM output (`depth_diff`)"),
              ("kernels_over_1cm", "kernels' propagation vs official, same FM output, > 1 cm"))
    for key, label in labels:
        cells = []
        for v in MEASURED.values():
            x = v[key]
            cells.append(f"{x:.3%}" if key.endswith("over_1cm") else f"{x:.3g}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows += ["", "Also asserted: the foundation-model input and output (relative depth, four features) equal "
             "the official bit for bit; the IP-Basic fill and `depth_polyfit` equal the official."]
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "parity_official.json").write_text(json.dumps(doc, indent=1) + "\n")
    (d / "parity_official.md").write_text("\n".join(rows) + "\n")


def _frac(a, b, tol: float = 0.01) -> float:
    """Fraction of pixels where two depth maps differ by more than ``tol`` metres."""
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) > tol))


def _max(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("case", list(CASES))
def test_official_answer_from_raw_rgb(setup, case, tmp_path):
    from psdrt.export.reference.pipeline import ReferencePipeline
    from psdrt.runtime.pipeline import Pipeline
    from psdrt.runtime.preprocess import preprocess_rgb
    from psdrt.runtime.session import CSession

    official, model, ckpt, fill_in_fast = setup
    data, size = CASES[case]
    rgb, sparse, K, what = frame(case)
    assert sparse.shape == size and (sparse > 0).sum() >= 3
    mde = official_fm_input(rgb)

    t0 = time.perf_counter()
    expected, (off_rel, off_feats) = run_official(official, fill_in_fast, mde, sparse, K, data)
    t_off = time.perf_counter() - t0
    # the official spread: one ulp on a random half of its input, and another thread count
    nudged = mde.copy()
    sel = np.random.default_rng(0).random(mde.shape) < 0.5
    nudged[sel] = np.nextafter(nudged[sel], np.float32(np.inf))
    by_ulp = run_official(official, fill_in_fast, nudged, sparse, K, data)[0]
    threads = 1 if torch.get_num_threads() > 1 else 2
    by_thr = run_official(official, fill_in_fast, mde, sparse, K, data, threads)[0]
    spread_ulp, spread_thr = (_max(o["depth_post"], expected["depth_post"]) for o in (by_ulp, by_thr))
    spread = max(spread_ulp, spread_thr)
    spread_diff = max(_max(o["depth_diff"], expected["depth_diff"]) for o in (by_ulp, by_thr))
    spread_frac = max(_frac(o["depth_diff"], expected["depth_diff"]) for o in (by_ulp, by_thr))

    # 1. the reference from the raw RGB, with its own preprocessing (the default: official)
    assert np.array_equal(preprocess_rgb(rgb), mde), "psdrt's FM input differs from the official loader's"
    ours_fm = {}
    handle = model.foundation.register_forward_hook(lambda mod, args, out: ours_fm.setdefault("fm", out) and None)
    try:
        t0 = time.perf_counter()
        ref = ReferencePipeline("psd", model=model, preset=data)(rgb, sparse, K, return_stages=True)
        t_ref = time.perf_counter() - t0
    finally:
        handle.remove()
    rel, feats = ours_fm["fm"]
    assert torch.equal(rel.reshape(off_rel.shape), off_rel), "FM relative depth is not bit-identical"
    assert all(torch.equal(a, b) for a, b in zip(feats, off_feats)), "FM features are not bit-identical"
    ref_diff = {k: _max(ref.stages[k], expected[k]) for k in STAGES}
    assert ref_diff["ip"] == 0 and ref_diff["depth_polyfit"] == 0
    # the fill the deployment pipelines run for the presets that need it (psd_ip_basic)
    from psdrt.runtime import _capi

    assert np.array_equal(_capi.load("cpu").ip_basic(sparse), expected["ip"]), "psd_ip_basic differs from the official"

    # 2. the deployment paths over a `psdrt build` directory: ONNX Runtime FP32, Python and C
    from psdrt.build import build_artifacts

    t0 = time.perf_counter()
    art = tmp_path / "art"
    build_artifacts(ckpt, art, size=size, precisions=("fp32",), preset=data, golden_shared=False)
    t_build = time.perf_counter() - t0
    pipe = Pipeline.from_artifacts(art, engine="python")
    res = pipe(rgb, sparse, K, return_stages=True)
    py = res.depth
    c = CSession.from_artifacts(art)(rgb, sparse, K).depth
    err = np.abs(py.astype(np.float64) - expected["depth_post"])
    py_diff, c_py = float(err.max()), _max(c, py)
    far, rmse = float(np.mean(err > 0.01)), float(np.sqrt(np.mean(err ** 2)))
    # the official code given ONNX Runtime's foundation-model output: what the engine's float
    # rounding (~1e-6 relative) does to the official method itself, and what is left for the kernels
    enc = pipe.encoder.run({"rgb": preprocess_rgb(rgb)})
    ort_fm = (torch.from_numpy(enc["rel_inv"]), [torch.from_numpy(enc[f"feat{i}"]) for i in range(4)])
    off_ort = run_official(official, fill_in_fast, mde, sparse, K, data, fm_output=ort_fm)[0]
    engine_effect = _max(off_ort["depth_post"], expected["depth_post"])
    kernels_diff = _max(res.stages["depth_diff"], off_ort["depth_diff"])  # the propagation, same FM output
    kernels_frac = _frac(res.stages["depth_diff"], off_ort["depth_diff"])

    print(f"\n[{case}: {what}, {size[0]}x{size[1]}, {int((sparse > 0).sum())} points] official {t_off:.1f} s, "
          f"reference {t_ref:.1f} s, build {t_build:.1f} s; depth [{expected['depth_post'].min():.2f}, "
          f"{expected['depth_post'].max():.2f}] m"
          f"\n  official spread: 1 ulp of its input {spread_ulp:.3g} m, {threads} thread(s) {spread_thr:.3g} m "
          f"(depth_diff: {spread_diff:.3g} m, {spread_frac:.4%} of pixels > 1 cm)"
          f"\n  reference vs official: " + ", ".join(f"{k} {v:.3g}" for k, v in ref_diff.items()) +
          f"\n  ORT FP32 pipeline vs official: max {py_diff:.3g} m, RMSE {rmse:.3g} m, {far:.3%} of pixels > 1 cm; "
          f"C session vs pipeline {c_py:.3g} m\n  official given ORT's FM output vs official {engine_effect:.3g} m; "
          f"its depth_diff vs the pipeline's {kernels_diff:.3g} m, {kernels_frac:.4%} of pixels > 1 cm")

    MEASURED[case] = {
        "frame": what, "size": f"{size[0]}x{size[1]}", "points": int((sparse > 0).sum()),
        "depth_range_m": [float(expected["depth_post"].min()), float(expected["depth_post"].max())],
        "official_spread_ulp": spread_ulp, "official_spread_threads": spread_thr,
        "reference": ref_diff["depth_post"], "reference_depth_diff": ref_diff["depth_diff"],
        "reference_stages": ref_diff, "pipeline": py_diff, "pipeline_rmse": rmse, "pipeline_over_1cm": far,
        "c_vs_python": c_py, "engine_effect": engine_effect, "kernels_depth_diff": kernels_diff,
        "kernels_over_1cm": kernels_frac, "seconds": {"official": t_off, "reference": t_ref, "build": t_build}}
    if case == "nyu":
        assert ref_diff["depth_post"] <= NYU_ABS, ref_diff
    assert ref_diff["depth_post"] <= spread, (ref_diff, spread)
    assert c_py == 0.0, "the C session and the Python pipeline must give the same depth"
    # The kernels, given the same FM output: their kNN can keep another neighbour than the official
    # float32 arithmetic at a few near-ties of the 19,456 quarter-resolution cells at KITTI size (as
    # the official's own 1-ulp / thread-count changes do), and the CSPN spreads each flip over
    # hundreds of pixels. One bound for both sizes [NYU max 2.9e-6 m; KITTI 1.5e-2 m, 0.03 % of the
    # pixels beyond 1 cm here; 0.18 m, 0.21 % on another machine of the same kind], and the NYU case
    # within the official spread.
    assert kernels_diff <= 0.3 and kernels_frac <= 3e-3, (kernels_diff, kernels_frac)
    if case == "nyu":
        assert kernels_diff <= spread_diff, (kernels_diff, spread_diff)
    # end to end [NYU max 1.1e-5 m, RMSE 8e-7 m; KITTI max 1.1e-2 m, RMSE 1.7e-4 m, 0.003 % of the
    # pixels beyond 1 cm here; KITTI 0.19 m, RMSE 3.2e-3 m, 0.22 % on another machine]
    assert py_diff <= 0.3 and rmse <= 5e-3 and far <= 3e-3, (py_diff, rmse, far)
