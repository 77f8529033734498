"""Readers for PSD's 18 evaluation datasets: one ``Sample(rgb, gt, sparse, K, name)`` per frame.

PSD evaluates on NYUv2 and KITTI (in-distribution) and 16 out-of-distribution sets (Argoverse,
Cityscapes, DIML-indoor, DIODE-indoor, DIODE-outdoor, DrivingStereo, ETH3D, Hypersim, KITTI-360,
Middlebury, ScanNet, Stanford2D3D, SUN RGB-D, TOFDC, VKITTI2, VOID1500; docs/psd_method.md §8).
The official evaluation loaders (``datasets/data_*.py``, ``mode='val'``) all read one layout of
precomputed files, called "PSD-val" here (the ``valrgb``/``valgt``/``valraw``/``valk`` entries of
``cfg.yml``)::

    ROOT/rgb/<F>/...               8-bit RGB, PNG or JPEG
    ROOT/depth/<F>/...             ground truth, 16-bit PNG, metres = value / 256
    ROOT/sparse/<kind>/<F>/...     sparse input, 16-bit PNG, metres = value / 256; kind is ``raw``
                                   (real sensor points) or ``scatter_001`` (precomputed random 1 %)
    ROOT/intrinsics/<F>/...        per-frame K as 9 numbers (row-major 3x3), for datasets that have it
    ROOT/filename/val_*.txt        the official file lists (optional, see below)

``<F>`` is the dataset's folder (``KITTI``, ``DIODE/outdoor``, ...; ``DatasetReader.folder``). A
folder holding a single dataset (``ROOT/rgb``, ``ROOT/depth``, ``ROOT/sparse[/<kind>]``,
``ROOT/intrinsics``) is accepted as well.

File lists: the official ``filename/val_*.txt`` lists are missing from the code snapshot we read
(docs/psd_method.md §11), so each reader accepts the official format (1, 3 or 4 whitespace-separated
columns ``rgb [sparse depth [intrinsics]]``, paths relative to each folder, as the official
``load_path`` reads them) and also one-column lists (the RGB path; the other files are found by the
same relative path, with the extension swapped if needed). Without ``list_file``, the reader uses
``ROOT/filename/<official list name>`` or ``ROOT/<official list name>`` when present, else every
image under the RGB folder (sorted). Blank lines and lines starting with ``#`` are skipped.

Depth encoding: every PSD-val depth file is a 16-bit PNG divided by 256 (the official ``get_depth``),
except Cityscapes, stored as ``value - 1`` (``(v - 1) / 256``, 0 = invalid). A ``.npy`` file is read
as float metres; Hypersim ground truth may also be the original ``.hdf5`` distance map (needs h5py);
NYUv2 may also be the ``.h5`` files of the NYU depth v2 release used for training (needs h5py).

Intrinsics: hard-coded per dataset where the official loader hard-codes them (the values are in
each reader's docstring), otherwise read from the per-frame ``.txt``. Evaluation mask: the
dataset's mask of ``runtime.metrics.eval_mask`` (gt > 0 by default; VOID1500 0.2 < gt < 5;
DIODE-outdoor, VKITTI2, Cityscapes 1 < gt < 250; TOFDC 0 < gt < 6).

When a dataset folder has no sparse files, ``Sample.sparse`` is None and callers make one of the
four evaluation patterns from the ground truth with ``sample_sparse`` (seeded per frame).

Decisions where the official code is ambiguous are stated in each reader's docstring and tested in
``tests/eval/test_datasets.py``. No torch.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from psdrt.runtime import config
from psdrt.runtime.errors import BackendUnavailable, InputError, ShapeError
from psdrt.runtime.io import (
    MissingFileError,
    intrinsics_matrix,
    list_shared_frames,
    load_middlebury,
    load_shared_frame,
    read_depth,
    read_intrinsics,
    read_rgb,
    validate_intrinsics,
)
from psdrt.runtime.metrics import eval_mask
from psdrt.runtime.patterns import PATTERNS, make_sparse

__all__ = [
    "Sample",
    "DatasetReader",
    "DATASETS",
    "STORED",
    "RGB_EXTS",
    "K_NYU",
    "K_NYU_FULL",
    "K_KITTIDC_LIDAR",
    "KITTI_NOMINAL_K",
    "KITTI_WORKING_SIZE",
    "NYU_WORKING_SIZE",
    "PSD_VAL_DEPTH_SCALE",
    "Convention",
    "CONVENTIONS",
    "kitti_bottom_crop",
    "nyu_halve_crop",
    "get_convention",
    "dataset_names",
    "get_reader",
    "open_dataset",
    "parse_patterns",
    "pattern_seed",
    "sample_sparse",
]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: pattern name meaning "the sparse files stored with the dataset" (raw sensor or scatter_001)
STORED = "stored"
#: image extensions searched for RGB frames
RGB_EXTS = (".png", ".jpg", ".jpeg")
_DEPTH_EXTS = (".png", ".npy")

#: NYUv2 intrinsics of the full 640x480 Kinect frame (the official K_nyu before halving and cropping)
K_NYU_FULL = (5.1885790117450188e02, 5.1946961112127485e02, 3.2558244941119034e02, 2.5373616633400465e02)
#: NYUv2 intrinsics at the 228x304 working size: halve to 320x240, centre-crop (8 px, 6 px)
K_NYU = (K_NYU_FULL[0] / 2.0, K_NYU_FULL[1] / 2.0, K_NYU_FULL[2] / 2.0 - 8.0, K_NYU_FULL[3] / 2.0 - 6.0)

#: KITTI depth completion working size: the bottom 256 rows, the 1216 columns around the centre
KITTI_WORKING_SIZE = (256, 1216)
#: NYUv2 working size: the 240x320 half-size frame, centre-cropped by (6, 8) px
NYU_WORKING_SIZE = (228, 304)
#: NYUv2 sizes: the raw Kinect frame and its half, which nyu_halve_crop accepts besides 228x304
NYU_FULL_SIZE, NYU_HALF_SIZE = (480, 640), (240, 320)
#: (y0, x0) of the NYUv2 centre crop of the half-size frame
NYU_CROP_OFFSET = (6, 8)
#: stored units per metre of every PSD-val 16-bit depth/sparse PNG (the official get_depth: value / 256),
#: KITTI's own depth-completion encoding too
PSD_VAL_DEPTH_SCALE = 256.0


@dataclass(frozen=True, eq=False)
class Sample:
    """One evaluation frame.

    Attributes:
        rgb (np.ndarray): uint8 (H, W, 3), RGB order.
        gt (np.ndarray): float32 (H, W) ground-truth depth in metres, 0 = invalid.
        sparse (np.ndarray | None): float32 (H, W) stored sparse depth in metres (0 = missing), or
            None when the dataset folder has none (make one with ``sample_sparse``).
        K (np.ndarray): float64 (3, 3) intrinsics at (H, W).
        name (str): frame identifier (the RGB path relative to the RGB folder, without extension).
        dataset (str): official dataset key (``"KITTI"``, ``"VOID1500"``...), used for the
            evaluation mask and the propagation preset.
        cam_params (np.ndarray | None): camera parameters for non-pinhole models (KITTI-360's 9
            MEI values), else None.
    """

    rgb: np.ndarray
    gt: np.ndarray
    sparse: Optional[np.ndarray]
    K: np.ndarray
    name: str
    dataset: str = ""
    cam_params: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ShapeError(f"{self.name}: rgb must be uint8 (H, W, 3), got {self.rgb.dtype} {self.rgb.shape}")
        for what, arr in (("gt", self.gt), ("sparse", self.sparse)):
            if arr is not None and (arr.dtype != np.float32 or arr.shape != self.rgb.shape[:2]):
                raise ShapeError(f"{self.name}: {what} is {arr.dtype} {arr.shape} but the RGB is "
                                 f"{self.rgb.shape[:2]}; every file of a frame must have the same size")

    @property
    def mask(self) -> np.ndarray:
        """The dataset's evaluation mask (``runtime.metrics.eval_mask``)."""
        return eval_mask(self.dataset or None, self.gt)


