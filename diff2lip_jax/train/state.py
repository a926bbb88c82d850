"""The training state: generator, its EMA, discriminator, both optimizers, step and RNG."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax


class TrainState(flax.struct.PyTreeNode):
    """Everything a step reads and writes; a pytree, so it shards, donates and checkpoints whole.

    The optimizers are static fields: they are code, rebuilt from the config on resume.
    """

    step: jax.Array  # int32 scalar
    params: Any  # generator (UNet) params, float32
    ema_params: Any
    opt_state: Any
    d_params: Any  # sequence discriminator params ({} when the GAN loss is off)
    d_opt_state: Any
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def lr_schedule(lr: float, warmup_steps: int = 0, decay_steps: int = 0) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then constant, or with `decay_steps` > 0
    cosine decay to 0 at step `decay_steps`. Used by the Diff2Lip and the SyncNet optimizers."""
    if decay_steps > 0:
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(decay_steps, warmup_steps + 1))
    return optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps > 0 else optax.constant_schedule(lr)


def clipped_adamw(
    lr: float, weight_decay: float, grad_clip: float, warmup_steps: int = 0, b1: float = 0.9, b2: float = 0.999
) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and an optional linear warm-up (constant after)."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(lr_schedule(lr, warmup_steps), b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)


def generator_lr(cfg: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The generator's learning rate at `step` (for logging): the schedule make_optimizers uses."""
    return jnp.asarray(lr_schedule(cfg.train.lr, cfg.train.warmup_steps)(step), jnp.float32)


def make_optimizers(cfg: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
    """(generator, discriminator) optimizers. Build once per run: states compare them by identity."""
    tx = clipped_adamw(cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip, cfg.train.warmup_steps)
    d_tx = clipped_adamw(cfg.train.d_lr, 0.0, cfg.train.grad_clip, 0, b1=0.5)
    return tx, d_tx


def create_train_state(
    params: Any, d_params: Any, rng: jax.Array, tx: optax.GradientTransformation, d_tx: optax.GradientTransformation
) -> TrainState:
    """A fresh state (step 0) from initialised generator and discriminator params."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        d_params=d_params,
        d_opt_state=d_tx.init(d_params),
        rng=rng,
        tx=tx,
        d_tx=d_tx,
    )
