"""The CPU attention of `models.attention` against the reference formulation, values and gradients."""

import jax
import jax.numpy as jnp
import pytest
from helpers import rel_l2

from diff2lip_jax.models.attention import attention, reference_attention

# float32 rounding: the same products, summed in another order (observed <= ~2e-7).
RTOL = 1e-5


@pytest.mark.parametrize("shape", [(2, 16, 3, 8), (1, 64, 4, 64)])
def test_matches_reference(shape, rng):
    q, k, v, g = (jnp.asarray(rng.standard_normal(shape) * 2, jnp.float32) for _ in range(4))
    y_ref, vjp_ref = jax.vjp(reference_attention, q, k, v)
    y, grads = jax.jit(lambda q, k, v: (lambda y, f: (y, f(g)))(*jax.vjp(attention, q, k, v)))(q, k, v)
    assert y.shape == shape and rel_l2(y, y_ref) <= RTOL
    for ours, ref in zip(grads, vjp_ref(g)):
        assert rel_l2(ours, ref) <= RTOL
