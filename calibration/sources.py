"""Calibration data sources (style G6): any iterable of feed dicts is a calibration source.

Two layers:

* **frame sources** yield :class:`CalibFrame` (RGB, sparse depth, intrinsics, optional ground
  truth): :class:`ImageFolderSource` (the user's own images), :class:`SharedFramesSource` (the
  shared KITTI/NYU development frames) and :class:`GeneratedSource` (Middlebury + generated sparse
  patterns, always available);
* **feed adapters** turn frames into a model's feeds: :class:`EncoderFeeds` (``{"rgb": ...}``, always
  through ``psdrt.runtime.preprocess``) and :class:`HeadFeeds` (``sparse``, ``depth_diff``,
  ``feat0..3`` from the FP32 reference up to propagation).

Every class here has ``__len__`` so that long steps can report progress. Only NumPy is imported at
module level; OpenCV/scikit-image (frame I/O) and torch (the reference) are imported when used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from psdrt.runtime.errors import CalibrationError, InputError
from psdrt.runtime.inputs import fit_to_size
from psdrt.runtime.preprocess import DEFAULT_PREPROCESS, fm_input_size, preprocess_rgb

__all__ = [
    "CalibrationSource",
    "CalibFrame",
    "fit_frame",
    "ImageFolderSource",
    "SharedFramesSource",
    "GeneratedSource",
    "EncoderFeeds",
    "HeadFeeds",
    "take",
    "frame_source",
    "head_inputs",
]

log = logging.getLogger(__name__)

Feeds = Dict[str, np.ndarray]
PathLike = Union[str, Path]


@runtime_checkable
class CalibrationSource(Protocol):
    """Any iterable of ``{input_name: float32 array}`` dicts; ``__len__`` is optional (progress)."""

    def __iter__(self) -> Iterator[Feeds]: ...


@dataclass(frozen=True, eq=False)
class CalibFrame:
    """One frame to calibrate or evaluate on.

    Attributes:
        rgb (np.ndarray): uint8 (H, W, 3), RGB order.
        sparse (np.ndarray | None): float32 (H, W) metres, 0 = missing (needed by the head).
        K (np.ndarray | None): float64 (3, 3) intrinsics at (H, W) (needed by the head).
        gt (np.ndarray | None): float32 (H, W) ground truth, 0 = invalid.
        name (str): identifier used in reports.
    """

    rgb: np.ndarray
    sparse: Optional[np.ndarray] = None
    K: Optional[np.ndarray] = None
    gt: Optional[np.ndarray] = None
    name: str = ""


def fit_frame(frame: CalibFrame, size: Tuple[int, int]) -> CalibFrame:
    """``frame`` at exactly ``size`` (H, W): scaled to cover it, centre-cropped, K adjusted
    (``runtime.inputs.fit_to_size``). A frame already of that size is returned unchanged."""
    if frame.rgb.shape[:2] == (int(size[0]), int(size[1])):
        return frame
    rgb, K, sparse, gt = fit_to_size(frame.rgb, frame.K, size, frame.sparse, frame.gt)
    return CalibFrame(rgb, sparse, K, gt, frame.name)


class _FrameList:
    """Shared iteration: frames are produced lazily, one at a time, fitted to ``size`` if given."""

    size: Optional[Tuple[int, int]] = None

    def _items(self) -> Sequence[Any]:
        raise NotImplementedError

    def _load(self, item: Any) -> CalibFrame:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[CalibFrame]:
        for item in self._items():
            frame = self._load(item)
            yield fit_frame(frame, self.size) if self.size is not None else frame


class ImageFolderSource(_FrameList):
    """The user's own frames: every image in ``rgb_dir``, optional sparse depth by file stem.

    Args:
        rgb_dir (str | Path): folder of ``.png``/``.jpg``/``.jpeg`` RGB images (sorted by name).
        sparse_dir (str | Path, optional): folder with ``<stem>.png`` (16-bit) or ``<stem>.npy``
            sparse depth per image; needed for head calibration. Defaults to None.
        size (tuple[int, int], optional): (H, W) every frame is fitted to (aspect kept, centre
            crop); a static ONNX model needs one size. Defaults to None (native sizes).
        K (array | str | Path, optional): intrinsics at the native size (3x3, or a file for
            ``read_intrinsics``); needed for head calibration. Defaults to None.
        sparse_scale (float, optional): stored units per metre of 16-bit sparse PNGs (256 for
            KITTI, 1000 for millimetres). Defaults to None.
        limit (int, optional): use at most this many images. Defaults to None (all).

    Raises:
        InputError: the folder does not exist or holds no image.
    """

    EXTENSIONS = (".png", ".jpg", ".jpeg")

    def __init__(self, rgb_dir: PathLike, sparse_dir: Optional[PathLike] = None,
                 size: Optional[Tuple[int, int]] = None, *, K: Any = None,
                 sparse_scale: Optional[float] = None, limit: Optional[int] = None) -> None:
        self.rgb_dir = Path(rgb_dir)
        if not self.rgb_dir.is_dir():
            raise InputError(f"calibration image folder not found: {self.rgb_dir}; pass a folder of RGB images")
        files = sorted(p for p in self.rgb_dir.iterdir() if p.suffix.lower() in self.EXTENSIONS)
        if not files:
            raise InputError(f"no .png/.jpg images in {self.rgb_dir}; calibration needs a few hundred "
                             "representative frames (or use GeneratedSource for a smoke test)")
        self.files = files[:limit] if limit else files
        self.sparse_dir = Path(sparse_dir) if sparse_dir is not None else None
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.sparse_scale = sparse_scale
        if isinstance(K, (str, Path)):
            from psdrt.runtime.io import read_intrinsics

            K = read_intrinsics(K)
        self.K = None if K is None else np.asarray(K, dtype=np.float64)

    def _items(self):
        return self.files

    def _load(self, path: Path) -> CalibFrame:
        from psdrt.runtime.io import read_depth, read_rgb

        rgb = read_rgb(path)
        sparse = None
        if self.sparse_dir is not None:
            cands = [self.sparse_dir / f"{path.stem}{ext}" for ext in (".png", ".npy")]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                raise InputError(f"no sparse depth for {path.name} in {self.sparse_dir} (looked for "
                                 f"{cands[0].name} / {cands[1].name})")
            sparse = read_depth(hit, scale=self.sparse_scale)
        return CalibFrame(rgb, sparse, self.K, None, path.stem)


class SharedFramesSource(_FrameList):
    """The shared KITTI/NYU development frames with generated sparse patterns.

    These frames exist on the project's machines only (``PSD_SHARED_DATA`` or ``../shared/data``);
    users calibrate with :class:`ImageFolderSource` on their own data.

    Args:
        root (str | Path, optional): folder holding ``kitti/`` and ``nyu/``. Defaults to
            ``config.shared_data_dir()``.
        datasets (Sequence[str]): any of ``"KITTI"``, ``"NYUv2"``. Defaults to both.
        size (tuple[int, int], optional): fit every frame to (H, W). Defaults to None.
        patterns (Sequence[str]): sparse patterns (``runtime.patterns``), cycled over the frames.
            Defaults to ("random1",).
        seed (int): pattern seed (frame i uses ``seed + i``). Defaults to 0.

    Raises:
        InputError: the shared data is absent (the message says what to use instead).
    """

    def __init__(self, root: Optional[PathLike] = None, datasets: Sequence[str] = ("KITTI", "NYUv2"),
                 size: Optional[Tuple[int, int]] = None, patterns: Sequence[str] = ("random1",),
                 seed: int = 0) -> None:
        from psdrt.runtime.io import list_shared_frames

        try:
            frames = list_shared_frames(root)
        except InputError as exc:
            raise InputError(f"{exc}. The shared KITTI/NYU frames exist only on the project's machines: "
                             "calibrate on your own frames with ImageFolderSource (psdrt calibrate "
                             "--source DIR) or on GeneratedSource (--source middlebury)") from None
        wanted = {d.lower() for d in datasets}
        self.frames = [f for f in frames if f[0].lower() in wanted or
                       {"nyuv2": "nyu", "kitti": "kitti"}.get(f[0].lower()) in wanted]
        if not self.frames:
            raise InputError(f"no shared frames of {list(datasets)} under {root}; use 'KITTI' and/or 'NYUv2'")
        self.root, self.size, self.patterns, self.seed = root, size, tuple(patterns), int(seed)

    def _items(self):
        return list(enumerate(self.frames))

    def _load(self, item) -> CalibFrame:
        from psdrt.runtime.io import load_shared_frame
        from psdrt.runtime.patterns import make_sparse

        i, (dataset, frame_id) = item
        fr = load_shared_frame(self.root, dataset, frame_id)
        pattern = self.patterns[i % len(self.patterns)]
        sparse = make_sparse(pattern, fr.rgb, fr.depth, self.seed + i)
        return CalibFrame(fr.rgb, sparse, fr.K, fr.depth, f"{dataset}/{frame_id}/{pattern}")


class GeneratedSource(_FrameList):
    """Middlebury "Motorcycle" (ships with scikit-image) with generated views and sparse patterns.

    Each sample is a different crop (aspect of ``size``), optionally mirrored and brightness-jittered,
    with a sparse pattern drawn from the ground truth, so the encoder sees varied inputs even
    though there is one scene. Meant for smoke tests and for machines without data, not as a
    substitute for in-domain calibration frames.

    Args:
        num (int): number of samples. Defaults to 8.
        size (tuple[int, int], optional): (H, W) of the samples. Defaults to None (the full frame).
        patterns (Sequence[str]): sparse patterns, cycled. Defaults to all four of ``runtime.patterns``.
        seed (int): seed of crops, jitter and patterns. Defaults to 0.
    """

    def __init__(self, num: int = 8, size: Optional[Tuple[int, int]] = None,
                 patterns: Sequence[str] = ("random1", "random0.1", "pseudo_hole", "harris"),
                 seed: int = 0) -> None:
        if num < 1:
            raise InputError(f"GeneratedSource needs num >= 1, got {num}")
        self.num, self.size, self.patterns, self.seed = int(num), size, tuple(patterns), int(seed)
        self._base = None

    def _items(self):
        return range(self.num)

    def _load(self, i: int) -> CalibFrame:
        from psdrt.runtime.io import load_middlebury
        from psdrt.runtime.patterns import make_sparse

        if self._base is None:
            self._base = load_middlebury()
        fr = self._base
        rng = np.random.default_rng(self.seed * 1000003 + i)
        h, w = fr.rgb.shape[:2]
        rgb, gt, K = fr.rgb, fr.depth, fr.K.copy()
        if i > 0:  # sample 0 is the full frame; the others are 70-100 % crops, some mirrored
            ah, aw = self.size if self.size is not None else (h, w)
            s = rng.uniform(0.7, 1.0)
            ch = int(min(h, w * ah / aw) * s)
            cw = int(ch * aw / ah)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            rgb, gt = rgb[y0:y0 + ch, x0:x0 + cw], gt[y0:y0 + ch, x0:x0 + cw]
            K[0, 2] -= x0
            K[1, 2] -= y0
            if rng.random() < 0.5:
                rgb, gt = rgb[:, ::-1], gt[:, ::-1]
                K[0, 2] = cw - 1 - K[0, 2]
            gain = rng.uniform(0.8, 1.2)
            rgb = np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        rgb, gt = np.ascontiguousarray(rgb), np.ascontiguousarray(gt)
        pattern = self.patterns[i % len(self.patterns)]
        sparse = make_sparse(pattern, rgb, gt, self.seed + i)
        return CalibFrame(rgb, sparse, K, gt, f"middlebury/{i}/{pattern}")


def _center_crop_to_aspect(rgb: np.ndarray, aspect: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    if abs(w / h - aspect) < 1e-3:
        return rgb
    if w / h > aspect:
        cw = int(round(h * aspect))
        x0 = (w - cw) // 2
        return rgb[:, x0:x0 + cw]
    ch = int(round(w / aspect))
    y0 = (h - ch) // 2
    return rgb[y0:y0 + ch]


class EncoderFeeds:
    """Frames -> encoder feeds ``{"rgb": float32 1x3xHmxWm}`` via ``runtime.preprocess.preprocess_rgb``.

    Args:
        frames (Iterable[CalibFrame]): a frame source.
        size (tuple[int, int], optional): (Hm, Wm) of a static encoder. Frames of another aspect are
            centre-cropped to its aspect first (never stretched). Defaults to None:
            ``fm_input_size(H, W)`` of each frame.
        input_name (str): the encoder's input name. Defaults to "rgb".
        preprocess (str): ``runtime.preprocess`` method, the one the artefacts are built for.
            Defaults to "official".
    """

    def __init__(self, frames: Iterable[CalibFrame], size: Optional[Tuple[int, int]] = None,
                 input_name: str = "rgb", preprocess: str = DEFAULT_PREPROCESS) -> None:
        self.frames, self.size, self.input_name = frames, size, input_name
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.frames)  # type: ignore[arg-type]

    def feeds(self, frame: CalibFrame) -> Feeds:
        rgb = frame.rgb
        if self.size is None:
            size = fm_input_size(*rgb.shape[:2])
        else:
            size = (int(self.size[0]), int(self.size[1]))
            rgb = _center_crop_to_aspect(rgb, size[1] / size[0])
        return {self.input_name: preprocess_rgb(rgb, size=size, method=self.preprocess)}

    def __iter__(self) -> Iterator[Feeds]:
        for frame in self.frames:
            yield self.feeds(frame)


def head_inputs(pipeline: Any, frame: CalibFrame) -> Dict[str, np.ndarray]:
    """The head's inputs for one frame from the FP32 reference (foundation model -> propagation).

    The reference's own first half (``ReferencePipeline.head_feeds``): the foundation model,
    IP-Basic, both alignments and the dual-space propagation.

    Args:
        pipeline (ReferencePipeline): a reference in mode ``psd`` or ``propagate``.
        frame (CalibFrame): needs ``sparse`` and ``K``.

    Returns:
        dict[str, np.ndarray]: ``sparse``, ``depth_diff`` (1x1xHxW) and ``feat0..feat3``, float32.

    Raises:
        InputError: the frame has no sparse depth or no intrinsics.
    """
    if frame.sparse is None or frame.K is None:
        raise InputError(f"frame {frame.name!r} needs sparse depth and intrinsics K for head calibration; "
                         "give ImageFolderSource sparse_dir= and K=")
    return pipeline.head_feeds(frame.rgb, frame.sparse, frame.K)


class HeadFeeds:
    """Frames -> head feeds (``sparse``, ``depth_diff``, ``feat0..3``) from the FP32 reference.

    Args:
        frames (Iterable[CalibFrame]): frames with sparse depth and K, at the head's (H, W).
        pipeline (ReferencePipeline): FP32 reference holding the same foundation model the head
            was trained with (mode ``psd`` or ``propagate``).
    """

    def __init__(self, frames: Iterable[CalibFrame], pipeline: Any) -> None:
        self.frames, self.pipeline = frames, pipeline

    def __len__(self) -> int:
        return len(self.frames)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Feeds]:
        for frame in self.frames:
            yield head_inputs(self.pipeline, frame)


def frame_source(spec: str, size: Optional[Tuple[int, int]] = None, num: Optional[int] = None, *,
                 seed: int = 0, sparse_dir: Optional[PathLike] = None, sparse_scale: Optional[float] = None,
                 K: Any = None) -> Iterable[CalibFrame]:
    """A frame source from a short spec, as the ``psdrt calibrate --source`` flag takes it.

    Args:
        spec (str): ``"middlebury"`` (:class:`GeneratedSource`), ``"shared"``, ``"kitti"``, ``"nyu"``
            (:class:`SharedFramesSource`) or a folder of images (:class:`ImageFolderSource`).
        size (tuple[int, int], optional): (H, W) frames are fitted to.
        num (int, optional): number of frames (GeneratedSource: defaults to 8; others: all).
        seed (int): pattern/crop seed. Defaults to 0.
        sparse_dir, sparse_scale, K: passed to :class:`ImageFolderSource`.

    Returns:
        Iterable[CalibFrame]: a sized frame source.
    """
    key = str(spec).lower()
    if key == "middlebury":
        return GeneratedSource(num=num or 8, size=size, seed=seed)
    if key in ("shared", "kitti", "nyu", "nyuv2"):
        datasets = ("KITTI", "NYUv2") if key == "shared" else ({"kitti": "KITTI"}.get(key, "NYUv2"),)
        src = SharedFramesSource(datasets=datasets, size=size, seed=seed)
        if num:
            src.frames = src.frames[:num]
        return src
    return ImageFolderSource(spec, sparse_dir, size, K=K, sparse_scale=sparse_scale, limit=num)


def take(source: Iterable[Feeds], n: Optional[int]) -> Iterator[Feeds]:
    """The first ``n`` items of ``source`` (all when ``n`` is None)."""
    for i, item in enumerate(source):
        if n is not None and i >= n:
            return
        yield item


def check_nonempty(items: list, what: str = "calibration source") -> list:
    if not items:
        raise CalibrationError(f"the {what} yielded no batch; give it at least one frame")
    return items
