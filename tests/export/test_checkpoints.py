"""Checkpoint formats: official PSD, official Depth Anything V2, psdrt; strict loading and errors."""

import pickle

import pytest
import torch

from psdrt.export.checkpoints import (
    inspect_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
    save_official_psd,
)
from psdrt.export.models.depth_anything_v2 import DepthAnythingV2
from psdrt.export.models.psd import PSDModel
from psdrt.export.models.random_weights import randomize_head_
from psdrt.runtime.errors import CheckpointError


class Evil:
    """An arbitrary Python object: refused by torch.load(weights_only=True)."""


@pytest.fixture(scope="module")
def psd_vits():
    torch.manual_seed(0)
    return randomize_head_(PSDModel("vits"), seed=1).eval()


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("data_parallel", [False, True])
def test_official_psd_round_trip(psd_vits, tmp_path, data_parallel):
    path = tmp_path / "checkpoint_000044.ckpt"
    save_official_psd(psd_vits, path, data_parallel=data_parallel)
    model, info = load_model(path)
    assert isinstance(model, PSDModel)
    assert (info.format, info.kind, info.encoder, info.epoch) == ("psd-official", "psd", "vits", 44)
    assert info.has_optimizer and info.stripped_module_prefix == data_parallel
    assert info.licence == "Apache-2.0"
    _same_state(model, psd_vits)


def test_psd_checkpoint_gives_its_foundation_model(psd_vits, tmp_path):
    path = tmp_path / "psd.ckpt"
    save_official_psd(psd_vits, path)
    fm, info = load_model(path, kind="dav2")
    assert isinstance(fm, DepthAnythingV2)
    _same_state(fm, psd_vits.foundation)


def test_official_dav2_and_psdrt_formats(psd_vits, tmp_path):
    dav2 = psd_vits.foundation
    official = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(dav2.state_dict(), official)
    model, info = load_model(official)
    assert (info.format, info.kind, info.encoder) == ("dav2-official", "dav2", "vits")
    _same_state(model, dav2)
    ours = tmp_path / "psd_vits.psdrt.pt"
    save_checkpoint(psd_vits, ours)
    model, info = load_model(ours)
    assert info.format == "psdrt" and info.kind == "psd"
    _same_state(model, psd_vits)
    # a foundation-model-only file cannot run the 'psd' mode
    with pytest.raises(CheckpointError, match="propagate"):
        load_model(official, kind="psd")


def test_mismatch_lists_keys_and_describes_file(psd_vits, tmp_path):
    sd = psd_vits.state_dict()
    sd.pop("rb.regressor.1.conv.weight")
    sd["rb.extra.weight"] = torch.zeros(1)
    sd["pb.predict_global.1.conv.bias"] = torch.zeros(7)
    path = tmp_path / "broken.ckpt"
    torch.save({"epoch": 1, "model": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "rb.regressor.1.conv.weight" in msg
    assert "unexpected keys (1)" in msg and "rb.extra.weight" in msg
    assert "shape mismatches (1)" in msg and "pb.predict_global.1.conv.bias" in msg
    assert "Depth Anything V2 vits" in msg  # what the file looks like


def test_encoder_mismatch_is_reported(psd_vits, tmp_path):
    path = tmp_path / "psd.ckpt"
    save_official_psd(psd_vits, path)
    with pytest.raises(CheckpointError, match="vitl was requested"):
        load_model(path, encoder="vitl")


def test_corrupt_and_unsafe_files(tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="download it again"):
        read_checkpoint(bad)
    unsafe = tmp_path / "pickled.pth"

    with open(unsafe, "wb") as fh:
        torch.save({"model": Evil()}, fh, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    torch.save({"foo.weight": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointError, match="neither a PSD nor a Depth Anything V2"):
        read_checkpoint(junk)


def test_midas_psd_checkpoint_is_refused(tmp_path):
    sd = {"mde.net.pretrained.model.patch_embed.proj.weight": torch.zeros(2), "rb.conv1.0.conv.weight": torch.zeros(1)}
    path = tmp_path / "psd_m.ckpt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="MiDaS"):
        read_checkpoint(path)


def test_inspect_describes(psd_vits, tmp_path):
    path = tmp_path / "psd.ckpt"
    save_official_psd(psd_vits, path)
    text = inspect_checkpoint(path).describe()
    assert "PSD (foundation model + correction head)" in text
    assert "Depth Anything V2 vits" in text and "Apache-2.0" in text and "epoch:        44" in text


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("payload, refused", [(RunsCode, "posix.system"), (Evil, "Evil")])
def test_unsafe_pickles_are_reported_as_unsafe_not_corrupt(tmp_path, payload, refused):
    path = tmp_path / "checkpoint_000044.ckpt"
    torch.save({"model": payload()}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    # torch 2.13 words the refusal "unsupported GLOBAL posix.system ... is blocked" for os.system
    assert "unsafe" in msg and "weights_only=True" in msg and refused in msg and "arbitrary code" in msg
    assert "corrupt" not in msg and "download it again" not in msg


def test_damaged_pickle_is_still_corrupt(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01\xff\xff")  # an invalid pickle opcode
    with pytest.raises(CheckpointError, match=r"truncated or corrupt download.*Unsupported operand"):
        read_checkpoint(path)


def test_a_directory_is_not_reported_as_missing(tmp_path):
    d = tmp_path / "x.ckpt"
    d.mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file") as err:
        load_model(d)
    assert "not found" not in str(err.value)
    torch.save({"a.weight": torch.zeros(1)}, d / "checkpoint_000044.ckpt")
    with pytest.raises(CheckpointError, match="holds checkpoint_000044.ckpt"):
        read_checkpoint(d)
