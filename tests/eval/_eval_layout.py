"""Writers of tiny dataset folders in the PSD-val layout, for the reader and ``psdrt eval`` tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from psdrt.runtime.visualize import write_png

#: ground-truth values (metres) tiled over the test frames: below, inside and above every special mask
GT_VALUES = (0.0, 0.1, 0.5, 3.0, 5.5, 7.0, 120.0, 255.0)


def min_size(reader_cls, base=(12, 16)):
    """Smallest (H, W) >= base whose principal point lies inside the image (validate_intrinsics)."""
    h, w = base
    K = reader_cls.fixed_K
    if K is None:
        return h, w
    K = np.asarray(K, dtype=np.float64)
    cx, cy = (K[0, 2], K[1, 2]) if K.shape == (3, 3) else (K[2], K[3])
    return max(h, math.ceil(cy) + 1), max(w, math.ceil(cx) + 1)


def encode(depth_m, offset=0):
    """Stored uint16 PNG values of ``depth_m`` (metres * 256 + offset; 0 stays 0)."""
    v = np.rint(np.asarray(depth_m, np.float64) * 256.0)
    return np.where(v > 0, v + offset, 0).astype(np.uint16)


def decode(stored, offset=0):
    """What the official ``get_depth`` gives back for stored values."""
    s = stored.astype(np.float32)
    out = (s - np.float32(offset)) / np.float32(256.0)
    out[s <= 0] = 0.0
    return out


def gt_map(h, w, shift=0):
    vals = np.asarray(GT_VALUES, np.float64)
    idx = (np.arange(h * w) + shift) % vals.size
    return vals[idx].reshape(h, w)


def write_frame(reader_cls, root, stem, size, seed=0, sparse=True, rgb_ext=".png", distinct_names=True,
                flat=False):
    """Write one frame of ``reader_cls`` under ``root`` (PSD-val layout, or flat).

    Returns a dict with the list tokens (official columns), the stored GT/sparse ints, the RGB and K.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    F = Path(reader_cls.folder)
    sub = (lambda kind: Path(root) / kind) if flat else (lambda kind: Path(root) / kind / F)
    sparse_root = (Path(root) / "sparse" / reader_cls.sparse_kind) if flat else \
        (Path(root) / "sparse" / reader_cls.sparse_kind / F)
    one_col = reader_cls.columns == 1
    # with distinct_names the sparse/gt/K files are named differently from the RGB (only a full list finds them)
    names = {k: (f"{stem}" if (one_col or not distinct_names) else f"{k}_{stem}") for k in ("sparse", "gt", "K")}
    rgb_rel = f"seq/{stem}{rgb_ext}" if not one_col else f"seq/{stem}.png"
    rel = {"sparse": f"seq/{names['sparse']}.png", "gt": f"seq/{names['gt']}.png", "K": f"seq/{names['K']}.txt"}
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    (sub("rgb") / rgb_rel).parent.mkdir(parents=True, exist_ok=True)
    if rgb_rel.endswith(".png"):
        write_png(sub("rgb") / rgb_rel, rgb)
    else:
        Image.fromarray(rgb).save(sub("rgb") / rgb_rel, quality=95)
        with Image.open(sub("rgb") / rgb_rel) as im:
            rgb = np.asarray(im.convert("RGB"))
    gt_int = encode(gt_map(h, w, seed), reader_cls.depth_offset)
    (sub("depth") / rel["gt"]).parent.mkdir(parents=True, exist_ok=True)
    write_png(sub("depth") / rel["gt"], gt_int)
    sp_int = None
    if sparse:
        sp = np.where(rng.random((h, w)) < 0.2, rng.uniform(0.5, 9.0, (h, w)), 0.0)
        sp_int = encode(sp, reader_cls.depth_offset)
        sp_int[0, 0] = encode(np.array([2.0]), reader_cls.depth_offset)[0]  # at least one point
        (sparse_root / rel["sparse"]).parent.mkdir(parents=True, exist_ok=True)
        write_png(sparse_root / rel["sparse"], sp_int)
    K = None
    if reader_cls.fixed_K is None:
        K = np.array([[w * 0.9 + seed, 0.0, w / 2.0 - 0.5], [0.0, w * 0.9 + seed, h / 2.0 - 0.5], [0, 0, 1]])
        (sub("intrinsics") / rel["K"]).parent.mkdir(parents=True, exist_ok=True)
        (sub("intrinsics") / rel["K"]).write_text(" ".join(f"{v:.9g}" for v in K.reshape(-1)) + "\n")
    tokens = [rgb_rel] if one_col else [rgb_rel, rel["sparse"], rel["gt"]]
    if reader_cls.columns == 4:
        tokens.append(rel["K"])
    return {"tokens": tokens, "rgb": rgb, "gt_int": gt_int, "sparse_int": sp_int, "K": K,
            "name": f"seq/{stem}"}


def write_list(path, frames):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(f["tokens"]) + "\n" for f in frames))
    return path
