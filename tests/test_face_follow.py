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
