"""Per-dataset propagation presets: the *effective* values of the official code.

The official ``get_knn`` / ``post_processing`` / ``dual_diffusion`` if-chains silently fall back to
defaults for datasets they do not list (k = 3, knn_rate = 0.5, no post-processing), so several
values in the released ``cfg.yml`` never take effect. This table holds what actually runs
(``docs/psd_method.md`` §4.6), keyed by the dataset names the official code uses.

Stdlib only: the runtime, the kernels' Python binding and the reference all read it. It is the
one definition: the C library's table (``runtime/capi/presets_table.h``, ``psd_preset_get`` and the
sessions) is generated from it by ``c_table()``, and tests/capi/test_session_api.py checks that the
committed header is its current output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InputError

#: propagation modes of the dual-space propagation (§4.4)
MODES = ("3D-2D", "3D+2D", "2D-3D")
#: camera models for back-projection (§4.1)
CAMERAS = ("pinhole", "360", "MEI")


@dataclass(frozen=True)
class PropagationPreset:
    """Hyper-parameters of the parameter-free propagation and post-processing for one dataset.

    Attributes:
        name (str): dataset key as the official code spells it (``"NYUv2"``, ``"KITTI"``...).
        k (int): neighbours kept by the 3D kNN (out of the 2k nearest).
        rate (float): fraction of empty 1/4-resolution cells updated by the kNN; < 1 is random.
        candidates (int): cap on kNN candidate cells (0 = all sparse cells).
        mode (str): one of ``MODES``.
        post_iters (int): post-processing CSPN sweeps; 0 = re-inject sparse only, -1 = none.
        cam (str): ray model for back-projection, one of ``CAMERAS``.
        scale (int): downsampling factor of the 3D stage (fixed at 4 in the official config).
        iters_quarter (int): CSPN sweeps at 1/4 resolution.
        iters_full (int): CSPN sweeps at full resolution.
        min_depth (float): the dataset's configured depth range (used for evaluation and by the
            non-default 'fixed' alignment, never by the default adaptive alignment).
        max_depth (float): see ``min_depth``.
    """

    name: str
    k: int = 1
    rate: float = 1.0
    candidates: int = 0
    mode: str = "3D-2D"
    post_iters: int = 0
    cam: str = "pinhole"
    scale: int = 4
    iters_quarter: int = 3
    iters_full: int = 3
    min_depth: float = 0.1
    max_depth: float = 10.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown propagation mode {self.mode!r}; use one of {MODES}")
        if self.cam not in CAMERAS:
            raise InputError(f"unknown camera model {self.cam!r}; use one of {CAMERAS}")
        if self.k < 1:
            raise InputError(f"k must be >= 1 (got {self.k})")
        if not 0.0 < self.rate <= 1.0:
            raise InputError(f"rate must be in (0, 1] (got {self.rate})")
        if self.candidates < 0:
            raise InputError(f"candidates must be >= 0 (got {self.candidates}); 0 means all")
        if self.scale != 4:
            raise InputError("only scale 4 is supported (the official configuration)")
        if self.iters_quarter < 0 or self.iters_full < 0:
            raise InputError("CSPN iteration counts must be >= 0")

    @property
    def deterministic(self) -> bool:
        """True when the official behaviour is seed-independent (rate 1 and no candidate cap)."""
        return self.rate >= 1.0 and self.candidates == 0

    def replace(self, **overrides) -> "PropagationPreset":
        """A copy with explicit overrides, validated like the original."""
        return dataclasses.replace(self, **overrides)


def _p(name, lo, hi, **kw):
    return PropagationPreset(name=name, min_depth=lo, max_depth=hi, **kw)


#: Effective per-dataset values (§4.6); depth ranges from §1.3.
PRESETS: dict[str, PropagationPreset] = {
    p.name: p
    for p in (
        _p("NYUv2", 0.1, 10.0),
        _p("KITTI", 0.5, 90.0),
        _p("HYPERSIM", 0.1, 10.0),
        _p("DIODEi", 0.1, 100.0),
        _p("DIODEo", 1.0, 250.0),
        _p("SCANNET", 0.1, 10.0),
        _p("MIDDLEBURY", 0.1, 20.0),
        _p("ETH3D", 0.5, 10.0),
        _p("VOID1500", 0.1, 10.0, post_iters=1),
        _p("SUNRGBD", 0.1, 40.0, post_iters=6),
        _p("DrivingStereo", 1.0, 130.0, post_iters=6),
        _p("ARGOVERSE", 1.0, 200.0, rate=0.3, candidates=8000, post_iters=0),
        _p("VKITTI2", 0.5, 120.0, k=3, mode="3D+2D", post_iters=8),
        # the four below are missing from the official if-chains: defaults k=3, rate=0.5
        _p("DIMLi", 0.5, 8.0, k=3, rate=0.5, post_iters=6),
        _p("Cityscape", 1.0, 250.0, k=3, rate=0.5, post_iters=6),
        _p("TOFDC", 0.1, 6.0, k=3, rate=0.5, post_iters=1),
        # HAMMER's loader is missing from the snapshot, so its range is unknown: placeholder
        _p("HAMMER", 0.1, 10.0, k=3, rate=0.5, post_iters=6),
        _p("Stanford", 0.1, 10.0, k=3, rate=0.5, post_iters=-1, cam="360"),
        _p("KITTI360", 0.1, 80.0, k=3, rate=0.5, post_iters=-1, cam="MEI"),
        # training-only mixed set; listed for completeness
        _p("NK", 0.1, 90.0, post_iters=-1),
    )
}

#: what the official code does for a dataset name it does not know
DEFAULT_PRESET = PropagationPreset(name="default", k=3, rate=0.5, post_iters=-1)

_ALIASES = {
    "nyu": "NYUv2", "nyuv2": "NYUv2", "kitti": "KITTI", "kitti_dc": "KITTI",
    "middlebury": "MIDDLEBURY", "void": "VOID1500", "hypersim": "HYPERSIM",
    "diode_in": "DIODEi", "diode-in": "DIODEi", "diode_out": "DIODEo", "diode-out": "DIODEo",
    "sunrgbd": "SUNRGBD", "sun_rgbd": "SUNRGBD", "scannet": "SCANNET", "eth3d": "ETH3D",
    "drivingstereo": "DrivingStereo", "argoverse": "ARGOVERSE", "vkitti2": "VKITTI2",
    "diml": "DIMLi", "cityscapes": "Cityscape", "tofdc": "TOFDC", "stanford": "Stanford",
    "kitti360": "KITTI360", "kitti-360": "KITTI360",
}


def get_preset(name: str, **overrides) -> PropagationPreset:
    """Look up a dataset preset by its official name or a common alias, with optional overrides.

    Args:
        name (str): e.g. ``"NYUv2"``, ``"kitti"``, ``"Middlebury"``; ``"default"`` gives the
            official fallback for unknown datasets.
        **overrides: field values to replace (``k=1``, ``post_iters=-1``...).

    Returns:
        PropagationPreset: the validated preset.

    Raises:
        InputError: unknown name or invalid override.
    """
    if name in PRESETS:
        preset = PRESETS[name]
    elif name.lower() in _ALIASES:
        preset = PRESETS[_ALIASES[name.lower()]]
    elif name.lower() == "default":
        preset = DEFAULT_PRESET
    else:
        known = ", ".join(sorted(PRESETS))
        raise InputError(f"unknown dataset preset {name!r}; use one of: {known}, or 'default'")
    return preset.replace(**overrides) if overrides else preset


def c_table() -> str:
    """Text of ``runtime/capi/presets_table.h``: ``PRESETS``, ``DEFAULT_PRESET`` and the aliases as
    C rows for ``runtime/capi/presets.cpp``. Regenerate with ``python -c "from psdrt.runtime.presets
    import c_table; print(c_table(), end='')" > runtime/capi/presets_table.h`` after editing the table."""
    mode = {"3D-2D": "M32", "3D+2D": "MP", "2D-3D": "M23"}
    cam = {"pinhole": "PIN", "360": "EQ", "MEI": "MEI"}

    def row(p: PropagationPreset) -> str:
        assert (p.scale, p.iters_quarter, p.iters_full) == (4, 3, 3), p.name  # fixed in the C rows
        return (f'{{"{p.name}", {p.min_depth!r}, {p.max_depth!r}, {p.k}, {p.rate!r}, {p.candidates}, '
                f"{mode[p.mode]}, {p.post_iters}, {cam[p.cam]}}}")

    lines = ["// Generated by psdrt.runtime.presets.c_table() from the Python table (the one definition);",
             "// tests/capi/test_session_api.py checks that this file is its current output. Do not edit.",
             "// name, min_depth, max_depth, k, rate, candidates, mode, post_iters, camera",
             "#pragma once", "", "constexpr Row kRows[] = {"]
    lines += [f"    {row(p)}," for p in PRESETS.values()]
    lines += ["};", "// DEFAULT_PRESET: what the official code does for an unknown dataset",
              f"constexpr Row kDefault = {row(DEFAULT_PRESET)};", "", "constexpr Alias kAliases[] = {"]
    lines += [f'    {{"{a}", "{n}"}},' for a, n in _ALIASES.items()]
    lines += ["};", ""]
    return "\n".join(lines)
