"""diff2lip-generate end to end: a tiny random model, synthetic 30 fps clips, short DDIM.

One tiny checkpoint and one synthetic clip for the session (conftest); every run uses
the same batch size and DDIM steps, so the sampler compiles once (plus once for the
Fig. 3 variant that records intermediates). Frame rate, length and audio stream:
test_generate_timing.py.
"""

import os
import pathlib

import cv2
import numpy as np
import pytest
from helpers import max_abs_diff_tree, one_line_error, run_module
from helpers_generate import BATCH, DDIM, ENCODING_TOL, SIZE, leftovers, regions, run, tiny_config

from diff2lip_jax.audio import SAMPLE_RATE, load_audio, save_wav
from diff2lip_jax.generate import frames as frames_lib
from diff2lip_jax.generate import model as model_lib
from diff2lip_jax.generate import pingpong_source
from diff2lip_jax.models import random_params
from diff2lip_jax.video import MediaError, VideoWriter, probe, read_frames


@pytest.fixture(scope="module")
def model_dir(generate_model_dir):
    return generate_model_dir


@pytest.fixture(scope="module")
def clip(generate_clip):
    """A 1.2 s synthetic clip at 30 fps, its frames at 30 fps, and a 64x64 box (y1, y2, x1, x2)
    whose lower half holds the mouth in every frame."""
    return generate_clip