@dataclass(frozen=True)
class _Entry:
    name: str
    rgb: Path
    gt: Optional[Path]
    sparse: Optional[Path]
    K: Optional[Path]


# ------------------------------------------------------------------------------------------------
# patterns


def parse_patterns(text: Union[str, list, tuple, None], has_stored: bool) -> list[str]:
    """Parse a pattern list (``"random1,random0.1"``); None gives the default.

    The default is ``["stored"]`` when the dataset has sparse files, else the four evaluation
    patterns (random 1 %, random 0.1 %, pseudo-hole, Harris). ``"all"`` is the four patterns (plus
    ``stored`` when available); ``"pseudo-hole"`` is accepted for ``"pseudo_hole"``.

    Raises:
        InputError: an unknown name, or ``stored`` for a dataset without sparse files.
    """
    if text is None:
        return [STORED] if has_stored else list(PATTERNS)
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name = item.lower().replace("pseudo-hole", "pseudo_hole")
        names = ([STORED] if has_stored else []) + list(PATTERNS) if name == "all" else [name]
        for n in names:
            if n not in PATTERNS and n != STORED:
                raise InputError(f"unknown sparse pattern {item!r}; use {STORED}, {', '.join(PATTERNS)} or all")
            if n == STORED and not has_stored:
                raise InputError("this dataset folder has no sparse files, so pattern 'stored' is unavailable; "
                                 f"generate patterns from the ground truth instead: {','.join(PATTERNS)}")
            if n not in out:
                out.append(n)
    if not out:
        raise InputError(f"no sparse pattern given; use {STORED}, {', '.join(PATTERNS)} or all")
    return out


def pattern_seed(seed: int, name: str) -> int:
    """The seed of a frame's generated pattern: depends on the run seed and the frame name only,
    so a frame gets the same sparse map whatever ``--limit``, list order or other frames."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))]).generate_state(1)[0])


def sample_sparse(sample: Sample, pattern: str, seed: int = 0) -> np.ndarray:
    """The sparse input of ``sample`` for ``pattern``: the stored file, or a pattern made from GT.

    Args:
        sample (Sample): the frame.
        pattern (str): ``"stored"`` or one of ``runtime.patterns.PATTERNS``.
        seed (int): run seed; the frame's generator seed is ``pattern_seed(seed, sample.name)``.

    Returns:
        np.ndarray: float32 (H, W) metres, 0 = missing.

    Raises:
        InputError: ``stored`` for a sample without sparse files, or an unknown pattern.
    """
    if pattern == STORED:
        if sample.sparse is None:
            raise InputError(f"{sample.name} has no stored sparse depth; pick a generated pattern "
                             f"({', '.join(PATTERNS)})")
        return sample.sparse
    return make_sparse(pattern, sample.rgb, sample.gt, pattern_seed(seed, sample.name))


# ------------------------------------------------------------------------------------------------
# small helpers


def _K(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return intrinsics_matrix(*arr) if arr.size == 4 else arr.reshape(3, 3).copy()


def _read_png_raw(path: Path) -> np.ndarray:
    """The stored integers of a 16-bit PNG, as float32 (exact for 16 bits)."""
    return read_depth(path, scale=1.0)


def _shift_K(K: np.ndarray, x0: float, y0: float) -> np.ndarray:
    K = np.array(K, dtype=np.float64)
    K[0, 2] -= x0
    K[1, 2] -= y0
    return K


def _crop(arrs, y0: int, x0: int, h: int, w: int):
    return [None if a is None else np.ascontiguousarray(a[y0:y0 + h, x0:x0 + w]) for a in arrs]


def _bottom_crop(rgb, gt, sparse, K, size, name):
    """The KITTI crop of a reader's frame (``kitti_bottom_crop``)."""
    rgb, K, gt, sparse = kitti_bottom_crop(rgb, K, gt, sparse, size=size, name=name)
    return rgb, gt, sparse, K


def _resize_align_corners(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with PyTorch's ``align_corners=True`` semantics ((H, W) or (H, W, C)).

    Source coordinates and weights are computed in float32 like PyTorch's CPU kernel (a float64
    coordinate differs by ~1e-5 px, which shows between a 0 m and a 255 m neighbour); the blend
    is float32 too.
    """
    h, w = img.shape[:2]
    oh, ow = size
    f32 = np.float32
    ys = np.arange(oh, dtype=f32) * (f32((h - 1) / (oh - 1)) if oh > 1 else f32(0))
    xs = np.arange(ow, dtype=f32) * (f32((w - 1) / (ow - 1)) if ow > 1 else f32(0))
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, h - 1)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, w - 1)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = ys - y0.astype(f32), xs - x0.astype(f32)
    a = img.astype(f32)
    if a.ndim == 3:
        wy, wx = wy[:, None, None], wx[None, :, None]
    else:
        wy, wx = wy[:, None], wx[None, :]
    top = a[y0][:, x0] * (f32(1) - wx) + a[y0][:, x1] * wx
    bot = a[y1][:, x0] * (f32(1) - wx) + a[y1][:, x1] * wx
    return top * (f32(1) - wy) + bot * wy


def _resize_nearest_torch(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PyTorch ``mode='nearest'``: source index floor(dst * in / out)."""
    h, w = img.shape[:2]
    oh, ow = size
    yi = np.minimum(np.floor(np.arange(oh) * (h / oh)).astype(np.int64), h - 1)
    xi = np.minimum(np.floor(np.arange(ow) * (w / ow)).astype(np.int64), w - 1)
    return np.ascontiguousarray(img[yi][:, xi])


def _h5py():
    try:
        import h5py  # optional: only the NYUv2 .h5 and Hypersim .hdf5 formats need it
    except ImportError:
        raise BackendUnavailable("reading .h5/.hdf5 files needs h5py, which is not installed: `pip install h5py`, "
                                 "or convert the files to 16-bit PNG (metres x 256)") from None
    return h5py


# ------------------------------------------------------------------------------------------------
# dataset conventions: the one definition of the KITTI and NYUv2 working-size transforms, used by
# the readers below and by `psdrt run --convention kitti|nyu`


def kitti_bottom_crop(rgb: np.ndarray, K, *depths, size: tuple[int, int] = KITTI_WORKING_SIZE,
                      name: str = "frame"):
    """The KITTI depth-completion crop (the official ``BottomCrop``): the bottom ``size[0]`` rows
    and the ``size[1]`` columns from ``x0 = (w - size[1]) // 2``, with K's principal point shifted
    by (x0, y0 = h - size[0]).

    Args:
        rgb (np.ndarray): (h, w, 3) image.
        K (np.ndarray | None): 3 x 3 intrinsics at (h, w), or None (passed through).
        *depths (np.ndarray | None): (h, w) maps cropped alike (None passes through).
        size (tuple[int, int]): the crop (H, W). Defaults to 256x1216.
        name (str): the frame, for the error message.

    Returns:
        tuple: ``(rgb, K, *depths)`` at ``size`` (contiguous copies).

    Raises:
        ShapeError: the frame is smaller than ``size``.
    """
    h, w = rgb.shape[:2]
    th, tw = int(size[0]), int(size[1])
    if h < th or w < tw:
        raise ShapeError(f"{name} is {h}x{w}, smaller than the {th}x{tw} working size (KITTI); use it at its "
                         "stored size instead (readers: crop=False, `psdrt eval --no-crop`; `psdrt run` "
                         "without --convention kitti, with --fit crop|resize for a fixed-size build)")
    y0, x0 = h - th, (w - tw) // 2
    out = _crop((rgb, *depths), y0, x0, th, tw)
    return (out[0], None if K is None else _shift_K(K, x0, y0), *out[1:])


