"""Import and build the official PSD ``DCNet`` from a local checkout, for parity tests only.

References: shenglunch/PSD network/ipde_5c_l1_rezero_un_3.py (module imports, get_depthanythingv2,
DCNet.__init__) and configs/cfg.yml; snapshot 5816c92.

The official module cannot be imported as is here: its folder is not a package, it imports
torchvision and timm at module level (no CPU torchvision build is installed), and it imports three
foundation-model packages (``.ghostnet``, ``.midas``, ``.depany``) that the DA-V2 path never uses
and that may be absent from a checkout. This loader

* never writes into the checkout (no edits, no ``__pycache__``);
* maps ``<checkout>/network`` to a private package name, so the official relative imports work and
  nothing called ``network`` lands in ``sys.modules``;
* installs stand-ins for the missing or unusable imports only while importing and constructing,
  and then removes the third-party ones again, so other tests that probe ``torchvision`` or ``timm``
  are not misled;
* builds the official config from ``configs/cfg.yml`` with Depth Anything V2 as the FM at the chosen
  encoder size and the correction-head adapter widths set to that FM's feature width.

Usage::

    net = build_official_dcnet(checkout, "vits", dav2_state_dict=None)   # random DA-V2 weights
    net.rb, net.ib, net.pb, net.mde.net   # official submodules, eval mode
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import threading
import types
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional

import torch
import torch.nn as nn

#: path of the DCNet module inside a checkout
OFFICIAL_MODULE = "network/ipde_5c_l1_rezero_un_3.py"
#: DPT ``features`` per DA-V2 encoder (upstream ``get_depthanythingv2`` model_configs); it is the
#: channel count of every path feature and therefore the correction head's adapter input width
DAV2_FEATURES = {"vits": 64, "vitb": 128, "vitl": 256, "vitg": 384}
#: DPT ``out_channels`` per DA-V2 encoder (same table upstream)
DAV2_OUT_CHANNELS = {
    "vits": (48, 96, 192, 384),
    "vitb": (96, 192, 384, 768),
    "vitl": (256, 512, 1024, 1024),
    "vitg": (1536, 1536, 1536, 1536),
}

_LOCK = threading.Lock()
_MODULE_CACHE: Dict[str, types.ModuleType] = {}


def official_checkout() -> Optional[Path]:
    """The checkout named by ``$PSD_OFFICIAL_DIR`` (via ``_support``), or None."""
    import _support

    return _support.official_psd_dir()


def official_problem(checkout: Optional[Path] = None) -> Optional[str]:
    """Why the official DCNet cannot be built here (the parity tests' skip reason), or None.

    Args:
        checkout (Path | None): checkout to check. Defaults to ``$PSD_OFFICIAL_DIR``, else
            ``../shared/official/PSD``.
    """
    import _support

    need = (OFFICIAL_MODULE, "configs/cfg.yml")
    if checkout is None:
        why = _support.official_missing("shenglunch/PSD", "PSD_OFFICIAL_DIR", "PSD", need)
        if why:
            return why
        checkout = official_checkout()
    missing = [n for n in need if not (Path(checkout) / n).is_file()]
    if missing:
        return f"{checkout} is not a shenglunch/PSD checkout (missing {', '.join(missing)})"
    if importlib.util.find_spec("yaml") is None:
        return "PyYAML is not installed (the official DCNet reads configs/cfg.yml): pip install -e '.[test]'"
    return None


def official_available(checkout: Optional[Path] = None) -> bool:
    """Whether the official DCNet can be built here (``official_problem`` is None)."""
    return official_problem(checkout) is None


# --------------------------------------------------------------------------------------------
# config


class AttrConfig(dict):
    """A dict whose keys also read as attributes, recursively (what the official code expects of
    its OmegaConf config: ``cfg.RegressBranch.resnet.dim``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"official cfg has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


def load_official_cfg(checkout: Path, encoder: str, dav2_weights: Optional[str]) -> AttrConfig:
    """Read ``configs/cfg.yml`` and point it at Depth Anything V2 with ``encoder``.

    Args:
        checkout (Path): the official checkout.
        encoder (str): 'vits', 'vitb', 'vitl' or 'vitg'.
        dav2_weights (str | None): file that the official ``get_depthanythingv2`` will ``torch.load``.

    Returns:
        AttrConfig: the official config with these overrides: ``MDEBranch.backbone =
        'depthanythingv2'``; ``MDEBranch.depany.{backbone, pretrained}`` (upstream's DA-V2
        constructor reads the ``depany`` section, not ``depanyv2``); both adapter ``layer_dim``
        lists = ``[features] * 4``; the two ``resnet.pretrained`` paths cleared so the discarded
        torchvision ResNet-18 is not loaded from the authors' disk.
    """
    import yaml

    if encoder not in DAV2_FEATURES:
        raise ValueError(f"encoder must be one of {sorted(DAV2_FEATURES)}, got {encoder!r}")
    with open(Path(checkout) / "configs" / "cfg.yml", encoding="utf-8") as f:
        cfg = AttrConfig.wrap(yaml.safe_load(f))
    width = DAV2_FEATURES[encoder]
    cfg.MDEBranch.backbone = "depthanythingv2"
    cfg.MDEBranch.depany.backbone = encoder
    cfg.MDEBranch.depany.pretrained = dav2_weights
    cfg.RegressBranch.layer_dim = [width] * 4
    cfg.CSLBranch.ImgBranch.layer_dim = [width] * 4
    cfg.RegressBranch.resnet.pretrained = None
    cfg.CSLBranch.resnet.pretrained = None
    return cfg


# --------------------------------------------------------------------------------------------
# import machinery


def _stub_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__psdrt_stub__ = True
    return module


def _unavailable(what: str):
    def factory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{what} is stubbed by tests/parity/_official.py; only the DA-V2 FM is supported")

    return factory


class _TinyResNet(nn.Module):
    """Stand-in for ``torchvision.models.resnet18``: the official DCNet builds it and discards it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 1)


def _compose(transforms: Any) -> Any:
    def apply(x: Any) -> Any:
        for t in transforms:
            x = t(x)
        return x

    return apply


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a broken install (e.g. CUDA-only wheel) counts as missing
        return False


def _third_party_stubs() -> Dict[str, types.ModuleType]:
    """Stubs for torchvision / timm, only for those that cannot be imported here."""
    stubs: Dict[str, types.ModuleType] = {}
    if not _importable("torchvision"):
        models = _stub_module("torchvision.models", resnet18=lambda *a, **k: _TinyResNet())
        transforms = _stub_module("torchvision.transforms", Compose=_compose)
        stubs["torchvision"] = _stub_module("torchvision", models=models, transforms=transforms)
        stubs["torchvision.models"] = models
        stubs["torchvision.transforms"] = transforms
    if not _importable("timm"):

        def to_2tuple(x: Any) -> Any:
            return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

        layers = _stub_module(
            "timm.models.layers", to_2tuple=to_2tuple, trunc_normal_=nn.init.trunc_normal_
        )
        models = _stub_module("timm.models", layers=layers, create_model=_unavailable("timm.create_model"))
        stubs["timm"] = _stub_module("timm", models=models)
        stubs["timm.models"] = models
        stubs["timm.models.layers"] = layers
    return stubs


def _unused_fm_stubs(package: str) -> Dict[str, types.ModuleType]:
    """Stubs for the official FM imports the DA-V2 path never uses (GhostNet, MiDaS, DA-V1).

    They are stubbed even when the checkout has them: MiDaS needs a matching timm, DA-V1 a hard-coded
    torch.hub path, and the parity tests only build DA-V2.
    """
    def pkg(name: str) -> types.ModuleType:
        module = _stub_module(name)
        module.__path__ = []  # a package, so that the dotted children resolve
        return module

    return {
        f"{package}.ghostnet": _stub_module(f"{package}.ghostnet", ghostnetv2=_unavailable("ghostnetv2")),
        f"{package}.midas": pkg(f"{package}.midas"),
        f"{package}.midas.midas_model": _stub_module(
            f"{package}.midas.midas_model", DPTDepthModel=_unavailable("MiDaS DPTDepthModel")
        ),
        f"{package}.depany": pkg(f"{package}.depany"),
        f"{package}.depany.depth_anything": pkg(f"{package}.depany.depth_anything"),
        f"{package}.depany.depth_anything.dpt": _stub_module(
            f"{package}.depany.depth_anything.dpt", DepthAnything=_unavailable("Depth Anything v1")
        ),
    }


@contextlib.contextmanager
def _temporary_modules(modules: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """Put ``modules`` into ``sys.modules`` for the duration, restoring what was there before."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    # importing would otherwise write network/__pycache__ into the checkout
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = saved


def _package_name(checkout: Path) -> str:
    return f"_psd_official_{zlib.crc32(str(checkout).encode()):08x}"


def import_official_module(checkout: Path) -> types.ModuleType:
    """Import ``network/ipde_5c_l1_rezero_un_3.py`` from ``checkout`` (cached per checkout).

    Args:
        checkout (Path): the official checkout; it is only read.

    Returns:
        module: the official module (``DCNet``, ``ResidualBranchRes``, ...).
    """
    checkout = Path(checkout).resolve()
    key = str(checkout)
    with _LOCK:
        if key in _MODULE_CACHE:
            return _MODULE_CACHE[key]
        package = _package_name(checkout)
        # The package keeps living in sys.modules under its private name: the official modules
        # resolve their relative imports through it, also lazily at construction time.
        root = types.ModuleType(package)
        root.__path__ = [str(checkout / "network")]
        root.__package__ = package
        sys.modules[package] = root
        for name, module in _unused_fm_stubs(package).items():
            sys.modules[name] = module
        with _temporary_modules(_third_party_stubs()), _no_bytecode():
            module = importlib.import_module(f"{package}.ipde_5c_l1_rezero_un_3")
        _MODULE_CACHE[key] = module
        return module


def random_dav2_state_dict(checkout: Path, encoder: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """State dict of a randomly initialised official DA-V2 of the given size (the checkout's copy).

    Args:
        checkout (Path): the official checkout.
        encoder (str): 'vits', 'vitb', 'vitl' or 'vitg'.
        seed (int): torch seed for the initialisation. Defaults to 0.

    Returns:
        dict[str, torch.Tensor]: keys as in the released DA-V2 checkpoints.
    """
    module = import_official_module(checkout)
    with _temporary_modules(_third_party_stubs()), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = module.DepthAnythingV2(
            encoder=encoder, features=DAV2_FEATURES[encoder], out_channels=list(DAV2_OUT_CHANNELS[encoder])
        )
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def build_official_dcnet(
    checkout: Path,
    encoder: str = "vits",
    dav2_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
    *,
    seed: int = 0,
) -> nn.Module:
    """Construct the official DCNet with a Depth Anything V2 FM, in eval mode.

    The correction head gets the official (Kaiming) initialisation drawn under ``seed``; use
    ``psdrt.export.models.random_weights.randomize_head_`` for test-friendly weights.

    Args:
        checkout (Path): local checkout of shenglunch/PSD; it is only read.
        encoder (str): DA-V2 size, 'vits', 'vitb', 'vitl' or 'vitg'. Defaults to 'vits'.
        dav2_state_dict (Mapping | None): DA-V2 weights with the released keys (no ``mde.net.``
            prefix). Defaults to a random official DA-V2 of that size.
        seed (int): torch seed for the construction. Defaults to 0.

    Returns:
        nn.Module: the official ``DCNet`` (``.mde.net`` is the DA-V2, ``.rb/.ib/.pb`` the head).
    """
    checkout = Path(checkout)
    module = import_official_module(checkout)
    if dav2_state_dict is None:
        dav2_state_dict = random_dav2_state_dict(checkout, encoder, seed)
    with tempfile.TemporaryDirectory(prefix="psd_official_") as tmp:
        weights = os.path.join(tmp, f"depth_anything_v2_{encoder}.pth")
        torch.save(dict(dav2_state_dict), weights)
        cfg = load_official_cfg(checkout, encoder, weights)
        with _temporary_modules(_third_party_stubs()), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = module.DCNet(cfg)
    return net.eval()
