"""XLA flags (and C heap settings) the project sets for CPU runs, before the JAX backend starts.

XLA reads ``XLA_FLAGS`` once, when the first backend is created, so
:func:`apply_cpu_flags` must run before the first JAX computation: importing
``diff2lip_jax`` calls it (so the Python API, the console scripts and the benchmarks
all get the same XLA path), and ``cli.run_app`` and the benchmarks call it again,
which changes nothing.

Only for a CPU run (``JAX_PLATFORMS``/``jax_platforms`` names cpu first, or no
GPU/TPU plugin is installed): a GPU or TPU run is left exactly as it was. A flag
the user already put in ``XLA_FLAGS`` keeps the user's value, and
``DIFF2LIP_CPU_XLA_FLAGS=0`` turns the whole thing off.

For the same CPU runs, :func:`keep_cpu_heap` sets glibc's malloc to keep freed memory
instead of returning it to the kernel; ``DIFF2LIP_CPU_MALLOC=0`` leaves glibc's default.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Mapping, MutableMapping

# jaxlib 0.10.2 sends dots, convolutions and reductions to YNNPACK by default
# (fusion types INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION, REDUCE). Its convolution
# is slow for the weight gradients of training, so convolutions go back to XLA's
# Eigen kernels; with `models.conv_cpu`'s row-blocked weight gradient (which is
# only used then) the official UNet's fwd+bwd+Adam step at batch 1 went from
# 5.6 s to 3.8 s (median, 2-core AVX-512 Xeon). Dots and reductions stay on YNNPACK
# (`=DOT` alone would also take the reductions off it: GroupNorm then runs
# as slow reduce-windows).
YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
CPU_FLAGS: dict[str, str] = {
    YNN_FUSION_FLAG: "-INDIVIDUAL_CONVOLUTION",
}

OPT_OUT_ENV = "DIFF2LIP_CPU_XLA_FLAGS"


def switched_off(environ: Mapping[str, str], name: str) -> bool:
    """Whether the on-by-default switch `name` is set off in environ (0, false, no, off; any case)."""
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _flag_names(xla_flags: str) -> set[str]:
    """Names of the flags in an XLA_FLAGS string: "--a=1 --b" -> {"a", "b"}."""
    return {tok.lstrip("-").split("=", 1)[0] for tok in xla_flags.split() if tok.startswith("-")}


def ynn_runs_convolutions(xla_flags: str) -> bool:
    """Whether XLA:CPU gives convolutions to YNNPACK under this XLA_FLAGS string.

    The flag's value is a list that replaces the default (which has
    INDIVIDUAL_CONVOLUTION) or, when every item has a sign, edits it; the last
    occurrence of the flag counts.
    """
    value = None
    for tok in xla_flags.split():
        name, _, v = tok.lstrip("-").partition("=")
        if name == YNN_FUSION_FLAG:
            value = v
    if value is None:
        return True
    items = [i.strip() for i in value.split(",") if i.strip()]
    if items and all(i[0] in "+-" for i in items):
        return "-INDIVIDUAL_CONVOLUTION" not in items
    return "INDIVIDUAL_CONVOLUTION" in items


def _requested_platforms(environ: Mapping[str, str]) -> str:
    """The jax_platforms setting: jax's config when jax is imported (code may have set it), else the env."""
    jax = sys.modules.get("jax")
    value = getattr(getattr(jax, "config", None), "jax_platforms", None) if jax is not None else None
    return (value or environ.get("JAX_PLATFORMS", "") or "").strip()


