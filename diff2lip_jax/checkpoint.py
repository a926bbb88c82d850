"""Orbax checkpoints: one layout for imported, exported and trained models.

A model directory (a training workdir or the output of `diff2lip-convert
import`) holds an orbax CheckpointManager under `<dir>/checkpoints/`, one step
folder per save, each with named items:

  params   the inference parameters (Flax nested dict, float32; a training run's EMA)
  meta     JSON: {"model": official-style model flags, "source": ..., ...}

A training workdir also holds `state`, the whole training state, whose `params`
are the raw (not averaged) weights: `load_model(..., weights="raw")` reads just
those leaves (an orbax partial restore; the optimizer state stays on disk).

so the model flags travel with the weights and nothing else is needed to
rebuild the network. Orbax writes each step to a temporary folder and renames
it when complete, so an interrupted save never leaves a readable half step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from diff2lip_jax.constants import WEIGHTS
from diff2lip_jax.models import UNetConfig, abstract_params
from diff2lip_jax.models.syncnet import NUM_FRAMES, SyncNet

CHECKPOINTS = "checkpoints"


class CheckpointError(ValueError):
    """A directory that is not (or not yet) a diff2lip-jax checkpoint."""


def manager_dir(path: str) -> str:
    """The CheckpointManager root of a model directory (`<path>/checkpoints`)."""
    path = os.path.abspath(os.path.expanduser(path))
    return path if os.path.basename(path) == CHECKPOINTS else os.path.join(path, CHECKPOINTS)


def open_manager(
    path: str,
    *,
    max_to_keep: int | None = None,
    async_save: bool = False,
    item_names: tuple[str, ...] = ("params", "meta"),
) -> ocp.CheckpointManager:
    """A CheckpointManager over `<path>/checkpoints` with the given item names."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(manager_dir(path), options=options, item_names=item_names)


def latest_step(path: str) -> int | None:
    """The newest complete step in a model directory, or None when there is none."""
    root = manager_dir(path)
    if not os.path.isdir(root):
        return None
    steps = ocp.utils.checkpoint_steps(root)
    return max(steps) if steps else None


