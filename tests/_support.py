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


#: the shared real-LiDAR frame (KITTI depth completion crop with its raw LiDAR map), or None when absent
SHARED_LIDAR = (SHARED_DATA / "lidar"
                if SHARED_DATA is not None and (SHARED_DATA / "lidar" / "kittidc_a_lidar.png").is_file() else None)

#: skip marker for tests that read the shared real-LiDAR frame
requires_shared_lidar = pytest.mark.skipif(
    SHARED_LIDAR is None, reason="shared real-LiDAR frame lidar/kittidc_a_lidar.png not found (set PSD_SHARED_DATA)"
)


#: where the official code snapshots sit beside a checkout (CI has them; a user's clone does not)
OFFICIAL_SNAPSHOTS = REPO_ROOT.parent / "shared" / "official"


def _official_dir(env_name: str, snapshot: str) -> Path | None:
    env = os.environ.get(env_name)
    path = Path(env) if env else OFFICIAL_SNAPSHOTS / snapshot
    return path if path.is_dir() else None


def official_psd_dir() -> Path | None:
    """Checkout of shenglunch/PSD for parity tests: $PSD_OFFICIAL_DIR, else ../shared/official/PSD."""
    return _official_dir("PSD_OFFICIAL_DIR", "PSD")


def official_dav2_dir() -> Path | None:
    """Checkout of DepthAnything/Depth-Anything-V2: $PSD_DAV2_OFFICIAL_DIR, else
    ../shared/official/Depth-Anything-V2."""
    return _official_dir("PSD_DAV2_OFFICIAL_DIR", "Depth-Anything-V2")


def official_missing(what: str, env_name: str, snapshot: str, need: tuple = ()) -> str | None:
    """Why an official-code parity test cannot run here (its skip reason), or None.

    ``need`` lists files the checkout must hold."""
    path = _official_dir(env_name, snapshot)
    if path is None:
        env = os.environ.get(env_name)
        return (f"{env_name}={env} is not a folder" if env else
                f"no {what} checkout: set {env_name}, or place its snapshot at {OFFICIAL_SNAPSHOTS / snapshot}")
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        return f"{path} is not a {what} checkout (missing {', '.join(missing)})"
    return None
