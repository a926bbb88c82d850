"""Both trainers fail cleanly on bad input: one line naming the field, exit 2, no traceback,
nothing left on disk, and (for config errors) before anything compiles."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a CLI matrix: ~90 s

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def run(prog: str, *args: str, devices: int = 1) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_LOG_COMPILES": "1",  # a compilation before the error would show on stderr
    }
    return subprocess.run([str(BIN / prog), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def assert_one_line(proc: subprocess.CompletedProcess, prog: str, *needles: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{prog}: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def syncnet_workdir(prepared_dataset, tmp_path_factory) -> pathlib.Path:
    """A 2-step SyncNet workdir (32 px, the tiny Diff2Lip's size)."""
    workdir = tmp_path_factory.mktemp("sn") / "w"
    proc = run(
        "diff2lip-train-syncnet",
        "--config=configs/syncnet.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={prepared_dataset}",
        "--config.train.num_steps=2",
        "--config.train.batch_size=4",
        "--config.train.eval_batches=1",
        "--config.model.base_channels=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


D2L = "diff2lip-train"
CASES = [
    (["--config.train.keep_checkpoints=0"], "train.keep_checkpoints=0", 1),
    (["--config.train.checkpoint_every=0"], "train.checkpoint_every=0", 1),
    (["--config.train.num_steps=0"], "train.num_steps=0", 1),
    (["--config.train.num_steps=-5"], "train.num_steps=-5", 1),
    (["--config.train.lr=-1"], "train.lr=-1", 1),
    (["--config.train.ema_rate=1.5"], "train.ema_rate=1.5", 1),
    (["--config.loss.sync=-0.1"], "loss.sync=-0.1", 1),
    (["--config.train.batch_size=4"], "train.batch_size=4 does not divide over the 8 devices", 8),
    (["--config.data.dir=/nonexistent/prep"], "/nonexistent/prep", 1),
    (["--config.syncnet.checkpoint=/nonexistent/sn"], "syncnet.checkpoint", 1),
]


@pytest.mark.parametrize("args, needle, devices", CASES, ids=[c[1].split("=")[0] for c in CASES])
def test_diff2lip_config_errors_come_first(prepared_dataset, tmp_path, args, needle, devices):
    workdir = tmp_path / "w"
    proc = run(
        D2L,
        "--config=configs/diff2lip.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={prepared_dataset}",
        *args,
        devices=devices,
    )
    assert_one_line(proc, D2L, needle)
    assert "Compiling" not in proc.stderr
    assert not workdir.exists()


def test_expert_of_another_image_size_is_refused(prepared_dataset, syncnet_workdir, tmp_path):
    proc = run(
        D2L,
        "--config=configs/diff2lip.py:tiny",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.dir={prepared_dataset}",
        f"--config.syncnet.checkpoint={syncnet_workdir}",
        "--config.model.image_size=64",
    )
    assert_one_line(proc, D2L, "sees 32 px crops", "model.image_size=64")
    assert not (tmp_path / "w").exists()


def test_a_trainer_refuses_the_other_kind_of_workdir(prepared_dataset, syncnet_workdir, tmp_path):
    before = sorted(p.name for p in (syncnet_workdir / "checkpoints").iterdir())
    proc = run(
        D2L,
        "--config=configs/diff2lip.py:tiny",
        f"--workdir={syncnet_workdir}",
        f"--config.data.dir={prepared_dataset}",
    )
    assert_one_line(proc, D2L, "holds a syncnet checkpoint")
    assert sorted(p.name for p in (syncnet_workdir / "checkpoints").iterdir()) == before


def test_a_config_of_the_other_task_is_refused(prepared_dataset, tmp_path):
    proc = run(D2L, "--config=configs/syncnet.py:tiny", f"--workdir={tmp_path / 'w'}")
    assert_one_line(proc, D2L, "diff2lip-train-syncnet")


def test_resume_with_another_model_names_the_field(prepared_dataset, syncnet_workdir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(syncnet_workdir, copy)
    proc = run(
        "diff2lip-train-syncnet",
        "--config=configs/syncnet.py:tiny",
        f"--workdir={copy}",
        f"--config.data.dir={prepared_dataset}",
        "--config.model.base_channels=8",
    )
    assert_one_line(proc, "diff2lip-train-syncnet", "model.base_channels=4 there vs 8 here")


@pytest.mark.parametrize(
    "config, extra, needle",
    [
        ("configs/diff2lip.py:tiny", ["--config.train.bogus=1"], "no field 'bogus'"),
        ("configs/diff2lip.py:huge", [], "unknown variant 'huge'"),
        ("configs/diff2lip.py:tiny,losses=foo", [], "unknown losses='foo'"),
        ("configs/nope.py:tiny", [], "No such file or directory: 'configs/nope.py'"),
        ("configs/diff2lip.py:tiny", ["--config.train.lr=abc"], "--config.train.lr=abc"),
    ],
    ids=["unknown-field", "unknown-variant", "unknown-option", "missing-file", "wrong-type"],
)
def test_config_mistakes_are_one_line(tmp_path, config, extra, needle):
    proc = run(D2L, f"--config={config}", f"--workdir={tmp_path / 'w'}", *extra)
    assert_one_line(proc, D2L, needle)
    assert not (tmp_path / "w").exists()
