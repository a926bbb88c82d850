"""Face detection and cropping: S3FD parity with the official net, post-processing,
box tracking (pads, gaps, smoothing), fixed crops, crop/paste, and loading s3fd.pth
safely. The offline dlib detector: tests/test_dlib_face.py."""

from __future__ import annotations

import json
import zlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from helpers import iou, rel_l2

from diff2lip_jax import face

RTOL = 1e-4  # relative L2 for a float32 port of a network (shared/reference/README.md)


# --------------------------------------------------------------------------- S3FD network


@pytest.fixture(scope="module")
def golden(reference_dir):
    meta = json.loads((reference_dir / "s3fd_golden.json").read_text())
    arrays = dict(np.load(reference_dir / "s3fd_golden.npz"))
    return meta, arrays


@pytest.fixture(scope="module")
def golden_state_dict(golden) -> dict[str, np.ndarray]:
    """The json's recipe: crc32-seeded normals; biases 0.1 n, other 1-D 1 + 0.1 n, kernels n / sqrt(fan_in)."""
    meta, _ = golden
    sd = {}
    for key, shape in meta["state_dict"]:
        n = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(shape)
        if len(shape) == 1:
            sd[key] = (0.1 * n if key.endswith(".bias") else 1.0 + 0.1 * n).astype(np.float32)
        else:
            sd[key] = (n * np.sqrt(1.0 / np.prod(shape[1:]))).astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def s3fd_apply():
    return jax.jit(face.S3FD().apply)


def test_state_dict_layout_matches_official(golden):
    meta, _ = golden
    assert list(face.state_dict_shapes().items()) == [(k, tuple(s)) for k, s in meta["state_dict"]]


def test_s3fd_golden_parity(golden, golden_state_dict, s3fd_apply):
    _, arrays = golden
    params = face.params_from_state_dict(golden_state_dict)
    x = jnp.asarray(arrays["input_nchw_bgr_minus_mean"].transpose(0, 2, 3, 1))
    outs = s3fd_apply({"params": params}, x)
    assert len(outs) == 12
    for i, out in enumerate(outs):
        ref = arrays[f"out{i}"].transpose(0, 2, 3, 1)
        assert out.shape == ref.shape, i
        assert rel_l2(out, ref) < RTOL, (i, rel_l2(out, ref))


# --------------------------------------------------------------------------- S3FD post-processing


def _synthetic_outputs(level_sizes, plants):
    """Raw maps, all background, with (level, h, w, face_logit, loc) cells planted."""
    outs = []
    for fh, fw in level_sizes:
        cls = np.zeros((1, fh, fw, 2), np.float32)
        cls[..., 0] = 6.0  # background: face score ~2.5e-3, below the 0.05 candidate threshold
        outs += [cls, np.zeros((1, fh, fw, 4), np.float32)]
    for level, h, w, logit, loc in plants:
        outs[2 * level][0, h, w] = [0.0, logit]
        outs[2 * level + 1][0, h, w] = loc
    return [jnp.asarray(o) for o in outs]


def _prior_box(stride, h, w, loc):
    side = 4.0 * stride
    cx = stride / 2 + w * stride + loc[0] * 0.1 * side
    cy = stride / 2 + h * stride + loc[1] * 0.1 * side
    bw, bh = side * np.exp(loc[2] * 0.2), side * np.exp(loc[3] * 0.2)
    return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def test_postprocess_decodes_planted_anchor_and_suppresses_duplicate():
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    best = (1, 3, 5, 6.0, (0.5, -0.25, 0.3, -0.2))  # stride 8, score sigmoid(6)
    dup = (1, 3, 6, 4.0, (-1.8, -0.25, 0.3, -0.2))  # next cell, shifted back onto `best`
    far = (3, 0, 0, 3.0, (0.0, 0.0, 0.0, 0.0))  # stride 32, 128 px: IoU with `best` ~0.06
    weak = (0, 15, 15, -0.2, (0.0, 0.0, 0.0, 0.0))  # score ~0.45: a candidate, not a face
    scores, boxes = face.decode_outputs(_synthetic_outputs(sizes, [best, dup, far, weak]))
    dets = face.select_detections(np.asarray(scores), np.asarray(boxes))
    assert len(dets) == 1 and dets[0].shape == (2, 5)

    expected = _prior_box(8, 3, 5, best[4])
    np.testing.assert_allclose(dets[0][0, :4], expected, rtol=1e-5, atol=1e-4)
    assert dets[0][0, 4] == pytest.approx(1 / (1 + np.exp(-6.0)), rel=1e-5)
    np.testing.assert_allclose(dets[0][1, :4], _prior_box(32, 0, 0, far[4]), atol=1e-4)
    # the duplicate really overlapped its keeper beyond the 0.3 NMS threshold
    assert iou(_prior_box(8, 3, 6, dup[4]), expected) > 0.5


