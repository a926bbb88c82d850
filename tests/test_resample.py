"""The CPU upsampling and pooling of `models.resample` against jnp.repeat / nn.avg_pool, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from helpers import rel_l2

from diff2lip_jax.models.resample import avg_pool, upsample_nearest

# Pooling sums the same window values (in another order for sh*sw > 2), and the
# upsampling gradient sums the same four values: float32 rounding only (observed <= 1e-7).
RTOL = 1e-6


def _repeat(x, factors):
    return jnp.repeat(jnp.repeat(x, factors[0], axis=1), factors[1], axis=2)


@pytest.mark.parametrize(
    "shape, factors",
    [
        ((2, 16, 12, 8), (2, 2)),  # UNet down/up blocks
        ((1, 32, 16, 4), (2, 1)),  # audio encoder: time only
        ((1, 9, 7, 3), (2, 2)),  # odd sizes: VALID pooling drops the last row and column
        ((1, 6, 6, 2), (3, 3)),
    ],
)
def test_pool_matches_flax(shape, factors, rng):
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    ref, ref_vjp = jax.vjp(lambda x: nn.avg_pool(x, factors, strides=factors), x)
    out, vjp = jax.jit(lambda x: jax.vjp(lambda x: avg_pool(x, factors), x))(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel_l2(out, ref) <= RTOL
    g = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
    assert rel_l2(vjp(g)[0], ref_vjp(g)[0]) <= RTOL


@pytest.mark.parametrize("factors", [(2, 2), (2, 1)])
def test_upsample_matches_repeat(factors, rng):
    x = jnp.asarray(rng.standard_normal((2, 5, 6, 8)), jnp.float32)
    ref, ref_vjp = jax.vjp(lambda x: _repeat(x, factors), x)
    out, vjp = jax.jit(lambda x: jax.vjp(lambda x: upsample_nearest(x, factors), x))(x)
    assert out.shape == (2, 5 * factors[0], 6 * factors[1], 8)
    assert jnp.array_equal(out, ref)
    g = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
    assert rel_l2(vjp(g)[0], ref_vjp(g)[0]) <= RTOL


def test_bfloat16_stays_bfloat16(rng):
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.bfloat16)
    assert avg_pool(x, (2, 2)).dtype == jnp.bfloat16
    up, vjp = jax.vjp(upsample_nearest, x)
    assert up.dtype == jnp.bfloat16 and vjp(jnp.ones_like(up))[0].dtype == jnp.bfloat16
