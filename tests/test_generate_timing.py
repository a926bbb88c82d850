"""generate's timing and sound: native frame rate, per-frame mel windows at their own time,
--length official, the original audio stream, and the feathered paste as the default.

Real mp4s through ffmpeg and the session's tiny random model (conftest); streams are
checked with `video.probe` (ffmpeg -i: imageio-ffmpeg ships no ffprobe).
"""

import os
import subprocess

import librosa
import numpy as np
import pytest
import soundfile
from helpers import one_line_error, run_module
from helpers_generate import BATCH, DDIM, leftovers, run, synthetic_clip

from diff2lip_jax import audio
from diff2lip_jax.audio import SAMPLE_RATE, load_audio, save_wav
from diff2lip_jax.generate import lipsync, timing
from diff2lip_jax.video import VideoWriter, ffmpeg_command, probe, read_frames

# Pearson r of the ground-truth mouth opening with the mean of each frame's mel window,
# on 3 s synthetic clips (seed 1): 0.866 at 25 fps and 0.831 at 30 fps (0.279 at 30 fps
# with the 25 fps rule). 30 fps must stay within R_TOL of 25 fps.
R_TOL = 0.1


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """3 s synthetic clips of one seed at 25 and 30 fps (ground truth at each rate)."""
    return {
        fps: synthetic_clip(tmp_path_factory.mktemp(f"clip{fps:g}"), fps=fps, seconds=3.0, seed=1) for fps in (25, 30)
    }


def recorded_mels(monkeypatch):
    """Spy on the pass-2 loop: the mel window [80, 16] generate hands over with each face frame."""
    seen = []
    original = lipsync.LipSync.add

    def add(self, frame, box=None, crop=None, ref=None, mel=None):
        if mel is not None:
            seen.append(np.array(mel))
        return original(self, frame, box, crop, ref, mel)

    monkeypatch.setattr(lipsync.LipSync, "add", add)
    return seen


def window_energy_r(mels, truth):
    energy = np.stack(mels).mean(axis=(1, 2))
    return float(np.corrcoef(energy, truth[: len(energy)])[0, 1])


def test_native_fps_keeps_rate_and_duration_and_aligns_mel_windows(clips, generate_model_dir, tmp_path, monkeypatch):
    r = {}
    for fps, clip in clips.items():
        mels = recorded_mels(monkeypatch)
        out = tmp_path / f"out{fps}.mp4"
        stats = run(clip, out, generate_model_dir)  # the clip drives itself: video and audio source
        info = probe(out)
        seconds = len(load_audio(clip["audio"])) / SAMPLE_RATE
        produced = read_frames(out, fps=None)
        assert info.fps == stats["fps"] == fps and stats["length"] == "audio"
        assert len(produced) == stats["num_frames"] == round(seconds * fps) == len(mels)
        assert abs(info.duration - seconds) <= 1 / fps
        r[fps] = window_energy_r(mels, clip["truth"])
        monkeypatch.undo()
    assert r[25] > 0.8 and r[30] > 0.7 and r[30] >= r[25] - R_TOL, r
    # The windows are what makes r high: the 25 fps rule on the 30 fps frames falls far below.
    clip = clips[30]
    mel = audio.melspectrogram(load_audio(clip["audio"]))
    wrong = list(audio.frame_windows_at(mel, np.arange(len(clip["truth"])), 25))
    assert window_energy_r(wrong, clip["truth"]) < r[30] - 0.3


