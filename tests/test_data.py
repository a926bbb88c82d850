"""diff2lip_jax.data: shapes and ranges, window rules, mel/frame alignment, sharding, determinism, restore."""

from __future__ import annotations

import json
import pathlib

import grain
import numpy as np
import pytest
from helpers import prepare_box_dataset

from data_pipelines import synthetic
from diff2lip_jax import audio
from diff2lip_jax import data as d2l_data
from diff2lip_jax.train.diff2lip import BATCH_KEYS, random_batch

NUM_CLIPS = 6
ONE = grain.sharding.ShardOptions(shard_index=0, shard_count=1)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> pathlib.Path:
    """6 synthetic clips (4 speakers), 25 fps, 128 px, 2 s, with ground truth json."""
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate_dataset(out, num_clips=NUM_CLIPS, seed=11, size=(128, 128), seconds=2.0, identities=4)
    return out


@pytest.fixture(scope="module")
def prepared(synth_dir, tmp_path_factory) -> pathlib.Path:
    """The clips prepared into one "train" split (fixed box: fast and deterministic)."""
    out = tmp_path_factory.mktemp("prepared")
    builder = prepare_box_dataset(synth_dir, out, split="train")
    assert builder.run_result.count("new") == NUM_CLIPS
    return out


@pytest.fixture(scope="module")
def clips(prepared) -> list[dict]:
    """Per record index: clip_id, num_frames, mel and the synthetic ground truth."""
    src = d2l_data.open_split(prepared, "train")
    return [
        {
            "clip_id": d2l_data.text(r["clip_id"]),
            "num_frames": int(r["num_frames"]),
            "mel": r["mel"],
            "has_face": r["has_face"],
            "frames": r["frames"],
        }
        for r in (src[i] for i in range(len(src)))
    ]


def _loader(prepared, **kw):
    kw.setdefault("shard_options", ONE)
    kw.setdefault("global_batch_size", 4)
    return d2l_data.make_train_loader(prepared, "train", **kw)


