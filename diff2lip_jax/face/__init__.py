"""Face detection and cropping for Diff2Lip.

Detectors (`make_detector`): S3FD in Flax (the official detector, weights from
a local `s3fd.pth`), an offline LBP cascade (default), the official fixed
VoxCeleb2 crop, and a user box. `detect_faces` turns frames into a `FaceTrack`
(pads, gap filling, the official 5-frame smoothing: `track_from_detections`,
which generation and data preparation also use); `crop_and_resize` and
`paste_back` move faces between frames and 128 px crops.

Frames are [N,H,W,3] uint8 RGB; boxes are int64 (x1, y1, x2, y2), end exclusive.
"""

from diff2lip_jax.face.detectors import (
    DETECTOR_KINDS,
    CascadeDetector,
    FaceDetector,
    FixedCropDetector,
    make_detector,
    voxceleb2_box,
)
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
    "CascadeDetector",
    "FaceDetector",
    "FixedCropDetector",
    "make_detector",
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
