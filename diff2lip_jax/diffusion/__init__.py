"""Gaussian diffusion for Diff2Lip: schedules, respacing, losses and scan-compiled samplers.

    diffusion = create_diffusion(1000, "linear", learn_sigma=True, timestep_respacing="ddim25")
    sample = diffusion.ddim_sample_loop(model_fn, noise, model_kwargs=dict(cond_img=..., mask=...))

Train with the full process (`timestep_respacing=""`), sample with a respaced one;
in both the model receives ORIGINAL timesteps (or 0..1000-scaled floats with
rescale_timesteps), as guided-diffusion's SpacedDiffusion does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diff2lip_jax.diffusion.gaussian import GaussianDiffusion
from diff2lip_jax.diffusion.losses import discretized_gaussian_log_likelihood, masked_mean_flat, mean_flat, normal_kl
from diff2lip_jax.diffusion.samplers import (
    ddim_sample_loop,
    ddim_step,
    intermediate_steps,
    p_sample_loop,
    p_step,
    start_noise,
)
from diff2lip_jax.diffusion.schedules import (
    betas_for_alpha_bar,
    get_named_beta_schedule,
    respace_betas,
    respacing_steps,
    space_timesteps,
)

DIFFUSION_FLAGS = (
    "diffusion_steps",
    "noise_schedule",
    "learn_sigma",
    "timestep_respacing",
    "predict_xstart",
    "rescale_timesteps",
)

# The official Diff2Lip run (`scripts/inference.sh`): 1000 linear steps, learned
# variance, sampled with 25 DDIM steps (training uses the full process).
OFFICIAL_DIFFUSION_FLAGS: dict[str, Any] = dict(
    diffusion_steps=1000,
    noise_schedule="linear",
    learn_sigma=True,
    timestep_respacing="ddim25",
    predict_xstart=False,
    rescale_timesteps=False,
)

# guided-diffusion's defaults for flags a config leaves out.
_DEFAULTS = dict(
    diffusion_steps=1000,
    noise_schedule="linear",
    learn_sigma=False,
    timestep_respacing="",
    predict_xstart=False,
    rescale_timesteps=False,
)


def create_diffusion(
    diffusion_steps: int,
    noise_schedule: str,
    learn_sigma: bool,
    timestep_respacing: str | Sequence[int] | None,
    predict_xstart: bool = False,
    rescale_timesteps: bool = False,
) -> GaussianDiffusion:
    """The (respaced) diffusion of the official flags.

    diffusion_steps: T of the original process; noise_schedule: "linear" | "cosine";
    learn_sigma: model output [eps | v] with learned-range variance (else fixed-large
    variance); timestep_respacing: "" / None (all T steps), "ddimN", "N" or "a,b,c"
    (see `space_timesteps`; raises ValueError when impossible); predict_xstart: the
    model outputs x_0 instead of eps; rescale_timesteps: the model gets float
    timesteps scaled to 0..1000.
    """
    steps = int(diffusion_steps)
    betas = get_named_beta_schedule(str(noise_schedule), steps)
    new_betas, timestep_map = respace_betas(betas, respacing_steps(steps, timestep_respacing))
    return GaussianDiffusion.from_betas(
        new_betas,
        timestep_map,
        original_num_steps=steps,
        learn_sigma=learn_sigma,
        predict_xstart=predict_xstart,
        rescale_timesteps=rescale_timesteps,
    )


def create_diffusion_from_config(cfg: Mapping[str, Any] | Any, **overrides: Any) -> GaussianDiffusion:
    """`create_diffusion` from a dict / ConfigDict holding the official flag names.

    Accepts the diffusion sub-config or a whole config with a `diffusion` field;
    other keys (model flags, ...) are ignored, missing flags take guided-diffusion's
    defaults, and keyword `overrides` win, e.g. `timestep_respacing=""` for training.
    """
    if "diffusion_steps" not in cfg and "diffusion" in cfg:
        cfg = cfg["diffusion"]
    unknown = set(overrides) - set(DIFFUSION_FLAGS)
    if unknown:
        raise TypeError(f"unknown diffusion flags {sorted(unknown)}; known: {DIFFUSION_FLAGS}")
    flags = {name: cfg[name] if name in cfg else _DEFAULTS[name] for name in DIFFUSION_FLAGS}
    flags.update(overrides)
    return create_diffusion(**flags)


__all__ = [
    "DIFFUSION_FLAGS",
    "OFFICIAL_DIFFUSION_FLAGS",
    "GaussianDiffusion",
    "betas_for_alpha_bar",
    "create_diffusion",
    "create_diffusion_from_config",
    "ddim_sample_loop",
    "ddim_step",
    "discretized_gaussian_log_likelihood",
    "get_named_beta_schedule",
    "intermediate_steps",
    "masked_mean_flat",
    "mean_flat",
    "normal_kl",
    "p_sample_loop",
    "p_step",
    "respace_betas",
    "respacing_steps",
    "space_timesteps",
    "start_noise",
]
