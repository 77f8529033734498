"""Statistics of activation tensors: the *compute* step of calibration (style G6).

A collector sees batches of named arrays through ``update(name_to_array)`` and returns validated
ranges through ``ranges()``. Collectors are streaming: memory is bounded by their histograms, not by
the number of batches. Pick one by name from :data:`COLLECTORS` (``make_collector("entropy")``).

NumPy only at import time; scipy is imported inside :func:`entropy_threshold` (style G2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Dict, Iterator, Mapping, Tuple

import numpy as np

from psdrt.runtime.errors import CalibrationError

__all__ = [
    "TensorRanges",
    "MinMax",
    "Percentile",
    "Entropy",
    "COLLECTORS",
    "make_collector",
    "entropy_threshold",
]


@dataclass(frozen=True)
class TensorRanges:
    """Validated, immutable calibration result: tensor name -> (low, high) in float units.

    Args:
        ranges (Mapping[str, tuple[float, float]]): finite ``low <= high`` per tensor.
        method (str): collector that produced them (``"minmax"``, ``"percentile"``, ``"entropy"``).
        symmetric (bool): ranges are symmetric about 0 (``low == -high``), as TensorRT's INT8 needs.

    Raises:
        CalibrationError: a non-finite bound, ``low > high``, or an empty mapping.
    """

    ranges: Mapping[str, Tuple[float, float]]
    method: str = "minmax"
    symmetric: bool = False

    def __post_init__(self) -> None:
        if not self.ranges:
            raise CalibrationError("no tensor ranges were collected; the calibration source yielded no batch "
                                   "or no tensor matched: check the source and the model's input names")
        clean: Dict[str, Tuple[float, float]] = {}
        for name, pair in self.ranges.items():
            try:
                lo, hi = (float(pair[0]), float(pair[1]))
            except (TypeError, ValueError, IndexError):
                raise CalibrationError(f"range of {name!r} must be a (low, high) pair, got {pair!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise CalibrationError(f"range of {name!r} is not finite ({lo}, {hi}); the model produced "
                                       "NaN/Inf on the calibration data: check the inputs and the FP32 model")
            if lo > hi:
                raise CalibrationError(f"range of {name!r} has low {lo} > high {hi}")
            clean[str(name)] = (lo, hi)
        object.__setattr__(self, "ranges", MappingProxyType(clean))

    def __getitem__(self, name: str) -> Tuple[float, float]:
        return self.ranges[name]

    def __contains__(self, name: object) -> bool:
        return name in self.ranges

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def items(self):
        return self.ranges.items()

    def amax(self, name: str) -> float:
        """Largest magnitude of the range of ``name`` (symmetric INT8 uses scale = amax / 127)."""
        lo, hi = self.ranges[name]
        return max(abs(lo), abs(hi))

    def subset(self, names) -> "TensorRanges":
        """The ranges of ``names`` that are present (missing names are skipped)."""
        return TensorRanges({n: self.ranges[n] for n in names if n in self.ranges}, self.method, self.symmetric)

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"method", "symmetric", "ranges": {name: [low, high]}}``."""
        return {"method": self.method, "symmetric": self.symmetric,
                "ranges": {k: [v[0], v[1]] for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorRanges":
        """Inverse of :meth:`to_dict`."""
        return cls({k: tuple(v) for k, v in d["ranges"].items()}, d.get("method", "minmax"),
                   bool(d.get("symmetric", False)))


def _as_float(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind != "f":
        raise CalibrationError(f"tensor {name!r} is {a.dtype}; only float tensors are calibrated")
    return a.reshape(-1)


@dataclass
class MinMax:
    """Running minimum and maximum (ORT's MinMax, TensorRT's "max" when ``symmetric``).

    Args:
        symmetric (bool): report (-amax, amax). Defaults to False.
    """

    symmetric: bool = False
    _lo: Dict[str, float] = field(default_factory=dict, repr=False)
    _hi: Dict[str, float] = field(default_factory=dict, repr=False)

    def update(self, name_to_array: Mapping[str, np.ndarray]) -> None:
        for name, arr in name_to_array.items():
            a = _as_float(name, arr)
            if a.size == 0:
                continue
            lo, hi = float(a.min()), float(a.max())
            self._lo[name] = min(lo, self._lo.get(name, lo))
            self._hi[name] = max(hi, self._hi.get(name, hi))

    def ranges(self) -> TensorRanges:
        out = {}
        for name, lo in self._lo.items():
            hi = self._hi[name]
            if self.symmetric:
                m = max(abs(lo), abs(hi))
                lo, hi = -m, m
            out[name] = (lo, hi)
        return TensorRanges(out, "minmax", self.symmetric)


class _Histogram:
    """Fixed-bin-count histogram over [lo, hi] that widens its range as data arrives.

    Widening re-bins the old counts at their bin centres, so each widening moves mass by at most
    half a (new) bin: the quantiles are exact to within about one bin width.
    """

    def __init__(self, bins: int) -> None:
        self.bins = int(bins)
        self.counts = None
        self.lo = self.hi = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, a: np.ndarray, lo: float, hi: float) -> None:
        self.min, self.max = min(self.min, float(a.min())), max(self.max, float(a.max()))
        if self.counts is None:
            if hi <= lo:
                hi = lo + max(abs(lo), 1.0) * 1e-6
            self.lo, self.hi = lo, hi
            self.counts = np.zeros(self.bins, np.int64)
        elif lo < self.lo or hi > self.hi:
            new_lo, new_hi = min(lo, self.lo), max(hi, self.hi)
            edges = np.linspace(self.lo, self.hi, self.bins + 1)
            centres = 0.5 * (edges[:-1] + edges[1:])
            moved, _ = np.histogram(centres, bins=self.bins, range=(new_lo, new_hi), weights=self.counts)
            self.counts = moved.astype(np.int64)
            self.lo, self.hi = new_lo, new_hi
        h, _ = np.histogram(a, bins=self.bins, range=(self.lo, self.hi))
        self.counts += h

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the samples lie (linear within a bin)."""
        cdf = np.cumsum(self.counts)
        target = q * cdf[-1]
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        before = cdf[i - 1] if i > 0 else 0
        frac = (target - before) / max(self.counts[i], 1)
        return float(self.lo + (i + frac) * self.width)


@dataclass
class Percentile:
    """Two-sided percentile clipping from streaming histograms.

    Args:
        percentile (float): keep this percentage of values on each side: the range is the
            (100 − p)-th to the p-th percentile. Defaults to 99.99.
        bins (int): histogram bins per tensor. Defaults to 4096.
        symmetric (bool): report (-amax, amax) with amax the p-th percentile of |x|. Defaults to False.
    """

    percentile: float = 99.99
    bins: int = 4096
    symmetric: bool = False
    _hist: Dict[str, _Histogram] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not (50.0 < self.percentile <= 100.0):
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    def update(self, name_to_array: Mapping[str, np.ndarray]) -> None:
        for name, arr in name_to_array.items():
            a = _as_float(name, arr)
            if a.size == 0:
                continue
            if self.symmetric:
                a = np.abs(a)
            h = self._hist.setdefault(name, _Histogram(self.bins))
            h.add(a, float(a.min()), float(a.max()))

    def ranges(self) -> TensorRanges:
        p = self.percentile / 100.0
        out = {}
        for name, h in self._hist.items():
            if self.symmetric:
                m = min(h.quantile(p), h.max)
                out[name] = (-m, m)
            else:
                lo, hi = max(h.quantile(1.0 - p), h.min), min(h.quantile(p), h.max)
                out[name] = (min(lo, hi), max(lo, hi))
        return TensorRanges(out, "percentile", self.symmetric)


def entropy_threshold(counts: np.ndarray, width: float, num_quantized_bins: int = 128, stride: int = 1) -> float:
    """TensorRT-style (EntropyCalibration2) KL-divergence threshold of a histogram of |x|.

    For each candidate i (bins ``[0, i)``), the reference distribution P is the histogram clipped at
    i with the outliers added to its last bin; Q is P merged into ``num_quantized_bins`` levels and
    expanded back over P's non-empty bins. The threshold is the edge of the i that minimises KL(P‖Q).

    Args:
        counts (np.ndarray): histogram of |x| from 0, equal bins.
        width (float): bin width.
        num_quantized_bins (int): INT8 levels on one side. Defaults to 128.
        stride (int): evaluate every ``stride``-th candidate (1 = every one, as TensorRT). Defaults to 1.

    Returns:
        float: the clipping threshold (amax).
    """
    from scipy.stats import entropy  # heavy: imported only when entropy calibration runs

    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    if n <= num_quantized_bins:
        return n * width
    # leading zero bins (e.g. after ReLU the first bins are empty) need no special handling
    best_i, best_kl = n, math.inf
    total_tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # total_tail[i] = sum(counts[i:])
    for i in range(num_quantized_bins, n + 1, stride):
        p = counts[:i].copy()
        p[-1] += total_tail[i]
        nonzero = p != 0
        # merge i bins into num_quantized_bins groups (the last group takes the remainder)
        edges = (np.arange(num_quantized_bins + 1) * (i // num_quantized_bins))
        edges[-1] = i
        sums = np.add.reduceat(counts[:i], edges[:-1])
        nz_per = np.add.reduceat(nonzero.astype(np.float64), edges[:-1])
        level = np.where(nz_per > 0, sums / np.maximum(nz_per, 1), 0.0)
        q = np.repeat(level, np.diff(edges)) * nonzero
        if q.sum() == 0:
            continue
        kl = entropy(p, q) if p.sum() > 0 else math.inf
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * width if best_i < n else n * width


@dataclass
class Entropy:
    """KL-divergence calibration (TensorRT's EntropyCalibration2) on histograms of |x|.

    Always symmetric (TensorRT INT8 is). Args:
        bins (int): histogram bins of |x|. Defaults to 2048 (TensorRT's).
        num_quantized_bins (int): Defaults to 128.
        stride (int): candidate stride for :func:`entropy_threshold`. Defaults to 1.
    """

    bins: int = 2048
    num_quantized_bins: int = 128
    stride: int = 1
    symmetric: bool = True
    _hist: Dict[str, _Histogram] = field(default_factory=dict, repr=False)

    def update(self, name_to_array: Mapping[str, np.ndarray]) -> None:
        for name, arr in name_to_array.items():
            a = _as_float(name, arr)
            if a.size == 0:
                continue
            a = np.abs(a)
            h = self._hist.setdefault(name, _Histogram(self.bins))
            h.add(a, 0.0, float(a.max()))

    def ranges(self) -> TensorRanges:
        out = {}
        for name, h in self._hist.items():
            m = min(entropy_threshold(h.counts, h.width, self.num_quantized_bins, self.stride), h.max)
            out[name] = (-m, m)
        return TensorRanges(out, "entropy", True)


#: collector name -> factory; ``make_collector`` passes keyword options through
COLLECTORS: Dict[str, Callable[..., object]] = {
    "minmax": MinMax,
    "percentile": Percentile,
    "entropy": Entropy,
}


def make_collector(method: str, **options):
    """Build a collector by registry name.

    Args:
        method (str): a :data:`COLLECTORS` key.
        **options: the collector's keyword arguments (e.g. ``percentile=99.9``).

    Returns:
        A collector with ``update(name_to_array)`` and ``ranges()``.

    Raises:
        CalibrationError: unknown method.
    """
    try:
        factory = COLLECTORS[method]
    except KeyError:
        raise CalibrationError(f"unknown calibration method {method!r}; use one of {sorted(COLLECTORS)}") from None
    return factory(**options)