def nyu_halve_crop(rgb: np.ndarray, K, *depths, name: str = "frame"):
    """The NYUv2 working-size transform of ``NYUv2Reader``: a 480x640 frame is halved to 240x320
    (PIL bilinear for RGB, PIL nearest for depth maps, as the official training transform), a
    240x320 frame is centre-cropped by (6, 8) px to 228x304, a 228x304 frame is kept. K is scaled
    by 1/2 (fx, fy, cx, cy) and shifted by (8, 6) alike, which turns ``K_NYU_FULL`` into exactly
    ``K_NYU``.

    Nearest halving keeps one pixel in four, so three quarters of a sparse map's points are
    dropped, as in the official pipeline.

    Args:
        rgb (np.ndarray): (h, w, 3) uint8 image, h x w one of 480x640, 240x320, 228x304.
        K (np.ndarray | None): 3 x 3 intrinsics at (h, w), or None (passed through).
        *depths (np.ndarray | None): (h, w) float maps transformed alike (None passes through).
        name (str): the frame, for the error message.

    Returns:
        tuple: ``(rgb, K, *depths)`` at 228x304.

    Raises:
        ShapeError: another frame size (the NYUv2 geometry would be wrong).
    """
    h, w = rgb.shape[:2]
    depths = list(depths)
    Kc = None if K is None else np.array(K, dtype=np.float64)
    if (h, w) == NYU_WORKING_SIZE:
        return (rgb, Kc, *depths)
    if (h, w) == NYU_FULL_SIZE:
        from PIL import Image

        hh, hw = NYU_HALF_SIZE
        rgb = np.asarray(Image.fromarray(rgb).resize((hw, hh), Image.BILINEAR), dtype=np.uint8)

        def half(a):  # PIL nearest on a float ('F') image, as the official depth transform
            img = Image.fromarray(np.ascontiguousarray(a, np.float32))
            return np.asarray(img.resize((hw, hh), Image.NEAREST), dtype=np.float32)

        depths = [None if a is None else half(a) for a in depths]
        if Kc is not None:
            Kc[:2] *= 0.5
        h, w = hh, hw
    if (h, w) == NYU_HALF_SIZE:
        y0, x0 = NYU_CROP_OFFSET
        out = _crop((rgb, *depths), y0, x0, *NYU_WORKING_SIZE)
        return (out[0], None if Kc is None else _shift_K(Kc, x0, y0), *out[1:])
    raise ShapeError(f"NYUv2 frame {name} is {h}x{w}; the NYUv2 convention holds for 228x304, 240x320 or "
                     "480x640 frames only: resize the frames, or use them without the NYUv2 convention "
                     "(another dataset with per-frame intrinsics; `psdrt run` without --convention nyu)")


@dataclass(frozen=True)
class Convention:
    """A dataset's frame convention, selectable by name (``psdrt run --convention``).

    Attributes:
        name (str): ``"kitti"`` or ``"nyu"``.
        dataset (str): the reader's key and propagation preset (``"KITTI"``, ``"NYUv2"``).
        working_size (tuple[int, int]): (H, W) after ``transform``.
        depth_scale (float): stored units per metre of the dataset's 16-bit depth/sparse PNGs, as
            its reader reads them.
        transform (callable): ``(rgb, K, *depths, name=...) -> (rgb, K, *depths)``.
        summary (str): one line for help texts.
    """

    name: str
    dataset: str
    working_size: tuple
    depth_scale: float
    transform: object
    summary: str

    def apply(self, rgb, K, *depths, name: str = "frame"):
        """``transform`` of one frame."""
        return self.transform(rgb, K, *depths, name=name)


#: the conventions by name: the transforms the KITTI and NYUv2 readers apply, with their PNG scale
CONVENTIONS: dict[str, Convention] = {
    "kitti": Convention("kitti", "KITTI", KITTI_WORKING_SIZE, PSD_VAL_DEPTH_SCALE, kitti_bottom_crop,
                        "KITTI depth completion: bottom 256x1216 crop (K shifted), 16-bit PNGs / 256"),
    "nyu": Convention("nyu", "NYUv2", NYU_WORKING_SIZE, PSD_VAL_DEPTH_SCALE, nyu_halve_crop,
                      "NYUv2: 480x640 halved, 240x320 centre-cropped to 228x304 (K scaled and shifted), "
                      "16-bit PNGs / 256 as the PSD-val NYUv2 files"),
}


