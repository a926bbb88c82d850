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


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory) -> pathlib.Path:
    """A small prepared dataset shared by the training tests: 6 synthetic clips (4 speakers,
    2 s, 25 fps, 128 px), preprocessed with a fixed face box into a "train" split."""
    import tensorflow_datasets as tfds

    from data_pipelines import synthetic
    from data_pipelines.builders import ProcessOptions, make_builder

    raw = tmp_path_factory.mktemp("synth_shared")
    synthetic.generate_dataset(raw, num_clips=6, seed=3, size=(128, 128), seconds=2.0, identities=4)
    out = tmp_path_factory.mktemp("prepared_shared")
    tfds.disable_progress_bar()
    builder = make_builder(
        "local_videos",
        data_dir=str(out),
        source=str(raw),
        split="train",
        options=ProcessOptions(face_detector="box", box=(8, 124, 8, 120)),
    )
    builder.download_and_prepare()
    return out
