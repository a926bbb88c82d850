"""benchmarks/accelerator.py on CPU with the tiny config: every part runs and its JSON has the fields
a GPU/TPU run is read by."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~100 s: compiles the UNet, the sampler, the five-loss step and generate
def test_accelerator_benchmark_cpu_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    result = subprocess.run(
        [
            sys.executable,
            "accelerator.py",
            f"--config={REPO / 'configs' / 'diff2lip.py'}:tiny",
            "--dtypes=float32",
            "--unet_batch=2",
            "--sampler_frames=8",
            "--sampler_batch=4",
            "--ddim_steps=2",
            "--train_batch=1",
            "--generate_seconds=1",
            "--repeats=1",
            "--peak_tflops=1.0",
            f"--json={out}",
        ],
        cwd=REPO / "benchmarks",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    envi = report["environment"]
    assert envi["platform"] == "cpu" and envi["jax"] and "xla_flags" in envi and envi["local_devices"] == 1
    rows = {(r["part"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {("unet", "forward"), ("unet", "train"), ("sampler", "ddim2"), ("train", "simple+l2+sync"),
                         ("generate", "ddim2")}  # fmt: skip
    for row in report["results"]:
        assert row["seconds"] > 0 and row["frames_per_second"] > 0 and row["dtype"] == "float32"
    for key in (("unet", "forward"), ("unet", "train"), ("sampler", "ddim2"), ("train", "simple+l2+sync")):
        assert 0 < rows[key]["tflops"] and 0 < rows[key]["mfu"] < 1, rows[key]  # peak given: 1 TFLOP/s
    assert 0.5 < rows[("unet", "forward")]["gflop_per_frame"] < 1.0  # the tiny model: 0.66 GFLOP per frame
    assert rows[("sampler", "ddim2")]["frames"] == 8
    train = rows[("train", "simple+l2+sync")]
    assert (
        train["batch"] == 1
        and train["fits_requested"]
        and train["xla_memory_gib"] > 0
        and train["steps_per_second"] > 0
    )
    gen = rows[("generate", "ddim2")]
    assert gen["frames"] == 25 and 0 <= gen["device_idle_share"] < 1 and not gen["sampler_recompiled"]
    assert "frames/s" in result.stdout and "MFU" in result.stdout
