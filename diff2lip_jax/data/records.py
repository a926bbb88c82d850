"""The prepared dataset: record schema, locating a dataset on disk, window rules, JPEG decoding.

A prepared dataset is a TFDS dataset in ArrayRecord format (written by
``diff2lip-preprocess``): ``<out>/<name>/<version>/`` holding ``dataset_info.json``,
``features.json`` and ``<name>-<split>.array_record-XXXXX-of-YYYYY`` shards. One
record per clip (see :func:`tfds_features` for the fields). Reading needs no
TensorFlow: TFDS parses the records with numpy (``builder.as_data_source``).

This module is the single definition of the schema: ``data_pipelines`` writes with
:func:`tfds_features`, the loaders here read with it.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from diff2lip_jax import audio
from diff2lip_jax.constants import FPS, FRAMES_PER_WINDOW, MEL_STEPS_PER_SECOND, MEL_STEPS_PER_WINDOW, NUM_MELS
from diff2lip_jax.images import uint8_to_unit
from diff2lip_jax.type_aliases import PathLike

# FPS (every prepared clip is 25 fps) and PathLike are re-exported from their homes
# (diff2lip_jax.constants, diff2lip_jax.type_aliases). Aliases kept for callers outside
# this refactor (data/pipeline.py, train/syncnet.py); new code uses the new names.
WINDOW = FRAMES_PER_WINDOW  # alias: frames per training sequence (5)
to_unit_range = uint8_to_unit  # alias: uint8 [0, 255] -> float32 [-1, 1] (diff2lip_jax.images)
IMAGE_SIZE = 128  # side of the stored face crops, pixels
FEATURE_NAMES = (
    "clip_id",
    "speaker_id",
    "source",
    "fps",
    "num_frames",
    "frame_size",
    "boxes",
    "has_face",
    "frames",
    "mel",
    "segment",
    "av_offset",
    "sync_confidence",
)


def tfds_features():
    """The TFDS features of a clip record.

    * ``clip_id`` (str): e.g. ``id00017/01dfn2spqyE/00001`` (VoxCeleb2),
      ``ABOUT/test/ABOUT_00001`` (LRW), ``<speaker>/<file stem>`` (local videos):
      the ids of the paper's evaluation filelists.
    * ``speaker_id`` (str), ``source`` (str, path of the original video).
    * ``fps`` (int32, always 25), ``num_frames`` (int32 N).
    * ``frame_size`` int32 ``[2]``: (height, width) of the source frames.
    * ``boxes`` int32 ``[N, 4]``: face box (x1, y1, x2, y2) in source pixels, end exclusive.
    * ``has_face`` bool ``[N]``: False where no face was detected near the frame.
    * ``frames`` bytes ``[N]``: JPEG-encoded RGB face crops, 128 x 128 by default.
    * ``mel`` float32 ``[80, T]``: :func:`diff2lip_jax.audio.melspectrogram` of the
      16 kHz audio (float32 kept: it is ~15% of a record, and float16 would change
      the model inputs).
    * ``segment`` float32 ``[2]``: (start, end) of the record in the source video, seconds
      (a clip split at shot cuts gives one record per kept shot).
    * ``av_offset`` int32: the audio-visual offset in frames found by the sync filter
      (syncnet_python's sign: audio k frames late -> -k); the stored mel is already
      corrected by it. 0 when the filter is off.
    * ``sync_confidence`` float32: the filter's confidence after the correction (NaN: not scored).
    """
    import tensorflow_datasets as tfds

    f = tfds.features
    return f.FeaturesDict(
        {
            "clip_id": f.Text(),
            "speaker_id": f.Text(),
            "source": f.Text(),
            "fps": f.Scalar(dtype=np.int32),
            "num_frames": f.Scalar(dtype=np.int32),
            "frame_size": f.Tensor(shape=(2,), dtype=np.int32),
            "boxes": f.Tensor(shape=(None, 4), dtype=np.int32),
            "has_face": f.Tensor(shape=(None,), dtype=np.bool_),
            "frames": f.Tensor(shape=(None,), dtype=np.object_),
            "mel": f.Tensor(shape=(NUM_MELS, None), dtype=np.float32),
            "segment": f.Tensor(shape=(2,), dtype=np.float32),
            "av_offset": f.Scalar(dtype=np.int32),
            "sync_confidence": f.Scalar(dtype=np.float32),
        }
    )


# -- locating a dataset ---------------------------------------------------------------


def _version_key(path: pathlib.Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in path.name.split("."))
    except ValueError:
        return (-1,)


def find_dataset_dir(data_dir: PathLike, name: str | None = None) -> pathlib.Path:
    """The version directory of a prepared dataset (the one holding ``dataset_info.json``).

    ``data_dir`` may be that directory, a dataset directory (``<out>/<name>``: the
    highest version is taken) or the ``--out`` of ``diff2lip-preprocess`` (it must hold
    exactly one dataset, or ``name`` must pick one).

    Raises:
      FileNotFoundError: no prepared dataset there. ValueError: several, and no ``name``.
    """
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data dir {root} does not exist; pass the --out of diff2lip-preprocess")
    if (root / "dataset_info.json").is_file():
        return root
    found: dict[str, list[pathlib.Path]] = {}
    for pattern in ("*/dataset_info.json", "*/*/dataset_info.json"):
        for info in root.glob(pattern):
            version_dir = info.parent
            if version_dir.name.startswith("incomplete") or _version_key(version_dir) == (-1,):
                continue  # TFDS's temporary directory of an unfinished build, or not a version
            ds_name = json.loads(info.read_text()).get("name", version_dir.parent.name)
            found.setdefault(ds_name, []).append(version_dir)
    if name is not None:
        found = {k: v for k, v in found.items() if k == name}
    if not found:
        which = f"dataset {name!r}" if name else "prepared dataset"
        raise FileNotFoundError(
            f"no {which} under {root} (no <name>/<version>/dataset_info.json); "
            "run diff2lip-preprocess --out there first"
        )
    if len(found) > 1:
        raise ValueError(f"{root} holds several datasets ({', '.join(sorted(found))}); choose one by name")
    return max(next(iter(found.values())), key=_version_key)


def open_split(data_dir: PathLike, split: str = "train", name: str | None = None):
    """Random-access view of one split: ``len(src)`` clips, ``src[i]`` a dict of numpy values.

    Returns TFDS's ``ArrayRecordDataSource`` (picklable, so grain workers can use it);
    text fields come back as ``bytes``.

    Raises:
      ValueError: the split does not exist (the message lists those that do).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.fspath(find_dataset_dir(data_dir, name)))
    splits = builder.info.splits
    if split not in splits:
        raise ValueError(
            f"dataset {builder.info.full_name} has no split {split!r}; "
            f"it has {', '.join(sorted(splits.keys())) or 'none'}"
        )
    return builder.as_data_source(split=split)


