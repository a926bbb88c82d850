"""The CPU GroupNorm(+SiLU) of `models.groupnorm` against the reference formulation, values and gradients."""

import jax
import jax.numpy as jnp
import pytest
from helpers import rel_l2

from diff2lip_jax.models.groupnorm import group_norm, reference_group_norm

# float32 rounding: same two-pass statistics, sums in another order (observed <= ~1e-6).
RTOL = 1e-5


@pytest.mark.parametrize(
    "shape",
    [
        (2, 8, 8, 64),  # ResBlock norms
        (1, 16, 96),  # attention norm / audio conv1d: [N, L, C]
        (3, 512),  # audio MLP head: no spatial axes (16 channels a group; with 2, dx is ~0 and only noise)
    ],
)
@pytest.mark.parametrize("silu", [False, True])
def test_matches_reference(shape, silu, rng):
    x = jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.float32)
    scale = jnp.asarray(rng.standard_normal(shape[-1:]), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(shape[-1:]), jnp.float32)
    g = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def run(fn):
        y, vjp = jax.vjp(lambda x, s, b: fn(x, s, b, 32, silu), x, scale, bias)
        return y, vjp(g)

    (y_ref, grads_ref), (y, grads) = run(reference_group_norm), jax.jit(lambda: run(group_norm))()
    assert y.dtype == jnp.float32 and y.shape == shape
    assert rel_l2(y, y_ref) <= RTOL
    for ours, ref in zip(grads, grads_ref):
        assert rel_l2(ours, ref) <= RTOL


def test_bfloat16_input_gets_bfloat16_gradient(rng):
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 32)), jnp.bfloat16)
    ones, zeros = jnp.ones((32,)), jnp.zeros((32,))
    y, vjp = jax.vjp(lambda x: group_norm(x, ones, zeros, 32, True), x)
    ref = reference_group_norm(x, ones, zeros, 32, True)
    assert y.dtype == jnp.float32 and rel_l2(y, ref) <= RTOL
    assert vjp(jnp.ones_like(y))[0].dtype == jnp.bfloat16


def test_rejects_channels_not_divisible():
    with pytest.raises(ValueError, match="groups"):
        group_norm(jnp.zeros((1, 4, 40)), jnp.ones((40,)), jnp.zeros((40,)), 32)
