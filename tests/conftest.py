"""Test session setup: 8 fake CPU devices (for sharding tests), shared paths, seeded RNGs.

XLA_FLAGS must be set before jax is imported anywhere, hence here, at the top.
Single-device tests simply run on the default device.

Random inputs: the ``rng`` (numpy Generator) and ``jax_key`` fixtures are seeded per test
from a base seed (env ``DIFF2LIP_TEST_SEED``, default ``helpers.DEFAULT_SEED``) and the test's node
id, so every test draws its own inputs and a run is reproducible. A failing test that used
them prints its seed and the command that re-runs it with the same inputs. Change the base
seed to draw fresh inputs: ``DIFF2LIP_TEST_SEED=$RANDOM pytest ...``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The console scripts the tests run keep their compiled programs out of the user's cache:
# one folder per session, so every CI run compiles from scratch (and is timed as such).
_SESSION_XLA_CACHE = None
if "DIFF2LIP_COMPILATION_CACHE" not in os.environ:
    import tempfile

    _SESSION_XLA_CACHE = os.environ["DIFF2LIP_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="diff2lip_test_xla_")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import SEED_ENV, base_seed, prepare_box_dataset, rerun_hint, seed_for  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def _seed_of(request) -> int:
    seed = seed_for(request.node.nodeid)
    if ("test_seed", seed) not in request.node.user_properties:
        request.node.user_properties.append(("test_seed", seed))
    return seed


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy Generator seeded for this test (see the module docstring)."""
    return np.random.default_rng(_seed_of(request))


@pytest.fixture
def jax_key(request):
    """A JAX PRNG key from the same per-test seed as ``rng``."""
    import jax

    return jax.random.key(_seed_of(request))


def pytest_configure(config):
    try:
        base_seed()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_unconfigure(config):
    if _SESSION_XLA_CACHE is not None:
        import shutil

        shutil.rmtree(_SESSION_XLA_CACHE, ignore_errors=True)


def pytest_report_header(config):
    return f"test seed: {SEED_ENV}={base_seed()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, add the seeds and the command that re-runs the test with the same inputs
    (module-scoped fixtures derive theirs from the same base seed, so it is always shown)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    seeds = [v for k, v in item.user_properties if k == "test_seed"]
    own = f"test seed {seeds[0]} (rng/jax_key fixtures), " if seeds else ""
    report.sections.append(
        ("random seed", f"{own}base seed {base_seed()}; re-run with the same inputs:\n  {rerun_hint(item.nodeid)}")
    )


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
    from data_pipelines import synthetic

    raw = tmp_path_factory.mktemp("synth_shared")
    synthetic.generate_dataset(raw, num_clips=6, seed=3, size=(128, 128), seconds=2.0, identities=4)
    out = tmp_path_factory.mktemp("prepared_shared")
    prepare_box_dataset(raw, out, split="train")
    return out


@pytest.fixture(scope="session")
def generate_model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny random Diff2Lip model directory for the generate tests (helpers_generate)."""
    from helpers_generate import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("gen_model") / "model")


@pytest.fixture(scope="session")
def generate_clip(tmp_path_factory) -> dict:
    """A 1.2 s synthetic clip at 30 fps for the generate tests (helpers_generate.synthetic_clip)."""
    from helpers_generate import synthetic_clip

    return synthetic_clip(tmp_path_factory.mktemp("gen_clip"), fps=30.0, seconds=1.2)