# -- windows ----------------------------------------------------------------------------


def valid_window_starts(has_face: np.ndarray, num_mel_steps: int, fps: float = FPS) -> np.ndarray:
    """Which frames may start a training sequence: bool ``[N]``.

    Start ``s`` is valid when (the official Wav2Lip/Diff2Lip dataset rules):

    * ``s >= 1`` and ``s + 5 <= N`` (the official per-frame mel windows start one
      frame early, at ``s - 1``);
    * frames ``s .. s+4`` all have a face;
    * another face frame exists outside ``[s, s+5)`` (for the reference);
    * every mel window is complete: the last per-frame window (frame ``s+4``,
      starting at mel step ``int(80 (s+3) / fps)``) ends inside the spectrogram, as
      the official loader requires (it skips windows shorter than 16 steps).

    Args:
      has_face: bool ``[N]``.
      num_mel_steps: ``T`` of the clip's ``mel [80, T]``.
      fps: video frame rate.
    """
    has_face = np.asarray(has_face, bool).reshape(-1)
    n = has_face.size
    valid = np.zeros(n, bool)
    if n < FRAMES_PER_WINDOW + 1:
        return valid
    # Faces in window [s, s+5) for every s, via a cumulative sum (no Python loop).
    csum = np.concatenate([[0], np.cumsum(has_face)])
    starts = np.arange(1, n - FRAMES_PER_WINDOW + 1)
    in_window = csum[starts + FRAMES_PER_WINDOW] - csum[starts]
    last_start = float(MEL_STEPS_PER_SECOND) * ((starts + FRAMES_PER_WINDOW - 2).astype(np.float64) / float(fps))
    audio_ok = last_start.astype(np.int64) + MEL_STEPS_PER_WINDOW <= num_mel_steps
    valid[starts] = (in_window == FRAMES_PER_WINDOW) & (csum[-1] > FRAMES_PER_WINDOW) & audio_ok
    return valid


def window_mels(mel: np.ndarray, start: int, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Mel inputs of the sequence of frames ``start .. start+4``.

    Returns:
      indiv_mels float32 ``[5, 80, 16]``: each frame's window, exactly the rows
        ``start .. start+4`` of :func:`diff2lip_jax.audio.frame_mel_windows`;
      sync_mel float32 ``[80, 16]``: :func:`diff2lip_jax.audio.sync_mel_window` at ``start``.
    """
    # Only these five windows are gathered, not all N.
    indiv = audio.frame_windows_at(mel, np.arange(start, start + FRAMES_PER_WINDOW), fps)
    return indiv, audio.sync_mel_window(mel, start, fps)


# -- images -------------------------------------------------------------------------------


def decode_jpegs(blobs: Sequence[bytes], image_size: int | None = None) -> np.ndarray:
    """JPEG bytes -> uint8 RGB ``[n, S, S, 3]``; resized (area / bilinear) when ``image_size`` is set.

    Raises:
      ValueError: a blob is not a decodable JPEG.
    """
    out: np.ndarray | None = None
    for i, blob in enumerate(blobs):
        bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"frame {i}: not a decodable JPEG ({len(blob)} bytes); re-run diff2lip-preprocess")
        if image_size is not None and bgr.shape[:2] != (image_size, image_size):
            interpolation = cv2.INTER_AREA if bgr.shape[0] > image_size else cv2.INTER_LINEAR  # area: no aliasing
            bgr = cv2.resize(bgr, (image_size, image_size), interpolation=interpolation)
        if out is None:
            out = np.empty((len(blobs), *bgr.shape), np.uint8)
        out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if out is None:
        side = image_size or IMAGE_SIZE
        return np.zeros((0, side, side, 3), np.uint8)
    return out


def text(value: Any) -> str:
    """A TFDS text field (bytes) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
