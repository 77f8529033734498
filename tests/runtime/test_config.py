"""Tests of psdrt.runtime.config: the PSD_* environment parsers."""

from __future__ import annotations

from pathlib import Path

import pytest

from psdrt.runtime import config
from psdrt.runtime.errors import InputError


def test_num_threads(monkeypatch):
    monkeypatch.delenv("PSD_NUM_THREADS", raising=False)
    assert config.num_threads() is None
    monkeypatch.setenv("PSD_NUM_THREADS", " 4 ")
    assert config.num_threads() == 4
    for bad in ("0", "two", "1.5"):
        monkeypatch.setenv("PSD_NUM_THREADS", bad)
        with pytest.raises(InputError, match="PSD_NUM_THREADS"):
            config.num_threads()


def test_log_level(monkeypatch):
    monkeypatch.delenv("PSD_LOG_LEVEL", raising=False)
    assert config.log_level() == "WARNING"
    monkeypatch.setenv("PSD_LOG_LEVEL", "debug")
    assert config.log_level() == "DEBUG"
    monkeypatch.setenv("PSD_LOG_LEVEL", "loud")
    with pytest.raises(InputError, match="DEBUG, INFO"):
        config.log_level()


def test_shared_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PSD_SHARED_DATA", str(tmp_path))
    assert config.shared_data_dir() == tmp_path
    monkeypatch.setenv("PSD_SHARED_DATA", "")
    assert config.shared_data_dir() in (None, config._DEFAULT_SHARED_DATA)
    assert isinstance(config.shared_data_dir() or Path("."), Path)
