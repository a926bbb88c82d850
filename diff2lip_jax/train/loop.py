"""The training loop, one for both networks (`diff2lip-train`, `diff2lip-train-syncnet`).

Stages, top to bottom: distributed init and mesh; config checks; the task (modules,
frozen nets, data); state (fresh, or restored with its data position); the jitted
sharded step; the loop with logging, checkpoints (every K steps, on SIGTERM/SIGINT,
at the end) and the task's reports (held-out metrics, sample grids).

Signals: SIGTERM or SIGINT lets the running step finish, saves it, waits for the
save to be committed, and only then raises :class:`Interrupted` naming the step; the
console scripts exit 0 for SIGTERM (a planned preemption: the scheduler requeues and
the run resumes) and 130 for SIGINT (Ctrl-C).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diff2lip_jax import checkpoint, parallel
from diff2lip_jax.train import checkpoints, reporting
from diff2lip_jax.train.task import NonFiniteLossError, Task, close_iterator
from diff2lip_jax.train.validation import task_of, validate

__all__ = ["Interrupted", "NonFiniteLossError", "make_task", "params_fingerprint", "train"]


class Interrupted(Exception):
    """SIGTERM/SIGINT stopped the run after step `step` was checkpointed (and the save committed)."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"{signal.Signals(signum).name}: checkpointed step {step}")


class StopOnSignal:
    """SIGTERM/SIGINT set `signal`, so the loop checkpoints and stops; the old handlers come back on exit."""

    def __enter__(self) -> StopOnSignal:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _set(self, signum, frame) -> None:
        del frame
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def make_task(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, workdir: str) -> Task:
    """The `Task` of `cfg.task`."""
    if task_of(cfg) == "syncnet":
        from diff2lip_jax.train import syncnet

        return syncnet.make_task(cfg, mesh)
    from diff2lip_jax.train import diff2lip

    return diff2lip.make_task(cfg, mesh, workdir)


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `cfg.task` to cfg.train.num_steps, resuming from `workdir` when it holds a checkpoint.

    Returns the last logged train metrics (host floats) plus `eval_<name>` of the
    last held-out report. Raises :class:`Interrupted` after a signal (the step is
    saved), NonFiniteLossError on a NaN/inf loss (the last checkpoint is intact),
    ValueError for a config that cannot train (before any work).
    """
    parallel.initialize_distributed()
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    validate(cfg, task_of(cfg), mesh)
    checkpoints.check_workdir(workdir, cfg, task_of(cfg))
    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    try:
        return _train(cfg, workdir, mesh)
    except (ValueError, OSError):
        # A user error before anything was saved: leave no workdir behind.
        if created and jax.process_index() == 0 and checkpoint.latest_step(workdir) is None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _train(cfg: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    task = make_task(cfg, mesh, workdir)
    abstract = jax.eval_shape(task.init_state)
    shardings = parallel.fsdp_shardings(abstract, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)

    data_iter = task.make_loader(cfg.data.train_split, cfg.train.seed)
    mngr = checkpoints.open_manager(workdir, cfg.train.keep_checkpoints)
    resumed = checkpoints.restore_latest(workdir, mngr, abstract, data_iter, cfg, task.kind)
    if resumed is not None:
        mngr, state, start, position_restored = resumed
        if not position_restored:  # another process count: a fresh stream, not a replay of step 0's
            close_iterator(data_iter)
            data_iter = task.make_loader(cfg.data.train_split, (cfg.train.seed + start) % 2**32)
        reporting.notice(f"resumed from step {start} of {workdir}")
    else:
        state = jax.jit(task.init_state, out_shardings=shardings)()
        start = 0

    rep, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    frozen = jax.device_put(task.frozen, rep)
    step_fn = jax.jit(
        task.train_step,
        donate_argnums=0,
        in_shardings=(shardings, rep, batch_sharding),
        out_shardings=(shardings, rep),
    )
    writer = reporting.MetricWriter(workdir, cfg.train.num_steps)
    progress = reporting.Progress(start, cfg.train.num_steps)
    last: dict[str, float] = {}
    reported_at = {r.prefix: -1 for r in task.reports}

    def run_report(report, step: int) -> None:
        scalars = report.run(state, step)
        reported_at[report.prefix] = step
        if scalars:
            writer.write(step, scalars, prefix=report.prefix)
            last.update({f"{report.prefix}_{k}": v for k, v in scalars.items()})
            if report.headline is not None:
                writer.say(f"step {step}: {report.headline(scalars)}")

    all_finite = jnp.ones((), jnp.float32)
    step, in_flight = start, None
    try:
        with StopOnSignal() as stop:
            while step < cfg.train.num_steps:
                local = next(data_iter)
                if step == start and "clip_index" in local:
                    reporting.notice(
                        f"process {jax.process_index()} feeds {len(local['clip_index'])} of the global batch of "
                        f"{cfg.train.batch_size}; first clips {sorted(set(np.asarray(local['clip_index']).tolist()))}"
                    )
                batch = parallel.host_to_global({k: local[k] for k in task.batch_keys}, mesh)
                state, metrics = step_fn(state, frozen, batch)
                all_finite = all_finite * metrics["finite"]
                step += 1
                if in_flight is not None:  # one step stays queued; the bar counts finished steps
                    jax.block_until_ready(in_flight)
                    progress.finished(step - 1)
                in_flight = metrics["finite"]
                # Read the flag once: a signal arriving later in this iteration is seen at the next.
                stopping = stop.signal
                boundary = step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps or stopping
                if step % cfg.train.log_every == 0 or boundary:
                    if float(all_finite) < 1.0:
                        raise NonFiniteLossError(
                            f"non-finite loss at or before step {step}; the update was skipped and the run "
                            f"stopped. The last good checkpoint ({mngr.latest_step()}) is intact: lower "
                            "train.lr or check the data"
                        )
                    progress.finished(step)
                    rate, eta = progress.rate(step)
                    last.update({k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"})
                    last["steps_per_s"] = rate
                    train_scalars = {k: v for k, v in last.items() if not k.startswith("eval_")}
                    writer.write(step, train_scalars, suffix=f"{rate:.3g} steps/s, eta {eta}" if rate else f"eta {eta}")
                if boundary:
                    params, meta = task.inference_items(state, step)
                    checkpoints.save(mngr, state, data_iter, cfg, params, meta, force=bool(stopping))
                if stopping:
                    mngr.wait_until_finished()
                    raise Interrupted(stopping, step)
                for report in task.reports:
                    if step % report.every == 0:
                        run_report(report, step)
        for report in task.reports:
            if report.at_end and reported_at[report.prefix] != step:
                run_report(report, step)
    finally:
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
        progress.close()
        close_iterator(data_iter)
    reporting.notice(
        f"params fingerprint (process {jax.process_index()} of {jax.process_count()}): "
        f"{params_fingerprint(state.params)}"
    )
    return last


def params_fingerprint(params) -> str:
    """A digest of this process's copy of the params, to check that replicas agree across processes."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return digest.hexdigest()[:16]
