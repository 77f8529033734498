"""Guidance features and parameters of the ``guided`` mode (no foundation model, no weights).

The ``guided`` mode keeps PSD's structure, a classical geometry estimate refined by CSPN with
fixed cosine affinities, but takes both ingredients from the frame itself:

* **geometry**: the nearest-neighbour fill of the sparse depth (on random patterns the stronger
  of the two classical fills; IP-Basic is tuned for LiDAR scan lines);
* **affinities**: cosine similarity of *random Fourier features* of the CIELAB colour. For
  z = lab / colour_scale and phi(z) = sqrt(2/C) * cos(W z + b) with W ~ N(0, I), b ~ U(0, 2 pi),
  <phi(z1), phi(z2)> approximates exp(-|z1 - z2|^2 / 2) (Rahimi & Recht, 2007), so the fixed
  CSPN of §4.3 becomes an edge-aware (bilateral-like) diffusion without any learned weight;
* **reach**: CSPN runs coarse to fine over a short pyramid (features and sparse depth
  average-pooled by 2^l); the nearest fill already bridges the gaps between points, so the
  diffusion only has to move depth edges onto colour edges, locally.

Design measurements (random sparse, seed 0, RMSE in mm, reference implementation; nearest fill
in brackets). 5 levels, colour scale 6: Middlebury 1 % 174 (247), but KITTI 0000000005 1 % 1695
(1420): long-range diffusion blends foreground and background across LiDAR-scale depth ranges.
Diffusing inverse depth instead was worse everywhere. Two levels with colour scale 10 was the only
setting of the sweep that beat the nearest fill on every frame tried (KITTI 0000000005, NYU 00000,
Middlebury; 1 % and 0.1 %): 1374 (1420) / 2663 (3447) on KITTI, 145 (183) / 289 (352) on NYU,
186 (247) / 322 (383) on Middlebury. Those are the defaults below;
``benchmarks/bm_guided_accuracy.py`` measures them on all frames.

(Those design numbers were taken with OpenCV's 8-bit Lab, which rounds to integers and
approximates the curves; :func:`srgb_to_lab` is now the one colour definition, unrounded, and moved
the benchmark RMSEs by a few mm: ``benchmarks/results/guided_accuracy.md``.)

Execution: ``Pipeline('guided')`` runs the whole mode in one kernel call, ``psd_guided``
(``kernels/guided``; ``KernelLibrary.guided``), which computes the same definitions in float32:
this file's :func:`guided_features` (to 5e-6 with the defaults), scipy's nearest fill exactly
(``nearest_fill``, ties included) and the PyTorch reference's coarse-to-fine CSPN
(``psdrt.export.reference.guided``, to 1e-4 relative; tests/kernels/test_guided.py). The random
projection (W, b) is data passed to the kernel: :func:`rff_projection` draws it and
:func:`projection_json` exports it for C/C++ embedders.

NumPy only: the reference (``psdrt.export.reference.guided``) and the runtime share this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class GuidedParams:
    """Parameters of the ``guided`` mode.

    Attributes:
        channels (int): random Fourier feature channels. Defaults to 32.
        colour_scale (float): CIELAB distance, in OpenCV's 8-bit Lab scaling (L * 255 / 100),
            that maps to one kernel bandwidth; smaller = sharper edges. Defaults to 10.
        levels (int): pyramid levels (level l works at 1 / 2^l). Defaults to 2.
        iterations (int): CSPN sweeps per level. Defaults to 40.
        seed (int): seed of the fixed random projection (part of the method, not per frame).
    """

    channels: int = 32
    colour_scale: float = 10.0
    levels: int = 2
    iterations: int = 40
    seed: int = 0

    def __post_init__(self):
        if not self.colour_scale > 0:
            raise InputError("guided colour_scale must be > 0")
        # the kernel library's bounds (kernels/guided/guided.cpp), checked before any call
        if not 2 <= self.channels <= 64:
            raise InputError(f"guided channels must be 2..64 (default 32), got {self.channels}")
        if not 1 <= self.levels <= 16 or not 0 <= self.iterations <= 100000:
            raise InputError(f"guided levels must be 1..16 and iterations 0..100000 (defaults 2 and 40), got "
                             f"{self.levels} and {self.iterations}")


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