@pytest.fixture(scope="module")
def cross_run(clip, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_cross") / "out.mp4"
    stats = run(clip, out, model_dir)
    return out, stats


def test_cross_mode_duration_audio_and_regions(clip, cross_run):
    out, stats = cross_run
    info = probe(out)
    audio_seconds = len(load_audio(clip["audio"])) / SAMPLE_RATE
    assert info.fps == 30 == stats["fps"] and info.has_audio and info.has_video  # the video's own rate
    produced = read_frames(out, fps=None)
    assert len(produced) == stats["num_frames"] == round(audio_seconds * 30)
    assert abs(len(produced) / 30 - audio_seconds) <= 1 / 30 and abs(info.duration - audio_seconds) <= 1 / 30
    assert stats["faces"] == len(produced) and stats["passthrough"] == 0
    outside, upper, lower = regions(produced, clip["frames"][: len(produced)], clip["box"])
    assert outside < ENCODING_TOL and upper < ENCODING_TOL, (outside, upper)
    assert lower > 4 * ENCODING_TOL, lower  # the generated half really changed
    assert leftovers(out.parent) == ["out.mp4"]


def test_sampler_compiles_once_with_padded_last_batch(cross_run, model_dir):
    _, stats = cross_run
    assert stats["batches"] >= 2 and stats["padded_slots"] > 0  # 36 frames in batches of 8
    assert stats["sampler_traces"] <= 1  # 0 when an earlier test compiled it already
    loaded = model_lib.load_checkpoint(model_dir)
    sampler = model_lib.get_sampler(loaded.cfg, loaded.diffusion, DDIM)
    assert sampler.cache_size() == 1
    assert stats["devices"] == sampler.num_devices and stats["batch_size"] % sampler.num_devices == 0


def test_bfloat16_sampler_error_is_bounded(model_dir, rng):
    """--precision bfloat16 against float32: the same 25-step DDIM run, random crops, mels and
    tiny random model. Measured (seed 0): mean 1.4 grey levels, p99 7, max 15 on the
    generated half (its std: 77 levels); the known half is the input bytes in both."""
    loaded = model_lib.load_checkpoint(model_dir)
    crops = rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    mels = rng.standard_normal((BATCH, 80, 16)).astype(np.float32)
    noise = model_lib.start_noise_image(7, SIZE)
    out = {}
    for precision in ("float32", "bfloat16"):
        sampler = model_lib.get_sampler(model_lib.with_precision(loaded.cfg, precision), loaded.diffusion, 25)
        out[precision] = np.asarray(sampler(sampler.put_params(loaded.params), noise, crops, crops, mels))
    diff = np.abs(out["float32"].astype(np.int16) - out["bfloat16"])
    lower = diff[:, SIZE // 2 :]
    assert lower.mean() < 3.0 and np.percentile(lower, 99) <= 12, (lower.mean(), np.percentile(lower, 99))
    assert lower.mean() > 0  # bfloat16 really ran
    assert diff[:, : SIZE // 2].max() == 0
    with pytest.raises(ValueError, match="--precision=float16: choose one of auto, float32, bfloat16"):
        model_lib.with_precision(loaded.cfg, "float16")


def test_pingpong_when_audio_outlasts_video(clip, model_dir, tmp_path):
    wav = load_audio(clip["audio"])
    long_audio = tmp_path / "long.wav"
    save_wav(long_audio, np.tile(wav, 3)[: int(len(wav) * 2.6)])
    out = tmp_path / "outdir" / "long.mp4"
    out.parent.mkdir()
    stats = run(clip, out, model_dir, audio=long_audio, paste="lower")
    produced = read_frames(out, fps=None).astype(np.float32)
    n = len(clip["frames"])
    assert stats["pingpong"] and stats["video_frames"] == n
    assert len(produced) == stats["num_frames"] == round(len(load_audio(long_audio)) / SAMPLE_RATE * 30) > 2 * n
    sources = pingpong_source(np.arange(len(produced)), n)
    assert list(sources[n - 2 : n + 2]) == [n - 2, n - 1, n - 2, n - 3]
    outside, upper, _ = regions(produced, clip["frames"][sources], clip["box"])
    assert outside < ENCODING_TOL and upper < ENCODING_TOL, (outside, upper)
    back = np.arange(n, 2 * n - 2)  # the backward leg mirrors the forward one
    naive, _, _ = regions(produced[back], clip["frames"][back % n], clip["box"])
    mirrored, _, _ = regions(produced[back], clip["frames"][sources[back]], clip["box"])
    assert mirrored < naive / 2, (mirrored, naive)
    assert leftovers(out.parent) == ["long.mp4"]  # the frame cache is gone


def ffmpeg_children():
    """ffmpeg processes started by this test process that are still running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z" and int(rest[1]) == os.getpid() and "ffmpeg" in comm:
            found.append(int(pid))
    return found


def test_failure_mid_video_leaves_no_files_or_processes(clip, model_dir, tmp_path, monkeypatch):
    from diff2lip_jax.generate import lipsync

    wav = load_audio(clip["audio"])
    long_audio = tmp_path / "long.wav"
    save_wav(long_audio, np.tile(wav, 2))
    outdir = tmp_path / "outs"
    outdir.mkdir()
    original = lipsync.LipSync.add

    def failing_add(self, frame, *args):
        if self.stats["faces"] + self.stats["passthrough"] == 20:  # frame cache and encoder both running
            assert any(outdir.iterdir())
            raise RuntimeError("simulated crash")
        return original(self, frame, *args)

    monkeypatch.setattr(lipsync.LipSync, "add", failing_add)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(clip, outdir / "out.mp4", model_dir, audio=long_audio)
    assert leftovers(outdir) == [] and ffmpeg_children() == []


def test_frame_cache_is_lossless_forward_and_backward(tmp_path, monkeypatch):
    monkeypatch.setattr(frames_lib, "SEGMENT_BYTES", 3 * 24 * 16 * 3)  # 3 frames per segment
    frames = np.random.default_rng(0).integers(0, 256, (8, 24, 16, 3), dtype=np.uint8)
    cache = frames_lib.FrameCache(tmp_path, 24, 16)
    for f in frames:
        cache.append(f)
    cache.finish()
    assert cache.segment == 3 and len(list(tmp_path.iterdir())) == 3
    np.testing.assert_array_equal(np.stack(list(cache.read(0, 8))), frames)
    np.testing.assert_array_equal(np.stack(list(cache.read(6, 0, -1))), frames[6:0:-1])


def test_pingpong_source():
    assert list(pingpong_source(np.arange(9), 3)) == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert list(pingpong_source(np.arange(5), 2)) == [0, 1, 0, 1, 0]
    assert list(pingpong_source(np.arange(3), 1)) == [0, 0, 0]


class DarkIsFaceless:
    """A detector that finds the clip's face box except in dark frames."""

    fixed = False

    def __init__(self, box):
        y1, y2, x1, x2 = box
        self.box = np.array([x1, y1, x2, y2], np.int64)

    def __call__(self, frames):
        found = frames.reshape(len(frames), -1).mean(axis=1) > 10
        return np.tile(self.box, (len(frames), 1)), found


def test_faceless_frames_pass_through(clip, model_dir, tmp_path):
    frames = clip["frames"].astype(np.uint8).copy()
    frames[8:22] = 0  # 14 blank frames: 8..12 and 17..21 borrow a neighbour's box (<= 5 frames away)
    video = tmp_path / "blank.mp4"
    with VideoWriter(video, fps=25, audio_path=clip["audio"]) as w:
        w.write(frames)
    out = tmp_path / "out.mp4"
    stats = run(clip, out, model_dir, video=video, face_detector=DarkIsFaceless(clip["box"]), box=None)
    produced = read_frames(out).astype(np.float32)
    assert stats["passthrough"] == 4 and stats["faces"] == len(produced) - 4
    assert np.abs(produced[13:17]).mean() < 3  # passed through: still blank
    _, _, lower = regions(produced[:8], frames[:8], clip["box"])
    assert lower > 4 * ENCODING_TOL


def test_reconstruction_mode_and_fig3_strip(clip, model_dir, tmp_path):
    out, strip = tmp_path / "recon.mp4", tmp_path / "fig3.png"
    stats = run(clip, out, model_dir, mode="reconstruction", fig3_strip=strip, fig3_steps=2)
    produced = read_frames(out, fps=None).astype(np.float32)
    assert len(produced) == stats["num_frames"] and stats["video_frames"] == 1
    assert stats["fps"] == probe(out).fps == 25  # one frame repeated: 25 fps unless --fps is given
    first = np.repeat(clip["frames"][:1], len(produced), axis=0)
    outside, upper, _ = regions(produced, first, clip["box"])  # every frame is the first frame
    assert outside < ENCODING_TOL and upper < ENCODING_TOL
    image = cv2.imread(str(strip))
    assert image.shape == (2 * 128 + 2, 2 * 128 + 2, 3)  # x_t / x0_pred rows, 2 steps, 64 px tiles x2
    fig3 = stats["fig3"]
    assert fig3["x_t"].shape == (2, SIZE, SIZE, 3) and fig3["timesteps"][0] > fig3["timesteps"][-1]


def test_static_image(clip, model_dir, tmp_path):
    still = tmp_path / "face.png"
    cv2.imwrite(str(still), clip["frames"][5].astype(np.uint8)[..., ::-1])
    out = tmp_path / "still.mp4"
    stats = run(clip, out, model_dir, video=still, static=True)
    assert stats["fps"] == probe(out).fps == 25
    produced = read_frames(out, fps=None).astype(np.float32)
    assert len(produced) == stats["num_frames"] > 1 and stats["faces"] == len(produced)
    outside, upper, lower = regions(produced, np.repeat(clip["frames"][5:6], len(produced), 0), clip["box"])
    assert outside < ENCODING_TOL and upper < ENCODING_TOL and lower > 4 * ENCODING_TOL


def test_exported_pt_drives_generate(clip, model_dir, cross_run, tmp_path, capsys):
    pytest.importorskip("torch")
    from diff2lip_jax import checkpoint
    from diff2lip_jax.convert import flax_to_torch, save_state_dict_file

    params, cfg, _ = checkpoint.load_model(str(model_dir))
    pt = tmp_path / "tiny.pt"
    save_state_dict_file(flax_to_torch(params, cfg), str(pt))
    out = tmp_path / "from_pt.mp4"
    capsys.readouterr()
    stats = run(clip, out, pt, config=tiny_config())
    assert stats["sampler_traces"] == 0  # the same flags reuse the compiled sampler
    # A state_dict file is the official model's format, trained on S3FD crops: a fixed box warns, once.
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--face_detector=box crops differ" in warnings[0], warnings
    reference, _ = cross_run
    got, want = read_frames(out, fps=None).astype(np.float32), read_frames(reference, fps=None).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2)


# -- bad inputs: one-line errors, nothing left behind -------------------------------------


def test_bad_inputs_raise_and_leave_nothing(clip, model_dir, tmp_path):
    outdir = tmp_path / "outs"
    outdir.mkdir()
    out = outdir / "out.mp4"
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(pathlib.Path(clip["video"]).read_bytes()[:3000])  # header, no frame data
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, fps=25) as w:
        w.write(clip["frames"][:5].astype(np.uint8))
    empty_dir = tmp_path / "empty_model"
    empty_dir.mkdir()
    junk_pt = tmp_path / "junk.pt"
    junk_pt.write_bytes(b"not a torch file")
    cases = [
        (dict(video=tmp_path / "missing.mp4"), MediaError, "no such file"),
        (dict(video=not_video), MediaError, "not a readable media file"),
        (dict(video=truncated), MediaError, "decoded to no frames"),
        (dict(audio=silent), MediaError, "no audio stream"),
        (dict(checkpoint=empty_dir), ValueError, "holds no checkpoint"),
        (dict(checkpoint=junk_pt), ValueError, "not a readable PyTorch"),
        (dict(checkpoint=not_video), ValueError, "not a checkpoint"),
        (dict(checkpoint=tmp_path / "nowhere"), FileNotFoundError, "no such file"),
        (dict(mode="dubbing"), ValueError, "cross or reconstruction"),
    ]
    for overrides, error, message in cases:
        kw = dict(overrides)
        with pytest.raises(error, match=message):
            run(clip, out, kw.pop("checkpoint", model_dir), **kw)
        assert leftovers(outdir) == [], overrides
    out.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="exists"):
        run(clip, out, model_dir)
    assert out.read_bytes() == b"user data"


