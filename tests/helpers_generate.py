"""Shared pieces of the generate tests: the tiny model, the box-detector run, region errors.

Every generate test uses the same batch size, DDIM steps and image size, so the
sampler (cached per process by its flags) compiles once for the whole session.
The fixtures built on these (`generate_model_dir`, `generate_clip`) are in conftest.py.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

DDIM = 2
BATCH = 8  # one frame per fake device (conftest: 8 CPU devices)
SIZE = 64  # the tiny model's crops: a 64x64 face box makes crop/paste resizes the identity
ENCODING_TOL = 6.0  # grey levels: H.264 (crf 18) of the output plus that of the input


def tiny_config():
    """The tiny Diff2Lip config at SIZE px."""
    from helpers_config import load_config

    cfg = load_config("diff2lip", "tiny")
    cfg.model.image_size = SIZE  # the tiny recipe trains at 32 px; 64 keeps the crop/paste resizes exact
    return cfg


def save_tiny_model(path: pathlib.Path) -> pathlib.Path:
    """A model directory with random tiny params, as a training run writes it (diffusion flags in the meta)."""
    from diff2lip_jax import checkpoint
    from diff2lip_jax.models import random_params

    cfg = tiny_config()
    checkpoint.save_model(str(path), random_params(cfg.model), cfg.model, meta={"diffusion": cfg.diffusion.to_dict()})
    return path


def synthetic_clip(root: pathlib.Path, fps: float, seconds: float, seed: int = 0) -> dict:
    """One synthetic clip at `fps`: its video, audio, ground truth, native-rate frames (float32),
    and a SIZE x SIZE box (y1, y2, x1, x2) whose lower half holds the mouth in every frame."""
    from data_pipelines.synthetic import generate_dataset
    from diff2lip_jax.video import read_frames

    manifest = generate_dataset(root, num_clips=1, seed=seed, fps=fps, size=(160, 128), seconds=seconds)
    entry = manifest["clips"][0]
    meta = json.loads((root / entry["meta"]).read_text())
    mouths = np.asarray(meta["mouth_boxes"])  # [F, 4] x1, y1, x2, y2
    cx, cy = mouths[:, [0, 2]].mean(), mouths[:, [1, 3]].mean()
    y2 = int(cy + 18)
    x1 = int(cx - SIZE // 2)
    box = (y2 - SIZE, y2, x1, x1 + SIZE)
    assert mouths[:, 1].min() >= box[0] + SIZE // 2 and mouths[:, 3].max() <= box[1]  # mouth in the lower half
    return dict(
        video=root / entry["video"],
        audio=root / entry["audio"],
        box=box,
        fps=fps,
        truth=np.asarray(meta["mouth_opening"], np.float64),
        frames=read_frames(root / entry["video"], fps=None).astype(np.float32),
    )


def run(clip, out, checkpoint, video=None, audio=None, **kw):
    """`generate` with the tests' defaults: the clip, its box, short DDIM, batches of 8."""
    from diff2lip_jax.generate import generate

    args = dict(
        checkpoint=checkpoint, ddim_steps=DDIM, face_detector="box", box=clip["box"], batch_size=BATCH, progress=False
    )
    args.update(kw)
    return generate(video or clip["video"], audio or clip["audio"], out, **args)


def regions(a, b, box):
    """Mean abs difference of frames a, b [N, H, W, 3]: outside the box, its upper half, its lower half."""
    y1, y2, x1, x2 = box
    d = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
    outside = np.ones(d.shape[1:3], bool)
    outside[y1:y2, x1:x2] = False
    mid = (y1 + y2) // 2
    return d[:, outside].mean(), d[:, y1:mid, x1:x2].mean(), d[:, mid:y2, x1:x2].mean()


def leftovers(directory, keep=()):
    """Names of the files in `directory` other than `keep`, sorted."""
    return sorted(p.name for p in pathlib.Path(directory).iterdir() if p.name not in keep)
