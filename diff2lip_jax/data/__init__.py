"""Reading prepared datasets: record schema and grain input pipelines.

* :mod:`.records`: the clip record (:func:`tfds_features`), finding a prepared
  dataset (:func:`find_dataset_dir`, :func:`open_split`), window rules
  (:func:`valid_window_starts`, :func:`window_mels`), JPEG decoding.
* :mod:`.pipeline`: :func:`make_train_loader` (endless, sharded, seeded,
  checkpointable batches of 5-frame windows) and :func:`make_eval_loader` (whole
  clips in order).

Datasets are written by ``diff2lip-preprocess`` (``data_pipelines``); this
package only reads them, through TFDS's numpy reader (no TensorFlow).
"""

from diff2lip_jax.data.pipeline import (
    ImagesToUnitRange,
    TrainWindows,
    WholeClip,
    make_eval_loader,
    make_train_loader,
    train_dataset,
)
from diff2lip_jax.data.records import (
    FEATURE_NAMES,
    FPS,
    IMAGE_SIZE,
    WINDOW,
    decode_jpegs,
    find_dataset_dir,
    open_split,
    text,
    tfds_features,
    to_unit_range,
    valid_window_starts,
    window_mels,
)

__all__ = [
    "FEATURE_NAMES",
    "FPS",
    "IMAGE_SIZE",
    "WINDOW",
    "ImagesToUnitRange",
    "TrainWindows",
    "WholeClip",
    "decode_jpegs",
    "find_dataset_dir",
    "make_eval_loader",
    "make_train_loader",
    "open_split",
    "text",
    "tfds_features",
    "to_unit_range",
    "train_dataset",
    "valid_window_starts",
    "window_mels",
]
