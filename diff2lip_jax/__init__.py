"""diff2lip-jax: Diff2Lip lip-sync diffusion in JAX/Flax."""

__version__ = "0.1.0"
