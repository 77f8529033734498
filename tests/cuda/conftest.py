"""Fixtures of the CUDA tests: the library under test (the emulated CUDA build by default, a real
one with ``$PSD_CUDA_TEST_LIB``), its CUDA runtime, and the thread order of kernel launches.

Every test that takes ``order`` runs under two orders of the threads of each launch in the
emulator, reversed and a seeded shuffle (serial, the order of a CPU loop, is the one the CPU
library already runs): a kernel whose result depends on the order of its threads fails one of
them. On a real GPU the hardware picks the order, so only the first
parametrisation runs.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _device.py

from _device import Runtime, load_library  # noqa: E402


@pytest.fixture(scope="session")
def cuda_lib():
    """The CUDA kernel library under test (KernelLibrary); skips where none has a device."""
    lib = load_library()
    if not lib.has_cuda:
        pytest.skip(f"{lib.path} is not a CUDA build")
    n, err = lib.cuda_device_count()
    if n == 0:
        pytest.skip(f"{lib.path}: no CUDA device (cudaGetDeviceCount error {err})")
    return lib


@pytest.fixture(scope="session")
def cpu_lib():
    """The CPU kernel library (the reference of every CUDA comparison)."""
    from _kernel_reference import kernel_lib

    return kernel_lib("cpu")


@pytest.fixture(scope="session")
def rt(cuda_lib) -> Runtime:
    return Runtime(cuda_lib)


@pytest.fixture(scope="session")
def emulated(rt):
    """Skips on a real GPU: the test checks the emulator itself."""
    if not rt.emulated:
        pytest.skip("checks the CUDA emulator (runs with the emulated build only)")
    return rt


@pytest.fixture(params=["reversed", ("shuffled", 7)], ids=["reversed", "shuffled7"])
def order(request, rt):
    """The emulator's thread order for the test (reset to serial afterwards)."""
    name, seed = request.param if isinstance(request.param, tuple) else (request.param, 0)
    if not rt.emulated and name != "reversed":
        pytest.skip("a real GPU picks its own thread order: one run is enough")
    rt.set_order(name, seed)
    yield name
    rt.set_order("serial")
