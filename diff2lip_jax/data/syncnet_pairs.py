"""SyncNet expert training pairs (Wav2Lip's contrastive pairs) over a prepared dataset.

Per element::

    clip indices -> this process's clips -> EndlessShuffle (as the Diff2Lip windows)
      -> SyncPairs: 5 lower-half frames + a mel window, label 1 (aligned) or 0 (shifted)
      -> batch -> uint8 faces to float32 [-1, 1]

Every random choice is a pure function of (seed, shard index, position in the
stream), so the iterator checkpoints and restores exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import grain
import numpy as np

from diff2lip_jax import audio
from diff2lip_jax.constants import FPS, FRAMES_PER_WINDOW, MEL_STEPS_PER_SECOND, MEL_STEPS_PER_WINDOW
from diff2lip_jax.data import pipeline, records
from diff2lip_jax.images import uint8_to_unit
from diff2lip_jax.type_aliases import PathLike


def mel_window_ok(num_frames: int, num_mel_steps: int, fps: float = FPS) -> np.ndarray:
    """bool ``[N]``: frame ``f`` may start a sync mel window (5 frames and a full 16-step window fit).

    Same start index as :func:`diff2lip_jax.audio.sync_mel_window`: ``int(80 f / fps)``.
    """
    f = np.arange(num_frames)
    start = (float(MEL_STEPS_PER_SECOND) * (f.astype(np.float64) / float(fps))).astype(np.int64)
    return (f + FRAMES_PER_WINDOW <= num_frames) & (start + MEL_STEPS_PER_WINDOW <= num_mel_steps)


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
        frames = self.augment(
            records.decode_jpegs(rec["frames"][start : start + FRAMES_PER_WINDOW], self.image_size), rng
        )
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
        return {**batch, "faces": uint8_to_unit(batch["faces"])}


def sync_dataset(
    data_dir: PathLike,
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
    options = pipeline.process_shard_options(shard_options)
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
    clips = pipeline.shard_clips(len(source), options)
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
        pipeline.ensure_absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it.batch(batch, drop_remainder=True).map(FacesToUnitRange())