def test_nms_keeps_disjoint_and_orders_by_score():
    dets = np.array([[0, 0, 10, 10, 0.6], [1, 1, 11, 11, 0.9], [50, 50, 60, 60, 0.7]], np.float32)
    assert face.nms(dets, 0.3).tolist() == [1, 2]


def test_s3fd_detector_batches_and_matches_reference_path(golden_state_dict, s3fd_apply):
    sd = dict(golden_state_dict)
    sd["conv7_2_mbox_conf.bias"] = np.array([-20.0, 20.0], np.float32)  # force faces at stride 128
    params = face.params_from_state_dict(sd)
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    detector = face.S3FDDetector(params, batch_size=2)
    boxes, found = detector(frames)
    assert detector._decode._cache_size() == 1  # 3 frames in 2 padded batches: one compile
    assert boxes.shape == (3, 4) and boxes.dtype == np.int64 and found.all()

    # reference: BGR minus mean by hand, the network, decode, select, clip at 0, truncate
    x = jnp.asarray(frames[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32))
    scores, dec = face.decode_outputs(s3fd_apply({"params": params}, x))
    ref = face.select_detections(np.asarray(scores), np.asarray(dec))
    for i, d in enumerate(ref):
        np.testing.assert_array_equal(boxes[i], np.clip(d[0, :4], 0, None).astype(np.int64))


# --------------------------------------------------------------------------- tracking


def official_smoothing(boxes: np.ndarray, window: int) -> np.ndarray:
    """The official loop's semantics: in place on an int array, tail windows fixed at the end."""
    b = np.array(boxes, np.int64)
    for i in range(len(b)):
        win = b[len(b) - window :] if i + window > len(b) else b[i : i + window]
        b[i] = np.mean(win, axis=0)
    return b


@pytest.mark.parametrize("n", [5, 6, 13])
def test_smoothing_equals_official(n):
    boxes = np.random.default_rng(n).integers(0, 500, (n, 4))
    np.testing.assert_array_equal(face.smooth_boxes(boxes), official_smoothing(boxes, 5))


def test_smoothing_short_clip_uses_whole_clip():
    boxes = np.array([[0, 0, 10, 10], [3, 3, 13, 13], [7, 7, 17, 17]])
    np.testing.assert_array_equal(face.smooth_boxes(boxes), official_smoothing(boxes, 3))
    assert face.smooth_boxes(boxes[:0]).shape == (0, 4)


def test_gap_filling_borrows_nearest_within_max_gap():
    n = 12
    boxes = np.zeros((n, 4), np.int64)
    boxes[:, 0] = np.arange(n)  # x1 identifies the source frame
    found = np.zeros(n, bool)
    found[[2, 3]] = True
    filled, has_face = face.fill_gaps(boxes, found, max_gap=2, height=100, width=100)
    # frames 0, 1 <- 2; 4, 5 <- 3 (within 2); 6.. <- 3 as well but too far: faceless
    assert filled[:, 0].tolist() == [2, 2, 2, 3] + [3] * 8
    assert has_face.tolist() == [True] * 6 + [False] * 6
    found[8] = True  # frame 5 is 2 from 3 and 3 from 8; frame 6 is 3 from 3 and 2 from 8
    filled, has_face = face.fill_gaps(boxes, found, max_gap=2, height=100, width=100)
    assert filled[4:11, 0].tolist() == [3, 3, 8, 8, 8, 8, 8]
    assert has_face.tolist() == [True] * 11 + [False]
    none, none_face = face.fill_gaps(boxes, np.zeros(n, bool), 5, height=90, width=160)
    assert (none == [0, 0, 160, 90]).all() and not none_face.any()


class _PlantedDetector:
    fixed = False

    def __init__(self, boxes, found):
        self.boxes, self.found = np.asarray(boxes, np.int64), np.asarray(found, bool)

    def __call__(self, frames):
        return self.boxes, self.found


def test_detect_faces_pads_clamps_fills_and_smooths():
    n, h, w = 9, 60, 80
    frames = np.zeros((n, h, w, 3), np.uint8)
    boxes = np.tile([10, 5, 70, 50], (n, 1)) + np.arange(n)[:, None]
    found = np.ones(n, bool)
    found[[4, 8]] = False
    track = face.detect_faces(frames, _PlantedDetector(boxes, found), pads="2,10,20,0", smooth=False, max_gap=1)
    assert track.has_face.all() and track.boxes.dtype == np.int64
    assert track.boxes[0].tolist() == [0, 3, 70, 60]  # x1 and y2 clamped
    assert track.boxes[4].tolist() == track.boxes[3].tolist()  # tie -> earlier frame
    assert track.official_boxes()[0].tolist() == [3, 60, 0, 70]
    smoothed = face.detect_faces(frames, _PlantedDetector(boxes, found), pads="2,10,20,0", max_gap=1)
    np.testing.assert_array_equal(smoothed.boxes, official_smoothing(track.boxes, 5))