def _take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_batch_shapes_dtypes_ranges(prepared):
    batch = next(_loader(prepared, global_batch_size=4))
    expect = {
        "frames": ((4, 5, 128, 128, 3), np.float32),
        "ref": ((4, 128, 128, 3), np.float32),
        "indiv_mels": ((4, 5, 80, 16), np.float32),
        "sync_mel": ((4, 80, 16), np.float32),
        "clip_index": ((4,), np.int32),
        "start": ((4,), np.int32),
        "ref_index": ((4,), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expect
    # The tests' and benchmarks' stand-in has the step's share of it.
    assert {k: (v.shape, v.dtype) for k, v in random_batch(4, 128).items()} == {k: expect[k] for k in BATCH_KEYS}
    for key in ("frames", "ref"):
        assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
        assert batch[key].std() > 0.1  # real images, not a constant
    for key in ("indiv_mels", "sync_mel"):
        assert batch[key].min() >= -4.0 and batch[key].max() <= 4.0


def test_resize_and_several_references(prepared):
    batch = next(_loader(prepared, global_batch_size=2, image_size=64, nrefer=3))
    assert batch["frames"].shape == (2, 5, 64, 64, 3) and batch["ref"].shape == (2, 3, 64, 64, 3)
    assert batch["ref_index"].shape == (2, 3)
    assert {k: v.shape for k, v in random_batch(2, 64, nrefer=3).items()} == {k: batch[k].shape for k in BATCH_KEYS}


def test_window_rules_and_reference_outside_window(prepared, clips):
    batches = _take(_loader(prepared, global_batch_size=8, seed=3), 40)  # 320 examples
    starts = np.concatenate([b["start"] for b in batches])
    refs = np.concatenate([b["ref_index"] for b in batches])
    index = np.concatenate([b["clip_index"] for b in batches])
    n = np.array([clips[i]["num_frames"] for i in index])
    assert np.all(starts >= 1) and np.all(starts + 5 <= n)
    assert np.all((refs < starts) | (refs >= starts + 5)) and np.all((refs >= 0) & (refs < n))
    assert len(set(starts.tolist())) > 20 and len(set(index.tolist())) == NUM_CLIPS  # real sampling


def test_frames_mels_and_reference_come_from_the_record(prepared, clips):
    batch = next(_loader(prepared, global_batch_size=4, seed=5))
    for i in range(4):
        clip, s, r = clips[batch["clip_index"][i]], int(batch["start"][i]), int(batch["ref_index"][i])
        want = d2l_data.to_unit_range(d2l_data.decode_jpegs(clip["frames"][s : s + 5]))
        np.testing.assert_array_equal(batch["frames"][i], want)
        ref = d2l_data.to_unit_range(d2l_data.decode_jpegs([clip["frames"][r]]))[0]
        np.testing.assert_array_equal(batch["ref"][i], ref)
        # The official conventions, bit for bit: per-frame windows and the sync window.
        np.testing.assert_array_equal(
            batch["indiv_mels"][i], audio.frame_mel_windows(clip["mel"], clip["num_frames"])[s : s + 5]
        )
        np.testing.assert_array_equal(batch["sync_mel"][i], audio.sync_mel_window(clip["mel"], s))


def test_mel_windows_line_up_with_mouth_motion(prepared, clips, synth_dir):
    """Mouth opening (ground truth) tracks the energy of each frame's aligned mel window
    far better than that of the window 5 frames away."""
    truth = [np.array(json.loads((synth_dir / f"{c['clip_id']}.json").read_text())["mouth_opening"]) for c in clips]
    pairs: dict[int, tuple[list, list]] = {shift: ([], []) for shift in (-5, 0, 5)}
    for b in _take(_loader(prepared, global_batch_size=8, seed=1), 30):
        energy = b["indiv_mels"].mean(axis=(2, 3))  # [B, 5]
        for ci, s, e in zip(b["clip_index"], b["start"], energy):
            mouth = truth[ci]
            for k in range(5):
                for shift, (xs, ys) in pairs.items():
                    if 0 <= s + k + shift < len(mouth):
                        xs.append(e[k])
                        ys.append(mouth[s + k + shift])
    corr = {shift: np.corrcoef(xs, ys)[0, 1] for shift, (xs, ys) in pairs.items()}
    assert corr[0] > 0.6, corr
    assert corr[0] > max(corr[-5], corr[5]) + 0.3, corr


def test_same_seed_same_batches_other_seed_differs(prepared):
    a, b = _take(_loader(prepared, seed=7), 3), _take(_loader(prepared, seed=7), 3)
    c = _take(_loader(prepared, seed=8), 3)
    assert _same(a, b)
    assert not _same(a, c)


def test_state_restore_resumes_exactly(prepared):
    it = _loader(prepared, seed=2)
    _take(it, 5)  # past the first epoch (6 clips, 4 per batch)
    state = json.loads(json.dumps(it.get_state()))  # JSON-able, as a checkpoint stores it
    expected = _take(it, 4)
    fresh = _loader(prepared, seed=2)
    fresh.set_state(state)
    assert _same(_take(fresh, 4), expected)


def test_worker_process_gives_the_same_batches_and_restores(prepared):
    reference = _take(_loader(prepared, seed=4), 4)
    it = _loader(prepared, seed=4, worker_count=1)
    try:
        first = _take(it, 2)
        state = it.get_state()
        rest = _take(it, 2)
    finally:
        it.close()
    assert _same(first + rest, reference)  # batching happens after the workers
    again = _loader(prepared, seed=4, worker_count=1)
    try:
        again.set_state(state)
        assert _same(_take(again, 2), rest)
    finally:
        again.close()


def test_process_shards_see_disjoint_clips(prepared):
    seen = []
    for shard in range(2):
        opts = grain.sharding.ShardOptions(shard_index=shard, shard_count=2, drop_remainder=True)
        batches = _take(_loader(prepared, shard_options=opts, global_batch_size=4), 6)
        assert batches[0]["frames"].shape[0] == 2  # per-process batch = global // process count
        seen.append({int(i) for b in batches for i in b["clip_index"]})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(NUM_CLIPS))


def test_eval_loader_yields_whole_clips_in_order(prepared, clips):
    items = list(d2l_data.make_eval_loader(prepared, "train", shard_options=ONE))
    assert [it["clip_id"] for it in items] == [c["clip_id"] for c in clips]
    for item, clip in zip(items, clips):
        n = clip["num_frames"]
        assert item["frames"].shape == (n, 128, 128, 3) and item["frames"].dtype == np.float32
        assert -1.0 <= item["frames"].min() and item["frames"].max() <= 1.0
        np.testing.assert_array_equal(item["indiv_mels"], audio.frame_mel_windows(clip["mel"], n))
        assert item["boxes"].shape == (n, 4) and item["has_face"].all() and item["fps"] == 25
    halves = [
        list(d2l_data.make_eval_loader(prepared, "train", shard_options=grain.sharding.ShardOptions(k, 2)))
        for k in range(2)
    ]
    assert sorted(it["clip_index"] for h in halves for it in h) == list(range(NUM_CLIPS))


def test_find_dataset_dir_and_errors(prepared, tmp_path):
    version_dir = d2l_data.find_dataset_dir(prepared)
    assert version_dir == prepared / "local_videos" / "1.0.0"
    assert d2l_data.find_dataset_dir(version_dir) == version_dir
    assert d2l_data.find_dataset_dir(prepared / "local_videos") == version_dir
    with pytest.raises(FileNotFoundError, match="no prepared dataset"):
        d2l_data.find_dataset_dir(tmp_path)
    with pytest.raises(ValueError, match="no split 'val'.*train"):
        d2l_data.open_split(prepared, "val")
    with pytest.raises(ValueError, match="multiple of the process count"):
        d2l_data.make_train_loader(
            prepared, "train", global_batch_size=3, shard_options=grain.sharding.ShardOptions(0, 2)
        )


def test_valid_window_starts():
    n, steps = 12, 200  # plenty of audio
    all_faces = d2l_data.valid_window_starts(np.ones(n, bool), steps)
    np.testing.assert_array_equal(np.flatnonzero(all_faces), np.arange(1, n - 5 + 1))
    gap = np.ones(n, bool)
    gap[6] = False  # windows covering frame 6 are out
    np.testing.assert_array_equal(np.flatnonzero(d2l_data.valid_window_starts(gap, steps)), [1, 7])
    only_five = np.zeros(n, bool)
    only_five[2:7] = True  # a window but no reference frame outside it
    assert not d2l_data.valid_window_starts(only_five, steps).any()
    # The last mel window of start s spans [int(3.2 (s + 3)), +16): s = 1 needs T >= 28, s = 2 T >= 32.
    short = d2l_data.valid_window_starts(np.ones(n, bool), 28)
    np.testing.assert_array_equal(np.flatnonzero(short), [1])
    assert not d2l_data.valid_window_starts(np.ones(5, bool), steps).any()