def get_convention(name: str) -> Convention:
    """The convention of a name (case-insensitive; ``nyuv2`` is ``nyu``).

    Raises:
        InputError: unknown name.
    """
    key = {"nyuv2": "nyu", "kittidc": "kitti"}.get(_norm(name), _norm(name))
    if key not in CONVENTIONS:
        raise InputError(f"unknown dataset convention {name!r}; use one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[key]


# ------------------------------------------------------------------------------------------------
# readers


class DatasetReader:
    """A dataset of evaluation frames, iterated as ``Sample`` objects.

    Subclasses set the class attributes below and may override ``_transform`` (working-size crops)
    or ``_read_gt`` (depth encoding).

    Args:
        root (str | Path | None): the data folder (PSD-val layout or one dataset's folder).
        list_file (str | Path | None): a file list; defaults to the official list when found in
            ``root``, else every image of the RGB folder.
        limit (int | None): use only the first ``limit`` frames.
        crop (bool): apply the dataset's working-size crop or resize (KITTI, NYUv2, Stanford2D3D).
            Defaults to True.
        sparse_dir (str | Path | None): read the stored sparse files from this folder instead of
            ``ROOT/sparse/<kind>/<F>`` (e.g. another precomputed pattern).

    Raises:
        MissingFileError: ``root``, the list or a listed file does not exist.
        InputError: the folder is not in a known layout, or the list is malformed.
    """

    #: name in the ``DATASETS`` registry (what ``psdrt eval --dataset`` takes)
    name = ""
    #: official dataset key (presets, evaluation mask)
    key = ""
    #: human-readable name
    title = ""
    #: ``<F>``: the dataset's folder in the PSD-val layout
    folder = ""
    #: the stored sparse input: ``"raw"`` (sensor) or ``"scatter_001"`` (random 1 %)
    sparse_kind = "scatter_001"
    #: the official list file name (cfg.yml ``vallist``)
    list_name = ""
    #: columns of the official list: 1 (rgb), 3 (rgb sparse depth) or 4 (+ intrinsics)
    columns = 3
    #: hard-coded intrinsics (fx, fy, cx, cy) or a 3x3 nested tuple; None = per-frame .txt
    fixed_K = None
    #: 9 extra camera parameters (MEI) passed on in ``Sample.cam_params``
    cam_params = None
    #: stored ground-truth/sparse value = metres * 256 + depth_offset (Cityscapes: 1)
    depth_offset = 0
    #: working size (H, W) the frames are cropped/resized to, or None (stored size)
    working_size = None

    def __init__(self, root: Optional[PathLike] = None, list_file: Optional[PathLike] = None,
                 limit: Optional[int] = None, crop: bool = True, sparse_dir: Optional[PathLike] = None) -> None:
        if limit is not None and int(limit) < 1:
            raise InputError(f"limit must be a positive number of frames, got {limit}")
        self.root = Path(root) if root is not None else None
        self.crop = bool(crop)
        self.limit = None if limit is None else int(limit)
        self.list_path: Optional[Path] = None
        self._dirs = self._layout(self.root, sparse_dir)
        entries = self._entries(list_file)
        self._all = len(entries)
        self.entries = entries[: self.limit] if self.limit else entries

    # -------------------------------------------------------------------- layout and file list
    def _layout(self, root: Optional[Path], sparse_dir) -> dict:
        if root is None:
            raise InputError(f"the {self.title} reader needs --root: the folder holding rgb/{self.folder}/ and "
                             f"depth/{self.folder}/ (the PSD-val layout)")
        if not root.is_dir():
            raise MissingFileError(f"data root {root} does not exist; pass the folder holding rgb/, depth/, "
                                   f"sparse/ and intrinsics/ (with a {self.folder}/ folder in each)")
        F = self.folder
        if (root / "rgb" / F).is_dir():
            d = {"rgb": root / "rgb" / F, "gt": root / "depth" / F,
                 "sparse": root / "sparse" / self.sparse_kind / F, "K": root / "intrinsics" / F}
        elif (root / "rgb").is_dir() and (root / "depth").is_dir():
            sp = root / "sparse" / self.sparse_kind
            d = {"rgb": root / "rgb", "gt": root / "depth", "sparse": sp if sp.is_dir() else root / "sparse",
                 "K": root / "intrinsics"}
        else:
            raise InputError(
                f"{root} is not a {self.title} folder: expected {root}/rgb/{F}/ and {root}/depth/{F}/ (PSD-val "
                f"layout: rgb/, depth/, sparse/{self.sparse_kind}/, intrinsics/, each with a {F}/ folder) or "
                f"{root}/rgb/ and {root}/depth/ (one dataset); check --dataset and --root")
        if not d["gt"].is_dir():
            raise InputError(f"{root} has RGB frames in {d['rgb']} but no ground-truth folder {d['gt']}; "
                             "evaluation needs the depth/ folder beside rgb/")
        d["sparse_source"] = self.sparse_kind
        if sparse_dir is not None:
            d["sparse"] = d["sparse_source"] = Path(sparse_dir)
            if not d["sparse"].is_dir():
                raise MissingFileError(f"sparse folder {d['sparse']} does not exist; pass an existing folder "
                                       "or leave --sparse-dir out")
        elif not d["sparse"].is_dir() or not any(d["sparse"].iterdir()):
            d["sparse"] = None
        if self.fixed_K is None and not d["K"].is_dir():
            raise InputError(f"{self.title} reads per-frame intrinsics, but {d['K']} does not exist; put one "
                             "9-number (3x3) .txt per frame there, named like the RGB file")
        return d

    def _find_list(self, list_file) -> Optional[Path]:
        if list_file is not None:
            path = Path(list_file)
            if not path.is_file():
                raise MissingFileError(f"file list {path} does not exist; pass an existing list or leave "
                                       "--list out to use every frame of the RGB folder")
            return path
        if self.root is not None and self.list_name:
            for cand in (self.root / "filename" / self.list_name, self.root / self.list_name):
                if cand.is_file():
                    return cand
        return None

    def _entries(self, list_file) -> list[_Entry]:
        self.list_path = self._find_list(list_file)
        rows: list[list[str]] = []
        if self.list_path is not None:
            text = self.list_path.read_text(encoding="utf-8", errors="replace")
            for no, line in enumerate(text.splitlines(), 1):
                tok = line.split()
                if not tok or tok[0].startswith("#"):
                    continue
                if 1 < len(tok) < self.columns:
                    raise InputError(f"{self.list_path}:{no} has {len(tok)} columns; {self.title} lists have "
                                     f"{self._columns_text()} (or 1: the RGB path)")
                rows.append(tok)
            if not rows:
                raise InputError(f"file list {self.list_path} lists no frame; write one frame per line")
        else:
            rgb_dir = self._dirs["rgb"]
            rows = [[p.relative_to(rgb_dir).as_posix()] for p in sorted(rgb_dir.rglob("*"))
                    if p.is_file() and p.suffix.lower() in self._rgb_exts()]
            if not rows:
                raise InputError(f"no RGB image ({'/'.join(self._rgb_exts())}) under {rgb_dir}; check --root")
        entries, missing = [], []
        for tok in rows:
            e = self._entry(tok, missing)
            if e is not None:
                entries.append(e)
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise MissingFileError(f"{len(missing)} file(s) of the {self.title} list are missing: "
                                   f"{'; '.join(missing[:3])}{more}; fix the folder or pass --list with the "
                                   "frames that exist")
        return entries

    def _rgb_exts(self) -> tuple:
        return RGB_EXTS

    def _columns_text(self) -> str:
        return {1: "1 column (rgb)", 3: "3 columns (rgb sparse depth)",
                4: "4 columns (rgb sparse depth intrinsics)"}[self.columns]

    @staticmethod
    def _locate(folder: Path, rel: str, exts) -> Optional[Path]:
        p = folder / rel
        if p.is_file():
            return p
        for ext in exts:
            q = p.with_suffix(ext)
            if q.is_file():
                return q
        return None

    def _entry(self, tok: list[str], missing: list[str]) -> Optional[_Entry]:
        d = self._dirs
        rgb = d["rgb"] / tok[0]
        if not rgb.is_file():
            missing.append(f"RGB {rgb}")
            return None
        full = len(tok) >= self.columns and self.columns >= 3
        gt_rel = tok[2] if full else tok[0]
        gt = self._locate(d["gt"], gt_rel, self._gt_exts())
        if gt is None:
            missing.append(f"ground truth {d['gt'] / gt_rel}")
        sparse = None
        if d["sparse"] is not None:
            sp_rel = tok[1] if full else tok[0]
            sparse = self._locate(d["sparse"], sp_rel, _DEPTH_EXTS)
            if sparse is None:
                missing.append(f"sparse depth {d['sparse'] / sp_rel}")
        K = None
        if self.fixed_K is None:
            k_rel = tok[3] if (full and self.columns >= 4) else str(Path(tok[0]).with_suffix(".txt"))
            K = d["K"] / k_rel
            if not K.is_file():
                missing.append(f"intrinsics {K}")
        name = Path(tok[0]).with_suffix("").as_posix()
        return _Entry(name, rgb, gt, sparse, K)

    def _gt_exts(self) -> tuple:
        return _DEPTH_EXTS

    # -------------------------------------------------------------------- reading
    def _read_depth_file(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".png":
            raw = _read_png_raw(path)
            out = (raw - np.float32(self.depth_offset)) / np.float32(256.0)
            out[raw <= 0] = 0.0
            out[out < 0] = 0.0
            return out.astype(np.float32, copy=False)
        return read_depth(path)  # .npy: float metres

    def _read_gt(self, path: Path) -> np.ndarray:
        return self._read_depth_file(path)

    def _base_K(self, entry: _Entry, shape) -> np.ndarray:
        if self.fixed_K is not None:
            return _K(self.fixed_K)
        return read_intrinsics(entry.K)

    def _transform(self, rgb, gt, sparse, K, name):
        """Working-size crop/resize; identity for datasets evaluated at the stored size."""
        return rgb, gt, sparse, K

    #: whether the frames' K is a pinhole K of the image (False: the camera model ignores it)
    pinhole_K = True

    def _check_K(self, K, shape):
        """validate_intrinsics, with the image-size rules only where K describes the image."""
        return validate_intrinsics(K, shape if self.pinhole_K else None)

    def load(self, entry: _Entry) -> Sample:
        rgb = read_rgb(entry.rgb)
        gt = self._read_gt(entry.gt)
        sparse = self._read_depth_file(entry.sparse) if entry.sparse is not None else None
        for what, arr, path in (("ground truth", gt, entry.gt), ("sparse depth", sparse, entry.sparse)):
            if arr is not None and arr.shape != rgb.shape[:2]:
                raise ShapeError(f"{path} ({what}) is {arr.shape[0]}x{arr.shape[1]} but {entry.rgb} is "
                                 f"{rgb.shape[0]}x{rgb.shape[1]}; every file of a frame must have the same size")
        K = self._base_K(entry, rgb.shape[:2])
        rgb, gt, sparse, K = self._transform(rgb, gt, sparse, K, entry.name)
        K = self._check_K(K, rgb.shape[:2])
        cam = None if self.cam_params is None else np.asarray(self.cam_params, dtype=np.float64)
        return Sample(rgb=np.ascontiguousarray(rgb), gt=gt.astype(np.float32, copy=False),
                      sparse=None if sparse is None else sparse.astype(np.float32, copy=False),
                      K=np.asarray(K, dtype=np.float64), name=entry.name, dataset=self.key, cam_params=cam)

    # -------------------------------------------------------------------- container protocol
    @property
    def has_sparse(self) -> bool:
        """Whether the frames come with stored sparse depth (pattern ``"stored"``)."""
        return self._dirs.get("sparse") is not None

    @property
    def sparse_source(self) -> Optional[str]:
        """What the stored sparse files are (``"raw"``, ``"scatter_001"``, a folder), or None."""
        return str(self._dirs["sparse_source"]) if self.has_sparse else None

    def eval_mask(self, gt: np.ndarray) -> np.ndarray:
        """The dataset's evaluation mask for ``gt``."""
        return eval_mask(self.key, gt)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        return self.load(self.entries[i])

    def __iter__(self) -> Iterator[Sample]:
        for entry in self.entries:
            yield self.load(entry)

    def describe(self) -> dict:
        """What is being read, for result files."""
        return {
            "dataset": self.name, "key": self.key, "title": self.title,
            "root": None if self.root is None else str(self.root),
            "list": None if self.list_path is None else str(self.list_path),
            "frames": len(self), "frames_available": self._all,
            "sparse": self.sparse_source, "crop": self.crop,
            "working_size": list(self.working_size) if (self.crop and self.working_size) else None,
        }


# ---------------------------------------------------------------------- in-distribution


class NYUv2Reader(DatasetReader):
    """NYUv2 (654 test frames), evaluated at 228x304.

    Layout ``rgb/NYUv2``, ``depth/NYUv2``, ``sparse/scatter_001/NYUv2``; list ``val_nyu.txt`` (3
    columns); depth /256. K is the official hard-coded ``K_nyu`` for the 304x228 centre crop of the
    320x240 half-size frame: ``K_NYU`` = (518.858/2, 519.470/2, 325.582/2 - 8, 253.736/2 - 6).

    Decisions: frames stored at 228x304 (the PSD-val files) are used as they are. Frames at 240x320
    are centre-cropped by (6, 8) px. Frames at 480x640 (the raw Kinect size) are halved first, the
    way the official training transform does it (PIL bilinear for RGB, PIL nearest for depth and
    sparse), then cropped, which gives exactly ``K_NYU``. ``crop=False`` keeps 480x640 frames at
    full size with ``K_NYU_FULL``. Other sizes are refused (K_nyu would be wrong). The ``.h5`` files
    of the NYU depth v2 release (``rgb`` 3x480x640 uint8, ``depth`` 480x640 metres) are read too
    (needs h5py); they have no sparse depth, so patterns are generated.
    """

    name, key, title, folder = "nyu", "NYUv2", "NYUv2", "NYUv2"
    sparse_kind, list_name, columns = "scatter_001", "val_nyu.txt", 3
    fixed_K = K_NYU
    working_size = (228, 304)

    def _rgb_exts(self) -> tuple:
        return RGB_EXTS + (".h5",)

    def _layout(self, root, sparse_dir):
        if root is not None and root.is_dir() and not (root / "rgb").is_dir() and any(root.rglob("*.h5")):
            # a folder of NYU depth v2 .h5 files: RGB and depth in one file, no sparse
            return {"rgb": root, "gt": root, "sparse": None, "K": root}
        return super()._layout(root, sparse_dir)

    def _gt_exts(self) -> tuple:
        return _DEPTH_EXTS + (".h5",)

    def load(self, entry: _Entry) -> Sample:
        if entry.rgb.suffix.lower() != ".h5":
            return super().load(entry)
        h5py = _h5py()
        try:
            with h5py.File(entry.rgb, "r") as f:
                rgb = np.ascontiguousarray(np.asarray(f["rgb"], dtype=np.uint8).transpose(1, 2, 0))
                gt = np.asarray(f["depth"], dtype=np.float32)
        except (KeyError, OSError) as exc:
            raise InputError(f"{entry.rgb} is not an NYU depth v2 sample ({exc}); it needs datasets 'rgb' "
                             "(3xHxW uint8) and 'depth' (HxW metres)") from None
        gt = np.where(np.isfinite(gt) & (gt > 0), gt, np.float32(0.0)).astype(np.float32)
        rgb, gt, _, K = self._transform(rgb, gt, None, None, entry.name)
        return Sample(rgb=rgb, gt=gt, sparse=None, K=self._check_K(K, rgb.shape[:2]), name=entry.name,
                      dataset=self.key)

    def _base_K(self, entry, shape):
        return None  # decided by _transform from the stored size

    def _transform(self, rgb, gt, sparse, K, name):
        h, w = rgb.shape[:2]
        if (h, w) == (228, 304):
            return rgb, gt, sparse, _K(K_NYU)
        if (h, w) == (480, 640) and not self.crop:
            return rgb, gt, sparse, _K(K_NYU_FULL)
        if (h, w) in (NYU_FULL_SIZE, NYU_HALF_SIZE):
            # K at the stored size: the official K_nyu (full frame), halved for a half-size frame
            K = _K(K_NYU_FULL)
            if (h, w) == NYU_HALF_SIZE:
                K[:2] *= 0.5
            rgb, K, gt, sparse = nyu_halve_crop(rgb, K, gt, sparse, name=name)
            return rgb, gt, sparse, K
        raise ShapeError(f"NYUv2 frame {name} is {h}x{w}; the NYUv2 intrinsics hold for 228x304, 240x320 or "
                         "480x640 frames only: resize the frames, or evaluate them as another dataset with "
                         "per-frame intrinsics")


class KittiReader(DatasetReader):
    """KITTI depth completion, val_selection (1000 frames), evaluated at the 256x1216 bottom crop.

    Layout ``rgb/KITTI``, ``depth/KITTI``, ``sparse/raw/KITTI`` (the raw LiDAR scans),
    ``intrinsics/KITTI`` (9-number .txt per frame); list ``val_kitti.txt`` (4 columns); depth /256.

    Decision: the official val loader shifts K by the bottom-crop offset (y0 = h - 256,
    x0 = (w - 1216) // 2) but no longer crops the images (docs/psd_method.md §1.2, §11.7), which is
    only right when the stored images already are 256x1216. This reader crops *and* shifts, so K
    always matches the pixels; for 256x1216 files both do nothing, identical to the official loader.
    ``crop=False`` evaluates at the stored size with K unshifted.
    """

    name, key, title, folder = "kitti", "KITTI", "KITTI", "KITTI"
    sparse_kind, list_name, columns = "raw", "val_kitti.txt", 4
    working_size = (256, 1216)

    def _transform(self, rgb, gt, sparse, K, name):
        if not self.crop:
            return rgb, gt, sparse, K
        return _bottom_crop(rgb, gt, sparse, K, self.working_size, name)


# ---------------------------------------------------------------------- out of distribution


class VoidReader(DatasetReader):
    """VOID1500 (800 frames, 480x640), real visual-inertial sparse points.

    Layout ``rgb/VOID1500``, ``depth/VOID1500``, ``sparse/raw/VOID1500``, ``intrinsics/VOID1500``;
    list ``val_void1500.txt`` (4 columns); depth /256; evaluation mask 0.2 < gt < 5.
    """

    name, key, title, folder = "void", "VOID1500", "VOID1500", "VOID1500"
    sparse_kind, list_name, columns = "raw", "val_void1500.txt", 4


class HypersimReader(DatasetReader):
    """Hypersim (1098 frames, 768x1024), synthetic indoor.

    Layout ``rgb/Hypersim``, ``depth/Hypersim``, ``sparse/scatter_001/Hypersim``; list
    ``val_hypersim_1098.txt`` (3 columns); depth /256. K hard-coded: fx = fy = 886.81,
    cx = 512, cy = 384.

    Ground truth may also be Hypersim's own ``.hdf5`` distance map (distance from the camera centre
    along the ray, metres; needs h5py); it is converted to planar depth with the official formula
    (depth = distance * f / |(x, y, f)| on a 1024x768 image plane centred at pixel centres).
    """

    name, key, title, folder = "hypersim", "HYPERSIM", "Hypersim", "Hypersim"
    sparse_kind, list_name, columns = "scatter_001", "val_hypersim_1098.txt", 3
    fixed_K = (886.81, 886.81, 512.0, 384.0)

    def _gt_exts(self) -> tuple:
        return _DEPTH_EXTS + (".hdf5", ".h5")

    def _read_gt(self, path: Path) -> np.ndarray:
        if path.suffix.lower() not in (".hdf5", ".h5"):
            return self._read_depth_file(path)
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            if "dataset" not in f:
                raise InputError(f"{path} has no 'dataset' array; expected a Hypersim depth_meters .hdf5 file")
            dist = np.asarray(f["dataset"], dtype=np.float32)
        return hypersim_distance_to_depth(dist)


def hypersim_distance_to_depth(distance: np.ndarray, focal: float = 886.81) -> np.ndarray:
    """Hypersim ray distance (H, W) in metres -> planar depth, as the official ``get_depthv1``.

    The image plane has pixel centres at x = -W/2 + 0.5 ... W/2 - 0.5 (and likewise y) at
    distance ``focal``; depth = distance * focal / |(x, y, focal)|. Non-finite values become 0.
    """
    d = np.asarray(distance, dtype=np.float32)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ShapeError(f"Hypersim distance map must be (H, W), got {d.shape}")
    h, w = d.shape
    x = np.linspace(-0.5 * w + 0.5, 0.5 * w - 0.5, w, dtype=np.float32)[None, :]
    y = np.linspace(-0.5 * h + 0.5, 0.5 * h - 0.5, h, dtype=np.float32)[:, None]
    norm = np.sqrt(x * x + y * y + np.float32(focal) ** 2)
    depth = d / norm * np.float32(focal)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)


class DrivingStereoReader(DatasetReader):
    """DrivingStereo, half resolution (1108 frames).

    Layout ``rgb/Drivingstereo``, ``depth/Drivingstereo``, ``sparse/scatter_001/Drivingstereo``;
    list ``val_drivingstereo_half_1108.txt`` (3 columns); depth /256. K hard-coded:
    [[2063.2, -0.5, 978.3], [0, 2062.4, 584.7], [0, 0, 1]] (note the skew term).

    Decision: the official loader computes a bottom-crop shift of K (320x881) and then discards it
    (it returns the unshifted ``self.K``); this reader uses the unshifted K, as the official
    evaluation does. These focal lengths look like the full-resolution calibration although the
    list is the half-size split *[verify against the released PSD-val files]*; this only matters
    to the psd/propagate modes, not to the metrics.
    """

    name, key, title, folder = "drivingstereo", "DrivingStereo", "DrivingStereo", "Drivingstereo"
    sparse_kind, list_name, columns = "scatter_001", "val_drivingstereo_half_1108.txt", 3
    fixed_K = ((2063.2, -0.5, 978.3), (0.0, 2062.4, 584.7), (0.0, 0.0, 1.0))


_K_DIODE = (886.81, 927.06, 512.0, 384.0)


class DiodeOutdoorReader(DatasetReader):
    """DIODE outdoor (val, 768x1024).

    Layout ``rgb/DIODE/outdoor``, ``depth/DIODE/outdoor``, ``sparse/scatter_001/DIODE/outdoor``;
    list ``val_diode_outdoor.txt`` with one column: the same relative path in the RGB, depth and
    sparse folders (so the RGB files are PNG too); depth /256. K hard-coded: fx = 886.81,
    fy = 927.06, cx = 512, cy = 384. Evaluation mask 1 < gt < 250.
    """

    name, key, title, folder = "diode-out", "DIODEo", "DIODE outdoor", "DIODE/outdoor"
    sparse_kind, list_name, columns = "scatter_001", "val_diode_outdoor.txt", 1
    fixed_K = _K_DIODE


class DiodeIndoorReader(DatasetReader):
    """DIODE indoor (val, 768x1024).

    Layout ``rgb/DIODE/indoor``, ``depth/DIODE/indoor``, ``sparse/scatter_001/DIODE/indoor``; list
    ``val_diode_indoor.txt`` (1 column, as DIODE outdoor); depth /256; K as DIODE outdoor; mask gt > 0.
    """

    name, key, title, folder = "diode-in", "DIODEi", "DIODE indoor", "DIODE/indoor"
    sparse_kind, list_name, columns = "scatter_001", "val_diode_indoor.txt", 1
    fixed_K = _K_DIODE


class SunRgbdReader(DatasetReader):
    """SUN RGB-D (1010 frames), real sensor depth as the sparse input.

    Layout ``rgb/SUNRGBD``, ``depth/SUNRGBD``, ``sparse/raw/SUNRGBD``, ``intrinsics/SUNRGBD``; list
    ``val_sunrgbd_1010.txt`` (4 columns); depth /256; NaN ground truth becomes 0 (official).
    """

    name, key, title, folder = "sunrgbd", "SUNRGBD", "SUN RGB-D", "SUNRGBD"
    sparse_kind, list_name, columns = "raw", "val_sunrgbd_1010.txt", 4


class ScanNetReader(DatasetReader):
    """ScanNet (1038 frames, 480x640).

    Layout ``rgb/Scannet``, ``depth/Scannet``, ``sparse/scatter_001/Scannet``, ``intrinsics/Scannet``;
    list ``val_scannet_1038.txt`` (4 columns); depth /256.
    """

    name, key, title, folder = "scannet", "SCANNET", "ScanNet", "Scannet"
    sparse_kind, list_name, columns = "scatter_001", "val_scannet_1038.txt", 4


class MiddleburyReader(DatasetReader):
    """Middlebury.

    With ``root``: layout ``rgb/Middlebury``, ``depth/Middlebury``, ``sparse/scatter_001/Middlebury``,
    ``intrinsics/Middlebury``; list ``val_middlebury_q.txt`` (4 columns); depth /256.

    Without ``root``: the built-in 2014 "Motorcycle" frame shipped with scikit-image (500x741, GT
    from the calibrated disparity, ``runtime.io.load_middlebury``), no stored sparse depth, so the
    evaluation patterns are generated. Needs no download.
    """

    name, key, title, folder = "middlebury", "MIDDLEBURY", "Middlebury", "Middlebury"
    sparse_kind, list_name, columns = "scatter_001", "val_middlebury_q.txt", 4

    def __init__(self, root=None, list_file=None, limit=None, crop=True, sparse_dir=None) -> None:
        self.builtin = root is None
        if not self.builtin:
            super().__init__(root, list_file, limit, crop, sparse_dir)
            return
        if list_file is not None or sparse_dir is not None:
            raise InputError("the built-in Middlebury frame takes no --list/--sparse-dir; pass --root for a "
                             "Middlebury folder")
        if limit is not None and int(limit) < 1:
            raise InputError(f"limit must be a positive number of frames, got {limit}")
        self.root, self.crop, self.limit, self.list_path = None, bool(crop), limit, None
        self._dirs = {"sparse": None}
        self.entries = [_Entry("motorcycle", Path("skimage:stereo_motorcycle"), None, None, None)]
        self._all = 1

    def load(self, entry):
        if not self.builtin:
            return super().load(entry)
        f = load_middlebury()
        return Sample(rgb=f.rgb, gt=f.depth, sparse=None, K=f.K, name=f.name, dataset=self.key)

    def describe(self) -> dict:
        out = super().describe()
        if self.builtin:
            out["root"] = "built-in (scikit-image stereo_motorcycle)"
            out["title"] = "Middlebury Motorcycle"
        return out


class Eth3dReader(DatasetReader):
    """ETH3D.

    Layout ``rgb/ETH3D``, ``depth/ETH3D``, ``sparse/scatter_001/ETH3D``, ``intrinsics/ETH3D``; list
    ``val_eth3d.txt`` (4 columns); depth /256.
    """

    name, key, title, folder = "eth3d", "ETH3D", "ETH3D", "ETH3D"
    sparse_kind, list_name, columns = "scatter_001", "val_eth3d.txt", 4


class ArgoverseReader(DatasetReader):
    """Argoverse (1009 frames).

    Layout ``rgb/Argoverse``, ``depth/Argoverse``, ``sparse/scatter_001/Argoverse``,
    ``intrinsics/Argoverse``; list ``val_argoverse_1009.txt`` (4 columns); depth /256.

    Decision: the official loader defines a bottom-crop K shift (1656x2464) but never calls it; K is
    used as read from the .txt, at the stored size, as the official evaluation does.
    """

    name, key, title, folder = "argoverse", "ARGOVERSE", "Argoverse", "Argoverse"
    sparse_kind, list_name, columns = "scatter_001", "val_argoverse_1009.txt", 4


class DimlIndoorReader(DatasetReader):
    """DIML indoor, real sensor depth as the sparse input.

    Layout ``rgb/DIML/indoor``, ``depth/DIML/indoor``, ``sparse/raw/DIML/indoor``; list
    ``val_diml_indoor.txt`` (3 columns); depth /256. K hard-coded: fx = fy = 540.5, cx = 352,
    cy = 198. (PSD evaluates DIML indoor only; there is no DIML outdoor loader.)
    """

    name, key, title, folder = "diml-in", "DIMLi", "DIML indoor", "DIML/indoor"
    sparse_kind, list_name, columns = "raw", "val_diml_indoor.txt", 3
    fixed_K = (540.5, 540.5, 352.0, 198.0)


class CityscapesReader(DatasetReader):
    """Cityscapes (stereo depth as ground truth).

    Layout ``rgb/Cityscape``, ``depth/Cityscape``, ``sparse/scatter_001/Cityscape``,
    ``intrinsics/Cityscape``; list ``val_cityscapes.txt`` (4 columns). Depth encoding differs from
    every other set: metres = (value - 1) / 256, value 0 = invalid (official ``get_depth``).
    Evaluation mask 1 < gt < 250.

    Decision: the official loader defines a centre-crop K shift (800x1600) but never calls it; K is
    used as read, at the stored size.
    """

    name, key, title, folder = "cityscapes", "Cityscape", "Cityscapes", "Cityscape"
    sparse_kind, list_name, columns = "scatter_001", "val_cityscapes.txt", 4
    depth_offset = 1


class TofdcReader(DatasetReader):
    """TOFDC, real time-of-flight depth as the sparse input.

    Layout ``rgb/TOFDC``, ``depth/TOFDC``, ``sparse/raw/TOFDC``; list ``val_tofdc.txt`` with one
    column (the same relative path in the three folders); depth /256. K hard-coded: fx = 496.2276,
    fy = 497.8638, cx = 270.6038, cy = 212.7232. Evaluation mask 0 < gt < 6.
    """

    name, key, title, folder = "tofdc", "TOFDC", "TOFDC", "TOFDC"
    sparse_kind, list_name, columns = "raw", "val_tofdc.txt", 1
    fixed_K = (496.2276, 497.8638, 270.6038, 212.7232)


class Vkitti2Reader(DatasetReader):
    """Virtual KITTI 2 (synthetic).

    Layout ``rgb/VKITTI2``, ``depth/VKITTI2``, ``sparse/scatter_001/VKITTI2``; list
    ``val_vkitti2.txt`` (3 columns); depth /256 (the PSD-val files, not VKITTI2's native
    centimetre PNGs: convert those with metres * 256 first). K hard-coded: fx = fy = 725.0087,
    cx = 620.5, cy = 187. Evaluation mask 1 < gt < 250.
    """

    name, key, title, folder = "vkitti2", "VKITTI2", "VKITTI2", "VKITTI2"
    sparse_kind, list_name, columns = "scatter_001", "val_vkitti2.txt", 3
    fixed_K = (725.0087, 725.0087, 620.5, 187.0)


class StanfordReader(DatasetReader):
    """Stanford2D3D panoramas (equirectangular; the propagation uses the '360' ray model, not K).

    Layout ``rgb/Stanford``, ``depth/Stanford``, ``sparse/scatter_001/Stanford``; list
    ``val_stanford.txt`` (3 columns); depth /256.

    Working size: as the official loader, every frame is resized to 1024x1664: RGB and ground
    truth bilinearly with ``align_corners=True`` (so invalid zeros blend into their neighbours, as
    upstream), RGB truncated back to uint8, sparse depth by nearest sampling (PyTorch rules). K is
    the official [[540, 0, 540], [0, 540, 540]] scaled by the official expression, which uses the
    resized *height* for both axes (fx, cx *= 1024 / W; fy, cy *= 1024 / H); reproduced, and
    harmless because the '360' model ignores K. ``crop=False`` keeps the stored size and K.
    """

    name, key, title, folder = "stanford", "Stanford", "Stanford2D3D", "Stanford"
    sparse_kind, list_name, columns = "scatter_001", "val_stanford.txt", 3
    # the '360' model uses no K; the official resize scales it by the height for both axes
    pinhole_K = False
    fixed_K = ((540.0, 0.0, 540.0), (0.0, 540.0, 540.0), (0.0, 0.0, 1.0))
    working_size = (1024, 1664)

    def _transform(self, rgb, gt, sparse, K, name):
        if not self.crop:
            return rgb, gt, sparse, K
        h, w = rgb.shape[:2]
        size = self.working_size
        rgb = _resize_align_corners(rgb, size).astype(np.uint8)
        gt = _resize_align_corners(gt, size).astype(np.float32)
        sparse = None if sparse is None else _resize_nearest_torch(sparse, size)
        K = np.array(K, dtype=np.float64)
        K[0, 0] *= size[0] / w
        K[1, 1] *= size[0] / h
        K[0, 2] *= size[0] / w
        K[1, 2] *= size[0] / h
        return rgb, gt, sparse, K


class Kitti360Reader(DatasetReader):
    """KITTI-360 fisheye (MEI camera model).

    Layout ``rgb/KITTI360``, ``depth/KITTI360``, ``sparse/scatter_001/KITTI360``; list
    ``val_kitti360.txt`` (3 columns); depth /256. K hard-coded: fx = 1336.32, fy = 1335.79,
    cx = cy = 700. The propagation back-projects with the MEI model, whose 9 parameters
    (xi, k1, k2, p1, p2, gamma1, gamma2, u0, v0) are in ``Sample.cam_params``.
    """

    name, key, title, folder = "kitti360", "KITTI360", "KITTI-360", "KITTI360"
    sparse_kind, list_name, columns = "scatter_001", "val_kitti360.txt", 3
    fixed_K = (1.3363220825849971e03, 1.3357883350012958e03, 700.0, 700.0)
    cam_params = (2.2134047507854890e00, 1.6798235660113681e-02, 1.6548773243373522e00, 4.2223943394772046e-04,
                  4.2462134260997584e-04, 1.3363220825849971e03, 1.3357883350012958e03, 7.1694323510126321e02,
                  7.0576498308221585e02)


# ---------------------------------------------------------------------- shared development frames


class _SharedReader(DatasetReader):
    """Base of the readers of the shared development frames (``../shared/data``)."""

    shared_key = ""
    #: what ``root`` must hold, for the error message
    shared_holds = "kitti/ and nyu/"

    def __init__(self, root=None, list_file=None, limit=None, crop=True, sparse_dir=None) -> None:
        if list_file is not None or sparse_dir is not None:
            raise InputError(f"{self.name} reads the shared frames as they are; --list/--sparse-dir do not apply")
        if limit is not None and int(limit) < 1:
            raise InputError(f"limit must be a positive number of frames, got {limit}")
        base = Path(root) if root is not None else config.shared_data_dir()
        if base is None or not base.is_dir():
            raise MissingFileError(f"shared data folder not found ({base}); set PSD_SHARED_DATA or pass --root with "
                                   f"the folder holding {self.shared_holds}")
        self.root, self.crop, self.limit, self.list_path = base, bool(crop), limit, None
        self._dirs = {"sparse": None}
        ids = self._frame_ids(base)
        self._all = len(ids)
        self.entries = [_Entry(fid, base, None, None, None) for fid in ids][: self.limit]

    def _frame_ids(self, base: Path) -> list[str]:
        ids = [fid for ds, fid in list_shared_frames(base) if ds == self.shared_key]
        if not ids:
            raise InputError(f"{base} has no {self.shared_key} frames (<id>_rgb.* and <id>_depth.png); check --root")
        return ids

    def load(self, entry):
        f = load_shared_frame(self.root, self.shared_key, entry.name)
        rgb, gt, _, K = self._transform(f.rgb, f.depth, None, f.K, entry.name)
        return Sample(rgb=np.ascontiguousarray(rgb), gt=gt, sparse=None, K=self._check_K(K, rgb.shape[:2]),
                      name=entry.name, dataset=self.key)


class KittiSharedReader(_SharedReader, KittiReader):
    """The three shared KITTI frames (375x1242, uint16/256, K 707.0493/604.0814/180.5066), cropped like
    KITTI to the bottom 256x1216 (y0 = 119, x0 = 13; K shifted) unless ``crop=False``. No stored
    sparse depth: the evaluation patterns are generated from the semi-dense ground truth."""

    name, title, shared_key = "kitti-shared", "KITTI shared frames", "KITTI"


class NyuSharedReader(_SharedReader, NYUv2Reader):
    """The three shared NYUv2 frames (480x640, uint16 millimetres), halved and centre-cropped to the
    228x304 NYUv2 working size like ``NYUv2Reader`` (K = ``K_NYU``) unless ``crop=False``. No stored
    sparse depth: the evaluation patterns are generated from the ground truth."""

    name, title, shared_key = "nyu-shared", "NYUv2 shared frames", "NYUv2"

    def load(self, entry):
        return _SharedReader.load(self, entry)


#: frame size of the shared KITTI depth-completion crops (``lidar/kittidc_*``): KITTI's official
#: val_selection_cropped size
KITTIDC_CROP_SIZE = (352, 1216)
#: KITTI's nominal full-frame size and left-colour-camera intrinsics (fx, fy, cx, cy), before any crop
KITTI_NOMINAL_SIZE = (375, 1242)
KITTI_NOMINAL_K = (721.5377, 721.5377, 609.5593, 172.854)
#: intrinsics of the shared real-LiDAR crop ``lidar/kittidc_a``: its crop offset is not published, so
#: KITTI's nominal K shifted as a bottom-centre crop of the nominal frame (x0 = (1242 - 1216) // 2 = 13,
#: y0 = 375 - 352 = 23). Approximate: only the psd/propagate modes use K beyond validating it.
K_KITTIDC_LIDAR = (KITTI_NOMINAL_K[0], KITTI_NOMINAL_K[1],
                   KITTI_NOMINAL_K[2] - (KITTI_NOMINAL_SIZE[1] - KITTIDC_CROP_SIZE[1]) // 2,
                   KITTI_NOMINAL_K[3] - (KITTI_NOMINAL_SIZE[0] - KITTIDC_CROP_SIZE[0]))


class KittiLidarSharedReader(_SharedReader, KittiReader):
    """The shared real-LiDAR KITTI depth-completion frames (``lidar/<id>_{rgb,lidar,gt}.png``, today
    ``kittidc_a``): 352x1216, the frame's own raw LiDAR map as the stored sparse input (pattern
    ``stored``, ``sparse`` = ``"raw"``; uint16/256, about 4.7 % of pixels, with the usual
    LiDAR-camera parallax errors) and KITTI's semi-dense ground truth (uint16/256). Generated
    patterns (``--pattern random1`` ...) sample that ground truth as for any dataset.

    ``root`` is the shared data folder (holding ``lidar/``) or the ``lidar/`` folder itself.

    Intrinsics: ``K_KITTIDC_LIDAR`` (the crop offset is not published; KITTI's nominal K shifted as a
    bottom-centre crop). Evaluation mask and propagation preset: KITTI's (``"KITTI"``: gt > 0).

    Decision: evaluated at the stored 352x1216 size, with no working-size crop, whatever ``crop``
    says. 352x1216 is the size at which KITTI's official depth-completion benchmark evaluates its
    cropped validation frames, and PSD's 256-row bottom crop would only drop rows 0-95, where this
    frame has neither ground truth nor LiDAR points (measured: both start at row 96 or below), so
    the evaluated pixels are the same; the stored size keeps the image the guided mode sees and the
    numbers comparable with ``benchmarks/bm_guided_accuracy`` (which scores the same frame at this
    size).
    """

    name, title, shared_key = "kitti-lidar-shared", "KITTI real-LiDAR shared frame", "KITTI"
    shared_holds = "lidar/ (<id>_rgb.png, <id>_lidar.png, <id>_gt.png)"
    working_size = None

    @staticmethod
    def lidar_dir(base: Path) -> Path:
        """``base/lidar`` when it exists, else ``base`` (the lidar folder itself)."""
        return base / "lidar" if (base / "lidar").is_dir() else base

    def _frame_ids(self, base: Path) -> list[str]:
        folder = self.lidar_dir(base)
        ids = [p.name[: -len("_lidar.png")] for p in sorted(folder.glob("*_lidar.png"))
               if (folder / p.name.replace("_lidar.png", "_gt.png")).is_file()
               and (folder / p.name.replace("_lidar.png", "_rgb.png")).is_file()]
        if not ids:
            raise InputError(f"{folder} has no real-LiDAR frame (<id>_lidar.png with <id>_gt.png and <id>_rgb.png); "
                             "pass --root with the shared data folder holding lidar/")
        self._dirs = {"sparse": folder, "sparse_source": "raw"}
        return ids

    def _transform(self, rgb, gt, sparse, K, name):
        return rgb, gt, sparse, K

    def load(self, entry):
        folder = self.lidar_dir(self.root)
        rgb = read_rgb(folder / f"{entry.name}_rgb.png")
        gt = self._read_depth_file(folder / f"{entry.name}_gt.png")
        sparse = self._read_depth_file(folder / f"{entry.name}_lidar.png")
        for what, arr in (("ground truth", gt), ("LiDAR map", sparse)):
            if arr.shape != rgb.shape[:2]:
                raise ShapeError(f"{entry.name}: the {what} is {arr.shape[0]}x{arr.shape[1]} but the RGB is "
                                 f"{rgb.shape[0]}x{rgb.shape[1]}; restore the original files")
        if rgb.shape[:2] != KITTIDC_CROP_SIZE:
            raise ShapeError(f"{entry.name} is {rgb.shape[0]}x{rgb.shape[1]}, not the {KITTIDC_CROP_SIZE[0]}x"
                             f"{KITTIDC_CROP_SIZE[1]} KITTI crop that K_KITTIDC_LIDAR describes; restore the "
                             "original files")
        K = self._check_K(_K(K_KITTIDC_LIDAR), rgb.shape[:2])
        return Sample(rgb=np.ascontiguousarray(rgb), gt=gt, sparse=sparse, K=K, name=entry.name, dataset=self.key)

    def describe(self) -> dict:
        out = super().describe()
        out["crop"] = False  # always the stored size (see the class docstring)
        return out


# ---------------------------------------------------------------------- registry

#: registry name -> reader class (the 18 PSD evaluation sets, then the shared development frames)
DATASETS: dict[str, type[DatasetReader]] = {
    cls.name: cls
    for cls in (
        NYUv2Reader, KittiReader,
        ArgoverseReader, CityscapesReader, DimlIndoorReader, DiodeIndoorReader, DiodeOutdoorReader,
        DrivingStereoReader, Eth3dReader, HypersimReader, Kitti360Reader, MiddleburyReader, ScanNetReader,
        StanfordReader, SunRgbdReader, TofdcReader, Vkitti2Reader, VoidReader,
        KittiSharedReader, NyuSharedReader, KittiLidarSharedReader,
    )
}

_EXTRA_ALIASES = {"nyudepthv2": "nyu", "void1500": "void", "sunrgb-d": "sunrgbd", "stanford2d3d": "stanford",
                  "diml": "diml-in", "dimlindoor": "diml-in", "diodeoutdoor": "diode-out",
                  "diodeindoor": "diode-in", "kittidc": "kitti", "cityscape": "cityscapes", "vkitti": "vkitti2"}


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


_ALIASES: dict[str, str] = {}
for _n, _cls in DATASETS.items():
    _ALIASES[_norm(_n)] = _n
    if not _n.endswith("shared"):
        _ALIASES.setdefault(_norm(_cls.key), _n)
for _a, _n in _EXTRA_ALIASES.items():
    _ALIASES[_norm(_a)] = _n


def dataset_names() -> list[str]:
    """Registry names, in ``DATASETS`` order."""
    return list(DATASETS)


def get_reader(name: str) -> type[DatasetReader]:
    """The reader class of a dataset name, official key or common alias (case/punctuation-insensitive).

    Raises:
        InputError: unknown name (the message lists the known ones).
    """
    key = _ALIASES.get(_norm(name))
    if key is None:
        raise InputError(f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}")
    return DATASETS[key]


def open_dataset(name: str, root: Optional[PathLike] = None, list_file: Optional[PathLike] = None,
                 limit: Optional[int] = None, crop: bool = True,
                 sparse_dir: Optional[PathLike] = None) -> DatasetReader:
    """Open a dataset by name (see ``DatasetReader`` for the arguments)."""
    return get_reader(name)(root=root, list_file=list_file, limit=limit, crop=crop, sparse_dir=sparse_dir)
