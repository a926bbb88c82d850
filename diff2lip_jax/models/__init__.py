"""Networks: the TFG UNet (Diff2Lip), SyncNet experts, the sequence discriminator, LPIPS."""

from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS, AudioEncoderConfig, UNetConfig
from diff2lip_jax.models.discriminator import SequenceDiscriminator, d_loss, g_gan_loss
from diff2lip_jax.models.lpips import LPIPSNet, make_lpips, save_lpips_weights
from diff2lip_jax.models.syncnet import (
    SyncExpert,
    SyncNet,
    SyncNetExpert,
    Wav2LipExpert,
    Wav2LipSyncNet,
    cosine_similarity,
    expert_sync_loss,
    load_wav2lip_syncnet,
    stack_frames,
    sync_accuracy,
    sync_loss,
    to_wav2lip_faces,
    wav2lip_variables_from_state_dict,
)
from diff2lip_jax.models.unet import (
    TFGUNet,
    abstract_params,
    build_unet,
    init_params,
    random_params,
    resolve_compute_dtype,
)

__all__ = [
    "OFFICIAL_MODEL_FLAGS",
    "AudioEncoderConfig",
    "UNetConfig",
    "TFGUNet",
    "abstract_params",
    "build_unet",
    "init_params",
    "random_params",
    "resolve_compute_dtype",
    "SequenceDiscriminator",
    "d_loss",
    "g_gan_loss",
    "LPIPSNet",
    "make_lpips",
    "save_lpips_weights",
    "SyncExpert",
    "SyncNet",
    "SyncNetExpert",
    "Wav2LipExpert",
    "Wav2LipSyncNet",
    "cosine_similarity",
    "expert_sync_loss",
    "load_wav2lip_syncnet",
    "stack_frames",
    "sync_accuracy",
    "sync_loss",
    "to_wav2lip_faces",
    "wav2lip_variables_from_state_dict",
]
