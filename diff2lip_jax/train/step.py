"""The jitted Diff2Lip training step: five losses, the D update, clipping, EMA (paper §3.2, eq. 9).

A batch holds B five-frame sequences:
  frames      [B, 5, H, W, 3] float32 in [-1, 1]
  ref         [B, H, W, 3]    a frame of the same clip outside the window
  indiv_mels  [B, 5, 80, 16]  each frame's mel window
  sync_mel    [B, 80, 16]     the sequence's mel window (SyncNet)

One t per sequence, shared by its 5 frames. The generator loss is
  lambda_simple * L_simple (+ lambda_vb * L_vb with learn_sigma) + lambda_l2 * L2(x0)
  + lambda_sync * L_sync + lambda_lpips * L_lpips + lambda_gan * L_GAN,
and a loss whose lambda is 0 is not built at all, so an ablation row (a config
variant) compiles exactly its own loss set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from diff2lip_jax.conditioning import FACE_HIDE_PERCENTAGE, composite, lower_half_mask, model_inputs
from diff2lip_jax.diffusion.losses import masked_mean_flat
from diff2lip_jax.models.discriminator import d_loss, g_gan_loss
from diff2lip_jax.models.syncnet import SyncExpert, expert_sync_loss
from diff2lip_jax.train.state import TrainState, generator_lr


@dataclasses.dataclass(frozen=True)
class StepModules:
    """The code of a step (static under jit): networks and the diffusion process."""

    model: Any  # TFGUNet
    diffusion: Any  # GaussianDiffusion over all T steps (no respacing)
    discriminator: Any | None  # SequenceDiscriminator, when lambda_gan > 0
    sync_expert: SyncExpert | None  # when lambda_sync > 0
    lpips_fn: Callable | None  # (params, x, y) -> [B], when lambda_lpips > 0
    tx: optax.GradientTransformation  # generator optimizer
    d_tx: optax.GradientTransformation  # discriminator optimizer


def sample_timesteps(key: jax.Array, num_sequences: int, frames: int, num_timesteps: int) -> jax.Array:
    """One uniform t per sequence, repeated over its frames: int32 [num_sequences * frames]."""
    return jnp.repeat(jax.random.randint(key, (num_sequences,), 0, num_timesteps), frames)


def generator_losses(
    params,
    frozen: dict,
    batch: dict,
    d_params,
    key: jax.Array,
    *,
    modules: StepModules,
    lambdas: ml_collections.ConfigDict,
):
    """Weighted generator loss (scalar) and aux (per-term scalars, x0 composite [B,5,H,W,3])."""
    b, f, h, w, c = batch["frames"].shape
    hide = float(lambdas.get("face_hide_percentage", FACE_HIDE_PERCENTAGE))  # the share of rows generated
    k_t, k_noise, k_cond, k_drop = jax.random.split(key, 4)
    mask = lower_half_mask(b * f, h, hide)
    x_start, kwargs = model_inputs(batch, mask, jax.random.normal(k_cond, (b * f, h, w, c)))
    t = sample_timesteps(k_t, b, f, modules.diffusion.num_timesteps)

    def model_fn(x_t, timesteps, **kw):
        return modules.model.apply({"params": params}, x_t, timesteps, train=True, rngs={"dropout": k_drop}, **kw)

    terms = modules.diffusion.training_losses(
        model_fn, x_start, t, jax.random.normal(k_noise, x_start.shape), kwargs, mask=mask
    )
    # Every image-space loss sees the known upper half composited with the predicted
    # lower half, clipped to the image range: at large t, x0 = (x_t - sqrt(1-ab) eps)
    # / sqrt(ab) amplifies eps errors ~1/sqrt(ab) (160x at t=999), and unclipped the
    # L2 term would dwarf everything else; clipped, those pixels simply pass no gradient.
    x0 = composite(jnp.clip(terms["x0_pred"], -1.0, 1.0), x_start, mask)
    x0_seq = x0.reshape(b, f, h, w, c)
    parts = {"simple": jnp.mean(terms["mse"])}
    total = lambdas.simple * parts["simple"]
    if "vb" in terms and lambdas.vb > 0:
        parts["vb"] = jnp.mean(terms["vb"])
        total += lambdas.vb * parts["vb"]
    if lambdas.l2 > 0:
        parts["l2"] = jnp.mean(masked_mean_flat(jnp.square(x0 - x_start), mask))
        total += lambdas.l2 * parts["l2"]
    if lambdas.sync > 0:
        parts["sync"] = expert_sync_loss(
            modules.sync_expert.embed, frozen["sync"], x0_seq[:, :, h - int(h * hide) :], batch["sync_mel"]
        )
        total += lambdas.sync * parts["sync"]
    if lambdas.lpips > 0:
        parts["lpips"] = jnp.mean(modules.lpips_fn(frozen["lpips"], x0_seq.reshape(b * f, h, w, c), x_start))
        total += lambdas.lpips * parts["lpips"]
    if lambdas.gan > 0:
        fake_logits = modules.discriminator.apply({"params": jax.lax.stop_gradient(d_params)}, x0_seq)
        parts["gan"] = g_gan_loss(fake_logits)
        total += lambdas.gan * parts["gan"]
    return total, (parts, jax.lax.stop_gradient(x0_seq), t)


def make_train_step(modules: StepModules, cfg: ml_collections.ConfigDict) -> Callable:
    """Builds `step(state, frozen, batch) -> (state, metrics)`, pure; the caller jits and shards it.

    `frozen` = {"sync": expert variables, "lpips": LPIPS params} (entries only for the
    losses that are on). metrics: every loss term, "loss", "d_loss", "grad_norm",
    "lr", "finite" (1.0 when the update was applied). A non-finite loss leaves the
    state unchanged (params, optimizers, EMA) and reports finite=0; the loop stops.
    """
    lambdas = cfg.loss
    ema_rate = cfg.train.ema_rate
    gan_on = lambdas.gan > 0

    def step(state: TrainState, frozen: dict, batch: dict):
        key = jax.random.fold_in(state.rng, state.step)
        g_key, _ = jax.random.split(key)
        grad_fn = jax.value_and_grad(generator_losses, has_aux=True)
        (loss, (parts, x0_seq, _)), grads = grad_fn(
            state.params, frozen, batch, state.d_params, g_key, modules=modules, lambdas=lambdas
        )
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p, state.ema_params, params)
        metrics = dict(parts, loss=loss, grad_norm=optax.tree.norm(grads), lr=generator_lr(cfg, state.step))

        d_params, d_opt_state, finite = state.d_params, state.d_opt_state, jnp.isfinite(loss)
        if gan_on:

            def d_objective(dp):
                real = modules.discriminator.apply({"params": dp}, batch["frames"])
                fake = modules.discriminator.apply({"params": dp}, x0_seq)  # x0_seq carries no gradient
                return d_loss(real, fake)

            d_value, d_grads = jax.value_and_grad(d_objective)(state.d_params)
            d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
            d_params = optax.apply_updates(state.d_params, d_updates)
            metrics["d_loss"] = d_value
            finite &= jnp.isfinite(d_value)

        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            ema_params=keep(ema, state.ema_params),
            opt_state=keep(opt_state, state.opt_state),
            d_params=keep(d_params, state.d_params),
            d_opt_state=keep(d_opt_state, state.d_opt_state),
        )
        metrics["finite"] = finite.astype(jnp.float32)
        return new_state, metrics

    return step
