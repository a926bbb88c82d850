"""diff2lip-jax: Diff2Lip lip-sync diffusion in JAX/Flax."""

from diff2lip_jax import xla_flags as _xla_flags

__version__ = "0.1.0"

# The project's XLA CPU flags for every user of the package, not only the console scripts:
# XLA reads XLA_FLAGS when the first backend starts, and importing the package comes
# before that in any program that uses it (when it does not, nothing is changed).
_xla_flags.apply_cpu_flags()