def accelerator_plugin_installed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a GPU/TPU PJRT plugin could be picked up (what jax's plugin discovery looks at)."""
    if environ.get("PJRT_NAMES_AND_LIBRARY_PATHS") or environ.get("TPU_LIBRARY_PATH"):
        return True
    if importlib.util.find_spec("libtpu") is not None:
        return True
    if importlib.metadata.entry_points(group="jax_plugins"):
        return True
    spec = importlib.util.find_spec("jax_plugins")  # namespace package of the CUDA/ROCm plugins
    if spec is not None and spec.submodule_search_locations:
        import pkgutil

        return any(True for _ in pkgutil.iter_modules(spec.submodule_search_locations))
    return False


def runs_on_cpu(environ: Mapping[str, str] = os.environ) -> bool:
    """True when JAX's default backend will be the CPU: cpu is the first requested platform,
    or none is requested and no accelerator plugin is installed."""
    platforms = _requested_platforms(environ)
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not accelerator_plugin_installed(environ)


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def apply_cpu_flags(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Appends CPU_FLAGS to environ["XLA_FLAGS"] for a CPU run; the flags added, e.g. ["--a=1"].

    Adds nothing when the run is not on CPU, when ``DIFF2LIP_CPU_XLA_FLAGS=0``, for a flag
    the user's XLA_FLAGS already names (any value, even empty, wins), or when the JAX
    backend has already started (XLA has read its flags by then). For a CPU run it also
    calls `keep_cpu_heap`, whether or not the backend has started.
    """
    if switched_off(environ, OPT_OUT_ENV):
        return []
    if not runs_on_cpu(environ):
        return []
    keep_cpu_heap(environ)
    if _backend_started():
        return []
    current = environ.get("XLA_FLAGS", "")
    present = _flag_names(current)
    added = [f"--{name}={value}" for name, value in CPU_FLAGS.items() if name not in present]
    if added:
        environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
    return added


HEAP_ENV = "DIFF2LIP_CPU_MALLOC"
# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_heap_kept = False


def keep_cpu_heap(environ: Mapping[str, str] = os.environ) -> bool:
    """Sets glibc's malloc to reuse freed memory in-process; True when it is (now or before).

    XLA:CPU allocates each executable's temporary buffers anew on every call. glibc serves
    blocks over 32 MiB with a fresh mmap and unmaps them on free, so every train step of
    the official UNet touched ~1 GB of new pages: 260,000 page faults and 0.6 s of kernel
    time per 3.9 s step at batch 1 (2-core Xeon). With mmap off (M_MMAP_MAX=0), no trimming
    (M_TRIM_THRESHOLD at its maximum) and one arena (M_ARENA_MAX=1, so XLA's worker threads
    allocate from the same heap), the heap keeps those pages: 0 faults, and the step took
    0.886 of the default's time (median of 6 in-process pairs, the setting alternated call
    by call). The cost is that the process keeps its peak heap until it exits.

    On by default for CPU runs (`apply_cpu_flags` calls it); DIFF2LIP_CPU_MALLOC=0 keeps
    glibc's default. The demo's own stages are faster with it too (tiny SyncNet 200 steps:
    47.7-51.4 s vs 48.7-55.6 s; tiny Diff2Lip 100 steps: 81-92 s vs 86-101 s, runs
    interleaved). Only on glibc. Affects allocations made after the call, so it runs when
    `diff2lip_jax` is imported.
    """
    global _heap_kept
    if _heap_kept:
        return True
    if switched_off(environ, HEAP_ENV):
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))
    _heap_kept = all(libc.mallopt(param, value) == 1 for param, value in settings)
    return _heap_kept


COMPILATION_CACHE_ENV = "DIFF2LIP_COMPILATION_CACHE"


def enable_compilation_cache(environ: Mapping[str, str] = os.environ) -> str | None:
    """Turns on JAX's persistent compilation cache for a console script; returns its folder.

    A second run of the same program (same model, shapes, flags, jax version) loads the
    compiled executables instead of compiling them again: on an accelerator the sampler
    and the train step take minutes to compile. The folder is `$JAX_COMPILATION_CACHE_DIR`
    when the user set it (jax reads it itself), else `$DIFF2LIP_COMPILATION_CACHE`, else
    `<weights cache>/jax_compilation` (`~/.cache/diff2lip_jax/...`);
    `DIFF2LIP_COMPILATION_CACHE=0` turns it off (None).
    """
    value = environ.get(COMPILATION_CACHE_ENV, "").strip()
    if value == "0":
        return None
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return environ["JAX_COMPILATION_CACHE_DIR"]
    import jax

    from diff2lip_jax.weights import cache_dir

    path = value or str(cache_dir() / "jax_compilation")
    jax.config.update("jax_compilation_cache_dir", path)
    return path
