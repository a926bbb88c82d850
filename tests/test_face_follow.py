"""FaceFollower on hand-made candidate lists: the chosen face is kept while another is listed first,
moves, or is absent; a returning face is picked up again."""

import numpy as np
import pytest

from diff2lip_jax.face.follow import FaceFollower, box_iou


def _frames(n, left, right, order_flips=True):
    """n frames of two faces (left one larger); the detector lists them in a changing order."""
    out = []
    for i in range(n):
        faces = [left(i), right(i)]
        faces = [f for f in faces if f is not None]
        if order_flips and i % 2:
            faces = faces[::-1]
        out.append(np.asarray([[*f, 0.9] for f in faces], np.float64).reshape(-1, 5))
    return out


def test_iou():
    assert box_iou([0, 0, 10, 10], np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])) == pytest.approx(
        [1.0, 1 / 3, 0.0]
    )


def test_largest_face_kept_though_listed_second_and_moving():
    left = lambda i: (100 + 2 * i, 100, 180 + 2 * i, 180)  # 80 px, drifting right
    right = lambda i: (400, 120, 460, 180)  # 60 px
    boxes, found = FaceFollower().update(_frames(40, left, right))
    assert found.all()
    np.testing.assert_array_equal(boxes, [left(i) for i in range(40)])


def test_face_index_and_hint_choose_the_other_face():
    left = lambda i: (100, 100, 180, 180)
    right = lambda i: (400, 120, 460, 180)
    boxes, found = FaceFollower(face_index=1).update(_frames(10, left, right))
    assert found.all() and (boxes == right(0)).all()
    boxes, _ = FaceFollower(hint=(390, 110, 470, 190)).update(_frames(10, left, right))
    assert (boxes == right(0)).all()


def test_absent_face_passes_through_and_is_picked_up_again():
    gone = range(10, 20)
    left = lambda i: None if i in gone else (100 + i, 100, 180 + i, 180)
    right = lambda i: (400, 120, 460, 180)
    follower = FaceFollower()
    frames = _frames(30, left, right)
    b1, f1 = follower.update(frames[:15])  # streaming: two chunks
    b2, f2 = follower.update(frames[15:])
    boxes, found = np.concatenate([b1, b2]), np.concatenate([f1, f2])
    assert not found[list(gone)].any()  # never jumps to the other face
    keep = [i for i in range(30) if i not in gone]
    assert found[keep].all()
    np.testing.assert_array_equal(boxes[keep], [left(i) for i in keep])


def test_no_faces_and_bad_index():
    boxes, found = FaceFollower().update([np.zeros((0, 5))] * 3)
    assert not found.any() and boxes.shape == (3, 4)
    boxes, found = FaceFollower(face_index=2).update(_frames(3, lambda i: (0, 0, 10, 10), lambda i: (50, 0, 60, 10)))
    assert not found.any()  # asks for a third face that never appears
    with pytest.raises(ValueError, match="--face_index=-1"):
        FaceFollower(face_index=-1)


def test_bad_index_fails_before_any_work():
    from diff2lip_jax.generate import frames as frames_lib

    # generate's check before the model loads and a frame is decoded; the index is checked
    # before the detector is looked at.
    with pytest.raises(ValueError, match="--face_index=-1"):
        frames_lib.check_face_choice(-1, None, detector=None)


# -- end to end: a two-face clip through the generate pipeline ------------------------------


@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory):
    """2 s at 25 fps: two clips of the synthetic photo identity (each its own mouth motion), the
    first at 160 px on the left, the second shrunk to 136 px on the right."""
    import cv2

    from data_pipelines.synthetic import generate_dataset
    from diff2lip_jax.video import VideoWriter, read_frames

    root = tmp_path_factory.mktemp("two_faces")
    manifest = generate_dataset(root, num_clips=2, seed=0, size=(160, 160), seconds=2.0, identities=1)
    a, b = (read_frames(root / c["video"]) for c in manifest["clips"])
    n = min(len(a), len(b))
    frames = np.zeros((n, 160, 304, 3), np.uint8)
    frames[:, :, :160] = a[:n]
    frames[:, 12:148, 164:300] = [cv2.resize(f, (136, 136), interpolation=cv2.INTER_AREA) for f in b[:n]]
    video = root / "two.mp4"
    with VideoWriter(video, fps=25, audio_path=root / manifest["clips"][0]["audio"]) as w:
        w.write(frames)
    return dict(video=video, audio=root / manifest["clips"][0]["audio"], frames=read_frames(video))


def test_two_face_clip_keeps_the_chosen_face(two_face_clip):
    from diff2lip_jax.face import make_detector
    from diff2lip_jax.generate import frames as frames_lib

    detector = make_detector("dlib")
    for face_index, inside in ((0, lambda b: b[:, 2] <= 165), (1, lambda b: b[:, 0] >= 160)):
        track, _ = frames_lib.scan_faces(two_face_clip["video"], detector, (0, 0, 0, 0), True, face_index=face_index)
        assert track.has_face.mean() > 0.9, track.has_face.mean()
        assert inside(track.boxes[track.has_face]).all(), (face_index, track.boxes[track.has_face][:3])
    hint = (12, 148, 164, 300)  # y1, y2, x1, x2 of the right face
    chosen = frames_lib.check_face_choice(0, hint, detector)
    track, _ = frames_lib.scan_faces(two_face_clip["video"], detector, (0, 0, 0, 0), True, face_hint=chosen)
    assert (track.boxes[track.has_face][:, 0] >= 160).all()


def test_generate_changes_only_the_followed_face(two_face_clip, generate_model_dir, tmp_path):
    from helpers_generate import BATCH, DDIM, ENCODING_TOL

    from diff2lip_jax.generate import generate
    from diff2lip_jax.video import read_frames

    out = tmp_path / "out.mp4"
    stats = generate(
        two_face_clip["video"],
        two_face_clip["audio"],
        out,
        checkpoint=generate_model_dir,
        ddim_steps=DDIM,
        batch_size=BATCH,
        face_detector="dlib",
        face_index=1,
        progress=False,
    )
    produced = read_frames(out).astype(np.float32)
    source = two_face_clip["frames"][: len(produced)].astype(np.float32)
    left = np.abs(produced[:, :, :160] - source[:, :, :160]).mean()
    right = np.abs(produced[:, :, 160:] - source[:, :, 160:]).mean()
    assert left < ENCODING_TOL and right > 2 * left, (left, right)
    assert stats["faces"] > 0.9 * stats["num_frames"]
    with pytest.raises(ValueError, match="fixed-box detectors have one"):
        generate(
            two_face_clip["video"], two_face_clip["audio"], tmp_path / "x.mp4", checkpoint=generate_model_dir,
            face_detector="voxceleb2", face_index=1,
        )  # fmt: skip
    assert not (tmp_path / "x.mp4").exists()
