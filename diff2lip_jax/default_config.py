"""The library's default config: the official model and diffusion flags.

What `diff2lip-generate` and `diff2lip-convert` use without `--config` (the released
checkpoint's flags, `scripts/inference.sh`), and the `model` / `diffusion` blocks the
training recipes in `configs/diff2lip.py` start from. Fields carry the official flag
names, so `--config.model.X=V` sets what `--X V` sets in the official scripts.

This module is also a config file (`get_config()` below): `config_flags` loads it by
path as the default of a `--config` flag (`cli.LIBRARY_CONFIG`, `cli.define_config_flag`),
so overrides such as `--config.model.num_channels=64` work without `--config`.
"""

from __future__ import annotations

import ml_collections

from diff2lip_jax.diffusion import OFFICIAL_DIFFUSION_FLAGS
from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS


def model_config() -> ml_collections.ConfigDict:
    """The official UNet flags, plus our `compute_dtype`."""
    model = ml_collections.ConfigDict(dict(OFFICIAL_MODEL_FLAGS))
    model.compute_dtype = "auto"  # with use_fp16: bfloat16 ("float16" for the official GPU numerics)
    model.audio_encoder_kwargs = ml_collections.ConfigDict({})
    return model


def diffusion_config() -> ml_collections.ConfigDict:
    """The official diffusion flags: 1000 linear steps, sampled with 25 DDIM steps."""
    return ml_collections.ConfigDict(dict(OFFICIAL_DIFFUSION_FLAGS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`model` and `diffusion` blocks of the official run; `diffusion.learn_sigma` follows `model.learn_sigma`."""
    if arg:
        raise ValueError(f"the library default config takes no argument (got {arg!r}); pass --config=FILE.py:ARG")
    cfg = ml_collections.ConfigDict()
    cfg.model = model_config()
    cfg.diffusion = diffusion_config()
    # learn_sigma is both a model and a diffusion flag in the official code; one value.
    cfg.diffusion.learn_sigma = cfg.model.get_ref("learn_sigma")
    return cfg
