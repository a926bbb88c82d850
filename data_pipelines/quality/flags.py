"""The filters' flags of ``diff2lip-preprocess`` and their checks (before any work starts)."""

from __future__ import annotations

from typing import Any

from absl import flags

from data_pipelines.quality import shots, sync

KEY_FLAGS = (
    "shot_threshold",
    "min_segment_seconds",
    "sync_scorer",
    "sync_weights",
    "min_sync_confidence",
    "max_av_offset",
)


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines the filter flags on ``flag_values``."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_float(
        "shot_threshold",
        shots.DEFAULT_THRESHOLD,
        "PySceneDetect ContentDetector threshold for shot cuts (lower finds more; 0: no cut detection).",
        **fv,
    )
    flags.DEFINE_float(
        "min_segment_seconds", 2.0, "Shots of a cut clip shorter than this are dropped (cut_too_short).", **fv
    )
    flags.DEFINE_string(
        "sync_scorer",
        "auto",
        "Sync filter scorer: auto (syncnet_python's syncnet_v2.model, else Wav2Lip's expert, from the "
        "weights cache; off when neither is there), off, syncnet_python, wav2lip, ours (a "
        "diff2lip-train-syncnet workdir) or module:factory.",
        **fv,
    )
    flags.DEFINE_string(
        "sync_weights", None, "The scorer's weights (file or workdir) for an explicit --sync_scorer.", **fv
    )
    flags.DEFINE_float(
        "min_sync_confidence",
        3.0,
        "Segments whose sync confidence after offset correction is below this are dropped (3: LatentSync's "
        "bar for syncnet_python; other scorers have other scales).",
        **fv,
    )
    flags.DEFINE_integer(
        "max_av_offset",
        5,
        "Largest audio-visual offset in frames (of the -15..15 searched) that is corrected; beyond: dropped.",
        **fv,
    )


def filter_options(values: flags.FlagValues) -> tuple[dict[str, Any], str]:
    """(ProcessOptions fields, the sync filter's status line) from the flags.

    Raises:
      ValueError / FileNotFoundError: a bad value or a scorer without its weights.
    """
    if values.shot_threshold < 0:
        raise ValueError(f"--shot_threshold must be >= 0 (0: off), got {values.shot_threshold:g}")
    if values.min_segment_seconds < 0.3:
        raise ValueError(
            f"--min_segment_seconds must be >= 0.3 (a 5-frame window and a reference), got {values.min_segment_seconds:g}"
        )
    if not 0 <= values.max_av_offset <= 15:
        raise ValueError(f"--max_av_offset must be 0-15 (the offsets searched), got {values.max_av_offset}")
    kind, path, status = sync.resolve_scorer(values.sync_scorer, values.sync_weights)
    fields = dict(
        shot_threshold=values.shot_threshold,
        min_segment_seconds=values.min_segment_seconds,
        sync_scorer=kind,
        sync_weights=path,
        min_sync_confidence=values.min_sync_confidence,
        max_av_offset=values.max_av_offset,
    )
    return fields, status
