"""Data-quality filters: shot cuts, offset search and correction, the confidence filter, the report.

Real mp4s through ffmpeg, real PySceneDetect, real ArrayRecord datasets; the sync
scorer is the synthetic faces' transparent one (mouth darkness vs audio level,
:mod:`data_pipelines.synthetic.scorer`), which needs no weights.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import SYNTH_BOX, one_line_error, run_module

from data_pipelines.builders import ProcessOptions, local_video_sources, make_builder, process
from data_pipelines.quality import report as quality
from data_pipelines.synthetic.faults import DELAY, MIN_CONFIDENCE, SCORER, make_faulty_set
from diff2lip_jax import audio
from diff2lip_jax import data as d2l_data
from diff2lip_jax.video import read_frames

OPTS = ProcessOptions(
    face_detector="box", box=SYNTH_BOX, sync_scorer=SCORER, min_sync_confidence=MIN_CONFIDENCE, max_av_offset=5
)


@pytest.fixture(scope="module", autouse=True)
def _quiet_tfds():
    tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    paths, true_audio = make_faulty_set(root)
    return root, paths, true_audio


def _outcome(paths, name, opts=OPTS):
    src = local_video_sources(str(paths[name]))[0]
    return process.process_segments(src, opts, opts.make_detector(), opts.make_scorer())


def test_a_hard_cut_between_two_identities_splits_the_clip_there(faulty):
    _, paths, _ = faulty
    out = _outcome(paths, "cut", ProcessOptions(face_detector="box", box=SYNTH_BOX))
    assert [s["status"] for s in out.shots] == ["kept", "kept"]
    first, second = out.records
    assert first["clip_id"].endswith("cut#0") and second["clip_id"].endswith("cut#1")
    assert first["num_frames"] == 75 and second["num_frames"] == 75  # the cut at frame 75 (3 s)
    np.testing.assert_allclose(first["segment"], [0.0, 3.0])
    np.testing.assert_allclose(second["segment"], [3.0, 6.0])
    assert len(first["frames"]) == 75 and second["boxes"].shape == (75, 4)
    whole = audio.melspectrogram(audio.load_audio(str(paths["cut"])))
    assert second["mel"].shape[1] == pytest.approx(whole.shape[1] / 2, abs=3)


def test_a_short_shot_after_a_cut_is_dropped_and_the_long_one_kept(faulty):
    _, paths, _ = faulty
    out = _outcome(paths, "cut_short", ProcessOptions(face_detector="box", box=SYNTH_BOX))
    assert [(s["status"], s["code"]) for s in out.shots] == [("kept", ""), ("dropped", "cut_too_short")]
    assert "25 frames between cuts" in out.shots[1]["reason"] and len(out.records) == 1


def test_audio_delayed_by_3_frames_is_found_and_corrected(faulty):
    _, paths, true_audio = faulty
    out = _outcome(paths, "delayed")
    (rec,) = out.records
    (shot,) = out.shots
    # syncnet_python's sign: sound 3 frames after the lips is offset -3.
    assert rec["av_offset"] == -DELAY and shot["av_offset"] == -DELAY
    assert shot["sync_confidence"] > shot["sync_confidence_before"] + 0.1
    assert rec["sync_confidence"] == pytest.approx(shot["sync_confidence"])
    # The stored mel is the one of the re-aligned audio (the true audio, its last 3 frames silent).
    k = DELAY * 640
    want = audio.melspectrogram(np.concatenate([true_audio[:-k], np.zeros(k, np.float32)]))
    t = want.shape[1] - 20
    assert rec["mel"].shape == want.shape
    stored = audio.melspectrogram(audio.load_audio(str(paths["delayed"])))  # the uncorrected track
    err = np.abs(rec["mel"][:, :t] - want[:, :t]).mean()
    assert err < 0.06 and err < 0.25 * np.abs(stored[:, :t] - want[:, :t]).mean()  # AAC round trip only
    good = _outcome(paths, "good_a")
    assert good.records[0]["av_offset"] == 0 and good.shots[0]["sync_confidence"] >= MIN_CONFIDENCE


def test_another_clips_audio_is_dropped_for_its_sync_confidence(faulty):
    _, paths, _ = faulty
    out = _outcome(paths, "swapped")
    assert out.records == [] and [s["code"] for s in out.shots] in (["sync_confidence"], ["offset_too_large"])
    assert out.shots[0]["code"] == "sync_confidence", out.shots[0]
    assert "below --min_sync_confidence" in out.shots[0]["reason"]


def test_offset_beyond_the_bound_is_dropped_as_too_large(faulty):
    _, paths, _ = faulty
    opts = ProcessOptions(**{**OPTS.__dict__, "max_av_offset": 2})
    out = _outcome(paths, "delayed", opts)
    assert out.records == [] and out.shots[0]["code"] == "offset_too_large"
    assert "-3 frames" in out.shots[0]["reason"]


def _cli(*args, **kw):
    return run_module("data_pipelines.preprocess", *args, timeout=300, **kw)


def _box_args():
    y1, y2, x1, x2 = SYNTH_BOX
    return ["--face_detector=box", f"--box={y1},{y2},{x1},{x2}", "--split=train", "--num_workers=0"]


def read_dataset(out: pathlib.Path) -> dict[str, dict]:
    """All records of the train split by id."""
    src = d2l_data.open_split(out, "train")
    return {d2l_data.text(r["clip_id"]): r for r in (src[i] for i in range(len(src)))}


FILTER_ARGS = (f"--sync_scorer={SCORER}", f"--min_sync_confidence={MIN_CONFIDENCE}")


@pytest.fixture(scope="module")
def local_run(faulty, tmp_path_factory):
    """The CLI over the faulty set, clips processed in this process (the local path)."""
    root, _, _ = faulty
    out = tmp_path_factory.mktemp("local") / "out"
    return out, _cli("--input", root, "--out", out, *_box_args(), *FILTER_ARGS)


def test_cli_report_lists_every_input_once_with_its_reason(faulty, local_run):
    root, paths, _ = faulty
    out, proc = local_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"sync filter: on ({SCORER})" in proc.stdout
    rep = json.loads((out / "report.json").read_text())
    ids = [i["clip_id"] for i in rep["inputs"]]
    assert sorted(ids) == sorted(s.clip_id for s in local_video_sources(str(root))) and len(set(ids)) == len(ids)
    assert rep["clips"] == {"in": 7, "out": 5}  # good_a, good_b, cut, cut_short, delayed
    assert rep["segments"] == {"in": 8, "out": 6}  # cut: 2, cut_short: 1 of 2
    assert rep["counts"] == {"cut_too_short": 1, "sync_confidence": 1, "unreadable": 1}
    assert (
        rep["offset_histogram"][str(-DELAY)] == 1 and sum(rep["offset_histogram"].values()) == 7
    )  # swapped is scored too
    assert set(rep["confidence_quantiles"]) == {"q00", "q10", "q25", "q50", "q75", "q90", "q100"}
    by_id = {d["id"].split("/")[-1]: d["code"] for d in rep["drops"]}
    assert by_id == {"cut_short#1": "cut_too_short", "swapped": "sync_confidence", "broken": "unreadable"}
    md = (out / "report.md").read_text()
    assert "| sync_confidence | 1 |" in md and "cut_short#1" in md
    records = read_dataset(out)
    assert len(records) == 6 and any(k.endswith("cut#1") for k in records)
    delayed = next(r for k, r in records.items() if k.endswith("delayed"))
    assert int(delayed["av_offset"]) == -DELAY and np.isfinite(delayed["sync_confidence"])


def test_local_builder_report_counts_match_the_cli_reasons(faulty, tmp_path):
    root, _, _ = faulty
    builder = make_builder("local_videos", data_dir=str(tmp_path), source=str(root), options=OPTS, split="train")
    builder.download_and_prepare()
    rep = quality.build_report(builder.outcomes(), "test")
    assert rep["counts"] == {"cut_too_short": 1, "sync_confidence": 1, "unreadable": 1}
    assert builder.info.splits["train"].num_examples == 6


def test_no_pretrained_scorer_turns_the_filter_off_and_says_so(faulty, tmp_path):
    root, paths, _ = faulty
    env = {**os.environ, "DIFF2LIP_CACHE": str(tmp_path / "empty_cache")}
    out = tmp_path / "out"
    proc = _cli("--input", paths["good_a"], "--out", out, *_box_args(), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if "sync filter" in ln]
    assert len(lines) == 1 and "sync filter: off (no pretrained scorer" in lines[0]
    assert json.loads((out / "report.json").read_text())["sync_filter"].startswith("sync filter: off")


@pytest.mark.parametrize(
    "flag, needle",
    [
        ("--sync_scorer=ours", "--sync_scorer=ours needs --sync_weights"),
        ("--sync_scorer=wav2lip --sync_weights=/nonexistent/x.pth", "no such file"),
        ("--sync_scorer=nope", "--sync_scorer='nope'"),
        ("--sync_scorer=no_such_module:make", "cannot import"),
        ("--max_av_offset=20", "--max_av_offset must be 0-15"),
        ("--min_segment_seconds=0.1", "--min_segment_seconds must be >= 0.3"),
        ("--shot_threshold=-1", "--shot_threshold must be >= 0"),
    ],
)
def test_bad_filter_flags_fail_before_any_work(faulty, tmp_path, flag, needle):
    _, paths, _ = faulty
    out = tmp_path / "out"
    proc = _cli("--input", paths["good_a"], "--out", out, *_box_args(), *flag.split())
    line = one_line_error(proc, "diff2lip-preprocess")
    assert needle in line, line
    assert not out.exists()


def _comparable(report: dict) -> dict:
    """The report without what differs between runs by construction (paths, the filter line)."""
    keep = ("clips", "segments", "counts", "offset_histogram", "confidence_quantiles")
    out = {k: report[k] for k in keep}
    out["drops"] = sorted((d["id"], d["code"]) for d in report["drops"])
    out["inputs"] = [
        (i["clip_id"], i["status"], [(s["id"], s["status"], s["code"]) for s in i["shots"]]) for i in report["inputs"]
    ]
    return out


@pytest.mark.slow  # builds an apache-beam overlay on first use (~1 min), then ~1 min of Beam
def test_beam_direct_runner_gives_the_local_records_and_report(faulty, local_run, tmp_path):
    from helpers_beam import beam_env, beam_overlay

    root, _, _ = faulty
    local_out, local_proc = local_run
    assert local_proc.returncode == 0, local_proc.stderr[-3000:]
    out = tmp_path / "beam_out"
    beam = "--runner=DirectRunner --direct_num_workers=1"
    proc = _cli(
        "--input",
        root,
        "--out",
        out,
        *_box_args(),
        *FILTER_ARGS,
        f"--beam_options={beam}",
        env=beam_env(beam_overlay()),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "through Beam" in proc.stdout
    local, beam_records = read_dataset(local_out), read_dataset(out)
    assert sorted(local) == sorted(beam_records) and len(local) == 6
    for key, a in local.items():
        b = beam_records[key]
        assert set(a) == set(b)
        for field in a:
            va, vb = a[field], b[field]
            if isinstance(va, np.ndarray) and va.dtype.kind == "f":
                np.testing.assert_array_equal(va, vb, err_msg=f"{key} {field}")
            elif isinstance(va, np.ndarray):
                assert va.tolist() == vb.tolist(), (key, field)
            else:
                assert va == vb or (va != va and vb != vb), (key, field)  # NaN == NaN
    rep_local = json.loads((local_out / "report.json").read_text())
    rep_beam = json.loads((out / "report.json").read_text())
    assert _comparable(rep_beam) == _comparable(rep_local)


@pytest.mark.slow  # trains a tiny SyncNet for a few steps (~40 s with its compile)
def test_our_trained_expert_scores_segments_and_its_threshold_drops(faulty, prepared_dataset, tmp_path):
    """The "ours" scorer path: a tiny SyncNet trained here (a few steps: the mechanics, not a
    good expert); the record's confidence is what the protocol gives for that expert on the
    corrected audio, and --min_sync_confidence above it drops the segment with that reason."""
    from helpers_config import load_config

    from diff2lip_jax.evaluate import lse
    from diff2lip_jax.train.loop import train

    cfg = load_config("syncnet", "tiny")
    cfg.data.dir = str(prepared_dataset)
    cfg.data.eval_split = "train"
    cfg.model.update(image_size=32, base_channels=8, embed_dim=32, num_res_blocks=1)
    cfg.train.update(num_steps=4, batch_size=8, lr=1e-3, lr_schedule="constant", warmup_steps=0)
    cfg.train.update(log_every=2, checkpoint_every=4, eval_every=100, eval_batches=1)
    workdir = tmp_path / "syncnet"
    train(cfg, str(workdir))
    _, paths, _ = faulty
    opts = ProcessOptions(
        face_detector="box", box=SYNTH_BOX, sync_scorer="ours", sync_weights=str(workdir), min_sync_confidence=-1e9
    )
    opts = ProcessOptions(**{**opts.__dict__, "max_av_offset": 15})  # an untrained expert's offset may be anything
    out = _outcome(paths, "good_a", opts)
    assert len(out.records) == 1, out.shots
    rec, shot = out.records[0], out.shots[0]
    assert np.isfinite(rec["sync_confidence"]) and -15 <= rec["av_offset"] <= 15
    frames = read_frames(str(paths["good_a"]))
    wav = audio.load_audio(str(paths["good_a"]))
    direct = lse.evaluate_sync(frames, rec["boxes"].astype(np.int64), wav[: len(frames) * 640], opts.make_scorer())
    assert shot["av_offset"] == direct.offset
    assert shot["sync_confidence_before"] == pytest.approx(np.median(direct.curve) - direct.curve[lse.VSHIFT], abs=1e-4)
    strict = ProcessOptions(**{**opts.__dict__, "min_sync_confidence": 1e9})
    dropped = _outcome(paths, "good_a", strict)
    assert dropped.records == [] and dropped.shots[0]["code"] == "sync_confidence"