# --------------------------------------------------------------------------- fixed crops


def test_voxceleb2_crop_numbers():
    # 224: int(224*2.36/8)=int(66.08)=66, int(224*1.8/8)=int(50.4)=50
    assert face.voxceleb2_box(224, 224) == (50, 0, 174, 158)
    # H=256, W=320: int(75.52)=75, int(72.0)=72
    assert face.voxceleb2_box(256, 320) == (72, 0, 248, 181)
    frames = np.random.default_rng(1).integers(0, 256, (2, 256, 320, 3), dtype=np.uint8)
    track = face.detect_faces(frames, face.make_detector("voxceleb2"), pads=(50, 50, 50, 50))
    assert track.has_face.all() and (track.boxes == [72, 0, 248, 181]).all()  # pads do not apply
    x1, y1, x2, y2 = track.boxes[0]
    official = frames[0][: -int(256 * 2.36 / 8), int(320 * 1.8 / 8) : -int(320 * 1.8 / 8)]
    np.testing.assert_array_equal(frames[0][y1:y2, x1:x2], official)


def test_user_box_is_top_bottom_left_right():
    frames = np.zeros((3, 100, 150, 3), np.uint8)
    track = face.detect_faces(frames, face.make_detector("box", box=(10, 90, 20, 120)))
    assert (track.boxes == [20, 10, 120, 90]).all() and track.has_face.all()
    clamped, _ = face.make_detector("box", box=(10, 500, 20, 500))(frames)
    assert clamped[0].tolist() == [20, 10, 150, 100]
    with pytest.raises(ValueError):
        face.make_detector("box", box=(50, 40, 0, 10))
    with pytest.raises(ValueError):
        face.make_detector("box")
    with pytest.raises(ValueError):
        face.make_detector("nope")


# --------------------------------------------------------------------------- crop / paste


def test_crop_and_paste_round_trip():
    photo = skimage.data.astronaut()[:300, :400]
    frames = np.stack([photo, photo[:, ::-1]])
    boxes = np.array([[170, 60, 290, 190], [150, 40, 300, 170]])
    crops = face.crop_and_resize(frames, boxes, size=128)
    assert crops.shape == (2, 128, 128, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(
        crops[0], cv2.resize(photo[60:190, 170:290], (128, 128), interpolation=cv2.INTER_LINEAR)
    )
    pasted = face.paste_back(frames, crops, boxes)
    assert (frames[0] == photo).all()  # inputs untouched
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        outside = np.ones(frames.shape[1:3], bool)
        outside[y1:y2, x1:x2] = False
        np.testing.assert_array_equal(pasted[i][outside], frames[i][outside])
        inside = np.abs(pasted[i][y1:y2, x1:x2].astype(np.int32) - frames[i][y1:y2, x1:x2])
        assert inside.mean() < 4.0 and np.median(inside) <= 2, inside.mean()  # resampling blur only


# --------------------------------------------------------------------------- loading s3fd.pth

_UNPICKLED: list[str] = []


def _record(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _CarriesCode:
    """Pickles as a call to `_record`: a loader that executes it would append to _UNPICKLED."""

    def __reduce__(self):
        return (_record, ("executed",))


def test_load_pth_and_refuse_code(tmp_path, golden, golden_state_dict, s3fd_apply, monkeypatch):
    torch = pytest.importorskip("torch")
    _, arrays = golden
    path = tmp_path / "s3fd.pth"
    torch.save({k: torch.from_numpy(v) for k, v in golden_state_dict.items()}, path)
    params = face.load_s3fd_params(path)
    assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    x = jnp.asarray(arrays["input_nchw_bgr_minus_mean"].transpose(0, 2, 3, 1))
    outs = s3fd_apply({"params": params}, x)
    for i, out in enumerate(outs):
        assert rel_l2(out, arrays[f"out{i}"].transpose(0, 2, 3, 1)) < RTOL, i
    assert isinstance(face.make_detector("s3fd", weights_path=path, batch_size=1), face.S3FDDetector)

    evil = tmp_path / "evil.pth"
    torch.save({"conv1_1.weight": torch.zeros(1), "payload": _CarriesCode()}, evil)
    with pytest.raises(ValueError, match="refused, the file holds pickled code"):
        face.load_s3fd_params(evil)
    assert _UNPICKLED == []

    partial = tmp_path / "partial.pth"
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(ValueError, match="missing keys"):
        face.load_s3fd_params(partial)
    with pytest.raises(FileNotFoundError, match="adrianbulat"):
        face.load_s3fd_params(tmp_path / "absent.pth")
    # No path: the weights registry's copy, fetched on first use; offline that is one error
    # naming the URL and where the file goes (port 9: nothing listens on 127.0.0.1).
    from diff2lip_jax import weights

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(weights.WeightsError, match=r"127\.0\.0\.1:9/s3fd-619a316812\.pth.*put the file at"):
        face.make_detector("s3fd")
