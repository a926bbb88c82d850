"""grain input pipelines over a prepared dataset: training windows and whole clips for eval.

Training (:func:`train_dataset` / :func:`make_train_loader`)::

    clip indices [0, C)                     MapDataset.range
      -> this process's clips               every shard_count-th, from shard_index (disjoint)
      -> shuffled, repeated forever         EndlessShuffle: a new permutation per epoch
      -> window + reference + mels          TrainWindows, random from (seed, shard, position)
      -> threads (ReadOptions)              JPEG decoding releases the GIL
      -> worker processes (worker_count)    optional mp_prefetch, per element
      -> batch (per-process batch size)     in the consuming process, so batches do not
      -> uint8 -> float32 [-1, 1]           depend on worker_count

Every random choice is a pure function of (seed, shard index, position in the
stream), so the same seed gives the same batches at every step, and
``iterator.get_state()`` / ``set_state()`` restore the stream exactly.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from diff2lip_jax import audio
from diff2lip_jax.constants import FPS, FRAMES_PER_WINDOW
from diff2lip_jax.data import records
from diff2lip_jax.images import uint8_to_unit
from diff2lip_jax.type_aliases import PathLike


class EndlessShuffle(grain.MapDataset):
    """The parent's elements forever, epoch ``e`` in the order ``default_rng((seed, e)).permutation(n)``.

    Used instead of grain's ``shuffle().repeat()``: its per-index Feistel shuffle
    costs ~5 ms per element on a 4-clip dataset (~25 us at 10k), which would cap
    small (test, demo) datasets at ~200 windows/s. A permutation costs O(n) once
    per epoch (10 ms for a million clips); the last two are cached, as prefetching
    threads straddle epoch boundaries.
    """

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = int(seed)
        self._n = len(parent)
        self._cache: tuple[tuple[int, np.ndarray], ...] = ()  # (epoch, order), newest first

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"EndlessShuffle(seed={self._seed})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, position = divmod(int(index), self._n)
        cache = self._cache  # one read: other threads may replace it meanwhile
        order = next((o for e, o in cache if e == epoch), None)
        if order is None:
            order = np.random.default_rng((self._seed, epoch)).permutation(self._n)
            self._cache = ((epoch, order), *cache[:1])
        return self._parent[int(order[position])]


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hash by identity (the source is unhashable)
class TrainWindows(grain.transforms.MapWithIndex):
    """Clip index -> one training example (uint8 images; see :func:`train_dataset`).

    ``index`` is the element's position in this process's stream; with ``seed``
    and ``shard_index`` it seeds the element's own generator, so the example does
    not depend on which thread or worker makes it, nor on what came before.
    """

    source: Any
    seed: int
    shard_index: int = 0
    nrefer: int = 1
    image_size: int | None = None

    def map_with_index(self, index: int, clip_index: int) -> dict[str, np.ndarray]:
        clip_index = int(clip_index)
        rec = self.source[clip_index]
        has_face, mel = np.asarray(rec["has_face"], bool), rec["mel"]
        starts = np.flatnonzero(records.valid_window_starts(has_face, mel.shape[1]))
        if starts.size == 0:
            raise ValueError(
                f"clip {records.text(rec['clip_id'])} has no valid 5-frame window; "
                "re-run diff2lip-preprocess (it drops such clips)"
            )
        rng = np.random.default_rng((self.seed, self.shard_index, index))
        start = int(rng.choice(starts))
        faces = np.flatnonzero(has_face)
        outside = faces[(faces < start) | (faces >= start + FRAMES_PER_WINDOW)]
        refs = rng.choice(outside, size=self.nrefer, replace=outside.size < self.nrefer)
        blobs = rec["frames"]
        images = records.decode_jpegs([*blobs[start : start + FRAMES_PER_WINDOW], *blobs[refs]], self.image_size)
        indiv_mels, sync_mel = records.window_mels(mel, start)
        return {
            "frames": images[:FRAMES_PER_WINDOW],
            "ref": images[FRAMES_PER_WINDOW] if self.nrefer == 1 else images[FRAMES_PER_WINDOW:],
            "indiv_mels": indiv_mels,
            "sync_mel": sync_mel,
            "clip_index": np.int32(clip_index),
            "start": np.int32(start),
            "ref_index": np.asarray(refs[0] if self.nrefer == 1 else refs, np.int32),
        }


@dataclasses.dataclass(frozen=True)
class ImagesToUnitRange(grain.transforms.Map):
    """uint8 ``frames``/``ref`` -> float32 in [-1, 1]; after batching, one vectorised pass."""

    def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(batch)
        for key in ("frames", "ref"):
            out[key] = uint8_to_unit(batch[key])
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class WholeClip(grain.transforms.Map):
    """Clip index -> the whole clip in frame order, for generation and evaluation."""

    source: Any
    image_size: int | None = None

    def map(self, clip_index: int) -> dict[str, Any]:
        rec = self.source[int(clip_index)]
        n = int(rec["num_frames"])
        return {
            "clip_id": records.text(rec["clip_id"]),
            "speaker_id": records.text(rec["speaker_id"]),
            "source": records.text(rec["source"]),
            "clip_index": int(clip_index),
            "fps": int(rec["fps"]),
            "frame_size": np.asarray(rec["frame_size"], np.int32),
            "frames": uint8_to_unit(records.decode_jpegs(rec["frames"], self.image_size)),
            "indiv_mels": audio.frame_mel_windows(rec["mel"], n, FPS),
            "mel": rec["mel"],
            "has_face": np.asarray(rec["has_face"], bool),
            "boxes": np.asarray(rec["boxes"], np.int32),
        }


def ensure_absl_flags_parsed() -> None:
    """grain's multiprocess prefetch reads its absl flags (``--grain_*``); outside an absl
    app (pytest, notebooks, plain scripts) they were never parsed: use their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def process_shard_options(shard_options: grain.sharding.ShardOptions | None) -> grain.sharding.ShardOptions:
    """`shard_options`, or by default one shard per JAX process (multi-host training reads disjoint clips)."""
    return shard_options if shard_options is not None else grain.sharding.ShardByJaxProcess(drop_remainder=True)


