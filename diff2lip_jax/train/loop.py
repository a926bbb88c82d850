"""The Diff2Lip training loop (`diff2lip-train --config=... --workdir=...`).

Stages, top to bottom: distributed init and mesh; modules and frozen nets;
data; state (fresh, or restored with its data position); the jitted sharded
step; the loop with logging, checkpoints (every K steps, on SIGTERM/SIGINT, at
the end), sample grids and eval loss.
"""

from __future__ import annotations

import functools
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from diff2lip_jax import parallel
from diff2lip_jax.data import make_train_loader
from diff2lip_jax.train import checkpointing, reporting
from diff2lip_jax.train.build import build_modules, init_state
from diff2lip_jax.train.sampling import GRID_COLUMNS, make_sample_fn
from diff2lip_jax.train.step import generator_losses, make_train_step

BATCH_KEYS = ("frames", "ref", "indiv_mels", "sync_mel")


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/inf loss; the run stops and the last checkpoint stays as it was."""


class _StopFlag:
    """Set by SIGTERM/SIGINT so the loop can checkpoint and exit cleanly."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, frame):
        del frame
        self.signal = signum


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


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains to cfg.train.num_steps, resuming from `workdir` when it holds a checkpoint.

    Returns the last logged metrics (host floats).
    """
    parallel.initialize_distributed()
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(), jax.process_count())
    if not cfg.data.dir:
        raise ValueError("config: data.dir is empty; set --config.data.dir to a diff2lip-preprocess output")
    os.makedirs(workdir, exist_ok=True)

    modules, frozen = build_modules(cfg)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    abstract = jax.eval_shape(functools.partial(init_state, cfg, modules))
    state_shardings = parallel.fsdp_shardings(abstract, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shardings)

    data_iter = _loader(cfg, cfg.data.train_split, cfg.train.seed)
    mngr = checkpointing.open_train_manager(workdir, cfg.train.keep_checkpoints)
    start = mngr.latest_step()
    if start is not None:
        state, position_restored = checkpointing.restore(mngr, abstract, data_iter, start)
        if not position_restored:  # another process count: a fresh stream, not a replay of step 0's
            data_iter = _loader(cfg, cfg.data.train_split, (cfg.train.seed + start) % 2**32)
        logging.info("resumed from step %d", start)
    else:
        state = jax.jit(functools.partial(init_state, cfg, modules), out_shardings=state_shardings)()
        start = 0

    batch_sharding = parallel.batch_sharding(mesh)
    step_fn = jax.jit(
        make_train_step(modules, cfg),
        donate_argnums=0,
        in_shardings=(state_shardings, parallel.replicated(mesh), batch_sharding),
        out_shardings=(state_shardings, parallel.replicated(mesh)),
    )
    writer = reporting.MetricWriter(workdir)
    stop = _StopFlag()
    eval_batch = _fixed_eval_batch(cfg, mesh)
    sample_fn = make_sample_fn(modules.model, cfg)
    eval_fn = jax.jit(functools.partial(_eval_terms, modules=modules, lambdas=cfg.loss))

    all_finite = jnp.ones((), jnp.float32)
    last, tick, tick_step = {}, time.perf_counter(), start
    bar = tqdm(total=cfg.train.num_steps, initial=start, disable=jax.process_index() != 0, unit="step")
    step = start
    try:
        while step < cfg.train.num_steps:
            local = next(data_iter)
            if step == start:
                logging.info(
                    "process %d feeds %d of the global batch of %d; first clips %s",
                    jax.process_index(),
                    len(local["frames"]),
                    cfg.train.batch_size,
                    sorted(set(np.asarray(local["clip_index"]).tolist())),
                )
            batch = _global_batch(local, mesh)
            state, metrics = step_fn(state, frozen, batch)
            all_finite = all_finite * metrics["finite"]
            step += 1
            bar.update(1)
            boundary = step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps or stop.signal
            if step % cfg.train.log_every == 0 or boundary:
                if float(all_finite) < 1.0:
                    raise NonFiniteLossError(
                        f"non-finite loss at or before step {step}; the update was skipped and the run stopped. "
                        f"The last good checkpoint ({mngr.latest_step()}) is intact: lower train.lr or check the data"
                    )
                last = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"}
                now = time.perf_counter()
                rate = (step - tick_step) / max(now - tick, 1e-9)
                last.update(steps_per_s=rate, frames_per_s=rate * cfg.train.batch_size * 5)
                tick, tick_step = now, step
                writer.write(step, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if boundary:
                checkpointing.save(mngr, state, data_iter, cfg, force=bool(stop.signal))
            if eval_batch is not None and step % cfg.train.sample_every == 0:
                _write_samples(sample_fn, state, eval_batch, workdir, step)
            if eval_batch is not None and step % cfg.train.eval_every == 0:
                writer.write(step, _eval_loss(cfg, eval_fn, state, frozen, mesh), prefix="eval")
            if stop.signal:
                logging.warning("signal %d: checkpointed step %d, exiting", stop.signal, step)
                break
    finally:
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
        bar.close()
        if hasattr(data_iter, "close"):
            data_iter.close()
    logging.info(
        "params fingerprint (process %d of %d): %s",
        jax.process_index(),
        jax.process_count(),
        params_fingerprint(state.params),
    )
    return last


def params_fingerprint(params) -> str:
    """A digest of this process's copy of the params, to check that replicas agree across processes."""
    import hashlib

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return digest.hexdigest()[:16]


def _fixed_eval_batch(cfg, mesh) -> dict | None:
    """One held-out batch (fixed seed) for sample grids and eval loss; None without an eval split."""
    try:
        it = _loader(cfg, cfg.data.eval_split, seed=12345)
    except (FileNotFoundError, ValueError, KeyError) as e:
        logging.warning(
            "no eval split %r (%s): sample grids use training data, eval loss is skipped",
            cfg.data.eval_split,
            str(e).splitlines()[0],
        )
        return None
    batch = next(it)
    if hasattr(it, "close"):
        it.close()
    return _global_batch(batch, mesh)


def _write_samples(sample_fn, state, batch, workdir: str, step: int) -> None:
    columns = sample_fn(state.ema_params, batch, jax.random.PRNGKey(step))
    if jax.process_index() == 0:
        columns = {k: np.asarray(jax.device_get(v)) for k, v in zip(GRID_COLUMNS, columns)}
        path = reporting.save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), columns)
        logging.info("sample grid %s", path)


def _eval_terms(params, frozen, batch, d_params, key, *, modules, lambdas):
    _, (parts, _, _) = generator_losses(params, frozen, batch, d_params, key, modules=modules, lambdas=lambdas)
    return parts


def _eval_loss(cfg, eval_fn, state, frozen, mesh) -> dict:
    """Generator loss terms of the EMA weights on `eval_batches` held-out batches (fixed seed)."""
    it = _loader(cfg, cfg.data.eval_split, seed=54321)
    totals: dict = {}
    for i in range(cfg.train.eval_batches):
        parts = eval_fn(state.ema_params, frozen, _global_batch(next(it), mesh), state.d_params, jax.random.PRNGKey(i))
        for k, v in jax.device_get(parts).items():
            totals[k] = totals.get(k, 0.0) + float(v) / cfg.train.eval_batches
    if hasattr(it, "close"):
        it.close()
    return totals
