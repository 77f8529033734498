"""Foundation-model preprocessing: both methods against the official loader's input, and their speed.

For each frame, the official PSD loaders' foundation-model input (scikit-image
``resize(order=3)`` in float64, ImageNet normalisation, float32) is compared with

* ``official``: ``preprocess_rgb(method="official")``, the kernel library's ``psd_preprocess``
  (the default), and its NumPy reference ``reference_preprocess_rgb``;
* ``bicubic``: ``preprocess_rgb(method="bicubic")`` (PyTorch bicubic, what an exported graph computes);
* ``PIL bicubic, uint8``: the official NYU *training* transform (torchvision ``Resize`` with PIL
  bicubic, rounded to uint8), for scale.

Differences are absolute, in normalised units (one unit = one ImageNet std, about 58 grey levels),
over all pixels and channels. Speed: p50 over ``--iters`` calls of each method on one thread-pool
(the library's), next to scikit-image itself. Frames: the shared NYU frame 00000 as PSD prepares it
(PIL bilinear halving, centre crop to 228x304), the shared KITTI frame 0000000005's 256x1216 bottom
crop, and the full 480x640 NYU frame (a down-scale: the anti-aliasing Gaussian runs); synthetic
frames of those sizes where the shared data is absent. Writes
``benchmarks/results/preprocess_cpu.{json,md}`` with the commit, date, machine and load.

    python -m psdrt.benchmarks.bm_preprocess [--iters 20] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from psdrt.benchmarks.harness import capture_environment, machine_summary, sample_ms
from psdrt.runtime import preprocess as PP

RESULTS = Path(__file__).resolve().parent / "results"


def frames(data_dir=None):
    """(name, uint8 rgb) of the measured inputs."""
    from psdrt.runtime import config
    from psdrt.runtime.datasets import kitti_bottom_crop, nyu_halve_crop
    from psdrt.runtime.io import list_shared_frames, load_shared_frame

    root = Path(data_dir) if data_dir else config.shared_data_dir()
    try:
        have = {ds for ds, _ in list_shared_frames(root)}
    except Exception:
        have = set()
    if {"KITTI", "NYUv2"} <= have:
        nyu = load_shared_frame(root, "NYUv2", "00000").rgb
        kitti = load_shared_frame(root, "KITTI", "0000000005").rgb
        return [("NYU 00000, 228x304 (PSD's halve + crop)", nyu_halve_crop(nyu, None)[0]),
                ("KITTI 0000000005, 256x1216 (bottom crop)", kitti_bottom_crop(kitti, None)[0]),
                ("NYU 00000 full, 480x640 (down-scale)", nyu)]
    rng = np.random.default_rng(0)
    return [(f"synthetic {h}x{w}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for h, w in ((228, 304), (256, 1216), (480, 640))]


def official_input(rgb: np.ndarray, size) -> np.ndarray:
    """The official loader's foundation-model input (skimage resize order=3, normalise, float32)."""
    from skimage.transform import resize

    img = resize(rgb, size, order=3)
    img = (img - np.asarray(PP.IMAGENET_MEAN)) / np.asarray(PP.IMAGENET_STD)
    return img.astype(np.float32).transpose(2, 0, 1)[None]


def pil_training_input(rgb: np.ndarray, size) -> np.ndarray:
    """The official NYU training transform: PIL bicubic to uint8, then the same normalisation."""
    from PIL import Image

    img = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BICUBIC), np.float64) / 255.0
    img = (img - np.asarray(PP.IMAGENET_MEAN)) / np.asarray(PP.IMAGENET_STD)
    return img.astype(np.float32).transpose(2, 0, 1)[None]


def _diff(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max": float(d.max()), "mean": float(d.mean()), "p99": float(np.percentile(d, 99)),
            "unequal": int((a != b).sum()), "elements": int(a.size)}


def _p50_ms(fn, iters: int) -> float:
    return float(np.percentile(sample_ms(fn, iters), 50))


def measure(iters: int = 20, data_dir=None) -> dict:
    rows = []
    for name, rgb in frames(data_dir):
        size = PP.fm_input_size(*rgb.shape[:2])
        want = official_input(rgb, size)
        off = PP.preprocess_rgb(rgb, method="official")
        rows.append({
            "frame": name, "size": list(rgb.shape[:2]), "fm_size": list(size),
            "official_kernel": _diff(off, want),
            "official_numpy_reference": _diff(PP.reference_preprocess_rgb(rgb, method="official"), want),
            "bicubic": _diff(PP.preprocess_rgb(rgb, method="bicubic"), want),
            "pil_bicubic_uint8": _diff(pil_training_input(rgb, size), want),
            "p50_ms": {"official": _p50_ms(lambda: PP.preprocess_rgb(rgb, method="official"), iters),
                       "bicubic": _p50_ms(lambda: PP.preprocess_rgb(rgb, method="bicubic"), iters),
                       "skimage": _p50_ms(lambda: official_input(rgb, size), max(3, iters // 4))},
        })
    return {"rows": rows}


def to_markdown(doc: dict) -> str:
    env = doc["environment"]
    git = env.get("git") or {}
    lines = [
        f"Measured by `python -m psdrt.benchmarks.bm_preprocess` on {machine_summary(env)}, psdrt "
        f"{git.get('commit', '?')}{' (dirty tree)' if git.get('dirty') else ''}, load average "
        f"{doc['load_before']} before / {doc['load_after']} after. Reference: the official loader's input "
        "(scikit-image `resize(order=3)`, ImageNet normalisation, float32). Differences in normalised units "
        "(one ImageNet std, about 58 grey levels); `unequal` counts float32 elements that differ at all. "
        f"Speed: p50 of {doc['iters']} calls (scikit-image: fewer).",
        "",
        "| frame -> FM size | method | max | mean | p99 | unequal / elements |",
        "|---|---|---|---|---|---|",
    ]
    names = (("official_kernel", "`official` (kernel, the default)"),
             ("official_numpy_reference", "`official` (NumPy reference)"),
             ("bicubic", "`bicubic` (PyTorch bicubic)"), ("pil_bicubic_uint8", "PIL bicubic, uint8 (NYU training)"))
    for r in doc["rows"]:
        for key, label in names:
            d = r[key]
            lines.append(f"| {r['frame']} -> {r['fm_size'][0]}x{r['fm_size'][1]} | {label} | {d['max']:.3g} | "
                         f"{d['mean']:.3g} | {d['p99']:.3g} | {d['unequal']} / {d['elements']} |")
    lines += ["", "| frame | `official` p50 ms | `bicubic` p50 ms | scikit-image p50 ms |", "|---|---|---|---|"]
    for r in doc["rows"]:
        t = r["p50_ms"]
        lines.append(f"| {r['frame']} | {t['official']:.1f} | {t['bicubic']:.1f} | {t['skimage']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import os

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=20, help="timed calls per method (default: 20)")
    p.add_argument("--data", default=None, help="shared data folder (default: PSD_SHARED_DATA / ../shared/data)")
    p.add_argument("--out", default=str(RESULTS), help="folder for preprocess_cpu.{json,md}")
    args = p.parse_args(argv)
    load_before = round(os.getloadavg()[0], 2)
    env = capture_environment(ort_providers=False)
    doc = {"title": "foundation-model preprocessing", "environment": env, "iters": args.iters,
           "load_before": load_before, **measure(args.iters, args.data)}
    doc["load_after"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocess_cpu.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "preprocess_cpu.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
