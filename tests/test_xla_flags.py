"""The project's XLA CPU flags: added for CPU runs only, never over a user's own value."""

import os
import subprocess
import sys

import pytest

from diff2lip_jax import cli, xla_flags

YNN = xla_flags.YNN_FUSION_FLAG
OURS = f"--{YNN}={xla_flags.CPU_FLAGS[YNN]}"


@pytest.fixture
def fresh(monkeypatch):
    """As before the JAX backend starts (in this test process it has), with no plugin unless a test says so."""
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_requested_platforms", lambda environ: environ.get("JAX_PLATFORMS", ""))
    monkeypatch.setattr(xla_flags, "accelerator_plugin_installed", lambda environ=None: False)
    return monkeypatch


def test_cpu_run_appends_and_keeps_other_flags(fresh):
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply_cpu_flags(env) == [OURS]
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {OURS}"
    assert xla_flags.apply_cpu_flags(env) == []  # idempotent
    assert env["XLA_FLAGS"].count(YNN) == 1


def test_no_platform_and_no_plugin_is_cpu(fresh):
    env = {}
    assert xla_flags.apply_cpu_flags(env) == [OURS]
    assert env["XLA_FLAGS"] == OURS


@pytest.mark.parametrize("value", ["", "INDIVIDUAL_DOT", "DOT,ELTWISE"])
def test_user_value_wins(fresh, value):
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--{YNN}={value}"}
    assert xla_flags.apply_cpu_flags(env) == []
    assert env["XLA_FLAGS"] == f"--{YNN}={value}"


@pytest.mark.parametrize("platforms", ["cuda", "tpu", "gpu,cpu", "rocm"])
def test_accelerator_platform_is_left_alone(fresh, platforms):
    env = {"JAX_PLATFORMS": platforms, "XLA_FLAGS": "--xla_gpu_enable_triton_gemm=false"}
    assert xla_flags.apply_cpu_flags(env) == []
    assert env["XLA_FLAGS"] == "--xla_gpu_enable_triton_gemm=false"


def test_installed_plugin_without_platform_is_left_alone(fresh):
    fresh.setattr(xla_flags, "accelerator_plugin_installed", lambda environ=None: True)
    env = {}
    assert xla_flags.apply_cpu_flags(env) == []
    assert "XLA_FLAGS" not in env
    env = {"JAX_PLATFORMS": "cpu"}  # asked for cpu explicitly: a CPU run despite the plugin
    assert xla_flags.apply_cpu_flags(env) == [OURS]


def test_opt_out_and_started_backend(fresh):
    env = {"JAX_PLATFORMS": "cpu", xla_flags.OPT_OUT_ENV: "0"}
    assert xla_flags.apply_cpu_flags(env) == [] and "XLA_FLAGS" not in env
    fresh.setattr(xla_flags, "_backend_started", lambda: True)
    env = {"JAX_PLATFORMS": "cpu"}
    assert xla_flags.apply_cpu_flags(env) == [] and "XLA_FLAGS" not in env


def test_accelerator_plugin_detection_env():
    assert xla_flags.accelerator_plugin_installed({"PJRT_NAMES_AND_LIBRARY_PATHS": "x:/lib/x.so"})
    assert xla_flags.accelerator_plugin_installed({"TPU_LIBRARY_PATH": "/lib/libtpu.so"})


def test_console_scripts_apply_the_flags(fresh):
    """cli.run_app (every console script) adds the flags before `main` runs."""
    fresh.setenv("JAX_PLATFORMS", "cpu")
    fresh.delenv("XLA_FLAGS", raising=False)
    seen = {}

    def main(argv):
        seen["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")

    with pytest.raises(SystemExit):
        cli.run_app("prog", main, argv=["prog"])
    assert OURS in seen["XLA_FLAGS"]


@pytest.mark.parametrize(
    "flags,on_ynn",
    [
        ("", True),  # jaxlib's default list has INDIVIDUAL_CONVOLUTION
        (OURS, False),
        (f"--{YNN}=DOT", False),  # a list without signs replaces the default
        (f"--{YNN}=DOT,INDIVIDUAL_CONVOLUTION", True),
        (f"--{YNN}=+DOT", True),  # signed items edit the default
        (f"{OURS} --{YNN}=+DOT", True),  # the last occurrence counts
    ],
)
def test_ynn_runs_convolutions(flags, on_ynn):
    assert xla_flags.ynn_runs_convolutions(flags) is on_ynn


def test_flag_exists_and_moves_convolutions_off_ynnpack():
    """In a fresh process: importing the package adds the flag; the installed jaxlib knows it;
    convolutions leave YNNPACK, dots stay."""
    code = (
        "import os; from diff2lip_jax import xla_flags; print(os.environ['XLA_FLAGS'].split());"
        "import jax, jax.numpy as jnp;"
        "d = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile();"
        "c = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
        " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).lower(jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 4))).compile();"
        "print('__ynn_fusion' in d.as_text(), '__ynn_fusion' in c.as_text())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == [str([OURS]), "True False"]


def test_compilation_cache_folder_and_opt_out(tmp_path, monkeypatch):
    import jax

    from diff2lip_jax.xla_flags import enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache({"DIFF2LIP_COMPILATION_CACHE": "0"}) is None
        assert jax.config.jax_compilation_cache_dir == before  # off: untouched
        assert enable_compilation_cache({"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) == "/elsewhere"
        mine = str(tmp_path / "xla")
        assert enable_compilation_cache({"DIFF2LIP_COMPILATION_CACHE": mine}) == mine
        assert jax.config.jax_compilation_cache_dir == mine
        monkeypatch.setenv("DIFF2LIP_CACHE", str(tmp_path / "cache"))
        assert enable_compilation_cache({}) == str(tmp_path / "cache" / "jax_compilation")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


HEAP_PROBE = """
import ctypes, resource, sys
import diff2lip_jax  # a CPU run: the import sets up the heap unless told not to
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
def touch_and_free():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
@pytest.mark.parametrize("heap_env,kept", [("1", True), (None, True), ("0", False)])
def test_cpu_heap_reuses_freed_memory(heap_env, kept):
    """In a fresh CPU process, by default or with DIFF2LIP_CPU_MALLOC=1, a freed 256 MiB block
    comes back without page faults (the kernel would otherwise hand out 65,536 new pages);
    with 0, glibc's default is left."""
    env = {k: v for k, v in os.environ.items() if k not in (xla_flags.HEAP_ENV, xla_flags.OPT_OUT_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    if heap_env is not None:
        env[xla_flags.HEAP_ENV] = heap_env
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    faults = int(out.stdout.split()[-1])
    if kept:
        assert faults < 1000, faults
    else:
        assert faults > 30_000, faults


def test_heap_is_left_alone_off_cpu_and_when_opted_out(fresh):
    calls = []
    fresh.setattr(xla_flags, "keep_cpu_heap", lambda environ: calls.append(dict(environ)))
    xla_flags.apply_cpu_flags({"JAX_PLATFORMS": "cuda"})
    xla_flags.apply_cpu_flags({"JAX_PLATFORMS": "cpu", xla_flags.OPT_OUT_ENV: "0"})
    assert calls == []
    xla_flags.apply_cpu_flags({"JAX_PLATFORMS": "cpu"})
    assert len(calls) == 1
