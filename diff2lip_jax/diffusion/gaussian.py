"""The Gaussian diffusion process: forward noising, posterior, model reparametrisations, losses.

`GaussianDiffusion` is a flax struct (a pytree of float32 schedule arrays plus
static flags), so it can be passed into or closed over by jitted functions. It is
always the *spaced* process of guided-diffusion's SpacedDiffusion: indices `t`
given to its methods count the kept steps (0..num_timesteps-1), and the model is
called with `timestep_map[t]`, the step of the original process (optionally
rescaled to 0..1000). With no respacing the map is the identity.

Images are NHWC: x [B, H, W, C], mask [B, H, W, 1], t int [B]; the model output is
[B, H, W, 2C] when learn_sigma (channels [eps | v]) else [B, H, W, C].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diff2lip_jax.diffusion import losses, samplers

ModelFn = Callable[..., Array]

_LOG2 = float(np.log(2.0))


def _extract(arr: Array, t: Array, ndim: int) -> Array:
    """arr[t] shaped [B, 1, ..., 1] to broadcast against a rank-`ndim` batch."""
    values = jnp.take(arr, t, axis=0)
    return values.reshape(values.shape + (1,) * (ndim - 1))


@flax.struct.dataclass
class GaussianDiffusion:
    """Schedule arrays (float32 [S], computed in float64) and flags of one diffusion process.

    Build with `GaussianDiffusion.from_betas` or `diff2lip_jax.diffusion.create_diffusion`.
    Sampling loops live in `samplers`; the methods `ddim_sample_loop` and
    `p_sample_loop` forward to them.
    """

    betas: Array
    log_betas: Array
    alphas_cumprod: Array
    alphas_cumprod_prev: Array
    alphas_cumprod_next: Array
    sqrt_alphas_cumprod: Array
    sqrt_one_minus_alphas_cumprod: Array
    log_one_minus_alphas_cumprod: Array
    sqrt_recip_alphas_cumprod: Array
    sqrt_recipm1_alphas_cumprod: Array
    posterior_variance: Array
    posterior_log_variance_clipped: Array
    posterior_mean_coef1: Array
    posterior_mean_coef2: Array
    fixed_large_variance: Array
    fixed_large_log_variance: Array
    timestep_map: Array  # int32 [S]: spaced index -> original timestep
    num_timesteps: int = flax.struct.field(pytree_node=False)
    original_num_steps: int = flax.struct.field(pytree_node=False)
    learn_sigma: bool = flax.struct.field(pytree_node=False)
    predict_xstart: bool = flax.struct.field(pytree_node=False)
    rescale_timesteps: bool = flax.struct.field(pytree_node=False)

    @classmethod
    def from_betas(
        cls,
        betas: np.ndarray,
        timestep_map: np.ndarray | None = None,
        *,
        original_num_steps: int | None = None,
        learn_sigma: bool = False,
        predict_xstart: bool = False,
        rescale_timesteps: bool = False,
    ) -> GaussianDiffusion:
        """Derive every schedule array from betas (float64 [S]) in float64, store as float32.

        `timestep_map` (int [S]) names the original step of each kept step (identity
        by default); `original_num_steps` is T of the original process (default S).
        """
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be 1-D with values in (0, 1]")
        steps = betas.shape[0]
        tmap = np.arange(steps) if timestep_map is None else np.asarray(timestep_map)
        if tmap.shape != (steps,):
            raise ValueError(f"timestep_map has shape {tmap.shape}, expected ({steps},)")
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        ac_next = np.append(ac[1:], 0.0)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        # The posterior variance is 0 at t=0; its log borrows the t=1 value there.
        # (With a single step there is no t=1 value: the log is then -inf at t=0, as upstream.)
        with np.errstate(divide="ignore"):
            post_log_var = np.log(np.append(post_var[1], post_var[1:]) if steps > 1 else post_var)
        # "Fixed large" variance: betas, except the first step takes the posterior value.
        large_var = np.append(post_var[1], betas[1:]) if steps > 1 else betas.copy()
        f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
        return cls(
            betas=f32(betas),
            log_betas=f32(np.log(betas)),
            alphas_cumprod=f32(ac),
            alphas_cumprod_prev=f32(ac_prev),
            alphas_cumprod_next=f32(ac_next),
            sqrt_alphas_cumprod=f32(np.sqrt(ac)),
            sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)),
            log_one_minus_alphas_cumprod=f32(np.log(1.0 - ac)),
            sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / ac)),
            sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / ac - 1.0)),
            posterior_variance=f32(post_var),
            posterior_log_variance_clipped=f32(post_log_var),
            posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1.0 - ac)),
            posterior_mean_coef2=f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
            fixed_large_variance=f32(large_var),
            fixed_large_log_variance=f32(np.log(large_var)),
            timestep_map=jnp.asarray(tmap, jnp.int32),
            num_timesteps=int(steps),
            original_num_steps=int(original_num_steps or steps),
            learn_sigma=bool(learn_sigma),
            predict_xstart=bool(predict_xstart),
            rescale_timesteps=bool(rescale_timesteps),
        )

    # ----------------------------------------------------------------- forward process

    def model_timesteps(self, t: Array) -> Array:
        """What the model sees for spaced indices t [B]: original int32 steps, or
        float32 steps scaled to 0..1000 when rescale_timesteps."""
        original = jnp.take(self.timestep_map, t, axis=0)
        if self.rescale_timesteps:
            return original.astype(jnp.float32) * (1000.0 / self.original_num_steps)
        return original

    def q_mean_variance(self, x_start: Array, t: Array) -> tuple[Array, Array, Array]:
        """Mean, variance, log-variance of q(x_t | x_0); each broadcastable to x_start."""
        mean = _extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
        var = _extract(1.0 - self.alphas_cumprod, t, x_start.ndim)
        log_var = _extract(self.log_one_minus_alphas_cumprod, t, x_start.ndim)
        return mean, var, log_var

    def q_sample(self, x_start: Array, t: Array, noise: Array) -> Array:
        """Sample of q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise; x_start's shape."""
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise
        )

    def q_posterior_mean_variance(self, x_start: Array, x_t: Array, t: Array) -> tuple[Array, Array, Array]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        nd = x_t.ndim
        mean = _extract(self.posterior_mean_coef1, t, nd) * x_start + _extract(self.posterior_mean_coef2, t, nd) * x_t
        return (mean, _extract(self.posterior_variance, t, nd), _extract(self.posterior_log_variance_clipped, t, nd))

    def predict_xstart_from_eps(self, x_t: Array, t: Array, eps: Array) -> Array:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), x_t's shape."""
        return (
            _extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
        )

    def predict_eps_from_xstart(self, x_t: Array, t: Array, pred_xstart: Array) -> Array:
        """The eps that maps x_0 to x_t at step t (inverse of `predict_xstart_from_eps`)."""
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
        )

    # ----------------------------------------------------------------- reverse process

    def split_model_output(self, model_output: Array, x: Array) -> tuple[Array, Array | None]:
        """[B,H,W,2C] -> (eps or x0 [B,H,W,C], v [B,H,W,C]) when learn_sigma, else (out, None)."""
        c = x.shape[-1]
        expected = 2 * c if self.learn_sigma else c
        if model_output.shape[:-1] != x.shape[:-1] or model_output.shape[-1] != expected:
            raise ValueError(f"model output {model_output.shape}, expected {x.shape[:-1] + (expected,)}")
        if self.learn_sigma:
            return model_output[..., :c], model_output[..., c:]
        return model_output, None

    def p_mean_variance_from_output(
        self, model_output: Array, x: Array, t: Array, clip_denoised: bool = True
    ) -> dict[str, Array]:
        """p(x_{t-1} | x_t) from a model output already computed at (x, t).

        Returns {"mean", "variance", "log_variance", "pred_xstart"}, each x's shape
        (variances broadcastable to it when fixed). With learn_sigma the v channels
        interpolate the log-variance between the clipped posterior log-variance
        (v=-1) and log beta_t (v=+1).
        """
        nd = x.ndim
        mean_out, var_values = self.split_model_output(model_output, x)
        if var_values is not None:
            min_log = _extract(self.posterior_log_variance_clipped, t, nd)
            max_log = _extract(self.log_betas, t, nd)
            frac = (var_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = jnp.exp(log_variance)
        else:
            variance = _extract(self.fixed_large_variance, t, nd)
            log_variance = _extract(self.fixed_large_log_variance, t, nd)
        if self.predict_xstart:
            pred_xstart = mean_out
        else:
            pred_xstart = self.predict_xstart_from_eps(x, t, mean_out)
        if clip_denoised:
            pred_xstart = jnp.clip(pred_xstart, -1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_mean_variance(
        self,
        model_fn: ModelFn,
        x: Array,
        t: Array,
        clip_denoised: bool = True,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> dict[str, Array]:
        """Call `model_fn(x, model_timesteps(t), **model_kwargs)` and return
        `p_mean_variance_from_output` of its output."""
        out = model_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.p_mean_variance_from_output(out, x, t, clip_denoised)

    # ----------------------------------------------------------------- bound and losses

    def vb_terms_bpd(
        self,
        model_output: Array,
        x_start: Array,
        x_t: Array,
        t: Array,
        clip_denoised: bool = False,
        mask: Array | None = None,
    ) -> Array:
        """One term of the variational bound, in bits per dimension: [B] float32.

        KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0, the discretised decoder
        NLL of x_0 at t == 0. With a mask the per-pixel terms are zeroed outside it
        and still averaged over the whole image, as Diff2Lip's guided-diffusion does.
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised)
        kl = losses.normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])
        nll = -losses.discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=jnp.broadcast_to(0.5 * out["log_variance"], x_start.shape)
        )
        if mask is not None:
            kl = kl * mask
            nll = nll * mask
        kl = losses.mean_flat(kl) / _LOG2
        nll = losses.mean_flat(nll) / _LOG2
        return jnp.where(t == 0, nll, kl)

    def prior_bpd(self, x_start: Array) -> Array:
        """KL(q(x_T | x_0) || N(0, I)) in bits per dimension: [B]."""
        t = jnp.full((x_start.shape[0],), self.num_timesteps - 1, jnp.int32)
        mean, _, log_var = self.q_mean_variance(x_start, t)
        return losses.mean_flat(losses.normal_kl(mean, log_var, 0.0, 0.0)) / _LOG2

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: Array,
        t: Array,
        noise: Array,
        model_kwargs: Mapping[str, Any] | None = None,
        mask: Array | None = None,
    ) -> dict[str, Array]:
        """guided-diffusion's hybrid loss on one noised batch.

        x_start, noise [B,H,W,C] float32; t int [B] (indices of this process; use the
        un-respaced diffusion for training); mask [B,H,W,1] with 1 on the region to
        generate (None: whole image). The model is called once on x_t with
        `model_timesteps(t)` and `model_kwargs`.

        Returns per-example float32 terms:
          "mse"     [B]  squared error of eps (x_0 with predict_xstart), averaged over mask==1;
          "vb"      [B]  (learn_sigma only) `vb_terms_bpd` with the mean output frozen
                         (stop_gradient) so it trains only the variance, times S/1000;
          "loss"    [B]  mse + vb;
          "x0_pred" [B,H,W,C] x_0 from the model's eps on x_t, unclipped, with gradients;
          "x_t"     [B,H,W,C] the noised input; "model_output" the raw model output.
        """
        x_t = self.q_sample(x_start, t, noise)
        model_output = model_fn(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        pred, var_values = self.split_model_output(model_output, x_t)
        target = x_start if self.predict_xstart else noise
        mse = losses.masked_mean_flat(jnp.square(target - pred), mask)
        x0_pred = pred if self.predict_xstart else self.predict_xstart_from_eps(x_t, t, pred)
        terms = {"mse": mse, "x0_pred": x0_pred, "x_t": x_t, "model_output": model_output}
        loss = mse
        if var_values is not None:
            frozen = jnp.concatenate([jax.lax.stop_gradient(pred), var_values], axis=-1)
            vb = self.vb_terms_bpd(frozen, x_start, x_t, t, clip_denoised=False, mask=mask)
            # Keeps the vb weight independent of how many steps the process has.
            vb = vb * (self.num_timesteps / 1000.0)
            terms["vb"] = vb
            loss = loss + vb
        terms["loss"] = loss
        return terms

    # ----------------------------------------------------------------- sampling

    def ddim_sample_loop(
        self, model_fn: ModelFn, noise, model_kwargs=None, clip_denoised=True, eta=0.0, rng=None, **kwargs
    ):
        """See `samplers.ddim_sample_loop`."""
        return samplers.ddim_sample_loop(
            self, model_fn, noise, model_kwargs=model_kwargs, clip_denoised=clip_denoised, eta=eta, rng=rng, **kwargs
        )

    def p_sample_loop(self, model_fn: ModelFn, noise, model_kwargs=None, clip_denoised=True, rng=None, **kwargs):
        """See `samplers.p_sample_loop`."""
        return samplers.p_sample_loop(
            self, model_fn, noise, model_kwargs=model_kwargs, clip_denoised=clip_denoised, rng=rng, **kwargs
        )

    def intermediate_timesteps(self, num: int) -> np.ndarray:
        """Original timesteps at which `return_intermediates=num` records x_t and x0: int [num]."""
        steps = samplers.intermediate_steps(self.num_timesteps, num)
        return np.asarray(self.timestep_map)[self.num_timesteps - 1 - steps]
