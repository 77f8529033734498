"""The one table of model variants, checkpoint file names and checkpoint key renames.

References: DepthAnything/Depth-Anything-V2 run.py (``model_configs``) and
depth_anything_v2/dpt.py (``intermediate_layer_idx``); the numbers are facts about the released
checkpoints, not code.

Stdlib only (style guide G7/file map): the checkpoint loader and the CLI read this module without
importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

#: DINOv2 patch size used by every released Depth Anything V2 encoder.
PATCH_SIZE = 14
#: Training image size of the DINOv2 encoders; fixes ``pos_embed`` at 1 + 37 * 37 tokens.
IMG_SIZE = 518
#: Released checkpoint file name, formatted with the encoder key (``vits`` ...).
CHECKPOINT_FILE_PATTERN = "depth_anything_v2_{encoder}.pth"

#: Old prefix -> new prefix, applied by :func:`apply_checkpoint_renames`. Empty because our module
#: attribute names equal the released keys; this stays the single place to add a rename if a module
#: is ever restructured (G7).
CHECKPOINT_RENAMES: dict[str, str] = {}


@dataclass(frozen=True)
class Dav2Config:
    """One Depth Anything V2 variant: DINOv2 encoder plus DPT head hyper-parameters.

    Args:
        embed_dim (int): Token width of the ViT.
        depth (int): Number of transformer blocks.
        num_heads (int): Attention heads per block.
        ffn_layer (str): ``"mlp"`` (GELU MLP) or ``"swiglufused"`` (SwiGLU, ViT-g only).
        features (int): Channel width of the DPT fusion path (also of the returned features).
        out_channels (tuple[int, int, int, int]): Widths of the four DPT projections.
        layer_idx (tuple[int, int, int, int]): Blocks whose outputs feed the DPT head.
        license (str): Licence of the released weights.
    """

    embed_dim: int
    depth: int
    num_heads: int
    ffn_layer: str
    features: int
    out_channels: tuple[int, int, int, int]
    layer_idx: tuple[int, int, int, int]
    license: str


MODEL_CONFIGS: dict[str, Dav2Config] = {
    "vits": Dav2Config(
        embed_dim=384, depth=12, num_heads=6, ffn_layer="mlp",
        features=64, out_channels=(48, 96, 192, 384), layer_idx=(2, 5, 8, 11),
        license="Apache-2.0",
    ),
    "vitb": Dav2Config(
        embed_dim=768, depth=12, num_heads=12, ffn_layer="mlp",
        features=128, out_channels=(96, 192, 384, 768), layer_idx=(2, 5, 8, 11),
        license="CC BY-NC 4.0",
    ),
    "vitl": Dav2Config(
        embed_dim=1024, depth=24, num_heads=16, ffn_layer="mlp",
        features=256, out_channels=(256, 512, 1024, 1024), layer_idx=(4, 11, 17, 23),
        license="CC BY-NC 4.0",
    ),
    "vitg": Dav2Config(
        embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglufused",
        features=384, out_channels=(1536, 1536, 1536, 1536), layer_idx=(9, 19, 29, 39),
        license="CC BY-NC 4.0",
    ),
}

def checkpoint_file(encoder: str) -> str:
    """Released checkpoint file name of an encoder, e.g. ``depth_anything_v2_vits.pth``.

    Args:
        encoder (str): A :data:`MODEL_CONFIGS` key.

    Returns:
        str: The file name (no directory).
    """
    if encoder not in MODEL_CONFIGS:
        raise KeyError(f"unknown encoder {encoder!r}; expected one of {sorted(MODEL_CONFIGS)}")
    return CHECKPOINT_FILE_PATTERN.format(encoder=encoder)


_BLOCK_KEY = re.compile(r"^(?P<prefix>.*?)pretrained\.blocks\.(?P<idx>\d+)\.")


def detect_dav2_encoder(shapes: Mapping[str, tuple]) -> str | None:
    """Recognise the Depth Anything V2 encoder size from a state_dict's key shapes.

    Keys may carry an outer prefix (PSD stores the model under ``mde.net.``); the prefix is taken
    from the ``pretrained.pos_embed`` key and must be the same for the block keys.

    Args:
        shapes (Mapping[str, tuple]): Key -> shape (``torch.Size`` works, it is a tuple).

    Returns:
        str | None: ``"vits"``, ``"vitb"``, ``"vitl"`` or ``"vitg"``; None when the keys are not a
        single DA-V2 model, or its embed dim / block count / FFN type matches no table row.
    """
    pos_keys = [k for k in shapes if k.endswith("pretrained.pos_embed")]
    if len(pos_keys) != 1:
        return None
    prefix = pos_keys[0][: -len("pretrained.pos_embed")]
    pos_shape = tuple(shapes[pos_keys[0]])
    if len(pos_shape) != 3:
        return None
    embed_dim = pos_shape[-1]
    cls_shape = shapes.get(prefix + "pretrained.cls_token")
    if cls_shape is not None and tuple(cls_shape)[-1] != embed_dim:
        return None
    blocks = set()
    for key in shapes:
        m = _BLOCK_KEY.match(key)
        if m and m.group("prefix") == prefix:
            blocks.add(int(m.group("idx")))
    swiglu = any(k.startswith(prefix + "pretrained.blocks.0.mlp.w12.") for k in shapes)
    for name, cfg in MODEL_CONFIGS.items():
        if (
            cfg.embed_dim == embed_dim
            and blocks == set(range(cfg.depth))
            and swiglu == (cfg.ffn_layer == "swiglufused")
        ):
            return name
    return None


def apply_checkpoint_renames(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Return ``state_dict`` with every :data:`CHECKPOINT_RENAMES` prefix rewritten.

    Args:
        state_dict (Mapping[str, object]): Released checkpoint entries (values are passed through).

    Returns:
        dict[str, object]: A new dict in the same order; keys without a listed prefix are unchanged.
    """
    out: dict[str, object] = {}
    for key, value in state_dict.items():
        for old, new in CHECKPOINT_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
