"""`generate()` against the official `generate.py`, frame for frame (needs a checkout).

Set DIFF2LIP_OFFICIAL_REPO to a checkout of github.com/soumik-kanad/diff2lip (and install
torch); the test is skipped otherwise, like the UNet parity test. The official script runs
as it is, with three seams: its frame extraction (ffmpeg to JPEG, lossy) is replaced by the
frames our decoder hands to the pipeline, torchvision's writer by a recorder, and the S3FD
detector by a box source (unused: `is_voxceleb2` crops a fixed box, our
`--face_detector voxceleb2`). Its audio extraction and mel windows, its batching, its
composite and its paste are the official code. Both sides share one random model (official
flags at 64 px, narrow), the DDIM-2 schedule and the start noise (torch's, from the seed).
"""

import os

import numpy as np
import pytest

from diff2lip_jax.constants import FPS
from diff2lip_jax.video import ffmpeg_exe, iter_frames

OFFICIAL_REPO = os.environ.get("DIFF2LIP_OFFICIAL_REPO")
pytestmark = pytest.mark.skipif(
    not OFFICIAL_REPO, reason="set DIFF2LIP_OFFICIAL_REPO to a checkout of the official diff2lip"
)

SIZE, DDIM, SEED = 64, 2, 7
MODEL_FLAGS = dict(
    image_size=SIZE, num_channels=32, num_res_blocks=1, num_head_channels=16, attention_resolutions="16,8"
)
# Two float32 programs (torch and XLA) through two DDIM steps and a truncation to uint8: a
# value that lands next to an integer may truncate one grey level apart. So: at most 1 grey
# level anywhere, and under 0.5% of the pixels off at all.
MAX_GREY_LEVELS, MAX_SHARE_OFF = 1, 0.005


class _BoxSource:
    """The official detector's interface; every frame's face is the whole frame."""

    def get_detections_for_batch(self, images):
        return [(0, 0, img.shape[1], img.shape[0]) for img in images]


