"""Test session setup: 8 fake CPU devices (for sharding tests) and shared paths.

XLA_FLAGS must be set before jax is imported anywhere, hence here, at the top.
Single-device tests simply run on the default device.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    """../shared/reference (golden tensors from the official PyTorch code)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"{REFERENCE} is missing: the parity tests need ../shared/reference beside the repo")
    return REFERENCE
