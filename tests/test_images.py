"""The single homes of shared ideas: value-range conversions (diff2lip_jax.images), the
conditioning inputs (diff2lip_jax.conditioning), face-box post-processing
(face.track_from_detections) and the shared constants."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax import conditioning, constants, face
from diff2lip_jax.images import uint8_to_unit, unit_to_uint8_round, unit_to_uint8_truncate

LEVELS = np.arange(256, dtype=np.uint8)

# The conversions as each caller wrote them before they had one home (frozen copies).


def _old_records_to_unit_range(x):  # data/records.py
    return np.asarray(x, np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def _old_generate_to_unit(x):  # generate/model.py, under jit
    return x.astype(jnp.float32) / 255.0 * 2.0 - 1.0


def _old_lse_to_unit(x):  # evaluate/lse.py, under jit
    return x.astype(jnp.float32) / 127.5 - 1.0


def _old_generate_to_uint8(x):  # generate/model.py, under jit
    return (jnp.clip((x + 1.0) * 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def _old_reporting_to_uint8(x):  # train/reporting.py
    return np.clip((np.asarray(x, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def test_uint8_to_unit_known_values():
    got = uint8_to_unit(np.array([0, 255, 128], np.uint8))
    assert got.dtype == np.float32
    assert got[0] == -1.0 and got[1] == 1.0
    assert got[2] == np.float32(128) * np.float32(1 / 127.5) - np.float32(1)  # 0.0039215..
    assert abs(float(got[2]) - 1 / 255) < 1e-7  # 128 / 127.5 - 1 = 1/255


def test_uint8_to_unit_matches_each_old_form():
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(uint8_to_unit(images), _old_records_to_unit_range(images))
    np.testing.assert_array_equal(uint8_to_unit(LEVELS), _old_records_to_unit_range(LEVELS))
    new = np.asarray(jax.jit(uint8_to_unit)(LEVELS))
    assert new.dtype == np.float32
    np.testing.assert_array_equal(new, np.asarray(jax.jit(_old_generate_to_unit)(LEVELS)))
    np.testing.assert_array_equal(new, np.asarray(jax.jit(_old_lse_to_unit)(LEVELS)))
    np.testing.assert_allclose(new, LEVELS / 127.5 - 1.0, atol=1e-7)


def test_unit_to_uint8_truncate_known_values():
    x = np.array([-2.0, -1.0, 0.0, 1 / 255, 0.0039, 1.0, 1.5], np.float32)
    want = np.array([0, 0, 127, 128, 127, 255, 255], np.uint8)  # 0 -> 127.5 truncated
    np.testing.assert_array_equal(unit_to_uint8_truncate(x), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(unit_to_uint8_truncate)(jnp.asarray(x))), want)
    assert unit_to_uint8_truncate(x).dtype == np.uint8


def test_unit_to_uint8_round_known_values():
    x = np.array([-2.0, -1.0, 2 / 255 - 1, -0.5, 0.0, 0.0039, 1.0, 1.5], np.float32)
    want = np.array([0, 0, 1, 64, 128, 128, 255, 255], np.uint8)  # round half up: 0 -> 128
    np.testing.assert_array_equal(unit_to_uint8_round(x), want)
    np.testing.assert_array_equal(np.asarray(unit_to_uint8_round(jnp.asarray(x))), want)


def test_unit_to_uint8_match_each_old_form():
    rng = np.random.default_rng(12)
    x = rng.uniform(-1.2, 1.2, (4, 8, 8, 3)).astype(np.float32)
    grey = uint8_to_unit(LEVELS)
    for v in (x, grey):
        np.testing.assert_array_equal(unit_to_uint8_round(v), _old_reporting_to_uint8(v))
        np.testing.assert_array_equal(
            np.asarray(jax.jit(unit_to_uint8_truncate)(v)), np.asarray(jax.jit(_old_generate_to_uint8)(v))
        )
    np.testing.assert_array_equal(unit_to_uint8_round(grey), LEVELS)  # rounding recovers every level


def test_lower_half_mask():
    m = np.asarray(conditioning.lower_half_mask(2, 8))
    assert m.shape == (2, 8, 8, 1) and m.dtype == np.float32
    np.testing.assert_array_equal(m[:, :4], 0.0)
    np.testing.assert_array_equal(m[:, 4:], 1.0)
    assert conditioning.first_hidden_row(128) == 64
    m = np.asarray(conditioning.lower_half_mask(1, 10, hide=0.25))  # rows >= int(10 * 0.75) = 7
    np.testing.assert_array_equal(m[0, :, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])


def test_cond_img_and_composite():
    k1, k2 = jax.random.split(jax.random.key(3))
    x = jax.random.uniform(k1, (2, 8, 8, 3), minval=-1, maxval=1)
    noise = jax.random.normal(k2, x.shape)
    mask = conditioning.lower_half_mask(2, 8)
    cond = np.asarray(conditioning.masked_cond_img(x, mask, noise))
    np.testing.assert_array_equal(cond[:, :4], np.asarray(x)[:, :4])
    np.testing.assert_array_equal(cond[:, 4:], np.asarray(noise)[:, 4:])
    both = np.asarray(conditioning.composite(noise, x, mask))
    np.testing.assert_array_equal(both, cond)

    batch = {
        "frames": jnp.reshape(x, (1, 2, 8, 8, 3)),
        "ref": x[:1],
        "indiv_mels": jnp.zeros((1, 2, constants.NUM_MELS, constants.MEL_STEPS_PER_WINDOW)),
    }
    x0, kw = conditioning.model_inputs(batch, mask, noise)
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(kw["cond_img"]), cond)
    assert kw["ref_img"].shape == (2, 8, 8, 3) and kw["indiv_mels"].shape == (2, 80, 16)

    # nrefer = 2: [B, 2, H, W, 3] references stacked on channels, in order, for every frame.
    refs = jax.random.uniform(k2, (1, 2, 8, 8, 3))
    _, kw = conditioning.model_inputs({**batch, "ref": refs}, mask, noise)
    ref_img = np.asarray(kw["ref_img"])
    assert ref_img.shape == (2, 8, 8, 6)
    for frame in range(2):
        np.testing.assert_array_equal(ref_img[frame, ..., :3], np.asarray(refs)[0, 0])
        np.testing.assert_array_equal(ref_img[frame, ..., 3:], np.asarray(refs)[0, 1])


def test_track_from_detections_is_detect_faces_post_processing():
    class Fake:
        fixed = False

        def __call__(self, frames):
            n = len(frames)
            boxes = np.tile(np.array([10, 12, 40, 44], np.int64), (n, 1)) + np.arange(n)[:, None]
            found = np.ones(n, bool)
            found[[2, 3]] = False
            return boxes, found

    frames = np.zeros((9, 60, 50, 3), np.uint8)
    det = Fake()
    raw_boxes, raw_found = det(frames)
    want = face.track_from_detections(raw_boxes, raw_found, 60, 50, pads=(1, 2, 3, 4), smooth=True)
    got = face.detect_faces(frames, det, pads=(1, 2, 3, 4))
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.has_face, want.has_face)
    manual = face.smooth_boxes(
        face.fill_gaps(face.apply_pads(raw_boxes, (1, 2, 3, 4), 60, 50), raw_found, 5, 60, 50)[0]
    )
    np.testing.assert_array_equal(want.boxes, manual)
    fixed = face.track_from_detections(raw_boxes, raw_found, 60, 50, fixed=True, pads=(9, 9, 9, 9))
    np.testing.assert_array_equal(fixed.boxes, raw_boxes)
    np.testing.assert_array_equal(fixed.has_face, raw_found)


def test_constants():
    assert constants.SAMPLES_PER_FRAME * constants.FPS == constants.SAMPLE_RATE
    assert (
        constants.MEL_STEPS_PER_WINDOW * constants.FPS == constants.MEL_STEPS_PER_SECOND * constants.FRAMES_PER_WINDOW
    )
