"""Fixtures shared by the kernel tests."""

import pytest

from _kernel_reference import kernel_lib


@pytest.fixture(scope="module")
def lib():
    """The CPU kernel library (built by ``python build.py``)."""
    return kernel_lib()
