"""Diff2Lip model, diffusion and training configs.

    --config=configs/diff2lip.py:official          the paper's 128 px model
    --config=configs/diff2lip.py:tiny              a model that trains on a laptop CPU
    --config=configs/diff2lip.py:official,losses=sync   (ablation rows, training issue)

Model and diffusion fields carry the official flag names, so a user who knows
`scripts/inference.sh` sets the same values with `--config.model.X=V`.
"""

from __future__ import annotations

import ml_collections

from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS

VARIANTS = ("official", "tiny")


def _parse_arg(arg: str | None) -> dict[str, str]:
    """'official,losses=sync' -> {'variant': 'official', 'losses': 'sync'}."""
    parts = [p for p in (arg or "official").split(",") if p]
    out = {"variant": "official"}
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
        else:
            out["variant"] = part.strip()
    if out["variant"] not in VARIANTS:
        raise ValueError(f"unknown variant {out['variant']!r}; choose one of {VARIANTS}")
    return out


def model_config(variant: str = "official") -> ml_collections.ConfigDict:
    """The UNet flags (official names) for a variant."""
    model = ml_collections.ConfigDict(dict(OFFICIAL_MODEL_FLAGS))
    model.compute_dtype = "auto"  # with use_fp16: bfloat16 ("float16" for the official GPU numerics)
    model.audio_encoder_kwargs = ml_collections.ConfigDict({})
    if variant == "tiny":
        model.image_size = 64
        model.num_channels = 32
        model.num_res_blocks = 1
        model.num_head_channels = 16
        model.attention_resolutions = "16,8"
        model.audio_encoder_kwargs = ml_collections.ConfigDict({"num_res_blocks": 1})
    return model


def diffusion_config() -> ml_collections.ConfigDict:
    """The official diffusion flags: 1000 linear steps, sampled with 25 DDIM steps."""
    return ml_collections.ConfigDict(dict(
        diffusion_steps=1000,
        noise_schedule="linear",
        learn_sigma=True,
        timestep_respacing="ddim25",
        predict_xstart=False,
        rescale_timesteps=False,
    ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse_arg(arg)
    variant = args["variant"]
    cfg = ml_collections.ConfigDict()
    cfg.variant = variant
    cfg.model = model_config(variant)
    cfg.diffusion = diffusion_config()
    # learn_sigma is both a model and a diffusion flag in the official code; one value.
    cfg.diffusion.learn_sigma = cfg.model.get_ref("learn_sigma")
    return cfg