def cli(*args):
    return run_module("diff2lip_jax.generate", *args, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


ERROR = "diff2lip-generate: error: "


def test_cli_bad_inputs_exit_2_with_one_line(clip, model_dir, tmp_path):
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, fps=25) as w:
        w.write(clip["frames"][:5].astype(np.uint8))
    outdir = tmp_path / "outs"
    outdir.mkdir()
    common = [
        "--checkpoint",
        model_dir,
        "--out",
        outdir / "o.mp4",
        "--face_detector",
        "box",
        "--box",
        ",".join(map(str, clip["box"])),
        "--ddim_steps",
        DDIM,
        "--noprogress",
    ]
    line = one_line_error(cli("--video", tmp_path / "missing.mp4", "--audio", clip["audio"], *common), ERROR)
    assert "no such file" in line
    line = one_line_error(cli("--video", clip["video"], "--audio", silent, *common), ERROR)
    assert "no audio stream" in line
    assert leftovers(outdir) == []


def test_model_directory_is_sampled_with_its_training_diffusion_flags(tmp_path):
    """A workdir's meta["diffusion"] (e.g. predict_xstart) drives sampling unless a config overrides it."""
    from diff2lip_jax import checkpoint

    cfg = tiny_config()
    mine = bool(cfg.diffusion.predict_xstart)
    trained = dict(cfg.diffusion.to_dict(), predict_xstart=not mine, noise_schedule="cosine")
    checkpoint.save_model(str(tmp_path / "m"), random_params(cfg.model), cfg.model, meta={"diffusion": trained})
    flags = dict(model_lib.load_checkpoint(tmp_path / "m").diffusion)
    assert flags["predict_xstart"] is (not mine) and flags["noise_schedule"] == "cosine"
    assert flags["learn_sigma"] == cfg.model.learn_sigma
    overridden = dict(model_lib.load_checkpoint(tmp_path / "m", config=cfg).diffusion)
    assert overridden["predict_xstart"] is mine and overridden["noise_schedule"] == "linear"
    # A directory without training meta (diff2lip-convert import) samples with the official flags.
    checkpoint.save_model(str(tmp_path / "imported"), random_params(cfg.model), cfg.model)
    assert dict(model_lib.load_checkpoint(tmp_path / "imported").diffusion)["predict_xstart"] is False