def save_model(
    path: str,
    params: Mapping[str, Any],
    model_flags: Mapping[str, Any] | UNetConfig,
    step: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Writes `params` and the model flags as step `step` of a new model directory.

    Refuses a directory that already holds a checkpoint (nothing a user made is
    overwritten). Returns the step folder.
    """
    if latest_step(path) is not None:
        raise CheckpointError(f"{path} already holds a checkpoint; choose a new output directory")
    cfg = model_flags if isinstance(model_flags, UNetConfig) else UNetConfig.from_flags(model_flags)
    info = {"model": cfg.to_flags(), **dict(meta or {})}
    host_params = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float32), dict(params))
    with open_manager(path) as mngr:
        mngr.save(
            step, args=ocp.args.Composite(params=ocp.args.StandardSave(host_params), meta=ocp.args.JsonSave(info))
        )
        mngr.wait_until_finished()
    return os.path.join(manager_dir(path), str(step))


def read_meta(path: str, step: int | None = None) -> tuple[dict, int]:
    """(meta dict, step) of a model directory's newest (or given) step."""
    step = _resolve_step(path, step)
    with open_manager(path) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"]), step


def load_model(path: str, step: int | None = None, weights: str = "ema") -> tuple[dict, UNetConfig, int]:
    """(params as host numpy float32, UNetConfig, step) from a model directory; `weights` in WEIGHTS."""
    params, cfg, step, _ = load_model_and_meta(path, step, weights)
    return params, cfg, step


def load_model_and_meta(path: str, step: int | None = None, weights: str = "ema") -> tuple[dict, UNetConfig, int, dict]:
    """As :func:`load_model`, plus the step's meta dict (e.g. "diffusion" flags of a training run).

    weights="ema" reads the `params` item (a training run's EMA, or an imported model);
    "raw" reads `state.params` of a training workdir and raises CheckpointError for a
    directory without a training state (an import output, or a step saved without one).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}")
    meta, step = read_meta(path, step)
    cfg = UNetConfig.from_flags(meta["model"])
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, np.float32, sharding=cpu), abstract_params(cfg))
    if weights == "ema":
        with open_manager(path) as mngr:
            restored = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
        return jax.tree.map(np.asarray, restored["params"]), cfg, step, meta
    if not os.path.isdir(os.path.join(manager_dir(path), str(step), "state")):
        raise CheckpointError(
            f"--weights raw: {path} step {step} holds no training state (an imported model has one set of "
            "weights); use --weights ema"
        )
    # Only the `params` leaves of the state item: the optimizer moments are never read.
    wanted = {"params": abstract}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=cpu), wanted)
    with open_manager(path, item_names=("state", "params", "meta")) as mngr:
        args = ocp.args.PyTreeRestore(wanted, restore_args=restore_args, partial_restore=True)
        restored = mngr.restore(step, args=ocp.args.Composite(state=args))
    return jax.tree.map(np.asarray, restored["state"]["params"]), cfg, step, meta


SYNCNET_KIND = "syncnet"
_SYNCNET_FIELDS = ("base_channels", "embed_dim", "num_res_blocks", "face_mult", "audio_mult")


def syncnet_fields(model: Mapping[str, Any]) -> dict[str, Any]:
    """The `SyncNet` constructor fields from a config's `model` (or a meta's `syncnet`) mapping.

    Fields missing from the mapping keep the SyncNet defaults; sequences become tuples.
    """
    out: dict[str, Any] = {}
    for name in _SYNCNET_FIELDS:
        if name in model:
            value = model[name]
            out[name] = tuple(int(v) for v in value) if name.endswith("_mult") else int(value)
    return out


def read_syncnet_meta(path: str, step: int | None = None) -> tuple[dict[str, Any], int]:
    """(meta, step) of a SyncNet workdir's newest (or given) step.

    Raises:
      CheckpointError: not a directory, no checkpoint, or not a SyncNet's.
    """
    meta, step = read_meta(path, step)
    if meta.get("kind") != SYNCNET_KIND or "syncnet" not in meta:
        raise CheckpointError(
            f"{path} is not a diff2lip-train-syncnet workdir (its checkpoint meta has kind={meta.get('kind')!r}); "
            "train one with diff2lip-train-syncnet or use syncnet.kind=wav2lip for a .pth"
        )
    return meta, step


def load_syncnet(path: str, step: int | None = None) -> tuple[SyncNet, dict[str, Any]]:
    """A trained expert from a `diff2lip-train-syncnet` workdir (newest step unless `step`).

    Returns (SyncNet with the trained module fields, {"params": host float32 numpy
    tree}); use it as `SyncNetExpert(module)`, whose `embed` takes lower halves
    `[B, 5, S/2, S, 3]` in [-1, 1] with `S = read_syncnet_meta(path)[0]["image_size"]`.
    """
    meta, step = read_syncnet_meta(path, step)
    module = SyncNet(**syncnet_fields(meta["syncnet"]))
    s = int(meta["image_size"])
    faces = jax.ShapeDtypeStruct((1, s // 2, s, 3 * NUM_FRAMES), np.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), faces, jax.ShapeDtypeStruct((1, 80, 16), np.float32))
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32, sharding=cpu), shapes["params"])
    with open_manager(path) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    return module, {"params": jax.tree.map(np.asarray, restored["params"])}


def _resolve_step(path: str, step: int | None) -> int:
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such directory")
    available = sorted(ocp.utils.checkpoint_steps(manager_dir(path))) if os.path.isdir(manager_dir(path)) else []
    if not available:
        raise CheckpointError(f"{path} holds no checkpoint (expected {manager_dir(path)}/<step>/)")
    if step is None:
        return available[-1]
    if step not in available:
        raise CheckpointError(f"{path} has no step {step}; available: {available}")
    return step
