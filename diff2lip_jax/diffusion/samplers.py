"""Scan-compiled samplers: DDIM (eta >= 0) and DDPM ancestral sampling.

Each loop is one jitted program whose body is a `lax.scan` over the steps, so a
25-step DDIM run costs 25 model calls plus a few fused elementwise ops per step
and no host round trips. Inputs may carry any sharding (e.g. the batch split over
a `("data",)` mesh); the loop only uses jit-compatible ops and lets XLA propagate it.

Inpainting: as in the official sampler, nothing here touches the known region.
The Diff2Lip model composes x with cond_img by mask itself (`x*mask + (1-mask)*cond`),
and the caller pastes the sample's masked region onto the frame afterwards.

Randomness: a start noise drawn from a shape uses `split(rng)[0]`; step i of the
loop (i = 0 is the noisiest) draws its noise from `fold_in(key, i)`, where key is
`rng` when the start noise is given and `split(rng)[1]` otherwise.

`model_fn(x, t, **model_kwargs)` is a static (hashed) argument of the jitted loop:
pass the same function object every call (e.g. a module-level function taking
the params through `model_kwargs`) to reuse the compiled program. Arrays it closes
over become compile-time constants.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

if TYPE_CHECKING:
    from diff2lip_jax.diffusion.gaussian import GaussianDiffusion

ModelFn = Callable[..., Array]
SampleResult = Array | tuple[Array, Array, Array]


def start_noise(rng: Array, shape: Sequence[int], shared: bool = False, dtype: Any = jnp.float32) -> Array:
    """Standard normal start noise [B, ...].

    shared=True draws one image and repeats it over the batch, the official
    `--sampling_seed` behaviour (the same noise for every frame of a video, which
    keeps the untouched texture of generated frames temporally consistent).
    """
    shape = tuple(int(s) for s in shape)
    if shared:
        one = jax.random.normal(rng, (1,) + shape[1:], dtype)
        return jnp.broadcast_to(one, shape)
    return jax.random.normal(rng, shape, dtype)


def intermediate_steps(num_steps: int, num: int) -> np.ndarray:
    """Loop steps (0 = noisiest) at which `num` intermediates are recorded: int [num].

    Evenly spaced, rounded; the first is the pure-noise step, the last the t=0 step.
    """
    if not 1 <= num <= num_steps:
        raise ValueError(f"return_intermediates={num} must be in [1, {num_steps}] (the number of sampling steps)")
    return np.round(np.linspace(0, num_steps - 1, num)).astype(np.int64)


def ddim_step(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    x: Array,
    t: Array,
    model_kwargs: Mapping[str, Any],
    clip_denoised: bool,
    eta: float,
    key: Array | None,
) -> tuple[Array, Array]:
    """One DDIM update x_t -> x_{t-1} (Song et al. eq. 12). Returns (sample, pred_xstart).

    t int [B] spaced indices; key is required only when eta > 0.
    """
    out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, model_kwargs)
    # eps is re-derived from the (possibly clipped) x0, so clipping also moves the update.
    eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
    shape = (-1,) + (1,) * (x.ndim - 1)
    alpha_bar = jnp.take(diffusion.alphas_cumprod, t).reshape(shape)
    alpha_bar_prev = jnp.take(diffusion.alphas_cumprod_prev, t).reshape(shape)
    sigma = eta * jnp.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) * jnp.sqrt(1.0 - alpha_bar / alpha_bar_prev)
    sample = out["pred_xstart"] * jnp.sqrt(alpha_bar_prev) + jnp.sqrt(1.0 - alpha_bar_prev - sigma**2) * eps
    if eta > 0.0:
        nonzero = (t != 0).astype(x.dtype).reshape(shape)
        sample = sample + nonzero * sigma * jax.random.normal(key, x.shape, x.dtype)
    return sample, out["pred_xstart"]


def p_step(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    x: Array,
    t: Array,
    model_kwargs: Mapping[str, Any],
    clip_denoised: bool,
    key: Array,
) -> tuple[Array, Array]:
    """One ancestral DDPM step: mean + exp(log_var / 2) * noise (no noise where t == 0).

    Returns (sample, pred_xstart).
    """
    out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, model_kwargs)
    nonzero = (t != 0).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    noise = jax.random.normal(key, x.shape, x.dtype)
    return out["mean"] + nonzero * jnp.exp(0.5 * out["log_variance"]) * noise, out["pred_xstart"]


def _scan_steps(
    diffusion: GaussianDiffusion,
    step: Callable[[Array, Array, Array | None], tuple[Array, Array]],
    x: Array,
    key: Array | None,
    num_intermediates: int,
) -> SampleResult:
    """Run `step(x, t, key_i)` from t = S-1 down to 0 in one lax.scan."""
    num_steps = diffusion.num_timesteps
    batch = x.shape[0]
    record = num_intermediates > 0
    slot_of_step = np.full((num_steps,), -1, np.int32)
    if record:
        slot_of_step[intermediate_steps(num_steps, num_intermediates)] = np.arange(num_intermediates, dtype=np.int32)
        buffers = (jnp.zeros((num_intermediates,) + x.shape, x.dtype),) * 2
    else:
        buffers = ()

    def body(carry, inputs):
        x_t, bufs = carry
        i, slot = inputs
        t = jnp.full((batch,), num_steps - 1, jnp.int32) - i
        step_key = None if key is None else jax.random.fold_in(key, i)
        sample, pred_xstart = step(x_t, t, step_key)
        if record:
            # Steps outside the record set rewrite a slot with its own value: no branch needed.
            s = jnp.maximum(slot, 0)
            keep = slot >= 0
            bufs = tuple(buf.at[s].set(jnp.where(keep, new, buf[s])) for buf, new in zip(bufs, (x_t, pred_xstart)))
        return (sample, bufs), None

    steps = (jnp.arange(num_steps, dtype=jnp.int32), jnp.asarray(slot_of_step))
    (x, buffers), _ = jax.lax.scan(body, (x, buffers), steps)
    if record:
        return x, buffers[0], buffers[1]
    return x


@functools.partial(jax.jit, static_argnames=("model_fn", "clip_denoised", "eta", "num_intermediates"))
def _ddim_loop(diffusion, model_fn, x, model_kwargs, key, clip_denoised, eta, num_intermediates):
    def step(x_t, t, step_key):
        return ddim_step(diffusion, model_fn, x_t, t, model_kwargs, clip_denoised, eta, step_key)

    return _scan_steps(diffusion, step, x, key, num_intermediates)


@functools.partial(jax.jit, static_argnames=("model_fn", "clip_denoised", "num_intermediates"))
def _p_loop(diffusion, model_fn, x, model_kwargs, key, clip_denoised, num_intermediates):
    def step(x_t, t, step_key):
        return p_step(diffusion, model_fn, x_t, t, model_kwargs, clip_denoised, step_key)

    return _scan_steps(diffusion, step, x, key, num_intermediates)


def _prepare_start(
    noise: Array | Sequence[int], rng: Array | None, shared_noise: bool, needs_step_key: bool
) -> tuple[Array, Array | None]:
    """(start image, key for per-step noise) from a given noise array or a shape + rng."""
    if isinstance(noise, (tuple, list)):
        if rng is None:
            raise ValueError("a start-noise shape needs rng to draw the noise from")
        start_key, step_key = jax.random.split(rng)
        return start_noise(start_key, noise, shared=shared_noise), step_key
    if needs_step_key and rng is None:
        raise ValueError("this sampler draws noise at every step: pass rng")
    return jnp.asarray(noise, jnp.float32), rng


def ddim_sample_loop(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    noise: Array | Sequence[int],
    model_kwargs: Mapping[str, Any] | None = None,
    clip_denoised: bool = True,
    eta: float = 0.0,
    rng: Array | None = None,
    return_intermediates: int = 0,
    shared_noise: bool = False,
) -> SampleResult:
    """DDIM sampling over all steps of `diffusion` (e.g. 25 for "ddim25"), jitted as one scan.

    noise: start x_T, float32 [B, H, W, C], or a shape to draw it from `rng`
      (`shared_noise=True`: one image repeated over the batch, see `start_noise`).
    model_fn(x, t, **model_kwargs) -> [B, H, W, C or 2C], t the ORIGINAL int32 steps [B].
    eta: Python float >= 0; eta > 0 adds fresh noise every step and needs rng.
    return_intermediates=K > 0 also returns x_t and clipped x0 predictions at K
      evenly spaced steps: (sample, xs [K, B, ...], x0s [K, B, ...]).
    Returns the sample [B, H, W, C] float32 (its whole image; paste the masked region).
    """
    eta = float(eta)
    if eta < 0.0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x, key = _prepare_start(noise, rng, shared_noise, needs_step_key=eta > 0.0)
    return _ddim_loop(
        diffusion,
        model_fn,
        x,
        dict(model_kwargs or {}),
        key if eta > 0.0 else None,
        clip_denoised=bool(clip_denoised),
        eta=eta,
        num_intermediates=int(return_intermediates),
    )


def p_sample_loop(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    noise: Array | Sequence[int],
    model_kwargs: Mapping[str, Any] | None = None,
    clip_denoised: bool = True,
    rng: Array | None = None,
    return_intermediates: int = 0,
    shared_noise: bool = False,
) -> SampleResult:
    """Ancestral DDPM sampling over all steps of `diffusion`, jitted as one scan.

    Same arguments and results as `ddim_sample_loop`; rng is required (every step
    but the last adds noise with the model's variance: learned range or fixed large).
    """
    if rng is None:
        raise ValueError("p_sample_loop draws noise at every step: pass rng")
    x, key = _prepare_start(noise, rng, shared_noise, needs_step_key=True)
    return _p_loop(
        diffusion,
        model_fn,
        x,
        dict(model_kwargs or {}),
        key,
        clip_denoised=bool(clip_denoised),
        num_intermediates=int(return_intermediates),
    )
