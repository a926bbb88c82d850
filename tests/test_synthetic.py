"""diff2lip-synth: determinism, files and layout, learnable lip-sync, identities, errors."""

from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest
from helpers import finish, one_line_error, run_module, start_module

from data_pipelines import synthetic
from diff2lip_jax.audio import load_audio
from diff2lip_jax.video import probe, read_frames

SR = 16000


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("data_pipelines.synthetic", *args, timeout=120)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def _frame_energy_db(wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Independent re-computation of the audio energy (dB) in each frame's window [i/fps, (i+1)/fps)."""
    edges = np.round(np.arange(num_frames + 1) * SR / fps).astype(int)
    power = [np.mean(wav[a:b].astype(float) ** 2) for a, b in zip(edges[:-1], edges[1:])]
    return 10 * np.log10(np.array(power) + 1e-12)


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory) -> pathlib.Path:
    """4 clips (one per identity), 25 fps, 256 px, 2.4 s, wav; made once by the real CLI."""
    out = tmp_path_factory.mktemp("synth") / "data"
    proc = _cli("--out", str(out), "--num_clips", "4", "--seed", "7", "--seconds", "2.4", "--identities", "4")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def decoded(cli_dataset) -> list[tuple[dict, np.ndarray]]:
    """(ground truth, decoded frames uint8 [F, H, W, 3]) of every clip of ``cli_dataset``."""
    manifest = json.loads((cli_dataset / "manifest.json").read_text())
    out = []
    for entry in manifest["clips"]:
        meta = json.loads((cli_dataset / entry["meta"]).read_text())
        out.append((meta, read_frames(cli_dataset / entry["video"], fps=meta["fps"])))
    return out


