"""The audio-visual offset and sync confidence of a segment, and the audio it is corrected to.

The protocol is syncnet_python's (:func:`diff2lip_jax.evaluate.lse.evaluate_sync`,
offsets -15..15 frames): the mean face/audio embedding distance per shift, the
offset at the minimum, confidence = median - minimum. Sign as there: audio
delayed by k frames (sound after the lips) gives offset -k.

Per segment (:func:`score_segment`): the offset is searched on the segment's own
audio; when ``|offset| <= max_offset`` the audio is re-cut ``offset`` frames
later/earlier from the clip's track (real audio beyond the segment's edges,
zeros beyond the clip's) and scored again; the segment's ``sync_confidence`` is
the confidence at zero shift of that corrected audio (median - distance at
shift 0: for a well-corrected segment, its LSE-C). Segments below
``min_confidence`` are dropped.

Scorers (:func:`resolve_scorer`): ``syncnet_python`` (the official
``syncnet_v2.model``), ``wav2lip`` (``lipsync_expert.pth``), ``ours`` (a
``diff2lip-train-syncnet`` workdir), ``module:factory`` (any
:class:`~diff2lip_jax.evaluate.lse.SyncScorer`), ``auto`` (the first pretrained
one found in the weights cache) or ``off``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from diff2lip_jax.constants import SAMPLES_PER_FRAME

SCORER_CHOICES = ("auto", "off", "syncnet_python", "wav2lip", "ours")
_AUTO_ORDER = (("syncnet_python", "syncnet_python"), ("wav2lip", "wav2lip_expert"))  # (kind, registry name)


def resolve_scorer(kind: str, path: str | None) -> tuple[str, str | None, str]:
    """``(kind, path, status line)`` of the scorer the filter will use; ``kind == "off"`` if none.

    ``auto`` takes the official syncnet_python weights from the weights cache
    (``diff2lip-weights fetch syncnet_python``), else Wav2Lip's expert there, else
    turns the filter off and says so. An explicit kind needs its file (checked here,
    before any work starts).

    Raises:
      ValueError / FileNotFoundError: an unknown kind, or a kind without its weights.
    """
    from diff2lip_jax import weights

    if kind == "off":
        return "off", None, "sync filter: off (--sync_scorer=off)"
    if kind == "auto":
        if path:
            raise ValueError("--sync_weights needs an explicit --sync_scorer (syncnet_python, wav2lip or ours)")
        for k, name in _AUTO_ORDER:
            file = weights.path(name)
            if file.is_file():
                return k, os.fspath(file), f"sync filter: on ({k}, {file})"
        return (
            "off",
            None,
            "sync filter: off (no pretrained scorer in the weights cache; `diff2lip-weights fetch syncnet_python` "
            "or --sync_scorer=ours --sync_weights=WORKDIR turns it on)",
        )
    if ":" in kind:
        from diff2lip_jax.evaluate.lmd import load_factory

        load_factory(kind, "--sync_scorer")  # importable and callable, before any work
    elif kind not in SCORER_CHOICES:
        raise ValueError(f"--sync_scorer={kind!r}: expected one of {', '.join(SCORER_CHOICES)} or module:factory")
    if ":" not in kind:
        if not path:
            need = {"syncnet_python": "syncnet_v2.model", "wav2lip": "lipsync_expert.pth", "ours": "a SyncNet workdir"}
            raise ValueError(f"--sync_scorer={kind} needs --sync_weights ({need[kind]})")
        if not os.path.exists(path):
            raise FileNotFoundError(f"--sync_weights={path}: no such file or directory")
        path = os.path.abspath(path)
    return kind, path, f"sync filter: on ({kind}{', ' + path if path else ''})"


_SCORERS: dict = {}


def get_scorer(kind: str, path: str | None):
    """One scorer per process and ``(kind, path)`` (each worker builds and compiles its own)."""
    if (kind, path) not in _SCORERS:
        from diff2lip_jax.evaluate.lse import make_scorer

        _SCORERS[(kind, path)] = make_scorer(kind, path)
    return _SCORERS[(kind, path)]


def cut_audio(wav: np.ndarray, start: int, stop: int, shift: int = 0, to_end: bool = False) -> np.ndarray:
    """The audio under frames ``start .. stop-1``, taken ``shift`` frames earlier: float32 ``[M]``.

    Samples ``640 (start - shift) .. 640 (stop - shift)`` of the clip's 16 kHz
    ``wav`` (zeros where that leaves the track); ``to_end``: up to the end of the
    track instead of ``stop`` (the last segment keeps the audio tail, as an uncut clip).
    """
    a = (start - shift) * SAMPLES_PER_FRAME
    b = (len(wav) if to_end else stop * SAMPLES_PER_FRAME) - shift * SAMPLES_PER_FRAME
    out = np.zeros(max(0, b - a), np.float32)
    lo, hi = max(a, 0), min(b, len(wav))
    if hi > lo:
        out[lo - a : hi - a] = wav[lo:hi]
    return out


@dataclasses.dataclass(frozen=True)
class SyncScore:
    """One segment's sync: ``offset`` (frames, syncnet_python sign), ``confidence_before``
    (median - distance at shift 0 of the uncorrected audio), ``confidence`` (the same of the
    corrected audio; equal to before when not corrected), ``lse_c`` (median - minimum of the
    uncorrected curve), ``corrected`` (the audio was shifted)."""

    offset: int
    confidence_before: float
    confidence: float
    lse_c: float
    corrected: bool


def _at_zero(curve: np.ndarray, vshift: int) -> float:
    return float(np.median(curve) - curve[vshift])


def score_segment(
    frames: np.ndarray,
    boxes: np.ndarray,
    wav: np.ndarray,
    start: int,
    stop: int,
    scorer,
    max_offset: int,
    vshift: int | None = None,
) -> SyncScore:
    """Offset search and corrected confidence of frames ``start .. stop-1`` of a clip.

    Args:
      frames: uint8 ``[stop - start, H, W, 3]`` RGB source frames of the segment (25 fps).
      boxes: int ``[stop - start, 4]`` face boxes (x1, y1, x2, y2) of those frames.
      wav: float32 ``[M]`` 16 kHz audio of the whole clip.
      start, stop: the segment's frame range in the clip.
      scorer: a :class:`~diff2lip_jax.evaluate.lse.SyncScorer`.
      max_offset: largest |offset| that is corrected (beyond it: not re-scored).
      vshift: shifts searched each way (default :data:`~diff2lip_jax.evaluate.lse.VSHIFT`, 15).
    """
    from diff2lip_jax.evaluate.lse import VSHIFT, evaluate_sync

    vshift = VSHIFT if vshift is None else vshift
    first = evaluate_sync(frames, boxes, cut_audio(wav, start, stop), scorer, vshift=vshift)
    before = _at_zero(first.curve, vshift)
    if first.offset == 0 or abs(first.offset) > max_offset:
        return SyncScore(first.offset, before, before, first.lse_c, False)
    # offset -k: the sound comes k frames late, so the audio of frame t is at t + k.
    second = evaluate_sync(frames, boxes, cut_audio(wav, start, stop, shift=first.offset), scorer, vshift=vshift)
    return SyncScore(first.offset, before, _at_zero(second.curve, vshift), first.lse_c, True)
