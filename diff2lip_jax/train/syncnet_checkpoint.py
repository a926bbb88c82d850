"""SyncNet workdir checkpoints, and loading a trained expert for Diff2Lip.

A `diff2lip-train-syncnet` workdir keeps the layout of `diff2lip_jax.checkpoint`:
`<workdir>/checkpoints/<step>/` with the items

  state      the SyncState (step, params, Adam state), for resuming
  params     the SyncNet params alone (what the frozen expert needs)
  meta       JSON: {"kind": "syncnet", "syncnet": module fields, "image_size": S, "step": ...}
  data_iter  the grain iterator of every process (exact resume)
  config     the full training config (JSON)

so `load_syncnet(workdir)` rebuilds the module from `meta` without the config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from diff2lip_jax import checkpoint
from diff2lip_jax.models.syncnet import NUM_FRAMES, SyncNet

ITEMS = ("state", "params", "meta", "data_iter", "config")
KIND = "syncnet"
_FIELDS = ("base_channels", "embed_dim", "num_res_blocks", "face_mult", "audio_mult")


def module_fields(model: Mapping[str, Any]) -> dict[str, Any]:
    """The `SyncNet` constructor fields from a config's `model` (or a meta's `syncnet`) mapping.

    Fields missing from the mapping keep the SyncNet defaults; sequences become tuples.
    """
    out: dict[str, Any] = {}
    for name in _FIELDS:
        if name in model:
            value = model[name]
            out[name] = tuple(int(v) for v in value) if name.endswith("_mult") else int(value)
    return out


def make_meta(cfg: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
    fields = module_fields(cfg.model)
    return {
        "kind": KIND,
        "source": "diff2lip-train-syncnet",
        "step": step,
        "syncnet": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        "image_size": int(cfg.model.image_size),
    }


def open_train_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    return checkpoint.open_manager(workdir, max_to_keep=keep, async_save=async_save, item_names=ITEMS)


def save(
    mngr: ocp.CheckpointManager, state: Any, data_iter: Any, cfg: ml_collections.ConfigDict, force: bool = False
) -> None:
    """Queues an (async) save of the current step; orbax commits it atomically."""
    step = int(jax.device_get(state.step))
    mngr.save(
        step,
        force=force,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            params=ocp.args.StandardSave(state.params),
            meta=ocp.args.JsonSave(make_meta(cfg, step)),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(json.loads(cfg.to_json_best_effort())),
        ),
    )


def read_syncnet_meta(path: str, step: int | None = None) -> tuple[dict[str, Any], int]:
    """(meta, step) of a SyncNet workdir's newest (or given) step.

    Raises:
      CheckpointError (a ValueError): not a directory, no checkpoint, or not a SyncNet's.
    """
    meta, step = checkpoint.read_meta(path, step)
    if meta.get("kind") != KIND or "syncnet" not in meta:
        raise checkpoint.CheckpointError(
            f"{path} is not a diff2lip-train-syncnet workdir (its checkpoint "
            f"meta has kind={meta.get('kind')!r}); train one with "
            "diff2lip-train-syncnet or use syncnet.kind=wav2lip for a .pth"
        )
    return meta, step


def load_syncnet(path: str, step: int | None = None) -> tuple[SyncNet, dict[str, Any]]:
    """A trained expert from a `diff2lip-train-syncnet` workdir (newest step unless `step`).

    Returns (SyncNet with the trained module fields, {"params": host float32 numpy
    tree}); use it as `SyncNetExpert(module)`, whose `embed` takes lower halves
    `[B, 5, S/2, S, 3]` in [-1, 1] with `S = read_syncnet_meta(path)[0]["image_size"]`.
    """
    meta, step = read_syncnet_meta(path, step)
    module = SyncNet(**module_fields(meta["syncnet"]))
    s = int(meta["image_size"])
    faces = jax.ShapeDtypeStruct((1, s // 2, s, 3 * NUM_FRAMES), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), faces, jax.ShapeDtypeStruct((1, 80, 16), jnp.float32))
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32, sharding=cpu), shapes["params"])
    with checkpoint.open_manager(path) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    return module, {"params": jax.tree.map(np.asarray, restored["params"])}
