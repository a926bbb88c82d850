"""Finding the clips of a dataset: local folders/globs/filelists, VoxCeleb2 and LRW layouts.

Each finder returns :class:`ClipSource` items in a deterministic (sorted) order.
Clip ids follow the paper's evaluation filelists: ``id00017/01dfn2spqyE/00001``
(VoxCeleb2), ``ABOUT/test/ABOUT_00001`` (LRW), and for local videos the path
relative to the input root without its suffix (``id00000/id00000_clip00000``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")
SPLITS = ("train", "val", "test")
SPLIT_MODES = ("auto", *SPLITS)


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """One input video.

    path: absolute path of the video (it may not exist: then the clip fails).
    clip_id: unique id inside the dataset; also the record key.
    speaker_id: speaker (split assignment groups by it).
    split: the official split ("train", "val", "test"), or "" when the source has
      none and :func:`assign_splits` decides.
    """

    path: str
    clip_id: str
    speaker_id: str
    split: str = ""


def _is_video(path: pathlib.Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def expand_input(spec: str) -> tuple[list[pathlib.Path], pathlib.Path]:
    """Video paths named by ``--input``, and the root their clip ids are relative to.

    ``spec`` is a directory (searched recursively for video files), a glob
    (``**`` allowed), a single video file, or a filelist (a text file with one
    video path per line; blank lines and ``#`` comments skipped; relative paths are
    relative to the filelist's folder). Listed files that do not exist are kept:
    they become failed clips, the others go on.

    Raises:
      FileNotFoundError: nothing at ``spec``. ValueError: no video found.
    """
    p = pathlib.Path(spec).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if _is_video(f) and f.is_file())
        root = p
    elif p.is_file() and _is_video(p):
        files, root = [p], p.parent.parent
    elif p.is_file():
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"--input={spec} is neither a video (by its suffix) nor a text filelist") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        files = [pathlib.Path(os.path.abspath(p.parent / os.path.expanduser(e))) for e in entries]
        root = pathlib.Path(os.path.commonpath([f.parent.parent for f in files])) if files else p.parent
    elif glob.has_magic(spec):
        files = sorted(pathlib.Path(f) for f in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [f for f in files if _is_video(f) and f.is_file()]
        root = pathlib.Path(os.path.commonpath([f.parent.parent for f in files])) if files else p.parent
    else:
        raise FileNotFoundError(f"--input={spec}: no such file or directory, and no glob pattern")
    if not files:
        raise ValueError(f"--input={spec}: no video files found (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return [pathlib.Path(os.path.abspath(f)) for f in files], pathlib.Path(os.path.abspath(root))


def _unique(sources: list[ClipSource]) -> list[ClipSource]:
    seen: dict[str, str] = {}
    for s in sources:
        if s.clip_id in seen:
            raise ValueError(
                f"two inputs give the same clip id {s.clip_id!r}: {seen[s.clip_id]} and {s.path}; "
                "rename one (clip ids drop the file suffix)"
            )
        seen[s.clip_id] = s.path
    return sources


def local_video_sources(spec: str) -> list[ClipSource]:
    """Clips of ``--input`` (see :func:`expand_input`); speaker = the parent folder's name."""
    files, root = expand_input(spec)
    out = []
    for f in files:
        try:
            rel = f.with_suffix("").relative_to(root).as_posix()
        except ValueError:  # outside the common root (an absolute filelist entry elsewhere)
            rel = f"{f.parent.name}/{f.stem}"
        out.append(ClipSource(str(f), rel, f.parent.name))
    return _unique(out)


def voxceleb2_sources(root: str | os.PathLike, first_utterance_only: bool = True) -> list[ClipSource]:
    """Clips of a VoxCeleb2 download: ``root/{dev,test}/mp4/<speaker>/<video>/<utt>.mp4``.

    dev has no official split into train/val, so its clips are left unassigned
    (:func:`assign_splits` holds out speakers for val); test is "test".

    Args:
      root: folder holding ``dev/`` and/or ``test/``.
      first_utterance_only: keep only the first utterance (``00001``; the lowest
        number when it is missing) of every video, as the paper trains.

    Raises:
      FileNotFoundError: neither ``dev/mp4`` nor ``test/mp4`` under root.
    """
    base = pathlib.Path(root).expanduser().absolute()
    parts = [(base / part / "mp4", split) for part, split in (("dev", ""), ("test", "test"))]
    parts = [(d, split) for d, split in parts if d.is_dir()]
    if not parts:
        raise FileNotFoundError(
            f"--input={root} is not a VoxCeleb2 folder: expected "
            "dev/mp4/<id>/<video>/<utt>.mp4 and/or test/mp4/... under it"
        )
    out = []
    for folder, split in parts:
        by_video: dict[tuple[str, str], list[pathlib.Path]] = defaultdict(list)
        for f in folder.glob("*/*/*.mp4"):
            by_video[(f.parent.parent.name, f.parent.name)].append(f)
        for (speaker, video), utts in sorted(by_video.items()):
            for f in sorted(utts)[:1] if first_utterance_only else sorted(utts):
                out.append(ClipSource(str(f), f"{speaker}/{video}/{f.stem}", speaker, split))
    if not out:
        raise ValueError(f"--input={root}: no <id>/<video>/<utt>.mp4 under {', '.join(str(d) for d, _ in parts)}")
    return _unique(out)


def lrw_sources(root: str | os.PathLike) -> list[ClipSource]:
    """Clips of an LRW download: ``[root/]lipread_mp4/<WORD>/{train,val,test}/<WORD>_<5 digits>.mp4``.

    Splits are the official ones. LRW has no speaker labels, so the speaker id is
    the word (it only groups clips; the reference frame always comes from the same clip).

    Raises:
      FileNotFoundError / ValueError: not an LRW folder / no clips in it.
    """
    base = pathlib.Path(root).expanduser().absolute()
    if (base / "lipread_mp4").is_dir():
        base = base / "lipread_mp4"
    if not base.is_dir():
        raise FileNotFoundError(f"--input={root}: no such directory")
    out = []
    for f in sorted(base.glob("*/*/*.mp4")):
        word, split = f.parent.parent.name, f.parent.name
        if split in SPLITS and f.stem.startswith(f"{word}_"):
            out.append(ClipSource(str(f), f"{word}/{split}/{f.stem}", word, split))
    if not out:
        raise ValueError(
            f"--input={root} is not an LRW folder: expected "
            "lipread_mp4/<WORD>/{train,val,test}/<WORD>_00001.mp4 under it"
        )
    return out


def _speaker_rank(speakers: Iterable[str]) -> list[str]:
    # A hash order, not the alphabetical one: held-out speakers are spread over the id range.
    return sorted(set(speakers), key=lambda s: (hashlib.sha1(s.encode()).hexdigest(), s))


def assign_splits(
    sources: Sequence[ClipSource], mode: str = "auto", val_fraction: float = 0.05, test_fraction: float = 0.0
) -> list[ClipSource]:
    """Sources with their split decided.

    mode "train"/"val"/"test": every clip goes to that split. mode "auto": official
    splits are kept; unassigned clips are split by speaker: the speakers ranked by
    a hash of their id, the first ``round(test_fraction * n)`` go to test, the next
    ``round(val_fraction * n)`` to val, the rest to train (deterministic, and no
    speaker is in two splits).

    Raises:
      ValueError: unknown mode, fractions outside [0, 1) or leaving no training speaker.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"--split={mode!r} is not one of {', '.join(SPLIT_MODES)}")
    if mode != "auto":
        return [dataclasses.replace(s, split=mode) for s in sources]
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError(f"--val_fraction and --test_fraction must be in [0, 1), got {val_fraction}, {test_fraction}")
    ranked = _speaker_rank(s.speaker_id for s in sources if not s.split)
    n_test, n_val = round(test_fraction * len(ranked)), round(val_fraction * len(ranked))
    if ranked and n_test + n_val >= len(ranked):
        raise ValueError(
            f"--val_fraction={val_fraction} and --test_fraction={test_fraction} leave no training "
            f"speaker out of {len(ranked)}; lower them"
        )
    split_of = {spk: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, spk in enumerate(ranked)}
    return [s if s.split else dataclasses.replace(s, split=split_of[s.speaker_id]) for s in sources]
