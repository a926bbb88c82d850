"""Networks: the TFG UNet (Diff2Lip), and later SyncNet, discriminator, LPIPS."""

from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS, AudioEncoderConfig, UNetConfig
from diff2lip_jax.models.unet import TFGUNet, abstract_params, build_unet, init_params, resolve_compute_dtype

__all__ = ["OFFICIAL_MODEL_FLAGS", "AudioEncoderConfig", "UNetConfig", "TFGUNet", "abstract_params", "build_unet",
           "init_params", "resolve_compute_dtype"]