def shard_clips(num_clips: int, options: grain.sharding.ShardOptions) -> grain.MapDataset:
    """This shard's clip indices: every ``shard_count``-th from ``shard_index``.

    With ``drop_remainder`` the clips beyond a multiple of ``shard_count`` are left
    out, so all processes have equally many clips (equal epochs).
    """
    usable = num_clips - num_clips % options.shard_count if options.drop_remainder else num_clips
    ds = grain.MapDataset.range(usable)[options.shard_index :: options.shard_count]
    if len(ds) == 0:
        raise ValueError(
            f"shard {options.shard_index} of {options.shard_count} gets no clip out of {num_clips}; "
            "prepare more clips or use fewer processes"
        )
    return ds


def train_dataset(
    data_dir: PathLike,
    split: str = "train",
    global_batch_size: int = 8,
    seed: int = 0,
    worker_count: int = 0,
    *,
    shard_options: grain.sharding.ShardOptions | None = None,
    nrefer: int = 1,
    image_size: int | None = None,
    name: str | None = None,
    read_threads: int = 2,
    prefetch_buffer_size: int | None = None,
    worker_buffer_size: int = 8,
) -> grain.IterDataset:
    """Endless stream of training batches for this process (see the module docstring).

    Each batch is a dict with a leading per-process batch dim ``B = global_batch_size
    // shard_count``:

    * ``frames`` float32 ``[B, 5, S, S, 3]`` in [-1, 1]: frames ``start .. start+4``;
    * ``ref`` float32 ``[B, S, S, 3]`` (``[B, nrefer, S, S, 3]`` if ``nrefer > 1``): face
      frame(s) of the same clip outside the window;
    * ``indiv_mels`` float32 ``[B, 5, 80, 16]``: per-frame windows
      (:func:`diff2lip_jax.audio.frame_mel_windows` convention);
    * ``sync_mel`` float32 ``[B, 80, 16]``: :func:`diff2lip_jax.audio.sync_mel_window` at ``start``;
    * ``clip_index``, ``start`` int32 ``[B]``, ``ref_index`` int32 ``[B]`` (``[B, nrefer]``):
      the record index in the split, the window's first frame and the reference frame(s).

    ``S`` is the stored crop size (128) unless ``image_size`` resizes.

    Args:
      data_dir: a prepared dataset (see :func:`records.find_dataset_dir`).
      split: "train", "val" or "test".
      global_batch_size: sequences per step over all processes.
      seed: 0 <= seed < 2**32: shuffling and window choices.
      worker_count: grain worker processes (0: in this process, with threads).
      shard_options: default ``ShardByJaxProcess``: shard index/count from
        ``jax.process_index()`` / ``jax.process_count()``.
      nrefer: reference frames per sequence.
      image_size: resize crops to this side (e.g. 64 for the tiny config).
      name: dataset name when ``data_dir`` holds several.
      read_threads: threads per process making examples (ReadOptions.num_threads).
      prefetch_buffer_size: examples buffered per process (default 2 batches).
      worker_buffer_size: examples buffered per worker process.
    """
    options = process_shard_options(shard_options)
    if global_batch_size < 1 or global_batch_size % options.shard_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the "
            f"process count {options.shard_count}"
        )
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if nrefer < 1 or worker_count < 0:
        raise ValueError(f"need nrefer >= 1 and worker_count >= 0, got {nrefer} and {worker_count}")
    batch = global_batch_size // options.shard_count
    source = records.open_split(data_dir, split, name)
    ds = EndlessShuffle(shard_clips(len(source), options), seed)
    ds = ds.map_with_index(TrainWindows(source, seed, options.shard_index, nrefer, image_size))
    buffer = prefetch_buffer_size if prefetch_buffer_size is not None else 2 * batch
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=buffer))
    if worker_count > 0:
        ensure_absl_flags_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=worker_buffer_size)
        )
    return it.batch(batch, drop_remainder=True).map(ImagesToUnitRange())


