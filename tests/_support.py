"""Helpers shared by the test modules (import as ``_support``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared KITTI/NYU frames: $PSD_SHARED_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("PSD_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if (path / "kitti").is_dir() and (path / "nyu").is_dir() else None


SHARED_DATA = shared_data_dir()

#: skip marker for tests that read the shared real frames (absent in a user's clone)
requires_shared_data = pytest.mark.skipif(
    SHARED_DATA is None, reason="shared KITTI/NYU frames not found (set PSD_SHARED_DATA)"
)


def official_psd_dir() -> Path | None:
    """Local checkout of shenglunch/PSD for parity tests ($PSD_OFFICIAL_DIR), or None."""
    env = os.environ.get("PSD_OFFICIAL_DIR")
    return Path(env) if env and Path(env).is_dir() else None


def official_dav2_dir() -> Path | None:
    """Local checkout of DepthAnything/Depth-Anything-V2 for parity tests ($PSD_DAV2_OFFICIAL_DIR)."""
    env = os.environ.get("PSD_DAV2_OFFICIAL_DIR")
    return Path(env) if env and Path(env).is_dir() else None
