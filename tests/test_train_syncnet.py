"""SyncNet expert training: contrastive pairs (labels, offsets, determinism), the step, the
loop's exact resume, load_syncnet as Diff2Lip's expert, and the CLI's one-line errors."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import one_line_error, prepare_box_dataset
from helpers_config import load_config

from data_pipelines import synthetic
from diff2lip_jax import audio, checkpoint
from diff2lip_jax import data as d2l_data
from diff2lip_jax.checkpoint import load_syncnet, read_syncnet_meta
from diff2lip_jax.data import syncnet_pairs as P
from diff2lip_jax.models.syncnet import SyncNetExpert
from diff2lip_jax.train import syncnet as T
from diff2lip_jax.train.loop import train

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE = grain.sharding.ShardOptions(shard_index=0, shard_count=1)
SIZE = 32  # crops resized to 32 px: lower halves [16, 32], the smallest SyncNet input
MIN_OFFSET = 5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> pathlib.Path:
    """6 synthetic clips (4 speakers, 2 s, 128 px) prepared with a fixed box; 1 speaker in "val"."""
    raw = tmp_path_factory.mktemp("synth")
    synthetic.generate_dataset(raw, num_clips=6, seed=5, size=(128, 128), seconds=2.0, identities=4)
    out = tmp_path_factory.mktemp("prepared")
    prepare_box_dataset(raw, out, split="auto", val_fraction=0.25)
    return out


@pytest.fixture(scope="module")
def clips(prepared) -> list[dict]:
    src = d2l_data.open_split(prepared, "train")
    return [
        {"mel": r["mel"], "frames": r["frames"], "num_frames": int(r["num_frames"])}
        for r in (src[i] for i in range(len(src)))
    ]


def _pairs(prepared, n: int, batch: int = 16, **kw) -> list[dict]:
    kw.setdefault("image_size", SIZE)
    kw.setdefault("min_offset", MIN_OFFSET)
    it = iter(P.sync_dataset(prepared, kw.pop("split", "train"), batch, kw.pop("seed", 0), shard_options=ONE, **kw))
    return [next(it) for _ in range(n)]


def _cat(batches: list[dict]) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _config(prepared, **train) -> ml_collections.ConfigDict:  # noqa: F821
    cfg = load_config("syncnet", "tiny")
    cfg.data.dir = str(prepared)
    cfg.model.update(image_size=SIZE, base_channels=8, embed_dim=32, num_res_blocks=1)
    # Constant lr: a resumed leg with a different num_steps must see the same schedule.
    cfg.train.update(
        batch_size=8,
        lr=1e-3,
        lr_schedule="constant",
        warmup_steps=0,
        log_every=2,
        checkpoint_every=3,
        eval_every=100,
        eval_batches=1,
    )
    cfg.train.update(train)
    return cfg


def test_positives_and_negatives(prepared, clips):
    b = _cat(_pairs(prepared, 12, seed=3))  # 192 pairs
    n = len(b["label"])
    assert b["faces"].shape == (n, 5, SIZE // 2, SIZE, 3) and b["faces"].dtype == np.float32
    assert b["mel"].shape == (n, 80, 16) and b["label"].dtype == np.float32
    assert 0.35 < b["label"].mean() < 0.65  # a fair coin
    pos, neg = b["label"] == 1, b["label"] == 0
    np.testing.assert_array_equal(b["mel_clip"], b["clip_index"])  # same clip
    np.testing.assert_array_equal(b["mel_start"][pos], b["start"][pos])
    offsets = b["mel_start"][neg] - b["start"][neg]
    assert np.all(np.abs(offsets) >= MIN_OFFSET) and (offsets < 0).any() and (offsets > 0).any()
    for i in range(0, n, 7):  # the mel and faces are the record's, at the stated positions
        clip, s = clips[b["clip_index"][i]], int(b["start"][i])
        np.testing.assert_array_equal(b["mel"][i], audio.sync_mel_window(clip["mel"], int(b["mel_start"][i])))
        full = d2l_data.to_unit_range(d2l_data.decode_jpegs(clip["frames"][s : s + 5], SIZE))
        np.testing.assert_array_equal(b["faces"][i], full[:, SIZE // 2 :])
        assert int(b["mel_start"][i]) * 80 // 25 + 16 <= clip["mel"].shape[1]


def test_balanced_eval_pairs_and_cross_clip_negatives(prepared):
    b = _cat(_pairs(prepared, 2, split="val", balanced=True))
    np.testing.assert_array_equal(b["label"], np.arange(len(b["label"])) % 2 == 0)
    b = _cat(_pairs(prepared, 4, same_clip=False, min_offset=40))
    neg = b["label"] == 0
    assert np.all(b["mel_clip"][neg] != b["clip_index"][neg])


def test_stream_is_seeded_and_restores_exactly(prepared):
    def make():
        return iter(P.sync_dataset(prepared, "train", 8, 7, image_size=SIZE, shard_options=ONE))

    a, b = make(), make()
    for _ in range(2):
        next(a), next(b)
    state = a.get_state()
    want = [next(a) for _ in range(2)]
    c = make()
    c.set_state(state)
    for x, y, z in zip(want, [next(b) for _ in range(2)], [next(c) for _ in range(2)]):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
            np.testing.assert_array_equal(x[k], z[k])


def test_augment_is_one_transform_per_window():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, 32, 32, 3), np.uint8)
    window = np.repeat(frame, 5, axis=0)
    np.testing.assert_array_equal(P.Augment()(window, np.random.default_rng(1)), window)  # all off: identity
    aug = P.Augment(max_zoom=0.3, flip=True, color=0.3)
    for seed in range(4):
        out = aug(window, np.random.default_rng(seed))
        assert out.shape == window.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], out[t]) for t in range(1, 5))  # the same for the 5 frames
        np.testing.assert_array_equal(out, aug(window, np.random.default_rng(seed)))  # seeded
    flips = [P.Augment(flip=True)(window, np.random.default_rng(s)) for s in range(8)]
    assert {np.array_equal(f, window) for f in flips} == {True, False}
    assert all(np.array_equal(f, window) or np.array_equal(f, window[:, :, ::-1]) for f in flips)
    flat = np.full((5, 32, 32, 3), 90, np.uint8)  # the zoomed view stays inside the frame: no border
    np.testing.assert_array_equal(P.Augment(max_zoom=0.3)(flat, np.random.default_rng(3)), flat)


def test_augmented_pairs_keep_positions_and_labels(prepared):
    plain = _cat(_pairs(prepared, 2, seed=4))
    aug = _cat(_pairs(prepared, 2, seed=4, augment=P.Augment(max_zoom=0.15, flip=True, color=0.3)))
    for k in ("label", "clip_index", "start", "mel_start", "mel"):
        np.testing.assert_array_equal(plain[k], aug[k])
    assert np.abs(plain["faces"] - aug["faces"]).mean() > 0.02
    assert aug["faces"].min() >= -1.0 and aug["faces"].max() <= 1.0


def test_bad_pair_options(prepared):
    with pytest.raises(ValueError, match="min_offset"):
        next(iter(P.sync_dataset(prepared, "train", 8, 0, image_size=SIZE, min_offset=0, shard_options=ONE)))
    with pytest.raises(ValueError, match="too short"):  # 2 s clips have no window 60 frames from any other
        next(iter(P.sync_dataset(prepared, "train", 8, 0, image_size=SIZE, min_offset=60, shard_options=ONE)))


@pytest.mark.slow  # ~31 s of training steps
def test_steps_lower_the_loss(prepared):
    cfg = _config(prepared)
    module = T.build_module(cfg)
    tx = optax.adam(3e-3)
    state = T.init_state(cfg, module, tx)
    batch = {k: jnp.asarray(v) for k, v in _pairs(prepared, 1, batch=8, seed=1)[0].items() if k in T.BATCH_KEYS}
    step = jax.jit(T.make_train_step(module))
    losses = []
    for _ in range(12):
        state, m = step(state, batch)
        assert all(np.isfinite(float(v)) for v in m.values()) and float(m["finite"]) == 1.0
        losses.append(float(m["loss"]))
    assert int(state.step) == 12 and losses[-1] < 0.7 * losses[0], losses


@pytest.fixture(scope="module")
def workdirs(prepared, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path, subprocess.CompletedProcess]:
    """An uninterrupted CLI run of 6 steps, and an in-process run of 3 steps resumed to 6."""
    full, split = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("split")
    # The CLI run states every field _config sets, so both runs train the same model the same way.
    overrides = [
        "--config.data.dir",
        str(prepared),
        "--config.model.image_size=32",
        "--config.model.base_channels=8",
        "--config.model.embed_dim=32",
        "--config.model.num_res_blocks=1",
        "--config.train.lr=1e-3",
        "--config.train.lr_schedule=constant",
        "--config.train.warmup_steps=0",
        "--config.train.batch_size=8",
        "--config.train.num_steps=6",
        "--config.train.checkpoint_every=3",
        "--config.train.eval_every=100",
        "--config.train.eval_batches=1",
        "--config.train.log_every=2",
    ]
    cli = _cli(f"--workdir={full}", "--config=configs/syncnet.py:tiny", *overrides)
    train(_config(prepared, num_steps=3), str(split))
    train(_config(prepared, num_steps=6), str(split))
    return full, split, cli


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "diff2lip-train-syncnet"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # the workdirs fixture trains 3 runs: ~85 s
def test_cli_trains_and_reports_accuracy(workdirs):
    full, _, cli = workdirs
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "sync accuracy: " in cli.stdout and "%" in cli.stdout
    assert checkpoint.latest_step(str(full)) == 6
    assert (full / "tensorboard").is_dir()


@pytest.mark.slow  # the workdirs fixture trains 3 runs: ~85 s
def test_resume_matches_an_uninterrupted_run(workdirs):
    full, split, _ = workdirs
    assert checkpoint.latest_step(str(split)) == 6
    _, a = load_syncnet(str(full))
    _, b = load_syncnet(str(split))
    diff = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)
    assert max(jax.tree.leaves(diff)) <= 1e-6
    _, c = load_syncnet(str(split), step=3)  # the resumed run really continued from step 3
    assert max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, c))) > 1e-6


@pytest.mark.slow  # the workdirs fixture trains 3 runs: ~85 s
def test_load_syncnet_as_expert(workdirs, tmp_path):
    full, _, _ = workdirs
    module, variables = load_syncnet(str(full))
    meta, step = read_syncnet_meta(str(full))
    assert step == 6 and meta["image_size"] == SIZE and module.embed_dim == 32 and module.base_channels == 8
    faces = jnp.zeros((2, 5, SIZE // 2, SIZE, 3), jnp.float32)
    face_emb, audio_emb = SyncNetExpert(module).embed(variables, faces, jnp.zeros((2, 80, 16), jnp.float32))
    assert face_emb.shape == audio_emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(face_emb), axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(checkpoint.CheckpointError):
        load_syncnet(str(tmp_path))  # no checkpoint


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.data.dir=/nonexistent/prep"], "does not exist"),
        (["--config.data.dir="], "data.dir is empty"),
        ([], "--workdir is required"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    workdir = [f"--workdir={tmp_path / 'w'}"] if args else []
    line = one_line_error(_cli("--config=configs/syncnet.py:tiny", *workdir, *args), "diff2lip-train-syncnet: error:")
    assert message in line, line


@pytest.mark.slow  # the workdirs fixture trains 3 runs: ~85 s
def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_previous_resumes(workdirs, prepared, tmp_path):
    full, split, _ = workdirs
    copy = tmp_path / "copy"
    shutil.copytree(split, copy)
    data = [p for p in (copy / "checkpoints" / "6" / "state").rglob("*") if p.is_file() and p.stat().st_size > 64]
    assert data
    for p in data:  # a save cut short by a full disk: every array file truncated
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 2)
    train(_config(prepared, num_steps=6), str(copy))
    assert (copy / "corrupt_checkpoints" / "6").is_dir()
    assert checkpoint.latest_step(str(copy)) == 6  # retrained 4..6 from step 3
    _, a = load_syncnet(str(full))
    _, b = load_syncnet(str(copy))
    assert max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b))) <= 1e-6
