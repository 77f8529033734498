"""The marker-delimited README sections that benchmark scripts regenerate."""

import pytest

from psdrt.benchmarks.readme_sections import replace_section, section_body

TEXT = "intro\n<!-- psdrt:perf:begin -->\nold\n<!-- psdrt:perf:end -->\noutro\n"


def test_replace_and_read_back():
    new = replace_section(TEXT, "perf", "| a | b |\n|---|---|\n")
    assert section_body(new, "perf") == "| a | b |\n|---|---|"
    assert new.startswith("intro\n") and new.endswith("outro\n")
    assert replace_section(new, "perf", "| a | b |\n|---|---|") == new  # idempotent


def test_missing_section_is_an_error():
    with pytest.raises(KeyError, match="no generated section 'accuracy'"):
        replace_section(TEXT, "accuracy", "x")
    with pytest.raises(ValueError):
        section_body(TEXT, "Bad Name")
