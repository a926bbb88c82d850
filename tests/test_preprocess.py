"""diff2lip-preprocess: records, resumability, failure reports, CLI errors, VoxCeleb2/LRW layouts, splits."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import one_line_error, run_module

from data_pipelines import synthetic
from data_pipelines.builders import (
    ClipSource,
    ProcessOptions,
    assign_splits,
    local_video_sources,
    make_builder,
    process,
    voxceleb2_sources,
)
from data_pipelines.builders import clip as clip_module
from diff2lip_jax import audio, face
from diff2lip_jax import data as d2l_data
from diff2lip_jax.video import read_frames, write_video

BOX = ProcessOptions(face_detector="box", box=(8, 124, 8, 120))  # fast and deterministic for 128 px clips


@pytest.fixture(scope="module", autouse=True)
def _quiet_tfds():
    tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> pathlib.Path:
    """3 synthetic clips (3 speakers), 25 fps, 128 px, 2 s."""
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate_dataset(out, num_clips=3, seed=5, size=(128, 128), seconds=2.0, identities=3)
    return out


def _clip(synth_dir: pathlib.Path, i: int) -> pathlib.Path:
    return sorted(synth_dir.glob("*/*.mp4"))[i]


@pytest.fixture(scope="module")
def messy_dir(synth_dir, tmp_path_factory) -> pathlib.Path:
    """Two good clips plus one of each kind of bad input."""
    root = tmp_path_factory.mktemp("messy")
    for i in range(2):
        src = _clip(synth_dir, i)
        (root / src.parent.name).mkdir()
        shutil.copyfile(src, root / src.parent.name / src.name)
    bad = root / "bad"
    bad.mkdir()
    (bad / "notvideo.mp4").write_text("this is a text file, not a video\n")
    (bad / "empty.mp4").write_bytes(b"")
    frames = read_frames(_clip(synth_dir, 2))
    write_video(bad / "silent.mp4", frames[:20])  # no audio stream
    wav = np.sin(np.arange(16000) * 0.05).astype(np.float32) * 0.3
    write_video(bad / "short.mp4", frames[:5], audio=wav)
    data = _clip(synth_dir, 2).read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


def test_records_match_the_clip(synth_dir, tmp_path):
    src = local_video_sources(str(_clip(synth_dir, 0)))[0]
    assert src.clip_id == f"{src.speaker_id}/{pathlib.Path(src.path).stem}"
    rec = process.process_clip(src, BOX, BOX.make_detector())
    n = rec["num_frames"]
    meta = json.loads(pathlib.Path(src.path).with_suffix(".json").read_text())
    assert n == meta["num_frames"] == 50 and len(rec["frames"]) == n
    assert rec["boxes"].shape == (n, 4) and rec["boxes"].dtype == np.int32 and rec["has_face"].all()
    np.testing.assert_array_equal(rec["frame_size"], [128, 128])
    np.testing.assert_array_equal(rec["mel"], audio.melspectrogram(audio.load_audio(src.path)))
    crops = d2l_data.decode_jpegs(rec["frames"])
    want = face.crop_and_resize(read_frames(src.path), rec["boxes"].astype(np.int64), 128)
    assert crops.shape == (n, 128, 128, 3)
    assert np.abs(crops.astype(float) - want).mean() < 3.0  # JPEG q95 round trip


class _FakeDetector:
    """Non-fixed detector: boxes from the frame content, misses in runs of 14 frames
    (longer than the 5-frame gap filling), counted over calls (so chunking shows)."""

    fixed = False

    def __init__(self):
        self.seen = 0

    def __call__(self, frames):
        index = self.seen + np.arange(len(frames))
        self.seen += len(frames)
        k = (frames.reshape(len(frames), -1).mean(1) * 7).astype(np.int64) % 9
        boxes = np.stack([10 + k, 12 + k, 100 + k, 110 + k], axis=1)
        return boxes, (index // 14) % 2 == 0


def test_chunked_detection_and_second_pass_equal_detect_faces(synth_dir, monkeypatch):
    monkeypatch.setattr(clip_module, "CHUNK", 16)  # several chunks per clip
    src = local_video_sources(str(_clip(synth_dir, 1)))[0]
    # min_face_rate=0: keep the clip although half its frames have no detection (gap filling is under test)
    opts = ProcessOptions(face_detector="dlib", pads=(1, 5, 2, 3), min_face_rate=0.0)
    kept = process.process_clip(src, opts, _FakeDetector())
    redecoded = process.process_clip(
        src, ProcessOptions(pads=(1, 5, 2, 3), buffer_bytes=0, min_face_rate=0.0), _FakeDetector()
    )
    track = face.detect_faces(read_frames(src.path), _FakeDetector(), pads=(1, 5, 2, 3))
    np.testing.assert_array_equal(kept["boxes"], track.boxes)
    np.testing.assert_array_equal(kept["has_face"], track.has_face)
    assert 0 < kept["has_face"].sum() < kept["num_frames"]
    assert kept["frames"] == redecoded["frames"]


def test_clip_with_a_low_face_detection_rate_fails_with_the_rate(synth_dir):
    src = local_video_sources(str(_clip(synth_dir, 1)))[0]
    n = process.process_clip(src, ProcessOptions(min_face_rate=0.0), _FakeDetector())["num_frames"]
    rate = float(np.mean((np.arange(n) // 14) % 2 == 0))  # _FakeDetector's hits
    with pytest.raises(process.ClipError, match=f"face detected in only {rate:.0%} of its {n} frames"):
        process.process_clip(src, ProcessOptions(min_face_rate=0.95), _FakeDetector())
    assert process.process_clip(src, ProcessOptions(min_face_rate=rate), _FakeDetector())["num_frames"] == n


def test_bad_clips_are_reported_and_the_run_goes_on(messy_dir, tmp_path):
    builder = make_builder("local_videos", data_dir=str(tmp_path), source=str(messy_dir), options=BOX, split="train")
    builder.download_and_prepare()
    result = builder.run_result
    reasons = {pathlib.Path(r.source.path).name: r.reason for r in result.failed}
    assert sorted(reasons) == ["empty.mp4", "notvideo.mp4", "short.mp4", "silent.mp4", "truncated.mp4"]
    assert "empty" in reasons["empty.mp4"] and "0 bytes" in reasons["empty.mp4"]
    assert "not a readable media file" in reasons["notvideo.mp4"]
    assert "no audio stream" in reasons["silent.mp4"]
    assert "too short: 5 frames" in reasons["short.mp4"]
    assert reasons["truncated.mp4"]
    assert all("\n" not in r and str(messy_dir) not in r for r in reasons.values())
    assert len(result.ok) == 2 and builder.info.splits["train"].num_examples == 2


def test_rerun_skips_finished_clips(messy_dir, tmp_path, monkeypatch):
    calls = []
    real = process.process_segments
    monkeypatch.setattr(process, "process_segments", lambda *a, **k: calls.append(a[0].clip_id) or real(*a, **k))

    def run(**kw):
        builder = make_builder(
            "local_videos", data_dir=str(tmp_path), source=str(messy_dir), options=BOX, split="train", **kw
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
        )
        return builder

    first = run()
    assert len(calls) == 7 and first.run_result.count("new") == 2 and first.run_result.count("failed") == 5
    calls.clear()
    second = run()
    assert calls == [] and second.run_result.count("cached") == 2 and second.run_result.count("failed_before") == 5
    assert second.info.splits["train"].num_examples == 2
    # A changed video (new mtime) is redone; failed clips only with retry_failed.
    good = next(r.source for r in second.run_result.ok)
    os.utime(good.path, ns=(os.stat(good.path).st_atime_ns, os.stat(good.path).st_mtime_ns + 10**9))
    third = run()
    assert calls == [good.clip_id] and third.run_result.count("new") == 1
    calls.clear()
    run(retry_failed=True)
    assert len(calls) == 5


def test_worker_processes_give_the_same_records(synth_dir, tmp_path):
    sources = local_video_sources(str(synth_dir))
    serial = process.run_clips(sources, BOX, str(tmp_path / "serial"), num_workers=0)
    pooled = process.run_clips(sources, BOX, str(tmp_path / "pooled"), num_workers=2)
    assert [r.status for r in pooled.results] == ["new"] * 3
    for a, b in zip(serial.results, pooled.results):
        ra, rb = process.load_record(a.cache_path), process.load_record(b.cache_path)
        assert ra["clip_id"] == rb["clip_id"] and ra["frames"] == rb["frames"]
        np.testing.assert_array_equal(ra["mel"], rb["mel"])


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_module("data_pipelines.preprocess", *args, timeout=180, **kwargs)


def test_cli_end_to_end_with_the_default_detector_and_failure_report(synth_dir, tmp_path):
    """Offline (empty weights cache, a mirror nobody listens on): the default is dlib, said once."""
    from diff2lip_jax import weights

    env = dict(os.environ, **{weights.CACHE_ENV: str(tmp_path / "cache"), weights.MIRROR_ENV: "http://127.0.0.1:9"})
    faceless = tmp_path / "in" / "nobody" / "wall.mp4"
    faceless.parent.mkdir(parents=True)
    wav = np.sin(np.arange(16000) * 0.07).astype(np.float32) * 0.3
    write_video(faceless, np.full((25, 96, 96, 3), 128, np.uint8), audio=wav)
    filelist = tmp_path / "list.txt"
    filelist.write_text(f"# clips\n{_clip(synth_dir, 0)}\n{faceless}\n{tmp_path / 'gone' / 'missing.mp4'}\n")
    out = tmp_path / "out"
    proc = _cli("--input", str(filelist), "--out", str(out), "--num_workers", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if "note: face detector dlib" in line]
    assert len(notices) == 1 and notices[0].startswith("diff2lip-preprocess: note:"), proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("diff2lip-preprocess: 1 clips ok (1 new, 0 reused), 2 failed"), last
    assert "splits train=1" in last and "KB/frame" in last
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    by_name = {pathlib.Path(f["source"]).name: f["reason"] for f in failures}
    assert "no face detected" in by_name["wall.mp4"] and "no such file" in by_name["missing.mp4"]
    batch = next(d2l_data.make_train_loader(out, "train", 2, shard_options=grain.sharding.ShardOptions(0, 1)))
    assert batch["frames"].shape == (2, 5, 128, 128, 3)


@pytest.mark.parametrize("case", ["missing_input", "out_is_file", "empty_input"])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, synth_dir):
    out = tmp_path / "out"
    args = {
        "missing_input": ["--input", str(tmp_path / "nope"), "--out", str(out)],
        "out_is_file": ["--input", str(synth_dir), "--out", str(synth_dir / "manifest.json")],
        "empty_input": ["--input", str(tmp_path), "--out", str(out)],
    }[case]
    one_line_error(_cli(*args), "diff2lip-preprocess: error: ")
    assert not out.exists()


def _tree(root: pathlib.Path, synth_dir: pathlib.Path, rel_paths: list[str]) -> None:
    for i, rel in enumerate(rel_paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_clip(synth_dir, i % 3), root / rel)


def test_voxceleb2_builder_on_official_layout(synth_dir, tmp_path):
    vox = tmp_path / "vox2"
    _tree(
        vox,
        synth_dir,
        [
            "dev/mp4/id00001/vidAAAAAAA/00001.mp4",
            "dev/mp4/id00001/vidAAAAAAA/00002.mp4",
            "dev/mp4/id00001/vidBBBBBBB/00003.mp4",
            "dev/mp4/id00002/vidCCCCCCC/00001.mp4",
            "test/mp4/id00003/vidDDDDDDD/00001.mp4",
        ],
    )
    assert len(voxceleb2_sources(vox, first_utterance_only=False)) == 5
    builder = make_builder("voxceleb2", data_dir=str(tmp_path / "out"), source=str(vox), options=BOX, val_fraction=0.5)
    builder.download_and_prepare()
    ids = {
        split: sorted(d2l_data.text(r["clip_id"]) for r in d2l_data.open_split(tmp_path / "out", split))
        for split in builder.info.splits
    }
    # First utterance per video (00003 where 00001 is missing); one of the two dev speakers held out for val.
    assert ids["test"] == ["id00003/vidDDDDDDD/00001"]
    dev = sorted(ids["train"] + ids["val"])
    assert dev == ["id00001/vidAAAAAAA/00001", "id00001/vidBBBBBBB/00003", "id00002/vidCCCCCCC/00001"]
    assert {i.split("/")[0] for i in ids["train"]}.isdisjoint({i.split("/")[0] for i in ids["val"]})
    assert (tmp_path / "out" / "voxceleb2" / "1.0.0" / "dataset_info.json").is_file()
    with pytest.raises(FileNotFoundError, match="not a VoxCeleb2 folder"):
        voxceleb2_sources(tmp_path / "out")


def test_lrw_builder_on_official_layout(synth_dir, tmp_path):
    lrw = tmp_path / "lrw"
    _tree(
        lrw,
        synth_dir,
        [
            "lipread_mp4/ABOUT/train/ABOUT_00001.mp4",
            "lipread_mp4/ABOUT/val/ABOUT_00001.mp4",
            "lipread_mp4/ABOUT/test/ABOUT_00001.mp4",
            "lipread_mp4/BRING/train/BRING_00001.mp4",
        ],
    )
    (lrw / "lipread_mp4/ABOUT/test/ABOUT_00001.txt").write_text("Text: ABOUT\n")  # LRW's metadata: ignored
    builder = make_builder("lrw", "lrw_tiny", data_dir=str(tmp_path / "out"), source=str(lrw), options=BOX)
    builder.download_and_prepare()
    counts = {k: v.num_examples for k, v in builder.info.splits.items()}
    assert counts == {"train": 2, "val": 1, "test": 1}
    test_ids = [d2l_data.text(r["clip_id"]) for r in d2l_data.open_split(tmp_path / "out", "test")]
    assert test_ids == ["ABOUT/test/ABOUT_00001"]  # the paper's LRW filelist ids
    assert d2l_data.find_dataset_dir(tmp_path / "out").parent.name == "lrw_tiny"


def test_inputs_globs_filelists_and_splits(synth_dir, tmp_path):
    by_dir = local_video_sources(str(synth_dir))
    by_glob = local_video_sources(str(synth_dir / "*" / "*.mp4"))
    filelist = tmp_path / "files.txt"
    filelist.write_text("\n".join(os.path.relpath(s.path, tmp_path) for s in by_dir) + "\n")
    assert by_dir == by_glob == local_video_sources(str(filelist))
    assert [s.speaker_id for s in by_dir] == ["id00000", "id00001", "id00002"]
    many = [ClipSource(f"/v/{k}.mp4", f"s{k // 3}/{k}", f"s{k // 3}") for k in range(60)]
    split = assign_splits(many, val_fraction=0.2, test_fraction=0.1)
    assert split == assign_splits(many, val_fraction=0.2, test_fraction=0.1)  # deterministic
    speakers = {name: {s.speaker_id for s in split if s.split == name} for name in ("train", "val", "test")}
    assert [len(v) for v in speakers.values()] == [14, 4, 2]
    assert not (speakers["train"] & speakers["val"]) and not (speakers["val"] & speakers["test"])
    assert {s.split for s in assign_splits(many, mode="test")} == {"test"}
    with pytest.raises(ValueError, match="leave no training speaker"):
        assign_splits(many, val_fraction=0.6, test_fraction=0.4)
