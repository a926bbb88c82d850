"""The SyncNet expert as a training task: state, Adam step on the pairs' BCE, held-out accuracy.

Data: Wav2Lip's contrastive pairs (:mod:`diff2lip_jax.data.syncnet_pairs`). The step
is a jitted Adam update on the BCE of the embeddings' cosine
(``models.syncnet.sync_loss``); every ``eval_every`` steps and at the end the loop
reports the sync accuracy on balanced held-out pairs (the same pairs every time).
The loop itself is :func:`diff2lip_jax.train.loop.train`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from diff2lip_jax import checkpoint, parallel
from diff2lip_jax.constants import FRAMES_PER_WINDOW
from diff2lip_jax.data import records
from diff2lip_jax.data.syncnet_pairs import Augment, sync_dataset
from diff2lip_jax.models.syncnet import SyncNet, cosine_similarity, stack_frames, sync_accuracy, sync_loss
from diff2lip_jax.train.state import lr_schedule
from diff2lip_jax.train.task import Report, Task, close_iterator

BATCH_KEYS = ("faces", "mel", "label")
EVAL_SEED = 12345  # the held-out pairs are the same at every evaluation


def _loader(cfg: ml_collections.ConfigDict, split: str, seed: int, balanced: bool = False) -> Any:
    """Training pairs (augmented per cfg.augment), or balanced clean pairs for evaluation."""
    augment = Augment() if balanced else Augment(**cfg.augment)
    return iter(
        sync_dataset(
            cfg.data.dir,
            split,
            cfg.train.batch_size,
            seed,
            image_size=cfg.model.image_size,
            min_offset=cfg.negatives.min_offset,
            same_clip=cfg.negatives.same_clip,
            balanced=balanced,
            augment=augment,
            worker_count=cfg.data.worker_count,
            read_threads=cfg.data.read_threads,
        )
    )


class SyncState(flax.struct.PyTreeNode):
    """step (int32 scalar), params (float32 SyncNet params), opt_state; tx is code (rebuilt on resume)."""

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def build_module(cfg: ml_collections.ConfigDict) -> SyncNet:
    """The SyncNet of `cfg.model` (its module fields; image_size is the data's)."""
    return SyncNet(**checkpoint.syncnet_fields(cfg.model))


def syncnet_lr_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up over train.warmup_steps, then constant (Wav2Lip) or cosine decay to 0 at num_steps."""
    t = cfg.train
    if t.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"config: train.lr_schedule={t.lr_schedule!r}; use 'constant' or 'cosine'")
    return lr_schedule(t.lr, t.warmup_steps, t.num_steps if t.lr_schedule == "cosine" else 0)


def syncnet_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (Wav2Lip's SyncNet optimizer) on the `syncnet_lr_schedule`."""
    return optax.adam(syncnet_lr_schedule(cfg))


def init_state(cfg: ml_collections.ConfigDict, module: SyncNet, tx: optax.GradientTransformation) -> SyncState:
    s = cfg.model.image_size
    faces = jnp.zeros((1, s // 2, s, 3 * FRAMES_PER_WINDOW), jnp.float32)
    params = module.init(jax.random.key(cfg.train.seed), faces, jnp.zeros((1, 80, 16), jnp.float32))["params"]
    return SyncState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


def _pair_metrics(face_emb: jax.Array, audio_emb: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    cos = cosine_similarity(face_emb, audio_emb)
    pos = jnp.sum(labels)
    return {
        "loss": sync_loss(face_emb, audio_emb, labels),
        "accuracy": sync_accuracy(face_emb, audio_emb, labels),
        "cos_pos": jnp.sum(cos * labels) / jnp.maximum(pos, 1.0),
        "cos_neg": jnp.sum(cos * (1 - labels)) / jnp.maximum(labels.size - pos, 1.0),
    }


def make_train_step(module: SyncNet):
    """(state, batch) -> (state, metrics); metrics: loss, accuracy, cos_pos/neg, grad_norm, finite.

    A non-finite loss leaves the state unchanged (finite=0) and the loop stops.
    """

    def step(state: SyncState, batch: dict) -> tuple[SyncState, dict]:
        def objective(params):
            face_emb, audio_emb = module.apply({"params": params}, stack_frames(batch["faces"]), batch["mel"])
            return sync_loss(face_emb, audio_emb, batch["label"]), (face_emb, audio_emb)

        (_, embs), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = _pair_metrics(*embs, batch["label"])
        finite = jnp.isfinite(metrics["loss"])
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        metrics.update(grad_norm=optax.tree.norm(grads), finite=finite.astype(jnp.float32))
        return state.replace(
            step=state.step + 1, params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state)
        ), metrics

    return step


def make_eval_step(module: SyncNet):
    """(params, batch) -> loss, accuracy, cos_pos, cos_neg (float32 scalars)."""

    def step(params: Any, batch: dict) -> dict:
        return _pair_metrics(
            *module.apply({"params": params}, stack_frames(batch["faces"]), batch["mel"]), batch["label"]
        )

    return step


def inference_meta(cfg: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
    """The checkpoint's `meta`: what :func:`diff2lip_jax.checkpoint.load_syncnet` rebuilds the module from."""
    fields = checkpoint.syncnet_fields(cfg.model)
    return {
        "kind": checkpoint.SYNCNET_KIND,
        "source": "diff2lip-train-syncnet",
        "step": step,
        "syncnet": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
        "image_size": int(cfg.model.image_size),
    }


def evaluate(cfg: ml_collections.ConfigDict, eval_fn, params: Any, mesh) -> dict[str, float]:
    """Mean metrics over `eval_batches` balanced held-out batches (same pairs every call)."""
    it = _loader(cfg, cfg.data.eval_split, EVAL_SEED, balanced=True)
    totals: dict[str, float] = {}
    try:
        for _ in range(cfg.train.eval_batches):
            batch = parallel.host_to_global({k: v for k, v in next(it).items() if k in BATCH_KEYS}, mesh)
            for k, v in jax.device_get(eval_fn(params, batch)).items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.train.eval_batches
    finally:
        close_iterator(it)
    return totals


def make_task(cfg: ml_collections.ConfigDict, mesh) -> Task:
    """The SyncNet expert's training task for :func:`diff2lip_jax.train.loop.train`."""
    module = build_module(cfg)
    step = make_train_step(module)
    eval_fn = jax.jit(make_eval_step(module))
    reports = ()
    try:  # no held-out split: train anyway, without accuracy (as diff2lip-train)
        records.open_split(cfg.data.dir, cfg.data.eval_split)
    except ValueError as e:
        logging.warning("no eval split (%s): sync accuracy is not measured", e)
    else:
        pairs = cfg.train.eval_batches * cfg.train.batch_size
        reports = (
            Report(
                every=cfg.train.eval_every,
                prefix="eval",
                run=lambda state, _: evaluate(cfg, eval_fn, state.params, mesh),
                at_end=True,
                headline=lambda s: (
                    f"sync accuracy: {100 * s['accuracy']:.2f}% "
                    f"(held-out {cfg.data.eval_split!r}, {pairs} balanced pairs)"
                ),
            ),
        )
    return Task(
        kind=checkpoint.SYNCNET_KIND,
        batch_keys=BATCH_KEYS,
        init_state=functools.partial(init_state, cfg, module, syncnet_optimizer(cfg)),
        train_step=lambda state, frozen, batch: step(state, batch),
        frozen={},
        make_loader=lambda split, seed: _loader(cfg, split, seed),
        inference_items=lambda state, step_: (state.params, inference_meta(cfg, step_)),
        reports=reports,
    )
