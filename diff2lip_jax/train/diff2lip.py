"""Diff2Lip as a training task: the five-loss step, held-out loss terms and sample grids.

The modules, frozen networks and fresh state come from :mod:`.build`; the step from
:mod:`.step`; the grids from :mod:`.sampling`. The loop itself is
:func:`diff2lip_jax.train.loop.train`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from diff2lip_jax import parallel
from diff2lip_jax.constants import FRAMES_PER_WINDOW, MEL_STEPS_PER_WINDOW, NUM_MELS
from diff2lip_jax.data import make_train_loader
from diff2lip_jax.models import UNetConfig
from diff2lip_jax.train import reporting
from diff2lip_jax.train.build import build_modules, init_state
from diff2lip_jax.train.sampling import GRID_COLUMNS, make_sample_fn
from diff2lip_jax.train.step import generator_losses, make_train_step
from diff2lip_jax.train.task import Report, Task, close_iterator

KIND = "diff2lip"
BATCH_KEYS = ("frames", "ref", "indiv_mels", "sync_mel")  # what the step reads of a loader batch
SAMPLE_SEED, EVAL_SEED = 12345, 54321  # fixed held-out batches: comparable across steps


def random_batch(num_sequences: int, image_size: int, seed: int = 0, nrefer: int = 1) -> dict[str, np.ndarray]:
    """A random batch of the step's inputs (`BATCH_KEYS`), for tests and benchmarks.

    Shapes and dtypes are the training loader's (`data.train_dataset`), B = `num_sequences`,
    S = `image_size`: ``frames`` float32 [B, 5, S, S, 3] and ``ref`` float32 [B, S, S, 3]
    ([B, nrefer, S, S, 3] if nrefer > 1), uniform in [-1, 1]; ``indiv_mels`` float32
    [B, 5, 80, 16] and ``sync_mel`` float32 [B, 80, 16], standard normal (the loader's
    mels lie in [-4, 4]). The loader's bookkeeping fields (clip_index, start, ref_index)
    never reach the step and are left out. The same seed gives the same batch.
    """
    rng = np.random.default_rng(seed)
    b, s = num_sequences, image_size
    ref_shape = (b, s, s, 3) if nrefer == 1 else (b, nrefer, s, s, 3)
    return dict(
        frames=rng.uniform(-1, 1, (b, FRAMES_PER_WINDOW, s, s, 3)).astype(np.float32),
        ref=rng.uniform(-1, 1, ref_shape).astype(np.float32),
        indiv_mels=rng.standard_normal((b, FRAMES_PER_WINDOW, NUM_MELS, MEL_STEPS_PER_WINDOW)).astype(np.float32),
        sync_mel=rng.standard_normal((b, NUM_MELS, MEL_STEPS_PER_WINDOW)).astype(np.float32),
    )


def _loader(cfg: ml_collections.ConfigDict, split: str, seed: int):
    return make_train_loader(
        cfg.data.dir,
        split,
        cfg.train.batch_size,
        seed,
        cfg.data.worker_count,
        image_size=cfg.model.image_size,
        nrefer=cfg.model.nrefer,
    )


def _global_batch(local: dict, mesh) -> dict:
    return parallel.host_to_global({k: local[k] for k in BATCH_KEYS}, mesh)


def inference_meta(cfg: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
    """The checkpoint's `meta`: the model and diffusion flags of the EMA `params` item."""
    return {
        "kind": KIND,
        "model": UNetConfig.from_flags(cfg.model).to_flags(),
        "diffusion": dict(cfg.diffusion.to_dict()),
        "source": "diff2lip-train",
        "params": "ema",
        "step": step,
    }


def _fixed_eval_batch(cfg, mesh) -> dict | None:
    """One held-out batch (fixed seed) for sample grids; None without an eval split."""
    try:
        it = _loader(cfg, cfg.data.eval_split, seed=SAMPLE_SEED)
    except (FileNotFoundError, ValueError, KeyError) as e:
        logging.warning(
            "no eval split %r (%s): no sample grids and no eval loss", cfg.data.eval_split, str(e).splitlines()[0]
        )
        return None
    try:
        return _global_batch(next(it), mesh)
    finally:
        close_iterator(it)


def _eval_terms(params, frozen, batch, d_params, key, *, modules, lambdas):
    _, (parts, _, _) = generator_losses(params, frozen, batch, d_params, key, modules=modules, lambdas=lambdas)
    return parts


def _eval_loss(cfg, eval_fn, state, frozen, mesh) -> dict[str, float]:
    """Generator loss terms of the EMA weights on `eval_batches` held-out batches (fixed seed)."""
    it = _loader(cfg, cfg.data.eval_split, seed=EVAL_SEED)
    totals: dict[str, float] = {}
    try:
        for i in range(cfg.train.eval_batches):
            batch = _global_batch(next(it), mesh)
            parts = eval_fn(state.ema_params, frozen, batch, state.d_params, jax.random.PRNGKey(i))
            for k, v in jax.device_get(parts).items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.train.eval_batches
    finally:
        close_iterator(it)
    return totals


def _write_samples(sample_fn, state, batch, workdir: str, step: int) -> None:
    columns = sample_fn(state.ema_params, batch, jax.random.PRNGKey(step))
    if jax.process_index() == 0:
        columns = {k: np.asarray(jax.device_get(v)) for k, v in zip(GRID_COLUMNS, columns)}
        reporting.save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), columns)


def make_task(cfg: ml_collections.ConfigDict, mesh, workdir: str) -> Task:
    """Diff2Lip's training task for :func:`diff2lip_jax.train.loop.train`."""
    modules, frozen = build_modules(cfg)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    reports = ()
    eval_batch = _fixed_eval_batch(cfg, mesh)
    if eval_batch is not None:
        sample_fn = make_sample_fn(modules.model, cfg)
        eval_fn = jax.jit(functools.partial(_eval_terms, modules=modules, lambdas=cfg.loss))

        def samples(state, step: int) -> None:
            _write_samples(sample_fn, state, eval_batch, workdir, step)

        reports = (
            Report(cfg.train.sample_every, "samples", samples),
            Report(cfg.train.eval_every, "eval", lambda state, _: _eval_loss(cfg, eval_fn, state, frozen, mesh)),
        )
    return Task(
        kind=KIND,
        batch_keys=BATCH_KEYS,
        init_state=functools.partial(init_state, cfg, modules),
        train_step=make_train_step(modules, cfg),
        frozen=frozen,
        make_loader=lambda split, seed: _loader(cfg, split, seed),
        inference_items=lambda state, step: (state.ema_params, inference_meta(cfg, step)),
        reports=reports,
    )
