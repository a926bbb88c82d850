"""Nearest-neighbour upsampling and average pooling (kernel = stride) whose gradients are
elementwise on XLA:CPU.

JAX differentiates `jnp.repeat` into a reduction over the repeated axes, and
average pooling into a reduce-window. XLA:CPU (jaxlib 0.10.2) hands both to
YNNPACK, fused together with the convolution that produces their input, so that
convolution leaves XLA's faster Eigen kernel (`diff2lip_jax.xla_flags`): in the
official UNet's training step the three upsampling ResBlocks' backward fusions
(dx convolution + reduction) took ~50 ms each at 64x64 and above, and seven
downsampling blocks ran their forward convolutions inside YNNPACK too.

On CPU, both operations here are sums of strided views of an [N, H, sh, W, sw, C]
reshape, which XLA emits as a plain elementwise loop: pooling is the sum of its
sh*sw phases divided by sh*sw (the order `nn.avg_pool` sums in, up to float32
rounding), and each operation's gradient is the other one. GPU and TPU keep the
`jnp.repeat` / `nn.avg_pool` formulations (`lax.platform_dependent`): a minor
axis of 2 would be padded to a full tile there.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Factors = tuple[int, int]


def _repeat(x: jax.Array, factors: Factors) -> jax.Array:
    """[N, H, W, C] -> [N, H*sh, W*sw, C]: every pixel repeated sh x sw times."""
    n, h, w, c = x.shape
    sh, sw = factors
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, sh, w, sw, c)).reshape(n, h * sh, w * sw, c)


def _phase_sum(x: jax.Array, factors: Factors) -> jax.Array:
    """[N, H*sh, W*sw, C] -> [N, H, W, C]: the sum of each sh x sw window, as sh*sw strided views."""
    n, hh, ww, c = x.shape
    sh, sw = factors
    cells = x.reshape(n, hh // sh, sh, ww // sw, sw, c)
    total = None
    for i in range(sh):
        for j in range(sw):
            phase = cells[:, :, i, :, j, :]
            total = phase if total is None else total + phase
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _upsample_cpu(x: jax.Array, factors: Factors) -> jax.Array:
    return _repeat(x, factors)


_upsample_cpu.defvjp(
    lambda x, factors: (_repeat(x, factors), None),
    lambda factors, _, g: (_phase_sum(g, factors),),
)


def _mean_of_windows(x: jax.Array, factors: Factors) -> jax.Array:
    return _phase_sum(x, factors) / math.prod(factors)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool_cpu(x: jax.Array, factors: Factors) -> jax.Array:
    return _mean_of_windows(x, factors)


_pool_cpu.defvjp(
    lambda x, factors: (_mean_of_windows(x, factors), None),
    lambda factors, _, g: (_repeat(g / math.prod(factors), factors),),
)


def upsample_nearest(x: jax.Array, factors: Factors = (2, 2)) -> jax.Array:
    """[N, H, W, C] -> [N, H*sh, W*sw, C], nearest neighbour, any float dtype."""
    sh, sw = factors

    def reference(x):
        return jnp.repeat(jnp.repeat(x, sh, axis=1), sw, axis=2)

    return lax.platform_dependent(x, cpu=lambda x: _upsample_cpu(x, (sh, sw)), default=reference)


def avg_pool(x: jax.Array, stride: Factors) -> jax.Array:
    """Average pooling of [N, H, W, C] with kernel = stride (sh, sw), 'VALID': ->
    [N, H // sh, W // sw, C] in x's dtype (rows and columns past the last whole window
    are dropped, as `nn.avg_pool` does)."""
    sh, sw = (int(s) for s in stride)

    def reference(x):
        return nn.avg_pool(x, (sh, sw), strides=(sh, sw))

    def cpu(x):
        n, h, w, c = x.shape
        return _pool_cpu(x[:, : h - h % sh, : w - w % sw], (sh, sw))

    return lax.platform_dependent(x, cpu=cpu, default=reference)
