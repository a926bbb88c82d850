"""Builds the step's modules, the frozen networks and a fresh TrainState from a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from diff2lip_jax.checkpoint import load_syncnet
from diff2lip_jax.diffusion import create_diffusion_from_config
from diff2lip_jax.models import build_unet, init_params
from diff2lip_jax.models.discriminator import SequenceDiscriminator
from diff2lip_jax.models.lpips import make_lpips
from diff2lip_jax.models.syncnet import SyncNet, SyncNetExpert, Wav2LipExpert, load_wav2lip_syncnet, stack_frames
from diff2lip_jax.train.state import TrainState, create_train_state, make_optimizers
from diff2lip_jax.train.step import StepModules


def build_sync_expert(cfg: ml_collections.ConfigDict, image_size: int):
    """(SyncExpert, variables) per cfg.syncnet: ours from a syncnet workdir, Wav2Lip's .pth, or random."""
    kind, path = cfg.syncnet.kind, cfg.syncnet.checkpoint
    if kind == "wav2lip":
        if not path:
            raise ValueError("syncnet.kind=wav2lip needs --config.syncnet.checkpoint=lipsync_expert.pth")
        return Wav2LipExpert(), load_wav2lip_syncnet(path)
    if kind != "ours":
        raise ValueError(f"syncnet.kind={kind!r}: use 'ours' or 'wav2lip'")
    if path:
        module, variables = load_syncnet(path)
        return SyncNetExpert(module), variables
    logging.warning(
        "syncnet.checkpoint is empty: the sync loss uses a RANDOM SyncNet (tests only); "
        "train one with diff2lip-train-syncnet and set --config.syncnet.checkpoint"
    )
    module = SyncNet(base_channels=cfg.syncnet.base_channels, embed_dim=cfg.syncnet.embed_dim)
    half = image_size // 2
    faces = jnp.zeros((1, 5, half, image_size, 3), jnp.float32)
    # rbg keys: the same randomness role, far less to compile than threefry on CPU.
    variables = jax.jit(module.init)(jax.random.key(1, impl="rbg"), stack_frames(faces), jnp.zeros((1, 80, 16)))
    return SyncNetExpert(module), variables


def build_modules(cfg: ml_collections.ConfigDict) -> tuple[StepModules, dict]:
    """The static parts of the step and the frozen networks' variables ({"sync", "lpips"}, as needed)."""
    model = build_unet(cfg.model)
    diffusion = create_diffusion_from_config(cfg, timestep_respacing="")
    frozen, sync_expert, lpips_fn, disc = {}, None, None, None
    if cfg.loss.sync > 0:
        sync_expert, frozen["sync"] = build_sync_expert(cfg, model.cfg.image_size)
    if cfg.loss.lpips > 0:
        lpips_fn, frozen["lpips"] = make_lpips(cfg.lpips.mode, cfg.lpips.weights_dir or None)
    if cfg.loss.gan > 0:
        disc = SequenceDiscriminator(cfg.discriminator.base_channels, cfg.discriminator.num_layers)
    return StepModules(model, diffusion, disc, sync_expert, lpips_fn, *make_optimizers(cfg)), frozen


def init_state(cfg: ml_collections.ConfigDict, modules: StepModules) -> TrainState:
    """A fresh TrainState (step 0), all randomness from cfg.train.seed."""
    key = jax.random.key(cfg.train.seed)
    k_model, k_disc, k_state = jax.random.split(key, 3)
    # A raw uint32 key: orbax checkpoints it like any array (typed keys it does not).
    k_state = jax.random.key_data(k_state)
    params = init_params(modules.model, k_model)
    d_params = {}
    if modules.discriminator is not None:
        s = modules.model.cfg.image_size
        d_params = jax.jit(modules.discriminator.init)(k_disc, jnp.zeros((1, 5, s, s, 3)))["params"]
    return create_train_state(params, d_params, k_state, modules.tx, modules.d_tx)
