"""Training checkpoints, for both tasks: state + data position + config, with exact resume.

Each step folder of `<workdir>/checkpoints` holds, besides the inference items of
:mod:`diff2lip_jax.checkpoint` (`params`, `meta` with `kind` = "diff2lip" or "syncnet"):

  state      the whole training state (params, EMA, optimizers, step, rng)
  data_iter  the grain iterator of every process (one JSON file per process)
  config     the full training config (JSON)

Orbax writes a step to a temporary folder and renames it when complete, and deletes
old steps (beyond `keep`) only after a newer one is committed, so the newest complete
checkpoint is never lost. A step that cannot be read on resume is moved to
`<workdir>/corrupt_checkpoints/` and the previous one is used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from diff2lip_jax import checkpoint
from diff2lip_jax.checkpoint import CheckpointError

ITEMS = ("state", "params", "meta", "data_iter", "config")
CORRUPT_DIR = "corrupt_checkpoints"
# Model fields a resumed run may change: they do not change the parameters' shapes.
_NO_SHAPE = frozenset({"dropout", "use_fp16", "compute_dtype"})


def open_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    """The workdir's CheckpointManager, keeping the newest `keep` (>= 1) steps."""
    if keep < 1:
        raise ValueError(f"config: train.keep_checkpoints={keep} would delete every checkpoint; use >= 1")
    return checkpoint.open_manager(workdir, max_to_keep=keep, async_save=async_save, item_names=ITEMS)


def save(
    mngr: ocp.CheckpointManager,
    state: Any,
    data_iter: Any,
    cfg: ml_collections.ConfigDict,
    params: Any,
    meta: Mapping[str, Any],
    force: bool = False,
) -> None:
    """Queues an (async) save of the state's step; `params` and `meta` are the inference items."""
    step = int(jax.device_get(state.step))
    mngr.save(
        step,
        force=force,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            params=ocp.args.StandardSave(params),
            meta=ocp.args.JsonSave(dict(meta)),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(json.loads(cfg.to_json_best_effort())),
        ),
    )


def _saved_json(mngr: ocp.CheckpointManager, step: int, item: str) -> dict:
    return dict(mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item])


def _check_compatible(saved_meta: dict, saved_cfg: dict, cfg: ml_collections.ConfigDict, kind: str, where: str):
    saved_kind = saved_meta.get("kind", "diff2lip" if "model" in saved_meta else "unknown")
    if saved_kind != kind:
        raise CheckpointError(
            f"{where} holds a {saved_kind} checkpoint, not a {kind} one; "
            "use a new --workdir (or the trainer of that kind)"
        )
    ours = json.loads(cfg.model.to_json_best_effort())
    theirs = saved_cfg.get("model", {})
    changed = sorted(k for k in set(ours) | set(theirs) - _NO_SHAPE if ours.get(k) != theirs.get(k))
    if changed:
        diffs = ", ".join(f"model.{k}={theirs.get(k)!r} there vs {ours.get(k)!r} here" for k in changed[:4])
        raise CheckpointError(
            f"{where} was trained with another model ({diffs}); resume with its config or use a new --workdir"
        )


def check_workdir(workdir: str, cfg: ml_collections.ConfigDict, kind: str) -> None:
    """Before any work: a workdir to resume must hold this kind of run, of this model.

    Reads only the newest step's small JSON items; an unreadable step is left for
    :func:`restore_latest` (which moves it aside and falls back).
    """
    step = checkpoint.latest_step(workdir)
    if step is None:
        return
    with checkpoint.open_manager(workdir, item_names=ITEMS) as mngr:
        try:
            meta, saved_cfg = _saved_json(mngr, step, "meta"), _saved_json(mngr, step, "config")
        except Exception:  # corrupt: handled on restore
            return
    _check_compatible(meta, saved_cfg, cfg, kind, f"{workdir} (step {step})")


def restore_latest(
    workdir: str,
    mngr: ocp.CheckpointManager,
    abstract_state: Any,
    data_iter: Any,
    cfg: ml_collections.ConfigDict,
    kind: str,
) -> tuple[ocp.CheckpointManager, Any, int, bool] | None:
    """Restores the newest readable step of `workdir`, or None when it holds no checkpoint.

    Returns (manager, state, step, data_iter_restored); the manager is re-opened when a
    corrupt step was moved aside. The state restores onto the shardings of
    `abstract_state` (any mesh); the data iterator in place, only onto the same process
    count (its position is per process): otherwise the caller starts a fresh stream.

    Raises:
      CheckpointError: the workdir holds another kind of checkpoint, or one of another
        model, or no step of it is readable.
    """
    moved = []
    while (step := mngr.latest_step()) is not None:
        where = f"{workdir} (step {step})"
        try:
            meta, saved_cfg = _saved_json(mngr, step, "meta"), _saved_json(mngr, step, "config")
        except Exception as e:
            mngr = _quarantine(workdir, mngr, step, e)
            moved.append(step)
            continue
        _check_compatible(meta, saved_cfg, cfg, kind, where)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except Exception as e:
            mngr = _quarantine(workdir, mngr, step, e)
            moved.append(step)
            continue
        try:
            mngr.restore(step, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
        except (ValueError, FileNotFoundError) as e:
            logging.warning(
                "data iterator not restored (%s): the checkpoint was written by another process count",
                str(e).splitlines()[0],
            )
            return mngr, restored["state"], step, False
        return mngr, restored["state"], step, True
    if moved:
        mngr.close()
        raise CheckpointError(
            f"{workdir} holds no readable checkpoint (steps {moved} moved to {CORRUPT_DIR}/); "
            "use a new --workdir to start afresh"
        )
    return None


def _quarantine(workdir: str, mngr: ocp.CheckpointManager, step: int, error: BaseException) -> ocp.CheckpointManager:
    """Moves an unreadable step out of the manager's folder; returns a re-opened manager."""
    keep, async_save = mngr._options.max_to_keep, mngr._options.enable_async_checkpointing
    mngr.close()
    src = os.path.join(checkpoint.manager_dir(workdir), str(step))
    dst_root = os.path.join(os.path.abspath(workdir), CORRUPT_DIR)
    dst = os.path.join(dst_root, str(step))
    if jax.process_index() == 0:
        os.makedirs(dst_root, exist_ok=True)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.move(src, dst)
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    if jax.process_count() > 1:  # every process re-opens the folder only after the move
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    print(f"warning: checkpoint step {step} of {workdir} is unreadable ({reason}); moved to {dst}", file=sys.stderr)
    return checkpoint.open_manager(workdir, max_to_keep=keep, async_save=async_save, item_names=ITEMS)