def official_frame_count(num_samples: int, fps: float = 25.0) -> int:
    """The official generate.py's window loop (load_all_indiv_mels) at its own float order."""
    steps = num_samples // 200 + 1
    i = 1
    while int(80.0 * (max(i - 5 // 2, 0) / float(fps))) + 16 <= steps:
        i += 1
    return i - 1


def test_official_length_formula():
    assert official_frame_count(SAMPLE_RATE) == 22 == timing.output_length("official", SAMPLE_RATE, 25.0, None)
    for n in list(range(0, 12000, 37)) + [SAMPLE_RATE * 10 + 123]:
        try:
            ours = timing.output_length("official", n, 25.0, None)
        except ValueError:
            ours = 0
        assert ours == official_frame_count(n), n
        assert timing.output_length("official", max(n, 3200), 25.0, 7) <= 7  # min with the video
    assert timing.output_length("audio", SAMPLE_RATE, 30.0, None) == 30
    # At 30 fps frame f starts at int(80 * (f - 1.2) / 30) <= 81 - 16 for f <= 25: 26 frames.
    assert timing.output_length("official", SAMPLE_RATE, 30.0, None) == 26


def test_length_official_in_cross_and_reconstruction(generate_clip, generate_model_dir, tmp_path):
    clip = generate_clip  # 1.2 s at 30 fps: 30 frames at 25 fps
    wav = load_audio(clip["audio"])
    one_second = tmp_path / "one_second.wav"
    save_wav(one_second, wav[:SAMPLE_RATE])
    out = tmp_path / "official.mp4"
    stats = run(clip, out, generate_model_dir, audio=one_second, fps=25, length="official", paste="full")
    assert stats["num_frames"] == len(read_frames(out)) == official_frame_count(SAMPLE_RATE) == 22
    assert abs(probe(out).duration - 22 / 25) <= 1 / 25  # the audio is cut to the frames kept, as official
    # Audio longer than the video: the official stops with the video (no ping-pong).
    long_audio = tmp_path / "long.wav"
    save_wav(long_audio, np.tile(wav, 2))
    for mode in ("cross", "reconstruction"):
        out = tmp_path / f"official_{mode}.mp4"
        stats = run(clip, out, generate_model_dir, audio=long_audio, fps=25, length="official", mode=mode)
        assert stats["num_frames"] == len(read_frames(out)) == 30 and not stats["pingpong"], mode


def test_output_fps_rules():
    from diff2lip_jax.video import VideoInfo

    def info(fps):
        return VideoInfo("v.mp4", fps, 64, 64, 10, 1.0, True, False)

    assert timing.output_fps(None, info(30.0), still=False) == 30.0  # default: the video's own rate
    assert timing.output_fps(None, info(30.0), still=True) == 25.0  # a repeated frame: 25 unless set
    assert timing.output_fps("native", info(30.0), still=True) == 30.0
    assert timing.output_fps("25", info(29.97), still=False) == 25.0
    assert timing.output_fps(None, info(29.97), still=False) == 30000 / 1001  # ffmpeg prints NTSC rates rounded
    assert timing.output_fps(None, info(59.94), still=False) == 60000 / 1001
    with pytest.raises(ValueError, match="reports no frame rate; pass a rate"):
        timing.output_fps("native", info(0.0), still=False)


def stereo_44k(path, wav16k):
    """A 44.1 kHz stereo wav: left = the speech, right = the speech at half level plus a 440 Hz tone."""
    left = librosa.resample(wav16k, orig_sr=SAMPLE_RATE, target_sr=44100)
    t = np.arange(len(left)) / 44100
    right = 0.5 * left + 0.05 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(str(path), np.stack([left, right], axis=1).astype(np.float32), 44100, subtype="PCM_16")
    return np.stack([left, right])


def decoded_audio(path, channels, rate):
    cmd = [*ffmpeg_command(), "-i", str(path), "-map", "0:a:0", "-ac", str(channels), "-ar", str(rate)]
    raw = subprocess.run([*cmd, "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, "<f4").reshape(-1, channels).T


def test_original_audio_rate_and_channels(generate_clip, generate_model_dir, tmp_path):
    clip = generate_clip
    source = tmp_path / "speech44k.wav"
    left_right = stereo_44k(source, load_audio(clip["audio"]))
    out = tmp_path / "stereo.mp4"
    stats = run(clip, out, generate_model_dir, audio=source)
    info = probe(out)
    assert (info.audio_sample_rate, info.audio_channels, info.audio_codec) == (44100, 2, "aac")
    assert (stats["audio_sample_rate"], stats["audio_channels"]) == (44100, 2)
    got = decoded_audio(out, 2, 44100)
    assert abs(got.shape[1] / 44100 - stats["num_frames"] / stats["fps"]) < 0.03  # cut to the video
    n = min(got.shape[1], left_right.shape[1]) - 4096
    # AAC's priming delay shifts the signal by a few ms: compare levels, not samples.
    level = np.sqrt((got[:, :n] ** 2).mean(axis=1)) / np.sqrt((left_right[:, :n] ** 2).mean(axis=1))
    assert np.all(np.abs(level - 1) < 0.1), level
    assert np.abs(got[0] - got[1]).mean() > 0.01  # two real channels, not mono copied
    # A video as --audio: its audio stream (48 kHz stereo AAC here) is what the output carries.
    driving = tmp_path / "driving.mp4"
    with VideoWriter(driving, fps=25, audio_path=source) as w:  # AAC at 44.1 kHz stereo
        w.write(clip["frames"][:30].astype(np.uint8))
    resampled = tmp_path / "driving48k.mkv"
    cmd = [*ffmpeg_command(), "-i", str(driving), "-c:v", "copy", "-c:a", "aac", "-ar", "48000", str(resampled)]
    subprocess.run(cmd, check=True)
    out = tmp_path / "from_video.mp4"
    run(clip, out, generate_model_dir, audio=resampled)
    info = probe(out)
    assert (info.audio_sample_rate, info.audio_channels) == (48000, 2)


def test_aac_args():
    from diff2lip_jax.video import aac_args

    assert aac_args(44100, 2) == ["-c:a", "aac", "-b:a", "192k"]
    assert aac_args(16000, 1) == ["-c:a", "aac", "-b:a", "128k"]
    assert aac_args(192000, 6) == ["-c:a", "aac", "-ar", "48000", "-b:a", "512k"]


def cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return run_module("diff2lip_jax.generate", *args, timeout=300, env=env)


def test_cli_defaults_native_fps_and_feather(generate_clip, generate_model_dir, tmp_path):
    """The console script with no --fps / --paste: the video's 30 fps, the feathered paste."""
    clip = generate_clip
    box = ",".join(map(str, clip["box"]))
    out = tmp_path / "cli.mp4"
    common = ["--checkpoint", generate_model_dir, "--face_detector", "box", "--box", box, "--ddim_steps", DDIM]
    proc = cli("--video", clip["video"], "--audio", clip["audio"], "--out", out, *common, "--batch_size", BATCH)
    assert proc.returncode == 0, proc.stderr
    assert "30 fps" in proc.stdout and probe(out).fps == 30
    got = read_frames(out, fps=None).astype(np.float32)
    for paste in ("feather", "full"):
        ref = tmp_path / f"{paste}.mp4"
        run(clip, ref, generate_model_dir, paste=paste)
        diff = np.abs(got - read_frames(ref, fps=None).astype(np.float32)).max()
        assert (diff <= 2) == (paste == "feather"), (paste, diff)


def test_bad_fps_and_length_fail_with_one_line(generate_clip, generate_model_dir, tmp_path):
    clip = generate_clip
    outdir = tmp_path / "outs"
    outdir.mkdir()
    blip = tmp_path / "blip.wav"
    save_wav(blip, load_audio(clip["audio"])[:1600])  # 0.1 s: frames, but no full mel window
    cases = [
        (dict(fps="fast"), "--fps='fast': use native or a frame rate"),
        (dict(fps=0), "must be in"),
        (dict(length="paper"), "--length='paper': choose audio or official"),
        (dict(length="official", audio=blip), "--length official needs"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            run(clip, outdir / "o.mp4", generate_model_dir, **kw)
        assert "\n" not in str(e.value)
        assert leftovers(outdir) == [], kw
    line = one_line_error(
        cli(
            "--video",
            clip["video"],
            "--audio",
            clip["audio"],
            "--out",
            outdir / "o.mp4",
            "--checkpoint",
            generate_model_dir,
            "--fps",
            "fast",
        ),
        "diff2lip-generate: error: ",
    )
    assert "--fps='fast'" in line and leftovers(outdir) == []
