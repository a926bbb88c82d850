"""LSE-C / LSE-D: lip-sync error confidence and distance (Prajwal et al. 2020, Wav2Lip).

The protocol is syncnet_python's ``SyncNetInstance.evaluate`` (as Wav2Lip's
``scores_LSE/calculate_scores_real_videos.py`` runs it, ``vshift = 15``):

1. ``L = min(num_frames, floor(num_samples / 640))`` (25 fps, 16 kHz) and one
   5-frame window per start frame ``i = 0 .. L - 6`` (the official loop stops one
   window short of the last one; kept for identical numbers).
2. Embed each window's faces (``face_emb[i]``) and its audio (``audio_emb[i]``).
3. For every shift ``j = 0 .. 2 vshift``, the distance of ``face_emb[i]`` to
   ``audio_emb[i + j - vshift]``, where audio embeddings beyond either end are
   zero vectors (the official pads with zeros, and those rows count);
   distance = torch ``pairwise_distance`` = ``|f - a + 1e-6|``.
4. ``curve[j]`` = mean over ``i``. LSE-D = ``min(curve)``; LSE-C =
   ``median(curve) - min(curve)``; AV offset = ``vshift - argmin(curve)`` in
   frames. Sign: an audio track delayed by k frames (sound after the lips) gives
   offset -k; audio ahead by k gives +k.

Papers report the mean of LSE-C and LSE-D over the videos of a test set.

The scoring network is pluggable (:class:`SyncScorer`): our SyncNet (a
``diff2lip-train-syncnet`` workdir), Wav2Lip's ``lipsync_expert.pth``, or
syncnet_python's ``syncnet_v2.model`` (the network the published numbers use;
:mod:`.syncnet_python`). Absolute values are only comparable between runs that
use the same scorer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.audio import melspectrogram, sync_mel_windows
from diff2lip_jax.constants import FRAMES_PER_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME
from diff2lip_jax.face import crop_and_resize
from diff2lip_jax.images import uint8_to_unit
from diff2lip_jax.models.syncnet import SyncNetExpert, Wav2LipExpert

VSHIFT = 15
SCORER_KINDS = ("ours", "wav2lip", "syncnet_python")

__all__ = [
    "VSHIFT",
    "SCORER_KINDS",
    "SyncScorer",
    "SyncResult",
    "sync_curve",
    "sync_from_embeddings",
    "num_sync_windows",
    "evaluate_sync",
    "JaxScorer",
    "make_scorer",
]


class SyncScorer(Protocol):
    """A lip-sync scoring network with its own face crops and audio features.

    ``crop(frames [N,H,W,3] uint8 RGB, boxes [N,4] int (x1,y1,x2,y2)) -> [N,S,S,3] uint8``:
    the face crops the network wants (it takes the lower half itself, if it uses it).
    ``audio_windows(wav [M] float32 16 kHz, start_frames [B] int) -> [B, ...]``: the
    audio input of the 5-frame windows starting at those video frames.
    ``embed(face_windows [B,5,S,S,3] uint8, audio_windows [B, ...]) -> (face_emb [B,D],
    audio_emb [B,D])`` float arrays.
    """

    name: str

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...

    def audio_windows(self, wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray: ...

    def embed(self, face_windows: np.ndarray, audio_windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """LSE of one clip: ``lse_d`` (min mean distance), ``lse_c`` (confidence),
    ``offset`` (frames), ``curve`` float64 ``[2 vshift + 1]`` (mean distance per shift),
    ``num_windows``."""

    lse_d: float
    lse_c: float
    offset: int
    curve: np.ndarray
    num_windows: int

    def record(self) -> dict[str, float | int]:
        """The per-clip JSON fields: ``lse_c``, ``lse_d``, ``av_offset``, ``lse_windows``."""
        return {"lse_c": self.lse_c, "lse_d": self.lse_d, "av_offset": self.offset, "lse_windows": self.num_windows}


def sync_curve(face_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """Mean distance per shift (syncnet_python ``calc_pdist`` + mean): float64 ``[2 vshift + 1]``.

    Args:
      face_emb, audio_emb: ``[N, D]`` embeddings of the same N windows.
      vshift: largest shift in frames, each way.
    """
    f, a = np.asarray(face_emb, np.float64), np.asarray(audio_emb, np.float64)
    if f.shape != a.shape or f.ndim != 2 or len(f) == 0:
        raise ValueError(f"embeddings must be two equal [N, D] arrays with N >= 1, got {f.shape} and {a.shape}")
    n = len(f)
    padded = np.concatenate([np.zeros((vshift, f.shape[1])), a, np.zeros((vshift, f.shape[1]))])
    # One shift at a time keeps memory at O(N D) for long videos.
    return np.array([np.linalg.norm(f - padded[j : j + n] + 1e-6, axis=1).mean() for j in range(2 * vshift + 1)])


def sync_from_embeddings(face_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = VSHIFT) -> SyncResult:
    """LSE-D, LSE-C and the AV offset from per-window embeddings (see module doc)."""
    curve = sync_curve(face_emb, audio_emb, vshift)
    best = int(np.argmin(curve))
    return SyncResult(
        lse_d=float(curve[best]),
        lse_c=float(np.median(curve) - curve[best]),
        offset=vshift - best,
        curve=curve,
        num_windows=len(face_emb),
    )


def num_sync_windows(num_frames: int, num_samples: int) -> int:
    """Windows the protocol scores: ``min(num_frames, num_samples // 640) - 5`` (may be <= 0)."""
    return min(int(num_frames), int(num_samples) // SAMPLES_PER_FRAME) - FRAMES_PER_WINDOW


def evaluate_sync(
    frames: np.ndarray,
    boxes: np.ndarray,
    wav: np.ndarray,
    scorer: SyncScorer,
    vshift: int = VSHIFT,
    batch_size: int = 32,
) -> SyncResult:
    """LSE of a clip.

    Args:
      frames: uint8 ``[N, H, W, 3]`` RGB video at 25 fps.
      boxes: ``[N, 4]`` int face boxes (x1, y1, x2, y2) for those frames.
      wav: float32 ``[M]`` 16 kHz audio of the clip.
      scorer: the scoring network.
      vshift: largest shift searched, in frames.
      batch_size: windows per ``scorer.embed`` call.

    Raises:
      ValueError: a clip too short for one window (fewer than 6 frames of audio and video).
    """
    n = num_sync_windows(len(frames), len(wav))
    if n < 1:
        raise ValueError(
            f"clip too short for LSE: {len(frames)} frames and {len(wav) / SAMPLE_RATE:.2f} s of "
            f"audio; need at least {FRAMES_PER_WINDOW + 1} frames of both"
        )
    crops = scorer.crop(np.asarray(frames)[: n + FRAMES_PER_WINDOW - 1], np.asarray(boxes)[: n + FRAMES_PER_WINDOW - 1])
    starts = np.arange(n)
    audio = scorer.audio_windows(np.asarray(wav, np.float32), starts)
    face_out, audio_out = [], []
    for s in range(0, n, batch_size):
        idx = starts[s : s + batch_size]
        windows = crops[idx[:, None] + np.arange(FRAMES_PER_WINDOW)[None, :]]  # [B, 5, S, S, 3]
        f, a = scorer.embed(windows, audio[s : s + batch_size])
        face_out.append(np.asarray(f))
        audio_out.append(np.asarray(a))
    return sync_from_embeddings(np.concatenate(face_out), np.concatenate(audio_out), vshift)


# ---------------------------------------------------------------- scorers


EmbedFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass
class JaxScorer:
    """A :class:`SyncScorer` around a jitted Flax embedding function.

    ``embed_fn(variables, faces, audio)`` receives ``faces`` as float32 prepared by
    ``face_fn`` from the uint8 windows and ``audio`` as given by ``audio_fn``.
    Batches are padded to ``batch_size`` so XLA compiles once.
    """

    name: str
    crop_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    audio_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    face_fn: Callable[[jax.Array], jax.Array]
    embed_fn: EmbedFn
    variables: Mapping[str, Any]
    batch_size: int = 32

    def __post_init__(self) -> None:
        face_fn, embed_fn = self.face_fn, self.embed_fn
        self._jitted = jax.jit(lambda v, faces, audio: embed_fn(v, face_fn(faces), audio))
        self.variables = jax.tree.map(jnp.asarray, dict(self.variables))

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.crop_fn(frames, boxes)

    def audio_windows(self, wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray:
        return self.audio_fn(wav, start_frames)

    def embed(self, face_windows: np.ndarray, audio_windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = len(face_windows)
        pad = (-b) % self.batch_size  # to whole batches
        faces = np.concatenate([face_windows, np.zeros((pad, *face_windows.shape[1:]), face_windows.dtype)])
        audio = np.concatenate([audio_windows, np.zeros((pad, *audio_windows.shape[1:]), audio_windows.dtype)])
        outs = [
            self._jitted(
                self.variables, jnp.asarray(faces[s : s + self.batch_size]), jnp.asarray(audio[s : s + self.batch_size])
            )
            for s in range(0, len(faces), self.batch_size)
        ]
        f = np.concatenate([np.asarray(o[0]) for o in outs])[:b]
        a = np.concatenate([np.asarray(o[1]) for o in outs])[:b]
        return f, a


def _mel_windows(wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray:
    """Wav2Lip's SyncNet audio input: 16-step mel windows ``[B, 80, 16]`` at ``int(80 s / 25)``."""
    return sync_mel_windows(melspectrogram(wav), start_frames)


def _lower_half_pm1(faces: jax.Array) -> jax.Array:
    """uint8 ``[B, 5, S, S, 3]`` -> lower halves float32 ``[B, 5, S/2, S, 3]`` in [-1, 1]."""
    s = faces.shape[2]
    return uint8_to_unit(faces[:, :, s // 2 :])


def _crop_at(size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda frames, boxes: crop_and_resize(frames, boxes, size)


def ours_scorer(workdir: str, batch_size: int = 32) -> JaxScorer:
    """Our SyncNet from a ``diff2lip-train-syncnet`` workdir: crops at its image size
    (bilinear, as training), lower halves in [-1, 1], RGB; audio = sync mel windows."""
    from diff2lip_jax.checkpoint import load_syncnet, read_syncnet_meta

    module, variables = load_syncnet(workdir)
    size = int(read_syncnet_meta(workdir)[0]["image_size"])
    expert = SyncNetExpert(module)
    return JaxScorer("ours", _crop_at(size), _mel_windows, _lower_half_pm1, expert.embed, variables, batch_size)


def wav2lip_scorer(path: str, batch_size: int = 32) -> JaxScorer:
    """Wav2Lip's expert (``lipsync_expert.pth``): 96 px crops as Wav2Lip, lower halves; the
    expert's wrapper flips RGB to the BGR it was trained on."""
    from diff2lip_jax.models.syncnet import load_wav2lip_syncnet

    expert = Wav2LipExpert()
    return JaxScorer(
        "wav2lip", _crop_at(96), _mel_windows, _lower_half_pm1, expert.embed, load_wav2lip_syncnet(path), batch_size
    )


def syncnet_python_scorer(path: str, batch_size: int = 16) -> JaxScorer:
    """syncnet_python's ``S`` from ``syncnet_v2.model``: its 224 px crops, BGR in [0, 255], MFCC windows."""
    from diff2lip_jax.evaluate import syncnet_python as sp

    module, variables = sp.load_syncnet_python(path)
    return JaxScorer(
        "syncnet_python",
        sp.syncnet_crops,
        sp.mfcc_windows,
        lambda faces: faces[..., ::-1].astype(jnp.float32),
        lambda v, faces, audio: module.apply(v, faces, audio),
        variables,
        batch_size,
    )


def make_scorer(kind: str, path: str | None) -> SyncScorer:
    """Scorer by kind: "ours" (``path``: SyncNet workdir), "wav2lip" (``lipsync_expert.pth``),
    "syncnet_python" (``syncnet_v2.model``), or "module:factory" (``factory(path)``
    returns any :class:`SyncScorer`)."""
    if ":" in kind:
        from diff2lip_jax.evaluate.lmd import load_factory

        return load_factory(kind, "--syncnet_kind")(path)
    if kind not in SCORER_KINDS:
        raise ValueError(f"--syncnet_kind={kind!r}: expected one of {', '.join(SCORER_KINDS)} or module:factory")
    if not path:
        raise ValueError(
            f"--syncnet_kind={kind} needs --syncnet (a "
            + {
                "ours": "diff2lip-train-syncnet workdir",
                "wav2lip": "lipsync_expert.pth file",
                "syncnet_python": "syncnet_v2.model file",
            }[kind]
            + ")"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"--syncnet={path}: no such file or directory")
    if kind == "ours":
        return ours_scorer(path)
    return wav2lip_scorer(path) if kind == "wav2lip" else syncnet_python_scorer(path)
