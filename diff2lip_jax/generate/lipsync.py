"""Pass 2 of `generate` after decoding: face crops batched, DDIM-sampled, pasted back, written in order.

`LipSync` takes the output frames one at a time (with the face's box, crop, reference
and mel window when the frame has a face), keeps the sampler busy on one batch
while the host prepares the next, and streams finished frames to the encoder.
`Bars` are the progress bars of both passes.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np

from diff2lip_jax.generate import model as model_lib
from diff2lip_jax.generate import paste as paste_lib
from diff2lip_jax.video import VideoWriter


@dataclasses.dataclass
class Chunk:
    """Consecutive output frames up to (and including) the faces of one sampler batch."""

    frames: list = dataclasses.field(default_factory=list)  # uint8 [H, W, 3] in output order
    face_at: list = dataclasses.field(default_factory=list)  # positions in `frames` that have a face
    boxes: list = dataclasses.field(default_factory=list)  # int64 (x1, y1, x2, y2) per face
    crops: list = dataclasses.field(default_factory=list)  # uint8 [S, S, 3] per face
    refs: list = dataclasses.field(default_factory=list)  # uint8 [S, S, 3] per face
    mels: list = dataclasses.field(default_factory=list)  # float32 [80, 16] per face
    result: Any = None  # the sampler's (asynchronous) output


class LipSync:
    """Pass 2 after decoding: batches faces, samples, pastes back, writes frames in order.

    Faces accumulate until a batch is full (`batch` slots; a short batch is zero padded
    to the same shape, so the sampler never recompiles). One batch stays in flight
    while the host decodes and crops the next. Faceless frames wait in the chunk of
    the next face; a chunk is also flushed after 2 * batch frames, which bounds host
    memory to about 4 * batch full frames.
    """

    def __init__(
        self,
        writer: VideoWriter,
        sampler: model_lib.Sampler,
        first_sampler: model_lib.Sampler,
        params: Any,
        noise: np.ndarray,
        batch: int,
        paste: str,
        bar: Any,
        stats: dict,
    ):
        self.writer, self.sampler, self.first_sampler = writer, sampler, first_sampler
        self.params, self.noise, self.batch, self.paste, self.bar, self.stats = (
            params,
            noise,
            batch,
            paste,
            bar,
            stats,
        )
        self.chunk = Chunk()
        self.inflight: collections.deque = collections.deque()
        self.strip: dict[str, Any] = {}  # Fig. 3 arrays of the first batch, if recorded

    def add(
        self,
        frame: np.ndarray,
        box: np.ndarray | None = None,
        crop: np.ndarray | None = None,
        ref: np.ndarray | None = None,
        mel: np.ndarray | None = None,
    ) -> None:
        """Queue one output frame [H, W, 3] uint8; with a face box also its crop, reference and mel window."""
        chunk = self.chunk
        if box is not None:
            chunk.face_at.append(len(chunk.frames))
            chunk.boxes.append(box)
            chunk.crops.append(crop)
            chunk.refs.append(ref)
            chunk.mels.append(mel)
            self.stats["faces"] += 1
        else:
            self.stats["passthrough"] += 1
        chunk.frames.append(frame)
        if len(chunk.crops) == self.batch or len(chunk.frames) >= 2 * self.batch:
            self._dispatch()

    def close(self) -> None:
        """Sample the last (padded) batch and write every remaining frame."""
        if self.chunk.frames:
            self._dispatch()
        while self.inflight:
            self._finish(self.inflight.popleft())

    def _dispatch(self) -> None:
        chunk, self.chunk = self.chunk, Chunk()
        if chunk.crops:
            missing = self.batch - len(chunk.crops)
            pad = [(0, missing)] + [(0, 0)] * 3
            crops, refs = np.pad(np.stack(chunk.crops), pad), np.pad(np.stack(chunk.refs), pad)
            mels = np.pad(np.stack(chunk.mels), pad[:3])
            sampler = self.first_sampler if self.stats["batches"] == 0 else self.sampler
            chunk.result = sampler(self.params, self.noise, crops, refs, mels)  # asynchronous
            self.stats["batches"] += 1
            self.stats["padded_slots"] += missing
        self.inflight.append(chunk)
        while len(self.inflight) > 1:
            self._finish(self.inflight.popleft())

    def _finish(self, chunk: Chunk) -> None:
        frames = list(chunk.frames)
        if chunk.crops:
            result = chunk.result
            if isinstance(result, tuple):  # the first batch of a Fig. 3 run
                result, xs, x0s = (np.asarray(r) for r in result)
                self.strip.update(x_t=xs[:, 0], x0_pred=x0s[:, 0])
            generated = np.asarray(result)[: len(chunk.crops)]
            originals = np.stack([frames[i] for i in chunk.face_at])
            pasted = paste_lib.paste(self.paste, originals, generated, np.stack(chunk.boxes))
            for j, i in enumerate(chunk.face_at):
                frames[i] = pasted[j]
        self.writer.write(np.stack(frames))
        self.bar.update(len(frames))


class Bars:
    """tqdm progress bars (frames/s and ETA) on stderr, or no-ops."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def open(self, desc: str, total: int | None) -> Any:
        """A bar counting frames toward `total` (None: unknown), with update(n) and close()."""
        if not self.enabled:
            return NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, smoothing=0.1)


class NoBar:
    """The disabled bar: update and close do nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
