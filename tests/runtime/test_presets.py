"""Per-dataset presets hold the official code's *effective* values (docs §4.6), not cfg.yml's."""

import pytest

from psdrt.runtime.errors import InputError
from psdrt.runtime.presets import PRESETS, get_preset

# dataset: (k, rate, candidates, mode, post_iters, cam) -- docs/psd_method.md §4.6
EFFECTIVE = {
    "NYUv2": (1, 1.0, 0, "3D-2D", 0, "pinhole"),
    "KITTI": (1, 1.0, 0, "3D-2D", 0, "pinhole"),
    "MIDDLEBURY": (1, 1.0, 0, "3D-2D", 0, "pinhole"),
    "VOID1500": (1, 1.0, 0, "3D-2D", 1, "pinhole"),
    "SUNRGBD": (1, 1.0, 0, "3D-2D", 6, "pinhole"),
    "DrivingStereo": (1, 1.0, 0, "3D-2D", 6, "pinhole"),
    "ARGOVERSE": (1, 0.3, 8000, "3D-2D", 0, "pinhole"),
    "VKITTI2": (3, 1.0, 0, "3D+2D", 8, "pinhole"),
    # cfg.yml says k = 12 / 2 / 8 / 1 / 1 for these; the if-chains never read it
    "DIMLi": (3, 0.5, 0, "3D-2D", 6, "pinhole"),
    "Cityscape": (3, 0.5, 0, "3D-2D", 6, "pinhole"),
    "TOFDC": (3, 0.5, 0, "3D-2D", 1, "pinhole"),
    "Stanford": (3, 0.5, 0, "3D-2D", -1, "360"),
    "KITTI360": (3, 0.5, 0, "3D-2D", -1, "MEI"),
}


@pytest.mark.parametrize("name", sorted(EFFECTIVE))
def test_effective_values(name):
    p = PRESETS[name]
    assert (p.k, p.rate, p.candidates, p.mode, p.post_iters, p.cam) == EFFECTIVE[name]
    assert p.deterministic == (p.rate == 1.0 and p.candidates == 0)


def test_aliases_overrides_and_errors():
    assert get_preset("kitti") is PRESETS["KITTI"]
    assert get_preset("Middlebury").name == "MIDDLEBURY"
    assert get_preset("KITTI", post_iters=2).post_iters == 2
    assert get_preset("default").k == 3 and get_preset("default").post_iters == -1
    with pytest.raises(InputError, match="unknown dataset preset"):
        get_preset("Mars")
    with pytest.raises(InputError, match="rate"):
        get_preset("KITTI", rate=0.0)
    with pytest.raises(InputError, match="mode"):
        get_preset("KITTI", mode="3D")
