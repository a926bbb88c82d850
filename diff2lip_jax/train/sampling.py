"""Sample grids during training: masked input | reference | x0_pred | short DDIM sample | ground truth."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from diff2lip_jax.conditioning import composite, lower_half_mask, model_inputs
from diff2lip_jax.diffusion import create_diffusion_from_config

# Left to right in the PNG. The jitted function returns a tuple in this order: a dict
# output of jit comes back with its keys sorted, which would scramble the columns.
GRID_COLUMNS = ("input", "reference", "x0_pred", "sample", "ground_truth")


def make_sample_fn(model, cfg: ml_collections.ConfigDict) -> Callable:
    """`fn(params, batch, key) -> columns`: a tuple in `GRID_COLUMNS` order, each [B*5, H, W, 3] float32.

    Images are in [-1, 1].

    x0_pred is the one-step prediction from x_t at t = T/2 (what the image losses
    see); the sample runs `train.sample_ddim_steps` DDIM steps from noise, with the
    known upper half composited in as the official generate does.
    """
    full = create_diffusion_from_config(cfg, timestep_respacing="")
    short = create_diffusion_from_config(cfg, timestep_respacing=f"ddim{cfg.train.sample_ddim_steps}")
    hide = cfg.loss.face_hide_percentage

    def apply(x, t, params, **kw):
        return model.apply({"params": params}, x, t, **kw)

    @jax.jit
    def fn(params, batch, key):
        b, f, h, w, c = batch["frames"].shape
        k_cond, k_noise, k_sample = jax.random.split(key, 3)
        mask = lower_half_mask(b * f, h, hide)
        x, kwargs = model_inputs(batch, mask, jax.random.normal(k_cond, (b * f, h, w, c)))
        t = jnp.full((b * f,), full.num_timesteps // 2, jnp.int32)
        x_t = full.q_sample(x, t, jax.random.normal(k_noise, x.shape))
        eps, _ = full.split_model_output(apply(x_t, full.model_timesteps(t), params, **kwargs), x_t)
        x0 = jnp.clip(full.predict_xstart_from_eps(x_t, t, eps), -1, 1)
        sample = short.ddim_sample_loop(
            apply, jax.random.normal(k_sample, x.shape), model_kwargs=dict(kwargs, params=params)
        )
        known = lambda img: composite(img, x, mask)
        return kwargs["cond_img"], kwargs["ref_img"][..., :3], known(x0), known(sample), x

    return fn
