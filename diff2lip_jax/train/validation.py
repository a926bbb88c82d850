"""Config checks for both trainers, run before any data is read or anything compiles.

Each failure is a `ValueError` whose one-line message names the field, the value and
the fix; the console scripts print it as `prog: error: ...` and exit 2.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from diff2lip_jax.checkpoint import CheckpointError, read_syncnet_meta
from diff2lip_jax.data import records
from diff2lip_jax.train.task import TASKS

# Cadences and counts that must be >= 1, per task.
_POSITIVE = {
    "diff2lip": ("num_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every",
                 "eval_batches", "sample_every", "sample_ddim_steps"),
    "syncnet": ("num_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every",
                "eval_batches"),
}  # fmt: skip


def task_of(cfg: ml_collections.ConfigDict) -> str:
    """The config's task: `cfg.task` ("diff2lip" or "syncnet")."""
    task = cfg.get("task")
    if task not in TASKS:
        raise ValueError(f"config: task={task!r}; a training config sets task to one of {TASKS}")
    return task


def validate(cfg: ml_collections.ConfigDict, task: str, mesh: jax.sharding.Mesh) -> None:
    """Raises ValueError (one line) for a config that cannot train; returns None when it can."""
    if task_of(cfg) != task:
        other = "diff2lip-train" if cfg.task == "diff2lip" else "diff2lip-train-syncnet"
        raise ValueError(f"config: this is a {cfg.task} config (task={cfg.task!r}); train it with {other}")
    t = cfg.train
    for name in _POSITIVE[task]:
        value = t[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"config: train.{name}={value!r} must be a whole number >= 1")
    if not t.lr > 0:
        raise ValueError(f"config: train.lr={t.lr!r} must be > 0")
    if t.get("warmup_steps", 0) < 0:
        raise ValueError(f"config: train.warmup_steps={t.warmup_steps!r} must be >= 0")
    if not 0 <= t.seed < 2**32:
        raise ValueError(f"config: train.seed={t.seed!r} must be in [0, 2**32)")
    if t.batch_size % mesh.size:
        raise ValueError(
            f"config: train.batch_size={t.batch_size} does not divide over the {mesh.size} devices of the mesh "
            f"{dict(mesh.shape)}; use a multiple of {mesh.size} (or set --config.mesh.data/fsdp)"
        )
    if t.batch_size % jax.process_count():
        raise ValueError(
            f"config: train.batch_size={t.batch_size} does not divide over {jax.process_count()} processes"
        )
    if not cfg.data.dir:
        raise ValueError("config: data.dir is empty; set --config.data.dir to a diff2lip-preprocess output")
    records.find_dataset_dir(cfg.data.dir)  # a missing dataset fails here, in one line
    records.open_split(cfg.data.dir, cfg.data.train_split)
    if task == "diff2lip":
        _validate_diff2lip(cfg)
    else:
        if t.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"config: train.lr_schedule={t.lr_schedule!r}; use 'constant' or 'cosine'")
        if cfg.negatives.min_offset < 1:
            raise ValueError(f"config: negatives.min_offset={cfg.negatives.min_offset!r} must be >= 1")


def _validate_diff2lip(cfg: ml_collections.ConfigDict) -> None:
    t = cfg.train
    if not t.d_lr >= 0:
        raise ValueError(f"config: train.d_lr={t.d_lr!r} must be >= 0")
    if not 0 <= t.ema_rate < 1:
        raise ValueError(f"config: train.ema_rate={t.ema_rate!r} must be in [0, 1)")
    for name, value in cfg.loss.items():
        if name != "face_hide_percentage" and not value >= 0:
            raise ValueError(f"config: loss.{name}={value!r} must be >= 0")
    if not 0 < cfg.loss.face_hide_percentage < 1:
        raise ValueError(f"config: loss.face_hide_percentage={cfg.loss.face_hide_percentage!r} must be in (0, 1)")
    sync = cfg.syncnet
    if sync.kind not in ("ours", "wav2lip"):
        raise ValueError(f"config: syncnet.kind={sync.kind!r}; use 'ours' or 'wav2lip'")
    if cfg.loss.sync > 0 and sync.checkpoint:
        if not os.path.exists(sync.checkpoint):
            raise ValueError(f"config: syncnet.checkpoint={sync.checkpoint!r} does not exist")
        if sync.kind == "ours":
            try:
                meta, _ = read_syncnet_meta(sync.checkpoint)
            except CheckpointError as e:
                raise ValueError(f"config: syncnet.checkpoint: {e}") from None
            if int(meta["image_size"]) != int(cfg.model.image_size):
                raise ValueError(
                    f"config: the SyncNet expert {sync.checkpoint} sees {meta['image_size']} px crops but "
                    f"model.image_size={cfg.model.image_size}; train an expert at {cfg.model.image_size} px "
                    "(diff2lip-train-syncnet --config.model.image_size=...)"
                )
