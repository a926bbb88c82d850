"""diff2lip-train end to end: real grain data, real orbax checkpoints, SIGKILL and exact resume."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from diff2lip_jax.checkpoint import load_model, manager_dir


def train_cmd(workdir, data_dir, steps):
    return [
        sys.executable,
        "-m",
        "diff2lip_jax.train.main",
        "--config=configs/diff2lip.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={data_dir}",
        f"--config.train.num_steps={steps}",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=1",
        "--config.train.batch_size=2",
        "--config.train.sample_every=1000",
        "--config.train.eval_every=1000",
        # D and its optimizer are in (the state must resume whole; tiny has the GAN off);
        # the frozen SyncNet/LPIPS only cost compile time here and carry no state.
        "--config.loss.gan=0.01",
        "--config.loss.sync=0",
        "--config.loss.lpips=0",
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    # Each run compiles the same step: share the compilation through the persistent cache.
    e["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return e


def raw_state(workdir):
    with ocp.CheckpointManager(manager_dir(str(workdir)), item_names=("state",)) as mngr:
        step = mngr.latest_step()
        tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return step, tree


@pytest.mark.slow  # ~170 s: three training runs
def test_sigkill_and_resume_equals_uninterrupted(prepared_dataset, env, tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    total = 6
    straight = subprocess.run(
        train_cmd(tmp_path / "a", prepared_dataset, total),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = subprocess.Popen(
        train_cmd(tmp_path / "b", prepared_dataset, total),
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = tmp_path / "b" / "checkpoints" / "2"
    deadline = time.time() + 900
    while not first.is_dir() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at, _ = raw_state(tmp_path / "b")
    assert killed_at is not None and killed_at < total

    resumed = subprocess.run(
        train_cmd(tmp_path / "b", prepared_dataset, total),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {killed_at}" in resumed.stderr

    step_a, state_a = raw_state(tmp_path / "a")
    step_b, state_b = raw_state(tmp_path / "b")
    assert step_a == step_b == total
    leaves_a, leaves_b = jax.tree.leaves(state_a), jax.tree.leaves(state_b)
    assert len(leaves_a) == len(leaves_b) > 0
    worst = max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(leaves_a, leaves_b)
    )
    assert worst <= 1e-6, f"max abs diff {worst}"
    # The inference item (EMA weights + model flags) of the same step loads too.
    params, cfg, step = load_model(str(tmp_path / "b"))
    assert step == total and cfg.image_size == 32 and params["out_2"]["kernel"].shape[-1] == 3
