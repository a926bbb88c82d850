"""Likelihood terms of the variational bound, and masked reductions (jnp, jit-safe)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array

ArrayLike = Array | float


def normal_kl(mean1: ArrayLike, logvar1: ArrayLike, mean2: ArrayLike, logvar2: ArrayLike) -> Array:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats.

    Arguments broadcast against each other (scalars allowed); float32 result.
    """
    mean1, logvar1, mean2, logvar2 = (jnp.asarray(a, jnp.float32) for a in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: Array) -> Array:
    """The tanh approximation of the standard normal CDF that guided-diffusion uses.

    Kept instead of the exact erf so the bound matches the official numbers.
    """
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Array, *, means: Array, log_scales: Array) -> Array:
    """Log-probability (nats) of 8-bit pixels x in [-1, 1] under N(means, e^(2 log_scales)).

    Each value owns a bin of half-width 1/255; the two end bins extend to -inf and
    +inf, so the probabilities of all 256 bins sum to one. All inputs share one
    shape; returns that shape, float32.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(f"shapes differ: x {x.shape}, means {means.shape}, log_scales {log_scales.shape}")
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    # The 1e-12 floor keeps logs finite where the tanh approximation saturates.
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def mean_flat(x: Array) -> Array:
    """Mean over all axes but the first: [B, ...] -> [B]."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def masked_mean_flat(x: Array, mask: Array | None) -> Array:
    """Per-example mean of x over the region where mask == 1: [B, H, W, C] -> [B].

    mask [B, H, W, 1] (or x's shape) with 0/1 (or soft) weights; None means the whole
    image. An example whose mask is empty gets 0 rather than NaN.
    """
    if mask is None:
        return mean_flat(x)
    weights = jnp.broadcast_to(mask.astype(x.dtype), x.shape)
    axes = tuple(range(1, x.ndim))
    total = jnp.sum(weights, axis=axes)
    return jnp.sum(x * weights, axis=axes) / jnp.maximum(total, 1.0)
