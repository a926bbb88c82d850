"""TFDS builders writing prepared Diff2Lip datasets as ArrayRecord: local_videos, voxceleb2, lrw.

They are ordinary ``tfds.core.GeneratorBasedBuilder`` subclasses with
``file_format="array_record"``; ``download_and_prepare`` needs no TensorFlow
(TFDS serialises tf.Example protos with its own copy of the proto classes).
``_split_generators`` finds the clips (from ``source``, else TFDS's
``manual_dir``), assigns splits, processes the clips not cached yet in a
process pool (:func:`process.run_clips`), and ``_generate_examples`` yields the
cached records. With ``beam=True`` the clips are processed inside an Apache Beam
pipeline instead (no cache; see the README on scaling), which TFDS runs with the
``beam_runner`` / ``beam_options`` of its ``DownloadConfig``.

Usage::

    builder = make_builder("voxceleb2", data_dir="/data/prepared", source="/data/vox2",
                           options=ProcessOptions(face_detector="voxceleb2"), num_workers=8)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import logging
import os
import re
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.builders import process
from data_pipelines.builders.process import ClipResult, ProcessOptions, RunResult
from data_pipelines.builders.sources import (
    ClipSource,
    assign_splits,
    local_video_sources,
    lrw_sources,
    voxceleb2_sources,
)
from diff2lip_jax.data import records

_CITATION = """@inproceedings{mukhopadhyay2024diff2lip,
  title={Diff2Lip: Audio Conditioned Diffusion Models for Lip-Synchronization},
  author={Mukhopadhyay, Soumik and Suri, Saksham and Gadde, Ravi Teja and Shrivastava, Abhinav},
  booktitle={WACV}, year={2024}}"""


class ClipDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: one record per clip (schema: :func:`diff2lip_jax.data.tfds_features`).

    Subclasses define :meth:`find_sources`. Constructor arguments beyond TFDS's
    (``data_dir`` etc.):

    source: the input (folder, glob, filelist or download root); default: TFDS's
      ``manual_dir``.
    options: how clips are processed. cache_dir: per-clip results (default
      ``<data_dir>/cache``). num_workers: processes over clips.
    split, val_fraction, test_fraction: see :func:`sources.assign_splits`.
    retry_failed: redo clips that failed in an earlier run.
    log: progress messages (e.g. ``print``). beam: process clips with Apache Beam.

    After ``download_and_prepare``, ``run_result`` holds every clip's outcome.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "25 fps 128 px face crops (JPEG), boxes, mel per clip."}
    HOMEPAGE: ClassVar[str] = "https://github.com/soumik-kanad/diff2lip"
    DESCRIPTION: ClassVar[str] = "Talking-face clips prepared for Diff2Lip."

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves this through `importlib_resources`, a backport it only
        # installs for Python < 3.9, and fails without it for builders in packages.
        return epath.Path(inspect.getfile(cls))

    def __init__(
        self,
        *,
        source: str | None = None,
        options: ProcessOptions = ProcessOptions(),
        cache_dir: str | None = None,
        num_workers: int = 0,
        split: str = "auto",
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        retry_failed: bool = False,
        log: Callable[[str], None] | None = None,
        beam: bool = False,
        **kwargs: Any,
    ) -> None:
        self._source, self._options, self._num_workers = source, options, num_workers
        self._split_mode, self._val_fraction, self._test_fraction = split, val_fraction, test_fraction
        self._retry_failed, self._log, self._beam = retry_failed, log, beam
        self.run_result: RunResult | None = None
        self._found: dict[str, list[ClipSource]] = {}
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._cache_dir = cache_dir or os.path.join(os.fspath(self.data_dir_root), "cache")

    def outcomes(self) -> list[dict[str, Any]]:
        """Every clip's outcome of the last ``download_and_prepare`` as report dicts
        (:func:`data_pipelines.quality.report.build_report`), from either path."""
        from data_pipelines.quality.report import outcome_from_result

        if self.run_result is not None:
            return [outcome_from_result(r) for r in self.run_result.results]
        return beam_outcomes(self._cache_dir)

    @abc.abstractmethod
    def find_sources(self, source: str) -> list[ClipSource]:
        """The clips of ``source`` (official split or "" for each)."""

    def sources(self, source: str | None = None) -> list[ClipSource]:
        """The clips to prepare, with their splits assigned (found once per source)."""
        source = source or self._source
        if source not in self._found:
            found = self.find_sources(source)
            self._found[source] = assign_splits(found, self._split_mode, self._val_fraction, self._test_fraction)
        return self._found[source]

    def _example_writer(self) -> tfds.core.writer.ExampleWriter:
        return _UncompressedArrayRecordWriter(self.info.file_format)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=records.tfds_features(),
            homepage=self.HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        sources = self.sources(self._source or os.fspath(dl_manager.manual_dir))
        by_split: dict[str, list] = defaultdict(list)
        if self._beam:
            for s in sources:
                by_split[s.split].append(s)
            lists = epath.Path(self._cache_dir) / "beam"
            return {
                split: _beam_examples(items, self._options, lists / f"{split}.jsonl")
                for split, items in sorted(by_split.items())
            }
        self.run_result = process.run_clips(
            sources, self._options, self._cache_dir, self._num_workers, self._retry_failed, self._log
        )
        for r in self.run_result.ok:
            by_split[r.source.split].append(r)
        if not by_split:
            first = self.run_result.results[0]
            raise ValueError(
                f"none of the {len(sources)} clips could be processed "
                f"(first failure: {first.source.path}: {first.reason})"
            )
        return {split: self._generate_examples(items) for split, items in sorted(by_split.items())}

    def _generate_examples(self, results: list[ClipResult]) -> Iterator[tuple[str, dict[str, Any]]]:
        for r in results:
            for rec in process.load_records(r.cache_path):
                yield rec["clip_id"], rec


class _UncompressedArrayRecordWriter(tfds.core.writer.ExampleWriter):
    """ArrayRecord shards without compression (TFDS's hook for custom storage).

    TFDS writes ``group_size:1`` with the default zstd; a record is mostly JPEG
    bytes, which do not compress, yet every random read would decompress the
    whole clip: ~1 ms for a 2 s clip against ~0.07 ms uncompressed, for files
    ~15% larger (the mel part). Readers need no option: it is in the file header.
    """

    OPTIONS = "group_size:1,uncompressed"

    def write(self, path: epath.PathLike, examples: Iterable[tuple[Any, bytes]]) -> None:
        from array_record.python import array_record_module

        writer = array_record_module.ArrayRecordWriter(os.fspath(path), self.OPTIONS)
        try:
            for _, serialized in examples:
                writer.write(serialized)
        finally:
            writer.close()


def _beam_examples(sources: list[ClipSource], options: ProcessOptions, list_path: epath.Path):
    """A Beam PTransform: clip sources -> (record id, record); every clip's outcome is counted and logged.

    The clip list goes to a JSONL file that the workers read in splits (rather
    than into the pipeline graph through ``beam.Create``: ~150 bytes per clip
    would make a million-clip graph too large for some runners). ``list_path``
    and the videos must be readable by the workers (a shared filesystem, or a
    ``gs://`` list with gcsfs and the videos on a mount). Each clip's outcome
    (the shots' summaries, or the failure with its reason code) is written to
    ``<list_path stem>.outcomes-*.jsonl`` beside the list, which
    :func:`beam_outcomes` reads back for the quality report, and counted in Beam
    counters ``diff2lip/<reason code>`` (``kept_segments``, ``clips``).
    """
    beam = tfds.core.lazy_imports.apache_beam
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(json.dumps(dataclasses.asdict(s)) + "\n" for s in sources))
    for old in list_path.parent.glob(f"{list_path.stem}.outcomes-*"):
        old.unlink()
    prefix = os.fspath(list_path.parent / f"{list_path.stem}.outcomes")

    def make(src: ClipSource) -> Iterator[Any]:
        counter = beam.metrics.Metrics.counter
        counter("diff2lip", "clips").inc()
        try:
            outcome = process.run_one(src, options)  # one detector and scorer per Beam worker process
        except Exception as e:
            reason, code = process._one_line(e, src.path), process.reason_code(e)
            counter("diff2lip", code).inc()
            logging.warning("diff2lip: %s failed: %s", src.path, reason)
            yield beam.pvalue.TaggedOutput("outcomes", _outcome_line(src, [], reason, code))
            return
        for shot in outcome.dropped:
            counter("diff2lip", shot["code"]).inc()
        counter("diff2lip", "kept_segments").inc(len(outcome.records))
        first = outcome.dropped[0] if not outcome.records else {"reason": "", "code": ""}
        yield beam.pvalue.TaggedOutput("outcomes", _outcome_line(src, outcome.shots, first["reason"], first["code"]))
        for rec in outcome.records:
            yield rec["clip_id"], rec

    @beam.ptransform_fn
    def transform(pipeline):
        results = (
            pipeline
            | "read" >> beam.io.ReadFromText(os.fspath(list_path))
            | "spread" >> beam.Reshuffle()  # spread clips over workers (text splits are contiguous)
            | "parse" >> beam.Map(lambda line: ClipSource(**json.loads(line)))
            | "process" >> beam.FlatMap(make).with_outputs("outcomes", main="records")
        )
        _ = results.outcomes | "outcomes" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
        return results.records

    return transform()


def _outcome_line(src: ClipSource, shots: list, reason: str, code: str) -> str:
    return json.dumps(
        {"clip_id": src.clip_id, "source": src.path, "split": src.split, "reason": reason, "code": code, "shots": shots}
    )


def beam_outcomes(cache_dir: str) -> list[dict[str, Any]]:
    """The per-clip outcomes a Beam run wrote (see :func:`_beam_examples`), in no particular order."""
    out = []
    for path in sorted(epath.Path(cache_dir, "beam").glob("*.outcomes-*")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


class LocalVideos(ClipDatasetBuilder, skip_registration=True):
    """Any videos: a folder (recursive), a glob or a filelist; speaker = parent folder."""

    name = "local_videos"
    DESCRIPTION = "Local talking-face videos prepared for Diff2Lip (speaker = parent folder)."

    def find_sources(self, source: str) -> list[ClipSource]:
        return local_video_sources(source)


class VoxCeleb2(ClipDatasetBuilder, skip_registration=True):
    """VoxCeleb2 from its official layout; by default the first utterance of each video."""

    name = "voxceleb2"
    DESCRIPTION = "VoxCeleb2 (dev: train + held-out val speakers; test) prepared for Diff2Lip."
    HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Download VoxCeleb2 (mp4) and unpack it so that dev/mp4/ and test/mp4/ are here."

    def __init__(self, *, first_utterance_only: bool = True, **kwargs: Any) -> None:
        self._first_utterance_only = first_utterance_only
        super().__init__(**kwargs)

    def find_sources(self, source: str) -> list[ClipSource]:
        return voxceleb2_sources(source, self._first_utterance_only)


class Lrw(ClipDatasetBuilder, skip_registration=True):
    """LRW (Lip Reading in the Wild) from its official layout and splits."""

    name = "lrw"
    DESCRIPTION = "LRW word clips (official train/val/test) prepared for Diff2Lip."
    HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrw1.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Download LRW and unpack it so that lipread_mp4/<WORD>/{train,val,test}/ is here."

    def find_sources(self, source: str) -> list[ClipSource]:
        return lrw_sources(source)


BUILDERS: dict[str, type[ClipDatasetBuilder]] = {"local_videos": LocalVideos, "voxceleb2": VoxCeleb2, "lrw": Lrw}
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def make_builder(kind: str, dataset_name: str | None = None, **kwargs: Any) -> ClipDatasetBuilder:
    """A builder of ``kind`` ("local_videos", "voxceleb2", "lrw"), named ``dataset_name``.

    The name is the dataset folder under ``data_dir`` (default: the kind). Other
    arguments go to the builder (see :class:`ClipDatasetBuilder`).

    Raises:
      ValueError: unknown kind or a name that is not snake_case.
    """
    if kind not in BUILDERS:
        raise ValueError(f"--builder={kind!r} is not one of {', '.join(BUILDERS)}")
    base = BUILDERS[kind]
    if dataset_name is None or dataset_name == base.name:
        return base(**kwargs)
    if not _NAME_RE.fullmatch(dataset_name):
        raise ValueError(f"--dataset_name={dataset_name!r} must be snake_case: a-z, 0-9 and _, starting with a letter")
    # A subclass per name: TFDS takes the dataset name (and folder) from the class.
    cls = types.new_class(
        f"{base.__name__}_{dataset_name}",
        (base,),
        {"skip_registration": True},
        lambda ns: ns.update(name=dataset_name, __module__=base.__module__),
    )
    return cls(**kwargs)