def test_weights_raw_reads_the_training_state_params(prepared_dataset, tmp_path):
    """--weights raw: a training workdir's `state.params` (partial restore), ema: its `params` item."""
    import jax

    from diff2lip_jax import checkpoint
    from diff2lip_jax.data import make_train_loader
    from diff2lip_jax.train import checkpoints as train_ckpt
    from diff2lip_jax.train.diff2lip import inference_meta
    from diff2lip_jax.train.state import create_train_state, make_optimizers
    from diff2lip_jax.train.task import close_iterator

    cfg = tiny_config()
    raw, ema = random_params(cfg.model, seed=1), random_params(cfg.model, seed=2)
    tx, d_tx = make_optimizers(cfg)
    state = create_train_state(raw, {}, jax.random.key(0), tx, d_tx).replace(ema_params=ema)
    it = make_train_loader(prepared_dataset, "train", 2, 0, 0, image_size=SIZE, nrefer=1)
    workdir = str(tmp_path / "run")
    try:
        with train_ckpt.open_manager(workdir, keep=1, async_save=False) as mngr:
            train_ckpt.save(mngr, state, it, cfg, ema, inference_meta(cfg, 0), force=True)
    finally:
        close_iterator(it)

    loaded_raw = model_lib.load_checkpoint(workdir, weights="raw")
    assert max_abs_diff_tree(loaded_raw.params, raw) == 0 and loaded_raw.description.endswith("(raw)")
    assert max_abs_diff_tree(model_lib.load_checkpoint(workdir).params, ema) == 0  # the default stays EMA
    assert jax.tree.structure(loaded_raw.params) == jax.tree.structure(ema)
    # An imported model has one set of weights; a state_dict file too.
    checkpoint.save_model(str(tmp_path / "imported"), ema, cfg.model)
    with pytest.raises(checkpoint.CheckpointError, match="no training state.*--weights ema"):
        model_lib.load_checkpoint(tmp_path / "imported", weights="raw")
    with pytest.raises(ValueError, match="choose one of ema, raw"):
        model_lib.load_checkpoint(workdir, weights="best")


