"""Training checkpoints: state + data-iterator position + config, with exact resume.

Each step folder of `<workdir>/checkpoints` holds, besides the inference items
of `diff2lip_jax.checkpoint` (`params` = the EMA weights, `meta` = model flags):
  state      the whole TrainState (params, EMA, both optimizers, D, step, rng)
  data_iter  the grain iterator of every process (one JSON file per process)
  config     the full training config (JSON)
"""

from __future__ import annotations

import json
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from diff2lip_jax import checkpoint
from diff2lip_jax.models import UNetConfig

TRAIN_ITEMS = ("state", "params", "meta", "data_iter", "config")


def open_train_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    return checkpoint.open_manager(workdir, max_to_keep=keep, async_save=async_save, item_names=TRAIN_ITEMS)


def save(
    mngr: ocp.CheckpointManager, state: Any, data_iter: Any, cfg: ml_collections.ConfigDict, force: bool = False
) -> None:
    """Queues an (async) save of the current step; orbax commits it atomically."""
    step = int(jax.device_get(state.step))
    meta = {
        "model": UNetConfig.from_flags(cfg.model).to_flags(),
        "source": "diff2lip-train",
        "params": "ema",
        "step": step,
    }
    mngr.save(
        step,
        force=force,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            params=ocp.args.StandardSave(state.ema_params),
            meta=ocp.args.JsonSave(meta),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(json.loads(cfg.to_json_best_effort())),
        ),
    )


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, data_iter: Any, step: int) -> tuple[Any, bool]:
    """Restores the state onto the shardings in `abstract_state`, and the data iterator in place.

    Returns (state, data_iter_restored). The state can be restored onto any mesh
    (another device or process count); the data iterator only onto the same
    process count (its position is per process): otherwise the caller starts a
    fresh one.
    """
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    try:
        mngr.restore(step, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    except (ValueError, FileNotFoundError) as e:
        logging.warning(
            "data iterator not restored (%s): the checkpoint was written by another process count",
            str(e).splitlines()[0],
        )
        return restored["state"], False
    return restored["state"], True