def test_same_seed_same_clip_other_seed_differs():
    a = synthetic.synthesize_clip(5, 1, num_identities=3, seconds=1.0, size=(128, 128))
    b = synthetic.synthesize_clip(5, 1, num_identities=3, seconds=1.0, size=(128, 128))
    c = synthetic.synthesize_clip(6, 1, num_identities=3, seconds=1.0, size=(128, 128))
    assert a.frames.shape == (25, 128, 128, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (SR,) and a.audio.dtype == np.float32
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    np.testing.assert_array_equal(a.face_boxes, b.face_boxes)
    assert not np.array_equal(a.audio, c.audio)
    assert np.abs(a.frames.astype(int) - c.frames.astype(int)).mean() > 5


def test_head_motion_scales_the_motion_and_keeps_the_rest():
    kw = dict(num_identities=3, seconds=1.0, size=(128, 128), render=False)
    moving = synthetic.synthesize_clip(5, 1, **kw)
    still = synthetic.synthesize_clip(5, 1, head_motion_amount=0.0, **kw)
    half = synthetic.synthesize_clip(5, 1, head_motion_amount=0.5, **kw)
    # A still head: the same affine map in every frame (to float64 rounding), same audio and mouth.
    np.testing.assert_allclose(still.motion, np.broadcast_to(still.motion[:1], still.motion.shape), atol=1e-9)
    np.testing.assert_array_equal(still.audio, moving.audio)
    np.testing.assert_array_equal(still.mouth_opening, moving.mouth_opening)
    spread = [np.ptp((c.face_boxes[:, :2] + c.face_boxes[:, 2:]) / 2, axis=0).max() for c in (still, half, moving)]
    assert spread[0] < 1e-3 < spread[1] < spread[2], spread


def test_cli_layout_and_files(cli_dataset, decoded):
    manifest = json.loads((cli_dataset / "manifest.json").read_text())
    ids = [c["clip_id"] for c in manifest["clips"]]
    assert ids == ["id00000_clip00000", "id00001_clip00000", "id00002_clip00000", "id00003_clip00000"]
    assert manifest["seed"] == 7 and manifest["fps"] == 25.0 and manifest["audio_format"] == "wav"
    for entry, (meta, frames) in zip(manifest["clips"], decoded):
        speaker = entry["speaker_id"]
        for key, ext in (("video", "mp4"), ("audio", "wav"), ("meta", "json")):
            assert entry[key] == f"{speaker}/{entry['clip_id']}.{ext}"
            assert (cli_dataset / entry[key]).is_file()
        assert meta["seed"] == 7 and meta["speaker_id"] == speaker and meta["sample_rate"] == SR
        assert meta["num_frames"] == 60 and len(meta["mouth_opening"]) == 60
        assert np.shape(meta["face_boxes"]) == (60, 4) and np.shape(meta["mouth_boxes"]) == (60, 4)
        info = probe(cli_dataset / entry["video"])
        assert info.has_video and info.has_audio and info.audio_sample_rate == SR
        assert (info.width, info.height) == (256, 256) and info.fps == 25.0
        assert frames.shape == (60, 256, 256, 3)
        wav = load_audio(cli_dataset / entry["audio"])
        assert abs(wav.size - 2.4 * SR) <= SR / 25
        muxed = load_audio(cli_dataset / entry["video"])
        assert abs(muxed.size - 2.4 * SR) <= SR / 25


@pytest.mark.parametrize("fps,size,audio_format", [(30.0, (320, 240), "mp3"), (25.0, (128, 128), "m4a")])
def test_fps_size_and_audio_formats(tmp_path, fps, size, audio_format):
    seconds = 1.5
    manifest = synthetic.generate_dataset(
        tmp_path, 1, seed=2, fps=fps, size=size, seconds=seconds, audio_format=audio_format
    )
    entry = manifest["clips"][0]
    frames = read_frames(tmp_path / entry["video"], fps=fps)
    assert frames.shape == (round(seconds * fps), size[1], size[0], 3)
    assert probe(tmp_path / entry["video"]).has_audio
    assert entry["audio"].endswith("." + audio_format)
    wav = load_audio(tmp_path / entry["audio"])
    assert abs(wav.size - seconds * SR) <= SR / fps, (wav.size, seconds * SR)


def test_mouth_follows_audio_energy():
    """Ground-truth opening vs. energy recomputed from the audio: high when aligned, low at +-5 frames."""
    aligned, shifted = [], []
    for i in range(6):
        fps = 25.0 if i % 2 else 30.0
        clip = synthetic.synthesize_clip(11, i, num_identities=3, fps=fps, size=(96, 96), seconds=3.0)
        energy = _frame_energy_db(clip.audio, clip.fps, clip.num_frames)
        opening = clip.mouth_opening
        aligned.append(_pearson(opening, energy))
        shifted += [_pearson(opening[5:], energy[:-5]), _pearson(opening[:-5], energy[5:])]
    assert min(aligned) > 0.6, aligned
    assert np.mean(shifted) < np.mean(aligned) - 0.4, (aligned, shifted)
    assert max(shifted) < min(aligned), (aligned, shifted)


def test_mouth_pixels_follow_opening(decoded):
    """Dark (open-mouth) pixels in the lower middle of the face box track the ground-truth opening."""
    for meta, frames in decoded:
        luma = frames @ np.array([0.299, 0.587, 0.114])
        counts = []
        for i, (x1, y1, x2, y2) in enumerate(meta["face_boxes"]):
            w, mid = x2 - x1, (y1 + y2) / 2
            counts.append(np.sum(luma[i, int(mid) : int(y2), int(x1 + 0.2 * w) : int(x2 - 0.2 * w)] < 60))
        assert _pearson(meta["mouth_opening"], counts) > 0.6, meta["clip_id"]
        opening = np.asarray(meta["mouth_opening"])
        assert opening.min() < 0.1 and opening.max() > 0.8  # pauses close the mouth, syllables open it


def test_identities_differ_and_face_stays_inside(decoded):
    import cv2

    refs = [cv2.resize(frames[0], (32, 32), interpolation=cv2.INTER_AREA).astype(float) for _, frames in decoded]
    kinds = [meta["identity_kind"] for meta, _ in decoded]
    assert kinds == ["photo", "drawn", "photo", "drawn"]
    for i in range(len(refs)):
        for j in range(i):
            assert np.abs(refs[i] - refs[j]).mean() > 20, (i, j)
    for meta, frames in decoded:
        h, w = frames.shape[1:3]
        boxes, mouths = np.asarray(meta["face_boxes"]), np.asarray(meta["mouth_boxes"])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        # The mouth lies in the lower half of the face box (the half Diff2Lip inpaints).
        assert (mouths[:, 1] > (boxes[:, 1] + boxes[:, 3]) / 2).all() and (mouths[:, 3] < boxes[:, 3]).all()
        # The head moves: the face box centre travels by more than a pixel.
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert np.ptp(centres, axis=0).max() > 2


def test_bad_inputs_fail_with_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = str(tmp_path / "new")
    cases = [
        ["--out", str(a_file)],
        ["--out", out, "--num_clips", "0"],
        ["--out", out, "--audio_format", "ogg"],
        ["--out", out, "--size", "255"],
        ["--out", out, "--fps", "abc"],
        ["--out", out, "--head_motion", "-1"],
        ["--num_clips", "2"],
    ]
    procs = [start_module("data_pipelines.synthetic", *c) for c in cases]
    for case, proc in zip(cases, procs):
        one_line_error(finish(proc, timeout=60), "diff2lip-synth: error:", context=case)
    assert not (tmp_path / "new").exists()