def test_side_by_side_panels_follow_the_lead_video(tmp_path):
    """Panels are scaled to the lead's height under a caption bar; a shorter panel holds its last frame."""
    from diff2lip_jax.generate.side_by_side import LABEL_HEIGHT, write_side_by_side

    lead = np.full((10, 64, 48, 3), 40, np.uint8)
    short = np.repeat(60 * np.arange(4, dtype=np.uint8), 32 * 32 * 3).reshape(4, 32, 32, 3)  # frame k: grey 60k
    wav = (0.1 * np.sin(np.linspace(0, 400, SAMPLE_RATE))).astype(np.float32)
    for name, frames in (("lead.mp4", lead), ("short.mp4", short)):
        with VideoWriter(tmp_path / name, audio=(wav, SAMPLE_RATE)) as w:
            w.write(frames)
    out = tmp_path / "cmp.mp4"
    n = write_side_by_side(
        [(tmp_path / "short.mp4", "short"), (tmp_path / "lead.mp4", "lead")],
        out,
        audio_path=tmp_path / "lead.mp4",
        lead=1,
    )
    got = read_frames(out)
    assert n == len(got) == 10
    assert got.shape[1:] == (LABEL_HEIGHT + 64, 64 + 48, 3)  # the 32x32 panel scaled to 64x64
    body = got[:, LABEL_HEIGHT + 4 : -4, 4:60].astype(float).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(body[:4], 60 * np.arange(4), atol=ENCODING_TOL)
    np.testing.assert_allclose(body[4:], 180, atol=ENCODING_TOL)  # held
    assert probe(out).has_audio
