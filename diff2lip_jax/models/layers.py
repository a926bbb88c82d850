"""guided-diffusion building blocks in Flax (NHWC).

Submodule names follow the PyTorch module paths with their indices folded in
(`in_layers.2` -> `in_layers_2`), so `diff2lip_jax.convert` maps parameters by
name alone. Parameters are float32; `dtype` is the compute dtype. Group norms
and the attention softmax always run in float32, as in the official code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diff2lip_jax.models import conv_cpu
from diff2lip_jax.models.attention import attention
from diff2lip_jax.models.groupnorm import group_norm
from diff2lip_jax.models.resample import avg_pool, upsample_nearest

Dtype = jnp.dtype


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding: [N] int/float timesteps -> [N, dim] float32 ([cos | sin])."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(timesteps).astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


class GroupNorm32(nn.Module):
    """GroupNorm(32 groups, eps 1e-5) over [N, ..., C], in float32, output in `dtype`.

    With `silu`, SiLU follows in float32 before the cast (one fused op with its own
    gradient on CPU, `groupnorm.group_norm`); the official code applies it after.
    """

    dtype: Dtype = jnp.float32
    silu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        return group_norm(x, scale, bias, 32, self.silu).astype(self.dtype)


def conv(
    features: int,
    kernel: int | Sequence[int],
    dtype: Dtype,
    name: str,
    stride: int | Sequence[int] = 1,
    zero: bool = False,
    ndim: int = 2,
) -> nn.Conv:
    """A PyTorch-style conv: explicit symmetric padding k//2, float32 params.

    Its convolution is `conv_cpu.conv_general_dilated`: lax's everywhere, with a
    faster weight gradient on CPU; the params are nn.Conv's (kernel [*k, I, O], bias [O]).
    """
    kernel = (kernel,) * ndim if isinstance(kernel, int) else tuple(kernel)
    stride = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    kwargs = {"kernel_init": nn.initializers.zeros, "bias_init": nn.initializers.zeros} if zero else {}
    return nn.Conv(
        features,
        kernel,
        strides=stride,
        padding=[(k // 2, k // 2) for k in kernel],
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        conv_general_dilated=conv_cpu.conv_general_dilated,
        **kwargs,
    )


def dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


class Upsample(nn.Module):
    """Nearest x2, then (with `use_conv`) a 3x3 conv named `conv`."""

    channels: int
    use_conv: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = upsample_nearest(x)
        return conv(self.channels, 3, self.dtype, "conv")(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv named `op` (with `use_conv`), else average pooling."""

    channels: int
    use_conv: bool
    stride: tuple[int, int] = (2, 2)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_conv:
            return conv(self.channels, 3, self.dtype, "op", stride=self.stride)(x)
        return avg_pool(x, self.stride)


class ResBlock(nn.Module):
    """guided-diffusion ResBlock with optional up/down sampling and scale-shift norm.

    x: [N, H, W, C_in]; emb: [N, E] -> [N, H', W', out_channels].
    """

    out_channels: int
    dropout: float = 0.0
    use_scale_shift_norm: bool = False
    up: bool = False
    down: bool = False
    down_stride: tuple[int, int] = (2, 2)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
        h = GroupNorm32(self.dtype, silu=True, name="in_layers_0")(x)
        if self.up:
            h, x = upsample_nearest(h), upsample_nearest(x)
        elif self.down:
            h, x = avg_pool(h, self.down_stride), avg_pool(x, self.down_stride)
        h = conv(self.out_channels, 3, self.dtype, "in_layers_2")(h)

        emb_width = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        emb_out = dense(emb_width, self.dtype, "emb_layers_1")(nn.silu(emb.astype(self.dtype)))
        emb_out = emb_out.astype(h.dtype)[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = nn.silu(GroupNorm32(self.dtype, name="out_layers_0")(h) * (1 + scale) + shift)
        else:
            h = GroupNorm32(self.dtype, silu=True, name="out_layers_0")(h + emb_out)
        h = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0.0)(h)
        h = conv(self.out_channels, 3, self.dtype, "out_layers_3", zero=True)(h)

        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, self.dtype, "skip_connection")(x)
        return x + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with guided-diffusion's legacy head order.

    The 1x1 qkv projection's channels are laid out [head, (q|k|v), head_channels]
    (QKVAttentionLegacy), which the converted official weights rely on.
    """

    num_heads: int = 1
    num_head_channels: int = -1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, hgt, wid, c = x.shape
        heads = self.num_heads if self.num_head_channels == -1 else c // self.num_head_channels
        if c % heads:
            raise ValueError(f"attention: {c} channels do not split into {heads} heads")
        ch = c // heads
        seq = x.reshape(n, hgt * wid, c)
        qkv = conv(3 * c, 1, self.dtype, "qkv", ndim=1)(GroupNorm32(self.dtype, name="norm")(seq))
        qkv = qkv.reshape(n, hgt * wid, heads, 3, ch)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        out = attention(q, k, v).reshape(n, hgt * wid, c)
        out = conv(c, 1, self.dtype, "proj_out", zero=True, ndim=1)(out)
        return (seq + out).reshape(n, hgt, wid, c)
