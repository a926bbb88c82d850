"""Sequence PatchGAN for Diff2Lip's L_GAN (paper §3.2) and its non-saturating losses.

The discriminator judges a whole 5-frame window at once so it can penalise
temporal flicker as well as per-frame artefacts. Frames are stacked on channels
([B, T, H, W, 3] -> [B, H, W, 3T], channel = 3 t + c, time order) and fed to a
pix2pix-style PatchGAN (4x4 convs, LeakyReLU 0.2). Channel stacking keeps it a
plain 2-D network (cheap, well supported on every backend) while the first conv
already sees all frames; a 3-D conv over 5 steps would add little.

Norm is GroupNorm or none: no batch statistics, so the discriminator update is
a pure function inside the jitted training step and behaves the same at any
per-device batch size.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def _num_groups(channels: int) -> int:
    """At most 32 groups, at least 4 channels per group when possible."""
    return math.gcd(channels, max(1, min(32, channels // 4)))


class SequenceDiscriminator(nn.Module):
    """PatchGAN over a frame sequence.

    Attributes:
      base_channels: width of the first layer (pix2pix `ndf`, 64).
      num_layers: stride-2 layers (pix2pix `n_layers`, 3); each doubles the width,
        capped at 8x `base_channels`.
      norm: "group" (GroupNorm) or "none".
      dtype: compute dtype; params are float32, logits are returned in float32.

    Call: frames [B, T, H, W, 3] float in [-1, 1] -> patch logits [B, h, w, 1]
    float32 (for 128x128 and 3 layers: [B, 14, 14, 1]; each logit sees a 70x70
    receptive field of every frame).
    """

    base_channels: int = 64
    num_layers: int = 3
    norm: str = "group"
    dtype: Dtype = jnp.float32

    def _conv(self, features: int, stride: int, name: str, use_bias: bool = True) -> nn.Conv:
        return nn.Conv(
            features,
            (4, 4),
            strides=(stride, stride),
            padding=[(1, 1), (1, 1)],
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    def _normed(self, h: jax.Array, name: str) -> jax.Array:
        if self.norm == "group":
            h = nn.GroupNorm(
                _num_groups(h.shape[-1]), epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name=name
            )(h)
        return nn.leaky_relu(h, 0.2)

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        if self.norm not in ("group", "none"):
            raise ValueError(f"SequenceDiscriminator: norm={self.norm!r}, use 'group' or 'none'")
        if frames.ndim != 5:
            raise ValueError(f"SequenceDiscriminator: frames must be [B, T, H, W, C], got {frames.shape}")
        b, t, h, w, c = frames.shape
        x = jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c).astype(self.dtype)
        # A norm right after the first conv would wash out the input statistics (pix2pix skips it).
        x = nn.leaky_relu(self._conv(self.base_channels, 2, "conv_0")(x), 0.2)
        use_bias = self.norm == "none"  # a bias before GroupNorm is cancelled by it
        for n in range(1, self.num_layers + 1):
            mult = min(2**n, 8)
            stride = 2 if n < self.num_layers else 1
            x = self._conv(self.base_channels * mult, stride, f"conv_{n}", use_bias)(x)
            x = self._normed(x, f"norm_{n}")
        return self._conv(1, 1, "logits")(x).astype(jnp.float32)


def d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Non-saturating discriminator loss: mean softplus(-real) + mean softplus(fake) (scalar float32).

    Equals BCE-with-logits of real vs 1 plus fake vs 0; both at logit 0 give 2 log 2.
    """
    return jnp.mean(jax.nn.softplus(-real_logits.astype(jnp.float32))) + jnp.mean(
        jax.nn.softplus(fake_logits.astype(jnp.float32))
    )


def g_gan_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss: mean softplus(-fake) = BCE(fake, 1) (scalar float32)."""
    return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))
