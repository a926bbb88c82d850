"""One synthetic talking-face clip: speech, mouth track, head motion, frames.

:func:`synthesize_clip` is the in-memory generator (no files); the CLI writes its
output, rendering frames in chunks (:meth:`Clip.iter_frames`) so that long clips
need little memory. Everything is a pure function of ``(seed, clip_index, ...)``: the random
streams are ``default_rng([seed, 3, clip_index])`` (audio) and
``default_rng([seed, 4, clip_index])`` (motion), and identity ``clip_index %
num_identities`` comes from :func:`faces.make_identity`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import cv2
import numpy as np

from data_pipelines.synthetic import faces, voice
from diff2lip_jax.constants import FPS

SAMPLE_RATE = voice.SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Clip:
    """A synthetic clip and its ground truth.

    Attributes:
      clip_id: ``id{speaker:05d}_clip{n:05d}``; ``n`` counts the speaker's clips.
      speaker_id: ``id{speaker:05d}`` (one speaker per identity).
      identity: identity index; identity_kind: "photo" or "drawn".
      seed, clip_index: what the clip was generated from.
      fps: video frame rate; sample_rate: 16000; width, height: frame size in pixels.
      audio: float32 ``[N]``, ``N = round(F * sample_rate / fps)``.
      mouth_opening, mouth_width: float32 ``[F]`` in [0, 1]; frame ``i`` follows the
        audio of ``[i / fps, (i + 1) / fps)`` (see :func:`voice.mouth_from_audio`).
      face_boxes: float32 ``[F, 4]`` ``(x1, y1, x2, y2)`` in frame pixels (axis-aligned
        box of the rotated face box), always inside the frame.
      mouth_boxes: float32 ``[F, 4]``, box of the drawn mouth (lips included).
      f0_range: the speaker's f0 range in Hz.
      motion: float64 ``[F, 2, 3]`` scene-to-frame affine maps.
      frames: uint8 ``[F, H, W, 3]`` RGB, or None if not rendered (see :meth:`iter_frames`).
    """

    clip_id: str
    speaker_id: str
    identity: int
    identity_kind: str
    seed: int
    clip_index: int
    fps: float
    sample_rate: int
    width: int
    height: int
    audio: np.ndarray
    mouth_opening: np.ndarray
    mouth_width: np.ndarray
    face_boxes: np.ndarray
    mouth_boxes: np.ndarray
    f0_range: tuple[float, float]
    motion: np.ndarray
    frames: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.mouth_opening.shape[0])

    def render(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start..stop-1``: uint8 ``[n, H, W, 3]`` RGB (deterministic; no state)."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        ident = faces.make_identity(self.seed, self.identity)
        out = np.empty((max(0, stop - start), self.height, self.width, 3), np.uint8)
        work = ident.scene.copy()  # the clean scene is read-only and shared between clips
        for j, i in enumerate(range(start, stop)):
            x0, y0, x1, y1 = faces.draw_mouth(work, ident, float(self.mouth_opening[i]), float(self.mouth_width[i]))
            # Reflected borders: a view reaching past the scene edge shows no black wedge.
            out[j] = cv2.warpAffine(
                work,
                self.motion[i],
                (self.width, self.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            work[y0:y1, x0:x1] = ident.scene[y0:y1, x0:x1]
        return out

    def iter_frames(self, chunk: int = 64) -> Iterator[np.ndarray]:
        """Renders the clip in chunks of uint8 ``[<= chunk, H, W, 3]`` frames."""
        for start in range(0, self.num_frames, chunk):
            yield self.render(start, start + chunk)


def clip_name(clip_index: int, num_identities: int) -> tuple[str, str]:
    """``(speaker_id, clip_id)`` of clip ``clip_index``: clips go round-robin over speakers."""
    speaker = f"id{clip_index % num_identities:05d}"
    return speaker, f"{speaker}_clip{clip_index // num_identities:05d}"


def _smooth_wave(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """Sum of three slow sinusoids (0.1-0.7 Hz), at most ``amplitude`` in magnitude: float64 ``[F]``."""
    weights = rng.dirichlet(np.ones(3))
    freqs = rng.uniform(0.1, 0.7, 3)
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    return amplitude * (weights[:, None] * np.sin(2.0 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)


def _transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Applies affine maps ``m [F, 2, 3]`` to points ``pts [P, 2]``: ``[F, P, 2]``."""
    return np.einsum("fij,pj->fpi", m[:, :, :2], pts) + m[:, None, :, 2]


def _corners(box) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


def _boxes(m: np.ndarray, box) -> np.ndarray:
    """Axis-aligned boxes ``[F, 4]`` of a scene box seen through the maps ``m [F, 2, 3]``."""
    p = _transform_points(m, _corners(box))
    return np.concatenate([p.min(1), p.max(1)], axis=1)


