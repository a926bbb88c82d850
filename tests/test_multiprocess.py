"""Two JAX processes on this machine (launch/local_multiprocess.sh): one training run, one checkpoint."""

import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # ~140 s: two processes each compile and train
def test_two_process_training(prepared_dataset, tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    cmd = [
        os.path.join(REPO, "launch", "local_multiprocess.sh"),
        "2",
        "--",
        os.path.join(os.path.dirname(os.sys.executable), "diff2lip-train"),
        "--config=configs/diff2lip.py:tiny,losses=recon",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.dir={prepared_dataset}",
        "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=1",
        "--config.train.batch_size=4",
        "--config.train.sample_every=1000",
        "--config.train.eval_every=1000",
        "--config.model.attention_resolutions=-1",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    # Parse the processes' own words (the [rank] prefix is lost after tqdm's carriage returns).
    feeds = dict(re.findall(r"process (\d) feeds (\d+) of the global batch of 4", log))
    assert feeds == {"0": "2", "1": "2"}, "each process feeds half of the global batch"
    clips = {
        rank: set(map(int, re.findall(r"\d+", found)))
        for rank, found in re.findall(
            r"process (\d) feeds \d+ of the global batch of \d+; first clips \[([\d, ]*)\]", log
        )
    }
    assert set(clips) == {"0", "1"} and not clips["0"] & clips["1"], f"data shards overlap: {clips}"
    prints = dict(re.findall(r"params fingerprint \(process (\d) of 2\): (\w+)", log))
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"], "replicas differ across processes"
    steps = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert steps == ["2"], steps  # one checkpoint for the run, not one per process
