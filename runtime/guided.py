"""Parameters, references and design record of the ``guided`` mode (no foundation model, no weights).

Two methods; ``dt`` is the default.

**dt** (``kernels/guided/dt.h`` states it exactly; :func:`reference_guided_dt` is its NumPy
reference):

1. *input kind*: scan-line LiDAR or scattered points (random samples, SLAM points, corner
   clusters), detected per frame by :func:`input_kind` or given (``kind``);
2. *parallax*, scan input only: the occlusion filter of ``runtime.points.filter_occluded``
   drops background returns that a LiDAR mounted apart from the camera sees past foreground
   edges;
3. *base*: scattered input: the *geodesic fill*, where each pixel takes the depth of the point
   nearest along a path whose steps cost 1 (or sqrt 2) plus ``lam`` times the colour
   difference, so the fill stops at colour edges where the Euclidean nearest fill crosses them
   (:func:`reference_geodesic_fill`); scan input: IP-Basic of the unfiltered points
   (:func:`scan_base`: its near-first dilation keeps foreground over background);
4. *edge-aware filter*: normalised convolution (value and confidence) with the recursive
   domain-transform filter of Gastal & Oliveira (2011), whose edge distance adds the colour
   difference (``sigma_s / sigma_r`` per unit) and ``beta`` times the base's log-depth step, so
   depth edges stay sharp where the base has them. Scattered input: it filters the points'
   depths, and far from every point the geodesic fill takes over. Scan input: it filters the
   points' *residuals* from the base, shrunk by ``SCAN_RESIDUAL_EPS`` where the confidence is
   low, and adds them to the base;
5. the points keep their own depth; the rest is clamped to the range of the points.

Design record (``benchmarks/bm_guided_accuracy.py`` inputs: 7 frames (Middlebury, 3 KITTI,
3 NYU) x {random 1 %, random 0.1 %, Harris clusters} + 2 real KITTI LiDAR inputs; score = the
method's RMSE / MAE / edge-band RMSE divided by the better of IP-Basic and nearest fill, mean
over inputs; the NumPy reference):

* the CSPN method below (benchmarks/results/guided_accuracy.md, its ``cspn`` rows): KITTI random
  1 % MAE 498.1 mm against nearest fill's 482.9; kittidc_a LiDAR 2340 / 591 mm against
  IP-Basic's 2196 / 421 (RMSE +6.6 %, MAE +40 %); the issue also reports its depth edges
  feathered over 5-10 px (seen in images, not measured here);
* geodesic fill alone: 0.902 / 0.898 / 0.943 on the scattered inputs, better on 56 of 63
  (colour-bounded cells instead of Voronoi cells);
* geodesic fill + domain-transform filter, lam 0.1, sigma_s 20, sigma_r 100, beta 10,
  3 iterations, 2 rounds: scattered 0.852 / 0.866 / 0.885, better than both baselines on 62 of
  63 (input, metric) pairs (the exception: NYU 00100 random 1 % MAE, 1.08 against nearest fill);
* the same on the real LiDAR inputs with sigma_s 20: edges smeared across scan-line gaps;
  with the occlusion filter and sigma_s 5 (the scan defaults): 1.037 / 1.005 / 1.018, i.e.
  still 2-8 % behind IP-Basic in RMSE on kittidc_a, ahead on kittiraw_a's held-out points;
  sigma_s 3 / 8, beta 5 / 20, lam 0.3, sigma_r 50, re-inserting the points: 1.02-1.05 RMSE, none
  better on both frames, so the defaults stay (two frames are too few to tune on);
* scan input, IP-Basic as the base and the filter on the points' residuals (2026-12-03; sigma_s
  5 as before, residual shrinkage eps = 0.1): kittidc_a 2366 / 441 -> 2166 / 413 mm (IP-Basic
  2196 / 421; edge band 4393 vs 4394; delta1 98.75 vs 98.78 %), kittiraw_a held-out points
  1992 / 388 -> 1990 / 403 (IP-Basic 2000 / 409); the same on the occlusion-filtered inputs
  2219 / 418 (IP-Basic 2250 / 426) and 1995 / 406 (2007 / 412). Replacing only the guide of the
  earlier scan variant by IP-Basic gave 2244 / 433 (still behind IP-Basic: its filter of the
  depths themselves smooths what IP-Basic keeps); eps 0.001 / 0.01 / 0.05 / 0.2 / 0.4 and
  sigma_s 3 / 8, beta 30: within 1 % of the chosen setting, eps 0.1 - 0.4 beat IP-Basic on
  every scan row and metric; eps <= 0.01 lost MAE on kittidc_a;
* keeping the points' own depth at their pixels (instead of the filtered value): equal or better
  everywhere: scattered 0.851 / 0.862 / 0.884; on PSD's pseudo-hole pattern (dense depth with
  holes, 9-52 % of the pixels) 0.965 / 1.569 / 1.064 -> 0.840 / 0.959 / 0.812 (8 -> 18 wins of 21;
  the filter had blurred dense measurements); LiDAR unchanged within 0.6 %;
* scattered input, the bandwidth bound by the points' mean spacing, sigma_s = min(20, f sqrt(H W /
  n)) (2026-12-03): f 1.0 / 1.2 / 1.5 gave 0.853 / 0.841 / 0.894, 0.852 / 0.845 / 0.891 and
  0.851 / 0.852 / 0.887 and won 62, 63 and 62 of 63 pairs (sigma_s 20 for all: 0.851 / 0.862 /
  0.884, 62 of 63, losing NYU 00100 random 1 % MAE); f = 1.2 is the default. The window is narrow:
  f 1.0 ties KITTI 0000000005 Harris's edge band and f 1.5 loses NYU 00100's MAE again, so the
  closest cases (edge band 0.998, MAE 0.980) are where other frames will decide. At 0.1 % the
  bound (38 px) leaves sigma_s at 20;
* the fill's right/left passes use one neighbour (rows stay independent, one GPU launch per
  pass); making the down/up passes one-neighbour too cost 4 wins on the Harris inputs (58 / 63).

**cspn** (the earlier method; ``kernels/guided/guided.h``): PSD's structure, a classical geometry
estimate refined by CSPN with fixed cosine affinities, both ingredients taken from the frame:

* **geometry**: the nearest-neighbour fill of the sparse depth;
* **affinities**: cosine similarity of *random Fourier features* of the CIELAB colour. For
  z = lab / colour_scale and phi(z) = sqrt(2/C) * cos(W z + b) with W ~ N(0, I), b ~ U(0, 2 pi),
  <phi(z1), phi(z2)> approximates exp(-|z1 - z2|^2 / 2) (Rahimi & Recht, 2007), so the fixed
  CSPN of §4.3 becomes an edge-aware (bilateral-like) diffusion without any learned weight;
* **reach**: CSPN runs coarse to fine over a short pyramid (features and sparse depth
  average-pooled by 2^l).

Its design measurements (random sparse, seed 0, RMSE in mm; nearest fill in brackets): 5 levels,
colour scale 6: Middlebury 1 % 174 (247), but KITTI 0000000005 1 % 1695 (1420). Two levels with
colour scale 10 was the best setting of that sweep: 1374 (1420) / 2663 (3447) on KITTI,
145 (183) / 289 (352) on NYU, 186 (247) / 322 (383) on Middlebury (OpenCV's 8-bit Lab then;
:func:`srgb_to_lab` is now the one colour definition, unrounded).

Presets: the dataset presets do not choose the guided variant: one dataset arrives both as
LiDAR scans and as random samples (KITTI in the benchmark), so the input-kind detector does,
per frame; ``kind`` overrides it.

Execution: ``Pipeline('guided')`` runs the whole mode in one kernel call, ``psd_guided``
(``kernels/guided``; ``KernelLibrary.guided``). For ``dt`` it equals :func:`reference_guided_dt`
up to the rounding of exp and log (2e-5 relative; tests/kernels/test_guided_dt.py). For
``cspn`` it computes this file's :func:`guided_features` (to 5e-6), scipy's nearest fill exactly
and the PyTorch reference's coarse-to-fine CSPN (``psdrt.export.reference.guided``, to 1e-4
relative; tests/kernels/test_guided.py); the random projection (W, b) is data passed to the
kernel: :func:`rff_projection` draws it and :func:`projection_json` exports it.

NumPy only: the reference (``psdrt.export.reference.guided``) and the runtime share this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InputError


#: the guided mode's methods (psd_guided_params.method order): ``dt`` is the default
METHODS = ("dt", "cspn")
#: input kinds of the ``dt`` method (psd_guided_params.kind order): ``auto`` detects per frame
KINDS = ("auto", "scattered", "scan")


@dataclass(frozen=True)
class GuidedParams:
    """Parameters of the ``guided`` mode.

    Attributes:
        method (str): ``"dt"`` (the default: geodesic fill + domain-transform filter) or
            ``"cspn"`` (the earlier random-feature CSPN; the fields ``channels`` to ``seed``).
        kind (str): ``dt``: input kind, ``"auto"`` (detected per frame, :func:`input_kind`),
            ``"scattered"`` or ``"scan"`` (scan-line LiDAR: parallax filter, sharper filter).
        lam (float): ``dt``: colour weight of the geodesic step cost (per unit of |dR|+|dG|+|dB|).
        sigma_s (float): ``dt``: spatial bandwidth of the filter in px, scattered input, at most:
            the kernel takes min(sigma_s, 1.2 x the points' mean spacing sqrt(H W / n)).
        sigma_s_scan (float): ``dt``: the same for scan-line input.
        sigma_r (float): ``dt``: colour bandwidth of the filter (|dR|+|dG|+|dB| units).
        beta (float): ``dt``: weight of the geodesic fill's log-depth step in the edge distance.
        dt_iterations (int): ``dt``: filter iterations (1..16).
        rounds (int): ``dt``: rounds of the geodesic fill's four passes (1..16).
        occl_rx, occl_ry, occl_rel: ``dt``, scan input: the occlusion filter's window and margin
            (``runtime.points.filter_occluded``).
        channels (int): ``cspn``: random Fourier feature channels. Defaults to 32.
        colour_scale (float): ``cspn``: CIELAB distance, in OpenCV's 8-bit Lab scaling
            (L * 255 / 100), that maps to one kernel bandwidth; smaller = sharper edges.
        levels (int): ``cspn``: pyramid levels (level l works at 1 / 2^l). Defaults to 2.
        iterations (int): ``cspn``: CSPN sweeps per level. Defaults to 40.
        seed (int): ``cspn``: seed of the fixed random projection (part of the method).
    """

    method: str = "dt"
    kind: str = "auto"
    lam: float = 0.1
    sigma_s: float = 20.0
    sigma_s_scan: float = 5.0
    sigma_r: float = 100.0
    beta: float = 10.0
    dt_iterations: int = 3
    rounds: int = 2
    occl_rx: int = 4
    occl_ry: int = 8
    occl_rel: float = 0.1
    channels: int = 32
    colour_scale: float = 10.0
    levels: int = 2
    iterations: int = 40
    seed: int = 0

    def __post_init__(self):
        # the kernel library's bounds (kernels/guided/guided.cpp, dt.cpp), checked before any call
        if self.method not in METHODS:
            raise InputError(f"guided method must be one of {METHODS} (default 'dt'), got {self.method!r}")
        if self.kind not in KINDS:
            raise InputError(f"guided kind must be one of {KINDS} (default 'auto'), got {self.kind!r}")
        fin = [float(v) for v in (self.lam, self.sigma_s, self.sigma_s_scan, self.sigma_r, self.beta, self.occl_rel)]
        if not all(np.isfinite(fin)) or self.lam < 0 or self.beta < 0 or min(fin[1:4]) <= 0:
            raise InputError("guided lam and beta must be finite and >= 0, sigma_s, sigma_s_scan and sigma_r finite "
                             "and > 0 (defaults 0.1, 10, 20, 5, 100)")
        if not (1 <= self.dt_iterations <= 16 and 1 <= self.rounds <= 16):
            raise InputError(f"guided dt_iterations and rounds must be 1..16 (defaults 3 and 2), got "
                             f"{self.dt_iterations} and {self.rounds}")
        if not (0 <= self.occl_rx <= 64 and 1 <= self.occl_ry <= 64 and 0 < self.occl_rel < 1):
            raise InputError("guided occlusion window must be occl_rx 0..64, occl_ry 1..64, occl_rel in (0, 1) "
                             "(defaults 4, 8, 0.1)")
        if not self.colour_scale > 0:
            raise InputError("guided colour_scale must be > 0")
        if not 2 <= self.channels <= 64:
            raise InputError(f"guided channels must be 2..64 (default 32), got {self.channels}")
        if not 1 <= self.levels <= 16 or not 0 <= self.iterations <= 100000:
            raise InputError(f"guided levels must be 1..16 and iterations 0..100000 (defaults 2 and 40), got "
                             f"{self.levels} and {self.iterations}")


def _valid(sparse: np.ndarray) -> np.ndarray:
    return np.isfinite(sparse) & (sparse > 0)


def input_kind(sparse: np.ndarray) -> str:
    """``"scan"`` for scan-line LiDAR-like input, else ``"scattered"`` (the ``dt`` detector).

    Of the n valid points, h have a valid left or right neighbour and v an upper or lower one;
    scan iff h / n > 4 v / n + 0.05 (in integers: 20 h > 80 v + n). Measured on the development
    inputs: real KITTI LiDAR h/n 0.14-0.17, v/n 0.01; random 1 % and 0.1 % h/n <= 0.065, about
    equal to v/n; clustered Harris corners h/n and v/n both 0.74-0.99.
    """
    valid = _valid(np.asarray(sparse, np.float32))
    n = int(valid.sum())
    lr = np.zeros_like(valid)
    lr[:, 1:] |= valid[:, :-1]
    lr[:, :-1] |= valid[:, 1:]
    ud = np.zeros_like(valid)
    ud[1:] |= valid[:-1]
    ud[:-1] |= valid[1:]
    h, v = int((valid & lr).sum()), int((valid & ud).sum())
    return "scan" if 20 * h > 80 * v + n else "scattered"


def _sad(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(-1).astype(np.float32)


def reference_geodesic_fill(rgb: np.ndarray, sparse: np.ndarray, lam: float, rounds: int) -> np.ndarray:
    """NumPy reference of the ``dt`` method's colour-geodesic nearest fill (kernels/guided/dt.h).

    Each pixel takes the depth of the point with the smallest path cost, a step costing
    ``s + lam * (|dR| + |dG| + |dB|)`` (s = 1, or sqrt(2) diagonally), found by ``rounds``
    rounds of a down, an up (3 neighbours of the previous row: same column, left, right), a
    right and a left pass (1 neighbour); a strictly smaller cost wins, float32 throughout.
    """
    f32 = np.float32
    img = rgb.astype(np.int32)
    valid = sparse > 0
    lam, one, sq2 = f32(lam), f32(1.0), f32(1.41421356)
    dist = np.where(valid, f32(0), f32(np.inf)).astype(f32)
    fill = np.where(valid, sparse, 0).astype(f32)

    for _ in range(rounds):
        for ys in (range(1, len(dist)), range(len(dist) - 2, -1, -1)):
            for y in ys:
                q = y - 1 if ys.step == 1 else y + 1
                bd, bf = dist[y], fill[y]
                t = dist[q] + (one + lam * _sad(img[y], img[q]))
                m = t < bd
                bd[m], bf[m] = t[m], fill[q][m]
                t = dist[q, :-1] + (sq2 + lam * _sad(img[y, 1:], img[q, :-1]))
                m = t < bd[1:]
                bd[1:][m], bf[1:][m] = t[m], fill[q, :-1][m]
                t = dist[q, 1:] + (sq2 + lam * _sad(img[y, :-1], img[q, 1:]))
                m = t < bd[:-1]
                bd[:-1][m], bf[:-1][m] = t[m], fill[q, 1:][m]
        cost = one + lam * _sad(img[:, 1:], img[:, :-1])  # pair (x - 1, x) at [:, x - 1]
        for xs in (range(1, dist.shape[1]), range(dist.shape[1] - 2, -1, -1)):
            for x in xs:
                q = x - 1 if xs.step == 1 else x + 1
                t = dist[:, q] + cost[:, min(x, q)]
                m = t < dist[:, x]
                dist[m, x], fill[m, x] = t[m], fill[m, q]
    return fill


def reference_guided_dt(rgb: np.ndarray, sparse: np.ndarray, params: GuidedParams = GuidedParams()) -> np.ndarray:
    """NumPy reference (float32, the kernel's order of operations) of the ``dt`` method.

    kernels/guided/dt.h states the method; ``Pipeline('guided')`` (``psd_guided``) computes it,
    equal to this up to the rounding of ``expf``/``logf`` (tests/kernels/test_guided_dt.py).
    """
    from .points import reference_filter_occluded

    f32 = np.float32
    sparse = np.asarray(sparse, f32)
    valid = _valid(sparse)
    if not valid.any():
        return np.zeros(sparse.shape, f32)
    scan = params.kind == "scan" or (params.kind == "auto" and input_kind(sparse) == "scan")
    sp = np.where(valid, sparse, f32(0)).astype(f32)
    if scan:
        sp = reference_filter_occluded(sp, params.occl_rx, params.occl_ry, float(f32(params.occl_rel)))
    valid = sp > 0
    lo, hi = sp[valid].min(), sp[valid].max()
    img = rgb.astype(np.int32)
    if scan:
        # the base: IP-Basic of the unfiltered points (its near-first dilation handles parallax
        # itself); pixels it leaves empty (<= 0.1 m) take hi. The filter interpolates the
        # points' residuals from it.
        raw = np.where(_valid(sparse), sparse, f32(0)).astype(f32)
        fill = scan_base(raw, hi)
    else:
        fill = reference_geodesic_fill(rgb, sp, float(f32(params.lam)), params.rounds)
    ss = float(f32(params.sigma_s_scan if scan else params.sigma_s))
    if not scan:  # the bandwidth follows the points' mean spacing (kernels/guided/dt.h)
        ss = min(ss, SCATTERED_SPACING * np.sqrt(sp.size / int(valid.sum())))
    kc, beta = f32(ss / float(f32(params.sigma_r))), f32(params.beta)
    n = params.dt_iterations
    m0 = f32(-np.sqrt(2.0) / (ss * np.sqrt(3.0) * 2.0 ** (n - 1) / np.sqrt(4.0 ** n - 1.0)))
    lg = np.log(fill)
    wh = np.exp(m0 * ((f32(1) + kc * _sad(img[:, 1:], img[:, :-1])) + beta * np.abs(lg[:, 1:] - lg[:, :-1])))
    wv = np.exp(m0 * ((f32(1) + kc * _sad(img[1:], img[:-1])) + beta * np.abs(lg[1:] - lg[:-1])))
    v, c = np.where(valid, sp - fill if scan else sp, f32(0)).astype(f32), valid.astype(f32)
    for i in range(n):
        if i:
            wh, wv = wh * wh, wv * wv
        for a in (v, c):
            for x in range(1, a.shape[1]):
                a[:, x] += wh[:, x - 1] * (a[:, x - 1] - a[:, x])
            for x in range(a.shape[1] - 2, -1, -1):
                a[:, x] += wh[:, x] * (a[:, x + 1] - a[:, x])
            for y in range(1, len(a)):
                a[y] += wv[y - 1] * (a[y - 1] - a[y])
            for y in range(len(a) - 2, -1, -1):
                a[y] += wv[y] * (a[y + 1] - a[y])
    if scan:
        rest = fill + v / (c + f32(SCAN_RESIDUAL_EPS))
    else:
        eps = f32(1e-6)
        rest = (v + eps * fill) / (c + eps)
    return np.where(valid, sp, np.clip(rest, lo, hi)).astype(f32)


#: the ``dt`` method's scattered-input bandwidth: sigma_s = min(sigma_s, SCATTERED_SPACING x the
#: points' mean spacing sqrt(H W / n)) (kernels/guided/dt.h)
SCATTERED_SPACING = 1.2

#: the ``dt`` method's scan-input shrinkage: residuals are v / (c + SCAN_RESIDUAL_EPS), so that
#: far from the points (small confidence c) the IP-Basic base is kept (kernels/guided/dt.h)
SCAN_RESIDUAL_EPS = 0.1


def scan_base(raw: np.ndarray, hi) -> np.ndarray:
    """The ``dt`` method's base on scan input: IP-Basic (``runtime.classical.ip_basic_fill``) of
    the unfiltered points, pixels it leaves at or below 0.1 m set to ``hi`` (the filtered points'
    maximum); ``hi`` everywhere when no point exceeds 0.1 m."""
    from .classical import IP_BASIC_EPS, ip_basic_fill

    f32 = np.float32
    if not (raw > IP_BASIC_EPS).any():
        return np.full(raw.shape, hi, f32)
    ip = ip_basic_fill(raw)
    return np.where(ip > f32(IP_BASIC_EPS), ip, f32(hi)).astype(f32)


def rff_projection(params: GuidedParams) -> tuple[np.ndarray, np.ndarray]:
    """The fixed projection (W: 3 x C, b: C, float32) of the random Fourier features.

    Drawn with ``np.random.default_rng(seed)``: W ~ N(0, 1) first, then b ~ U(0, 2 pi). Cached
    per (seed, channels); the returned arrays are read-only.
    """
    return _projection(int(params.seed), int(params.channels))


@lru_cache(maxsize=16)
def _projection(seed: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, channels)).astype(np.float32)
    b = rng.uniform(0.0, 2.0 * np.pi, channels).astype(np.float32)
    w.setflags(write=False)
    b.setflags(write=False)
    return w, b


#: OpenCV's sRGB -> XYZ matrix (D65) and white point; Lab is computed from XYZ / white.
SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
D65_WHITE = np.array([0.950456, 1.0, 1.088754])


def srgb_to_lab(rgb: np.ndarray, bgr: bool = False) -> np.ndarray:
    """CIELAB of an 8-bit sRGB image in OpenCV's 8-bit scaling, as unrounded float64.

    sRGB 8-bit -> linear (IEC 61966-2-1 curve) -> XYZ (OpenCV's D65 matrix) -> CIELAB with the
    exact CIE constants ((6/29)^3 threshold, linear segment t / (3 (6/29)^2) + 4/29), then
    ``L * 255 / 100``, ``a + 128``, ``b + 128`` like ``cv2.COLOR_RGB2LAB`` on uint8, without its
    rounding to uint8 (so features vary smoothly; OpenCV's rounding moved values by up to 0.5).
    This is the one definition of the colour space: ``kernels/guided`` computes the same formula
    in float32.

    Args:
        rgb (ndarray): H x W x 3 uint8.
        bgr (bool): channel order. Defaults to False (RGB).

    Returns:
        ndarray: H x W x 3 float64 (L in [0, 255], a and b around 128).
    """
    c = rgb[..., ::-1] if bgr else rgb
    c = c.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ (SRGB_TO_XYZ / D65_WHITE[:, None]).T
    eps = (6.0 / 29.0) ** 3
    f = np.where(xyz > eps, np.cbrt(np.maximum(xyz, eps)), xyz / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = (116.0 * f[..., 1] - 16.0) * 2.55
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1]) + 128.0
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2]) + 128.0
    return lab


def guided_features(rgb: np.ndarray, params: GuidedParams = GuidedParams(), bgr: bool = False) -> np.ndarray:
    """Random Fourier features of the CIELAB colour, C x H x W float32 (readable reference).

    ``phi_c = sqrt(2 / C) * cos((lab / colour_scale) . W[:, c] + b[c])`` with ``lab`` from
    :func:`srgb_to_lab` and (W, b) from :func:`rff_projection`, evaluated in float64 and rounded
    once. ``psd_guided_features`` / ``KernelLibrary.guided_features`` compute the same in float32
    (measured difference in tests/kernels/test_guided.py).

    Args:
        rgb (ndarray): H x W x 3 uint8 image (RGB, or BGR with ``bgr=True``).
        params (GuidedParams): feature parameters.
        bgr (bool): channel order of ``rgb``. Defaults to False (RGB).

    Returns:
        ndarray: C x H x W float32 features.
    """
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        raise InputError(
            "guided features need an H x W x 3 uint8 image; convert with "
            "np.clip(img, 0, 255).astype(np.uint8) and drop any alpha channel"
        )
    h, w = rgb.shape[:2]
    lab = srgb_to_lab(rgb, bgr).reshape(-1, 3)
    pw, pb = rff_projection(params)
    proj = pw.astype(np.float64) / params.colour_scale
    amp = np.sqrt(2.0 / params.channels)
    out = np.empty((params.channels, h * w), np.float32)
    step = 1 << 16  # bounded float64 temporaries
    for i in range(0, h * w, step):
        z = lab[i : i + step] @ proj + pb.astype(np.float64)
        out[:, i : i + step] = (np.cos(z) * amp).T
    return out.reshape(params.channels, h, w)


def projection_json(params: GuidedParams = GuidedParams()) -> str:
    """The random projection of ``params`` as JSON, for C/C++ embedders of ``psd_guided``.

    ``{"channels", "seed", "colour_scale", "w": 3 x C, "b": C}`` with float32 values written with
    9 significant digits (they read back to the same float32). ``psd_guided_params.projection_w``
    is ``w`` flattened row-major, ``projection_b`` is ``b``.
    """
    import json

    w, b = rff_projection(params)
    return json.dumps({
        "channels": params.channels, "seed": params.seed, "colour_scale": params.colour_scale,
        "w": [[float(f"{v:.9g}") for v in row] for row in w], "b": [float(f"{v:.9g}") for v in b],
    })
