"""Ctrl-C during training: the running step finishes and is saved, the message names it,
the exit code is 130, and resuming equals an uninterrupted run."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from test_train_loop import env, raw_state, train_cmd  # noqa: F401 - env is a fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 6


def _run(cmd, environ):
    return subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_sigint_saves_the_running_step_and_resumes_exactly(prepared_dataset, env, tmp_path):  # noqa: F811
    straight = _run(train_cmd(tmp_path / "a", prepared_dataset, TOTAL), env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    # checkpoint_every=2 in train_cmd; interrupt at a random moment after the first step line.
    proc = subprocess.Popen(
        train_cmd(tmp_path / "b", prepared_dataset, TOTAL),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("step 1/"):
            break
    time.sleep(random.Random(os.environ.get("DIFF2LIP_TEST_SEED", "0")).uniform(0.0, 1.5))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err[-3000:]
    named = re.search(r"interrupted: checkpointed step (\d+)", err)
    assert named, err[-3000:]
    newest, _ = raw_state(tmp_path / "b")
    assert newest == int(named.group(1)) < TOTAL

    resumed = _run(train_cmd(tmp_path / "b", prepared_dataset, TOTAL), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {newest}" in resumed.stderr
    _, state_a = raw_state(tmp_path / "a")
    step_b, state_b = raw_state(tmp_path / "b")
    assert step_b == TOTAL
    worst = max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b))
    )
    assert worst <= 1e-6, f"max abs diff {worst}"