def _mouth_boxes(ident: faces.Identity, m: np.ndarray, opening: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Frame-pixel boxes ``[F, 4]`` of the drawn lips (same geometry as :func:`faces.draw_mouth`)."""
    a, b = faces.mouth_shape(ident, opening.astype(np.float64), width.astype(np.float64))
    cx, cy = ident.mouth_center
    lt = ident.lip_thickness
    x1, y1, x2, y2 = cx - a - 0.5 * lt, cy - b - 0.85 * lt, cx + a + 0.5 * lt, cy + b + 1.25 * lt
    corners = np.stack([np.stack(c, -1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)  # [F, 4, 2]
    p = np.einsum("fij,fpj->fpi", m[:, :, :2], corners) + m[:, None, :, 2]
    return np.concatenate([p.min(1), p.max(1)], axis=1)


def head_motion(
    ident: faces.Identity,
    rng: np.random.Generator,
    num_frames: int,
    fps: float,
    width: int,
    height: int,
    amount: float = 1.0,
) -> np.ndarray:
    """Scene-to-frame affine maps, float64 ``[F, 2, 3]``: smooth sway, nod, zoom and roll.

    The face box centre sits at the frame centre plus the identity's offset, plus
    translation of up to 6 % (x) / 4 % (y) of the shorter side, zoom within +-5 % and
    roll within +-4 degrees around the identity's tilt, all scaled by ``amount``
    (0: a still head; the random draws are the same for every amount). If a face
    box would leave the frame, the whole track is zoomed out until it fits.
    """
    t = np.arange(num_frames) / fps
    short = float(min(width, height))
    fx1, fy1, fx2, fy2 = ident.face_box
    centre = np.array([(fx1 + fx2) / 2.0, (fy1 + fy2) / 2.0])
    dx = amount * _smooth_wave(rng, t, 0.06 * short)
    dy = amount * _smooth_wave(rng, t, 0.04 * short)
    zoom = 1.0 + amount * _smooth_wave(rng, t, 0.05)
    roll = np.deg2rad(ident.tilt + amount * _smooth_wave(rng, t, 4.0))
    base = ident.face_fraction * short / (fx2 - fx1)
    target = np.array([width / 2.0 + ident.offset[0] * short, height / 2.0 + ident.offset[1] * short])
    for _ in range(20):
        s = base * zoom
        cos, sin = s * np.cos(roll), s * np.sin(roll)
        m = np.empty((num_frames, 2, 3))
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
        m[:, 0, 2] = target[0] + dx - (cos * centre[0] - sin * centre[1])
        m[:, 1, 2] = target[1] + dy - (sin * centre[0] + cos * centre[1])
        b = _boxes(m, ident.face_box)
        if b[:, 0].min() >= 1 and b[:, 1].min() >= 1 and b[:, 2].max() <= width - 1 and b[:, 3].max() <= height - 1:
            return m
        # Too big or too far off centre for this frame shape: shrink and re-centre.
        base *= 0.9
        target = 0.7 * target + 0.3 * np.array([width / 2.0, height / 2.0])
    raise ValueError(f"a {width}x{height} frame is too small to hold the face; use a larger --size")


def synthesize_clip(
    seed: int,
    clip_index: int,
    num_identities: int = 4,
    fps: float = float(FPS),
    size: tuple[int, int] = (256, 256),
    seconds: float = 3.0,
    render: bool = True,
    head_motion_amount: float = 1.0,
) -> Clip:
    """Generates one clip in memory (deterministic in all arguments).

    Args:
      seed: dataset seed (>= 0).
      clip_index: which clip of the dataset (its speaker is ``clip_index % num_identities``).
      num_identities: number of identities/speakers in the dataset.
      fps: video frame rate.
      size: ``(width, height)`` of the frames in pixels.
      seconds: clip duration; ``F = max(1, round(seconds * fps))`` frames.
      render: fill ``frames``; with False only audio and ground truth are made, and
        frames can be streamed with :meth:`Clip.iter_frames`.
      head_motion_amount: scale of the head motion (:func:`head_motion`; 0 = still head).

    Returns:
      A :class:`Clip` (frames uint8 ``[F, H, W, 3]``, audio float32 ``[N]`` at 16 kHz).
    """
    width, height = size
    identity = clip_index % num_identities
    ident = faces.make_identity(seed, identity)
    num_frames = max(1, int(round(seconds * fps)))
    num_samples = int(round(num_frames * SAMPLE_RATE / fps))

    audio = voice.synthesize_speech(np.random.default_rng([seed, 3, clip_index]), num_samples, ident.voice)
    opening, mouth_width = voice.mouth_from_audio(audio, fps, num_frames)
    motion = head_motion(
        ident, np.random.default_rng([seed, 4, clip_index]), num_frames, fps, width, height, head_motion_amount
    )
    speaker_id, clip_id = clip_name(clip_index, num_identities)
    clip = Clip(
        clip_id=clip_id,
        speaker_id=speaker_id,
        identity=identity,
        identity_kind=ident.kind,
        seed=seed,
        clip_index=clip_index,
        fps=float(fps),
        sample_rate=SAMPLE_RATE,
        width=width,
        height=height,
        audio=audio,
        mouth_opening=opening,
        mouth_width=mouth_width,
        face_boxes=_boxes(motion, ident.face_box).astype(np.float32),
        mouth_boxes=_mouth_boxes(ident, motion, opening, mouth_width).astype(np.float32),
        f0_range=(ident.voice.f0_low, ident.voice.f0_high),
        motion=motion,
    )
    return dataclasses.replace(clip, frames=clip.render()) if render else clip
