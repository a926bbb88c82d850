"""SyncNet expert training: Wav2Lip's contrastive pairs over the prepared dataset, and the loop.

Data (:func:`sync_dataset`), per element::

    clip indices -> this process's clips -> EndlessShuffle (as the Diff2Lip loader)
      -> SyncPairs: 5 lower-half frames + a mel window, label 1 (aligned) or 0 (shifted)
      -> batch -> uint8 faces to float32 [-1, 1]

Every random choice is a pure function of (seed, shard index, position in the
stream), so the iterator checkpoints and restores exactly.

Loop (:func:`train`): a jitted Adam step on the BCE of the embeddings' cosine
(``models.syncnet.sync_loss``), batch split over the ("data", "fsdp") mesh,
params by ``parallel.fsdp_shardings``; orbax checkpoints (see
:mod:`diff2lip_jax.train.syncnet_checkpoint`); held-out sync accuracy on
balanced pairs every ``eval_every`` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from typing import Any

import cv2
import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from diff2lip_jax import audio, parallel
from diff2lip_jax.data import pipeline, records
from diff2lip_jax.models.syncnet import SyncNet, cosine_similarity, stack_frames, sync_accuracy, sync_loss
from diff2lip_jax.train import checkpointing, reporting, syncnet_checkpoint
from diff2lip_jax.train.state import lr_schedule

BATCH_KEYS = ("faces", "mel", "label")
EVAL_SEED = 12345  # the held-out pairs are the same at every evaluation


# ------------------------------------------------------------------------------ data


def mel_window_ok(num_frames: int, num_mel_steps: int, fps: float = records.FPS) -> np.ndarray:
    """bool ``[N]``: frame ``f`` may start a sync mel window (5 frames and a full 16-step window fit).

    Same start index as :func:`diff2lip_jax.audio.sync_mel_window`: ``int(80 f / fps)``.
    """
    f = np.arange(num_frames)
    start = (float(audio.MEL_STEPS_PER_SECOND) * (f.astype(np.float64) / float(fps))).astype(np.int64)
    return (f + records.WINDOW <= num_frames) & (start + audio.MEL_STEP_SIZE <= num_mel_steps)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Per-window augmentation, the same for the 5 frames (so lip motion is untouched).

    max_zoom: zoom in by a factor in [1, 1 + max_zoom], shifted within the margin
    (mouth size and position vary between speakers); flip: mirror with p=0.5 (lip
    sync is left-right symmetric); color: per-channel gain in [1 - color, 1 + color]
    and a brightness shift of up to color * 64 levels (lip and skin colours).
    All zero/False: off (Wav2Lip trains its expert without augmentation).
    """

    max_zoom: float = 0.0
    flip: bool = False
    color: float = 0.0

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 ``[5, S, S, 3]`` -> augmented uint8 ``[5, S, S, 3]``."""
        zoom, shift, mirror = rng.uniform(1.0, 1.0 + self.max_zoom), rng.uniform(-1.0, 1.0, 2), rng.random() < 0.5
        gain, bias = rng.uniform(1.0 - self.color, 1.0 + self.color, 3), rng.uniform(-64.0, 64.0) * self.color
        s = frames.shape[1]
        if self.max_zoom > 0:
            # Output pixel x samples input x / zoom + offset; with offset in
            # [0, (s - 1)(1 - 1 / zoom)] every sample lies within pixel centres 0..s-1.
            offset = (s - 1) * (1.0 - 1.0 / zoom) / 2 * (1.0 + shift)
            m = np.array([[1.0 / zoom, 0.0, offset[0]], [0.0, 1.0 / zoom, offset[1]]])
            frames = np.stack(
                [
                    cv2.warpAffine(
                        f, m, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
                    )
                    for f in frames
                ]
            )
        if self.flip and mirror:
            frames = frames[:, :, ::-1]
        if self.color > 0:
            frames = np.clip(frames.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(frames)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hash by identity (the source is unhashable)
class SyncPairs(grain.transforms.MapWithIndex):
    """Clip index -> one (faces, mel, label) pair; see :func:`sync_dataset` for the fields.

    ``index`` (the element's position in this process's stream), ``seed`` and
    ``shard_index`` seed the element's generator. ``balanced``: labels alternate
    (even positions positive) instead of a coin flip, for evaluation.
    ``clips``: this shard's clip indices (the pool for cross-clip negatives).
    """

    source: Any
    seed: int
    shard_index: int
    image_size: int
    min_offset: int
    same_clip: bool = True
    balanced: bool = False
    clips: tuple[int, ...] = ()
    augment: Augment = Augment()

    def map_with_index(self, index: int, clip_index: int) -> dict[str, np.ndarray]:
        clip_index = int(clip_index)
        rec = self.source[clip_index]
        has_face, mel = np.asarray(rec["has_face"], bool), rec["mel"]
        rng = np.random.default_rng((self.seed, self.shard_index, index))
        coin = rng.random() < 0.5  # drawn in both modes, so the later draws do not depend on the mode
        positive = index % 2 == 0 if self.balanced else coin
        starts = np.flatnonzero(records.valid_window_starts(has_face, mel.shape[1]))
        mel_clip, mel_rec = clip_index, rec
        if not positive and not self.same_clip:
            others = [c for c in self.clips if c != clip_index]
            if not others:
                raise ValueError("negatives.same_clip=False needs at least 2 clips per process")
            mel_clip = int(rng.choice(others))
            mel_rec = self.source[mel_clip]
        mel_starts = np.flatnonzero(mel_window_ok(int(mel_rec["num_frames"]), mel_rec["mel"].shape[1]))
        if not positive and self.same_clip and mel_starts.size:
            # Only starts with a mel window >= min_offset frames away on either side.
            far = (starts - self.min_offset >= mel_starts[0]) | (starts + self.min_offset <= mel_starts[-1])
            starts = starts[far]
        if starts.size == 0 or mel_starts.size == 0:
            raise ValueError(
                f"clip {records.text(rec['clip_id'])} is too short for a 5-frame window "
                f"with a negative >= {self.min_offset} frames away; lower negatives.min_offset "
                "or re-run diff2lip-preprocess with longer clips"
            )
        start = int(rng.choice(starts))
        if positive:
            mel_start = start
        elif self.same_clip:
            mel_start = int(rng.choice(mel_starts[np.abs(mel_starts - start) >= self.min_offset]))
        else:
            mel_start = int(rng.choice(mel_starts))
        frames = self.augment(records.decode_jpegs(rec["frames"][start : start + records.WINDOW], self.image_size), rng)
        return {
            "faces": frames[:, self.image_size // 2 :],  # lower halves, rows [S/2, S)
            "mel": audio.sync_mel_window(mel_rec["mel"], mel_start),
            "label": np.float32(positive),
            "clip_index": np.int32(clip_index),
            "start": np.int32(start),
            "mel_clip": np.int32(mel_clip),
            "mel_start": np.int32(mel_start),
        }


@dataclasses.dataclass(frozen=True)
class FacesToUnitRange(grain.transforms.Map):
    """uint8 ``faces`` -> float32 in [-1, 1], once per batch."""

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, "faces": records.to_unit_range(batch["faces"])}


def sync_dataset(
    data_dir: records.PathLike,
    split: str,
    global_batch_size: int,
    seed: int,
    *,
    image_size: int,
    min_offset: int = 5,
    same_clip: bool = True,
    balanced: bool = False,
    augment: Augment = Augment(),
    shard_options: grain.sharding.ShardOptions | None = None,
    worker_count: int = 0,
    read_threads: int = 2,
) -> grain.IterDataset:
    """Endless batches of SyncNet pairs for this process (per-process batch ``B = global // shards``).

    * ``faces`` float32 ``[B, 5, S/2, S, 3]`` in [-1, 1]: lower halves of frames
      ``start .. start+4`` of the crops resized to ``S = image_size``, RGB;
    * ``mel`` float32 ``[B, 80, 16]``: ``audio.sync_mel_window`` at ``mel_start``;
    * ``label`` float32 ``[B]``: 1 when ``mel_start == start`` in the same clip, else 0;
    * ``clip_index``, ``start``, ``mel_clip``, ``mel_start`` int32 ``[B]``.

    Negatives (label 0) take the mel of ``mel_clip`` (the same clip unless
    ``same_clip=False``) at ``mel_start`` with ``|mel_start - start| >= min_offset``
    when in the same clip. The batch does not depend on ``worker_count``.
    """
    options = pipeline._shard(shard_options)
    if global_batch_size < 1 or global_batch_size % options.shard_count:
        raise ValueError(
            f"batch size {global_batch_size} must be a positive multiple of the process count {options.shard_count}"
        )
    if not 0 <= seed < 2**32 or min_offset < 1 or image_size < 32 or image_size % 2:
        raise ValueError(
            f"need 0 <= seed < 2**32, negatives.min_offset >= 1 and an even image_size >= 32; got "
            f"{seed}, {min_offset}, {image_size}"
        )
    source = records.open_split(data_dir, split)
    clips = pipeline._shard_clips(len(source), options)
    pairs = SyncPairs(
        source,
        seed,
        options.shard_index,
        image_size,
        min_offset,
        same_clip,
        balanced,
        tuple(int(clips[i]) for i in range(len(clips))),
        augment,
    )
    ds = pipeline.EndlessShuffle(clips, seed).map_with_index(pairs)
    batch = global_batch_size // options.shard_count
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * batch))
    if worker_count > 0:
        pipeline._absl_flags_ready()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it.batch(batch, drop_remainder=True).map(FacesToUnitRange())


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


# ------------------------------------------------------------------------------ state and step


class SyncState(flax.struct.PyTreeNode):
    """step (int32 scalar), params (float32 SyncNet params), opt_state; tx is code (rebuilt on resume)."""

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def build_module(cfg: ml_collections.ConfigDict) -> SyncNet:
    """The SyncNet of `cfg.model` (its module fields; image_size is the data's)."""
    return SyncNet(**syncnet_checkpoint.module_fields(cfg.model))


def learning_rate(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up over train.warmup_steps, then constant (Wav2Lip) or cosine decay to 0 at num_steps."""
    t = cfg.train
    if t.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"config: train.lr_schedule={t.lr_schedule!r}; use 'constant' or 'cosine'")
    return lr_schedule(t.lr, t.warmup_steps, t.num_steps if t.lr_schedule == "cosine" else 0)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (Wav2Lip's SyncNet optimizer) on the `learning_rate` schedule."""
    return optax.adam(learning_rate(cfg))


def init_state(cfg: ml_collections.ConfigDict, module: SyncNet, tx: optax.GradientTransformation) -> SyncState:
    s = cfg.model.image_size
    faces = jnp.zeros((1, s // 2, s, 3 * records.WINDOW), jnp.float32)
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


# ------------------------------------------------------------------------------ loop


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/inf loss; the run stops and the last checkpoint stays as it was."""


class _StopOnSignal:
    """SIGTERM/SIGINT set `signal` so the loop checkpoints and exits; the old handlers come back on exit."""

    def __enter__(self) -> _StopOnSignal:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _set(self, signum, frame) -> None:
        del frame
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _global(local: dict, mesh) -> dict:
    return parallel.host_to_global({k: local[k] for k in BATCH_KEYS}, mesh)


def evaluate(cfg: ml_collections.ConfigDict, eval_fn, params: Any, mesh) -> dict[str, float]:
    """Mean metrics over `eval_batches` balanced held-out batches (same pairs every call)."""
    it = _loader(cfg, cfg.data.eval_split, EVAL_SEED, balanced=True)
    totals: dict[str, float] = {}
    try:
        for _ in range(cfg.train.eval_batches):
            for k, v in jax.device_get(eval_fn(params, _global(next(it), mesh))).items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.train.eval_batches
    finally:
        if hasattr(it, "close"):
            it.close()
    return totals


def _check_config(cfg: ml_collections.ConfigDict, mesh) -> None:
    if not cfg.data.dir:
        raise ValueError("config: data.dir is empty; set --config.data.dir to a diff2lip-preprocess output")
    records.find_dataset_dir(cfg.data.dir)  # a missing dataset fails here, in one line
    t = cfg.train
    if min(t.num_steps, t.log_every, t.checkpoint_every, t.eval_every, t.eval_batches, t.keep_checkpoints) < 1:
        raise ValueError(
            "config: train.num_steps, log_every, checkpoint_every, eval_every, eval_batches and "
            "keep_checkpoints must be >= 1"
        )
    if t.batch_size % mesh.size:
        raise ValueError(
            f"config: train.batch_size {t.batch_size} must be a multiple of the {mesh.size} devices "
            f"of the mesh {dict(mesh.shape)}"
        )


def train(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains to cfg.train.num_steps, resuming from `workdir` when it holds a checkpoint.

    Prints ``sync accuracy: X.XX%`` (held-out, balanced) at every evaluation.
    Returns the last logged train metrics plus ``eval_accuracy``/``eval_loss``
    of the final evaluation (when an eval split exists).
    """
    parallel.initialize_distributed()
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    _check_config(cfg, mesh)
    os.makedirs(workdir, exist_ok=True)

    module = build_module(cfg)
    tx = make_optimizer(cfg)
    make_state = functools.partial(init_state, cfg, module, tx)
    abstract = jax.eval_shape(make_state)
    shardings = parallel.fsdp_shardings(abstract, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)

    data_iter = _loader(cfg, cfg.data.train_split, cfg.train.seed)
    mngr = syncnet_checkpoint.open_train_manager(workdir, cfg.train.keep_checkpoints)
    start = mngr.latest_step()
    if start is not None:
        state, position_restored = checkpointing.restore(mngr, abstract, data_iter, start)
        if not position_restored:  # another process count: a fresh stream, not a replay of step 0's
            data_iter = _loader(cfg, cfg.data.train_split, (cfg.train.seed + start) % 2**32)
        if jax.process_index() == 0:
            print(f"resumed from step {start} of {workdir}", flush=True)
    else:
        state = jax.jit(make_state, out_shardings=shardings)()
        start = 0

    batch_sharding, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    step_fn = jax.jit(
        make_train_step(module),
        donate_argnums=0,
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, rep),
    )
    eval_fn = jax.jit(make_eval_step(module), in_shardings=(shardings.params, batch_sharding), out_shardings=rep)
    try:  # no held-out split: train anyway, without accuracy (as diff2lip-train)
        records.open_split(cfg.data.dir, cfg.data.eval_split)
        has_eval = True
    except ValueError as e:
        logging.warning("no eval split (%s): sync accuracy is not measured", e)
        has_eval = False

    writer = reporting.MetricWriter(workdir)
    last: dict[str, float] = {}
    step, evaluated, tick, tick_step = start, -1, time.perf_counter(), start
    all_finite = jnp.ones((), jnp.float32)

    def report(scalars: dict[str, float], prefix: str) -> None:
        # TensorBoard, and one stdout line (absl INFO would bury it under orbax's chatter).
        writer.write(step, scalars, prefix=prefix)
        if jax.process_index() == 0:
            print(f"step {step} {prefix} " + " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())), flush=True)

    def run_eval() -> None:
        nonlocal evaluated
        result = evaluate(cfg, eval_fn, state.params, mesh)
        report(result, "eval")
        last.update(eval_accuracy=result["accuracy"], eval_loss=result["loss"])
        evaluated = step
        if jax.process_index() == 0:
            print(
                f"step {step}: sync accuracy: {100 * result['accuracy']:.2f}% (held-out "
                f"{cfg.data.eval_split!r}, {cfg.train.eval_batches * cfg.train.batch_size} balanced pairs)",
                flush=True,
            )

    try:
        with _StopOnSignal() as stop:
            while step < cfg.train.num_steps:
                state, metrics = step_fn(state, _global(next(data_iter), mesh))
                all_finite = all_finite * metrics["finite"]
                step += 1
                boundary = step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps or stop.signal
                if step % cfg.train.log_every == 0 or boundary:
                    if float(all_finite) < 1.0:
                        raise NonFiniteLossError(
                            f"non-finite loss at or before step {step}; the run stopped and "
                            f"the last checkpoint ({mngr.latest_step()}) is intact: lower "
                            "train.lr or check the data"
                        )
                    now = time.perf_counter()
                    last.update({k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"})
                    last["steps_per_s"] = (step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, step
                    report({k: v for k, v in last.items() if not k.startswith("eval_")}, "train")
                if boundary:
                    syncnet_checkpoint.save(mngr, state, data_iter, cfg, force=bool(stop.signal))
                if has_eval and step % cfg.train.eval_every == 0 and not stop.signal:
                    run_eval()
                if stop.signal:
                    logging.warning("signal %d: checkpointed step %d, exiting", stop.signal, step)
                    return last
        if has_eval and evaluated != step:
            run_eval()
    finally:
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
        if hasattr(data_iter, "close"):
            data_iter.close()
    return last