def make_train_loader(
    data_dir: PathLike,
    split: str = "train",
    global_batch_size: int = 8,
    seed: int = 0,
    worker_count: int = 0,
    **kwargs: Any,
) -> grain.DatasetIterator:
    """Iterator over :func:`train_dataset` batches (same arguments).

    The iterator is checkpointable: ``state = it.get_state()`` (a JSON-able dict)
    and later ``it.set_state(state)`` on an iterator built with the same arguments
    resumes with exactly the batches that would have followed. Close it
    (``it.close()``) when ``worker_count > 0`` to stop the workers promptly.
    """
    return iter(train_dataset(data_dir, split, global_batch_size, seed, worker_count, **kwargs))


def make_eval_loader(
    data_dir: PathLike,
    split: str = "test",
    *,
    shard_options: grain.sharding.ShardOptions | None = None,
    image_size: int | None = None,
    name: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Whole clips, one at a time, in record order (this process's share, nothing dropped).

    Each item: ``clip_id``/``speaker_id``/``source`` str, ``clip_index``/``fps`` int,
    ``frames`` float32 ``[N, S, S, 3]`` in [-1, 1], ``indiv_mels`` float32
    ``[N, 80, 16]`` (every frame's window, :func:`diff2lip_jax.audio.frame_mel_windows`),
    ``mel`` float32 ``[80, T]``, ``has_face`` bool ``[N]``, ``boxes`` int32 ``[N, 4]``
    (source pixels), ``frame_size`` int32 ``[2]`` (source height, width).

    ``shard_options`` defaults to one shard per JAX process, without dropping clips.
    """
    if shard_options is None:
        shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=False)
    source = records.open_split(data_dir, split, name)
    ds = shard_clips(len(source), shard_options).map(WholeClip(source, image_size))
    # One clip ahead is enough: clips are large and consumed slowly (sampling).
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)))
