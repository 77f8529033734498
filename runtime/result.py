"""The result type of every pipeline: dense metric depth plus what the caller needs to trust it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DepthResult:
    """Dense depth for one frame.

    Attributes:
        depth (ndarray): H x W float32 metres, finite everywhere.
        mode (str): ``'psd'``, ``'propagate'`` or ``'guided'``.
        stages (dict[str, ndarray]): intermediate H x W maps by name (mode dependent, e.g.
            ``depth_polyfit``, ``depth_diff``, ``depth_pix``); empty unless requested.
        info (dict): facts about this frame. ``alignment`` is ``'ok'`` or ``'degenerate'``
            (fewer than 2 sparse points strictly between the min and max depth: the foundation
            model's scale cannot be determined and the official method falls back to a constant
            depth equal to the largest sparse value, so the output carries only what propagation
            recovers from the points themselves); ``points`` is the number of sparse points.
    """

    depth: np.ndarray
    mode: str
    stages: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def depth_mm(self) -> np.ndarray:
        """uint16 millimetres (ROS 16UC1): 0 = invalid, values above 65.535 m saturate at 65535.

        Saturation is lossy (7.8 % of a KITTI frame lies beyond 65.535 m): count the clipped pixels
        with ``psdrt.runtime.outputs.png16_saturation`` and keep ``depth`` (float32 metres) where the
        far range matters.
        """
        mm = np.rint(self.depth.astype(np.float64) * 1000.0)
        mm[~np.isfinite(mm) | (mm < 0)] = 0
        return np.clip(mm, 0, 65535).astype(np.uint16)