def test_generate_equals_official_generate_py(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from data_pipelines.synthetic import generate_dataset
    from diff2lip_jax import checkpoint, default_config
    from diff2lip_jax.convert import flax_to_torch
    from diff2lip_jax.generate import generate, pipeline
    from diff2lip_jax.generate import model as model_lib
    from diff2lip_jax.models import random_params
    from diff2lip_jax.official_reference import (
        build_official_diffusion,
        build_official_model,
        import_official_generate,
    )

    manifest = generate_dataset(tmp_path / "clip", num_clips=1, seed=0, size=(128, 128), seconds=1.0)
    entry = manifest["clips"][0]
    video, audio = str(tmp_path / "clip" / entry["video"]), str(tmp_path / "clip" / entry["audio"])
    params = random_params(MODEL_FLAGS, seed=0)
    diffusion = dict(default_config.get_config().diffusion)
    checkpoint.save_model(str(tmp_path / "model"), params, MODEL_FLAGS, meta={"diffusion": diffusion})

    # The official run. Its shell calls `ffmpeg`: the one imageio-ffmpeg ships, on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").symlink_to(ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    written = {}

    def write_video(path, video_array, **kwargs):
        written[os.path.basename(path)] = np.asarray(video_array)

    official = import_official_generate(OFFICIAL_REPO, write_video)
    theirs_in, theirs_out = [], []  # uint8 NHWC crops: the model's input and the composite
    official_sample_batch = official.sample_batch

    def recording_sample_batch(batch, *a, **kw):
        sample, img_batch, model_kwargs = official_sample_batch(batch, *a, **kw)
        image = batch["image"].reshape(-1, *batch["image"].shape[-3:])
        theirs_in.append(np.rint(image.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1))
        mask = model_kwargs["mask"]
        composite = official.normalise(sample * mask + (1.0 - mask) * img_batch) * 255
        theirs_out.append(composite.numpy().transpose(0, 2, 3, 1).astype(np.uint8))
        return sample, img_batch, model_kwargs

    monkeypatch.setattr(official, "sample_batch", recording_sample_batch)
    decoded = [frame for chunk in iter_frames(video, fps=FPS) for frame in chunk]
    monkeypatch.setattr(official, "load_video_frames", lambda path, args: [f.copy() for f in decoded])
    model = build_official_model(OFFICIAL_REPO, MODEL_FLAGS)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in flax_to_torch(params, MODEL_FLAGS).items()})
    args = official.create_argparser().parse_args([])
    for name, value in dict(
        MODEL_FLAGS,
        use_ref=True,
        use_audio=True,
        nframes=5,
        nrefer=1,
        use_fp16=False,
        use_ddim=True,
        sampling_seed=SEED,
        sampling_batch_size=2,
        sample_path=str(tmp_path / "official"),
        is_voxceleb2=True,
    ).items():
        setattr(args, name, value)
    with torch.no_grad():
        official.generate(
            video,
            audio,
            model,
            build_official_diffusion(OFFICIAL_REPO, diffusion, f"ddim{DDIM}"),
            _BoxSource(),
            args,
            out_path=str(tmp_path / "official.mp4"),
            save_orig=False,
        )
    theirs = written["official.mp4"]

    # Ours, with the official start noise and the frames handed to the encoder recorded.
    torch.manual_seed(SEED)
    noise = torch.randn((1, 3, SIZE, SIZE))[0].numpy().transpose(1, 2, 0)
    monkeypatch.setattr(model_lib, "start_noise_image", lambda seed, size: noise.copy())
    ours, ours_in, ours_out = [], [], []

    class RecordingWriter(pipeline.VideoWriter):
        def write(self, frames):
            ours.extend(np.asarray(frames).reshape(-1, *np.shape(frames)[-3:]))
            return super().write(frames)

    sampler_call = model_lib.Sampler.__call__

    def recording_sampler_call(self, params, noise, crops, refs, mels):
        result = sampler_call(self, params, noise, crops, refs, mels)
        ours_in.append(np.asarray(crops))
        ours_out.append(np.asarray(result))
        return result

    monkeypatch.setattr(pipeline, "VideoWriter", RecordingWriter)
    monkeypatch.setattr(model_lib.Sampler, "__call__", recording_sampler_call)
    generate(
        video,
        audio,
        tmp_path / "ours.mp4",
        checkpoint=tmp_path / "model",
        ddim_steps=DDIM,
        seed=SEED,
        face_detector="voxceleb2",
        paste="full",  # the official paste; ours defaults to feather
        fps=25,
        batch_size=8,
        progress=False,
    )
    ours = np.stack(ours)

    # The official output stops at the last full mel window (three frames short of 1 s here).
    n = len(theirs)
    assert 20 <= n < len(ours) == FPS
    # --length official reproduces that count (here from the audio: the video is longer).
    from diff2lip_jax.audio import load_audio
    from diff2lip_jax.generate.timing import output_length

    assert output_length("official", len(load_audio(audio)), FPS, len(decoded)) == n
    ours, ours_in, ours_out = np.stack(ours)[:n], np.concatenate(ours_in)[:n], np.concatenate(ours_out)[:n]
    theirs_in, theirs_out = np.concatenate(theirs_in), np.concatenate(theirs_out)
    np.testing.assert_array_equal(ours_in, theirs_in)  # the same face crops go in
    half = SIZE // 2  # face_hide_percentage 0.5
    # The generated lower half: the same sampler in two float32 programs (XLA, torch) and a
    # truncation to uint8, so a value next to an integer may land one grey level apart.
    lower = np.abs(ours_out[:, half:].astype(np.int16) - theirs_out[:, half:])
    assert lower.max() <= 1 and (lower > 0).mean() < 1e-3, (lower.max(), (lower > 0).mean())
    # The known upper half: ours keeps the input bytes; the official round trip
    # x / 255 -> [-1, 1] -> [0, 1] * 255 -> uint8 truncates some values one grey level down.
    np.testing.assert_array_equal(ours_out[:, :half], ours_in[:, :half])
    levels = torch.arange(256, dtype=torch.float32)
    round_trip = (official.normalise(official.normalise2(levels / 255.0)) * 255).numpy().astype(np.uint8)
    np.testing.assert_array_equal(theirs_out[:, :half], round_trip[theirs_in[:, :half]])
    assert (round_trip != np.arange(256)).sum() > 0  # the divergence is real, not a no-op check
    # Pasted frames: outside the face box equal to the byte (both paste `full`), and the
    # box's lower rows, resized from the generated halves, within one grey level.
    y2, x1, x2 = 128 - int(128 * 2.36 / 8), int(128 * 1.8 / 8), 128 - int(128 * 1.8 / 8)
    diff = np.abs(ours.astype(np.int16) - theirs)
    outside = diff.copy()
    outside[:, :y2, x1:x2] = 0
    assert outside.max() == 0
    box_lower = diff[:, y2 // 2 + 2 : y2, x1:x2]
    assert box_lower.max() <= 1 and (box_lower > 0).mean() < 1e-3, (box_lower.max(), (box_lower > 0).mean())
    # The lower half really was generated (not the input copied through).
    assert np.abs(theirs_out[:, half:].astype(np.int16) - theirs_in[:, half:]).mean() > 5
