"""launch/: shell syntax, shellcheck (when installed), and clear failures for missing variables."""

import glob
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")) + glob.glob(os.path.join(REPO, "launch", "*.sbatch")))


def test_scripts_exist():
    names = {os.path.basename(s) for s in SCRIPTS}
    assert {"gpu_slurm.sbatch", "tpu_pod.sh", "local_multiprocess.sh", "xla_flags.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", script], check=True)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck is not installed (.ci/run installs it from Debian's packages; apt-get install shellcheck)",
)
def test_shellcheck():
    result = subprocess.run(
        ["shellcheck", "-x", *[os.path.relpath(s, REPO) for s in SCRIPTS]], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script,needs", [("gpu_slurm.sbatch", "DATA_DIR"), ("tpu_pod.sh", "TPU_NAME")])
def test_missing_variables_fail_clearly(script, needs):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "WORKDIR", "TPU_NAME")}
    result = subprocess.run(["bash", os.path.join(REPO, "launch", script)], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and needs in result.stderr
