"""TFDS builders for prepared Diff2Lip datasets, and the per-clip processing behind them.

* :mod:`.sources`: finding clips (local folder/glob/filelist, VoxCeleb2, LRW) and
  assigning train/val/test splits by speaker.
* :mod:`.clip`: one clip -> its segments' records (decode, detect, cut at shots,
  face and sync checks, crop, JPEG, mel), every dropped shot with its reason.
* :mod:`.process`: the per-clip cache, run over clips in a process pool,
  resumable, with per-clip failure reasons.
* :mod:`.datasets`: the ``tfds.core.GeneratorBasedBuilder`` subclasses
  (``local_videos``, ``voxceleb2``, ``lrw``) writing ArrayRecord shards.
"""

from data_pipelines.builders.datasets import BUILDERS, ClipDatasetBuilder, LocalVideos, Lrw, VoxCeleb2, make_builder
from data_pipelines.builders.process import (
    ClipError,
    ClipResult,
    ProcessOptions,
    RunResult,
    load_record,
    load_records,
    process_clip,
    process_segments,
    run_clips,
)
from data_pipelines.builders.sources import (
    SPLIT_MODES,
    VIDEO_EXTENSIONS,
    ClipSource,
    assign_splits,
    expand_input,
    local_video_sources,
    lrw_sources,
    voxceleb2_sources,
)

__all__ = [
    "BUILDERS",
    "ClipDatasetBuilder",
    "LocalVideos",
    "Lrw",
    "VoxCeleb2",
    "make_builder",
    "ClipError",
    "ClipResult",
    "ProcessOptions",
    "RunResult",
    "load_record",
    "load_records",
    "process_clip",
    "process_segments",
    "run_clips",
    "SPLIT_MODES",
    "VIDEO_EXTENSIONS",
    "ClipSource",
    "assign_splits",
    "expand_input",
    "local_video_sources",
    "lrw_sources",
    "voxceleb2_sources",
]
