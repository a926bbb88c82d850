"""SyncNet expert training configs (`diff2lip-train-syncnet`).

    --config=configs/syncnet.py:official   128 px crops, the full SyncNet, Wav2Lip's batch 64 and lr 1e-4
    --config=configs/syncnet.py:tiny       a small SyncNet on 32 px crops (the tiny Diff2Lip's size) for CPU

Examples are Wav2Lip's contrastive pairs: the lower halves of 5 consecutive
frames with the mel window aligned to them (label 1) or, with probability 0.5,
the mel window of the same clip at least `negatives.min_offset` frames away
(label 0). The `model.*` fields are the `SyncNet` module fields; the trained
expert is used by Diff2Lip through `--config.syncnet.checkpoint=<workdir>`.

The official recipe is written once below; the `tiny` block at the end overrides it.
"""

from __future__ import annotations

import ml_collections

from diff2lip_jax.config_args import parse_variant_arg

VARIANTS = ("official", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, _ = parse_variant_arg(arg, VARIANTS)

    # The official recipe.
    cfg = ml_collections.ConfigDict()
    cfg.task = "syncnet"  # which trainer: diff2lip-train or diff2lip-train-syncnet
    cfg.variant = variant
    cfg.data = ml_collections.ConfigDict(
        dict(
            dir="",  # a prepared dataset (diff2lip-preprocess --out)
            train_split="train",
            eval_split="val",  # held-out speakers; accuracy is measured here
            worker_count=8,  # grain worker processes (0: threads in this process)
            read_threads=8,
        )
    )
    cfg.model = ml_collections.ConfigDict(
        dict(
            # Crops are resized to image_size; the net sees the lower halves [S/2, S].
            image_size=128,
            base_channels=32,
            embed_dim=512,
            num_res_blocks=2,
            face_mult=(2, 4, 8, 16, 16),
            audio_mult=(1, 2, 4, 8),
        )
    )
    cfg.train = ml_collections.ConfigDict(
        dict(
            num_steps=300_000,
            batch_size=64,  # global, in (5-frame window, mel window) pairs
            lr=1e-4,  # Wav2Lip's SyncNet: Adam, 1e-4, batch 64
            lr_schedule="constant",  # "constant" (Wav2Lip) or "cosine" decay to 0 at num_steps
            warmup_steps=0,
            seed=0,
            log_every=100,
            checkpoint_every=10_000,
            eval_every=10_000,
            eval_batches=50,  # balanced positives/negatives, fixed seed
            keep_checkpoints=3,
        )
    )
    cfg.negatives = ml_collections.ConfigDict(
        dict(
            # Negative mel windows start >= min_offset frames away from the frames' window:
            # closer ones overlap the true audio and are ambiguous.
            min_offset=5,
            same_clip=True,  # False: the negative mel comes from another clip of the split
        )
    )
    # Training-time augmentation, the same for the 5 frames of a window (Augment in
    # diff2lip_jax/train/syncnet.py). Off in official: Wav2Lip has none, and real data
    # has thousands of speakers.
    cfg.augment = ml_collections.ConfigDict(dict(max_zoom=0.0, flip=False, color=0.0))
    cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

    if variant == "tiny":  # for CPU
        cfg.data.worker_count = 0
        cfg.data.read_threads = 2
        # The tiny Diff2Lip works at 32 px, so its expert must too (84% held-out after
        # 800 steps on 20 synthetic speakers). No residual blocks
        # and a wide embedding (on synthetic data, residual blocks stalled at chance for
        # hundreds of steps and a 128-d embedding plateaued lower).
        cfg.model.image_size = 32
        cfg.model.base_channels = 16
        cfg.model.num_res_blocks = 0
        cfg.train.num_steps = 3000
        cfg.train.batch_size = 32
        cfg.train.lr = 3e-4  # after a warm-up (1e-3 and up plateau lower or stall at chance)
        cfg.train.lr_schedule = "cosine"
        cfg.train.warmup_steps = 100
        cfg.train.checkpoint_every = 500
        cfg.train.eval_every = 500
        cfg.train.eval_batches = 16
        # Augmentation on: the few synthetic speakers are otherwise memorised
        # (synthetic, 16 speakers: 88.3% held-out after 2000 steps without it, 90.2%
        # after 1500 with it).
        cfg.augment.max_zoom = 0.15
        cfg.augment.flip = True
        cfg.augment.color = 0.3
    return cfg
