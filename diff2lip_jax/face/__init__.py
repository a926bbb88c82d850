"""Face detection and cropping for Diff2Lip.

Detectors (`make_detector`): S3FD in Flax (the official detector, weights from
the `diff2lip_jax.weights` cache), dlib's HOG detector (offline; boxes mapped to
S3FD's convention, refined by dlib's 68 landmarks with the `landmarks` extra),
the official fixed VoxCeleb2 crop, and a user box. Default: S3FD when its
weights are at hand, else dlib (`resolve_detector_kind`). `detect_faces` turns frames into a `FaceTrack`
(pads, gap filling, the official 5-frame smoothing: `track_from_detections`,
which generation and data preparation also use); `crop_and_resize` and
`paste_back` move faces between frames and 128 px crops.

Frames are [N,H,W,3] uint8 RGB; boxes are int64 (x1, y1, x2, y2), end exclusive.
"""

from diff2lip_jax.face.detectors import (
    DETECTOR_KINDS,
    OFFICIAL_CROP_KINDS,
    FaceDetector,
    FixedCropDetector,
    default_detector_kind,
    make_detector,
    resolve_detector_kind,
    voxceleb2_box,
)
from diff2lip_jax.face.dlib_hog import HOG_TO_S3FD, DlibDetector, DlibLandmarks, map_hog_box
from diff2lip_jax.face.landmarks import have_shape_predictor, landmark_box
from diff2lip_jax.face.s3fd import (
    S3FD,
    S3FD_WEIGHTS_URL,
    S3FDDetector,
    decode_outputs,
    load_s3fd_params,
    nms,
    params_from_state_dict,
    select_detections,
    state_dict_shapes,
)
from diff2lip_jax.face.track import (
    MAX_GAP,
    SMOOTH_WINDOW,
    FaceTrack,
    apply_pads,
    crop_and_resize,
    detect_faces,
    fill_gaps,
    parse_pads,
    paste_back,
    smooth_boxes,
    track_from_detections,
)

__all__ = [
    "DETECTOR_KINDS",
    "OFFICIAL_CROP_KINDS",
    "FaceDetector",
    "default_detector_kind",
    "FixedCropDetector",
    "make_detector",
    "resolve_detector_kind",
    "HOG_TO_S3FD",
    "DlibDetector",
    "map_hog_box",
    "DlibLandmarks",
    "have_shape_predictor",
    "landmark_box",
    "voxceleb2_box",
    "S3FD",
    "S3FD_WEIGHTS_URL",
    "S3FDDetector",
    "decode_outputs",
    "load_s3fd_params",
    "nms",
    "params_from_state_dict",
    "select_detections",
    "state_dict_shapes",
    "MAX_GAP",
    "SMOOTH_WINDOW",
    "FaceTrack",
    "apply_pads",
    "crop_and_resize",
    "detect_faces",
    "fill_gaps",
    "parse_pads",
    "paste_back",
    "smooth_boxes",
    "track_from_detections",
]
