"""Synthetic identities (a real photo with variations, and drawn faces) and the mouth.

An :class:`Identity` is a still "scene" image (uint8 RGB, scene coordinates) with
the mouth erased, plus where its face and mouth are. Each video frame draws the
mouth into the scene (:func:`draw_mouth`) and then views the scene through a
moving camera (``clip.py``). Geometry is chosen so that the mouth, even fully
open, lies in the lower half of the face box, which is the half Diff2Lip masks.

Face box convention (the kind of box a face detector returns): x from cheek to
cheek, y from the hairline/brow to the chin.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from data_pipelines.synthetic.voice import Voice, make_voice

# Landmarks of skimage.data.astronaut() (512x512), measured once by eye.
_PHOTO_FACE_BOX = (178.0, 70.0, 272.0, 180.0)  # hairline to chin, cheek to cheek
_PHOTO_MOUTH = (225.0, 145.0)  # centre of the (smiling) mouth, erased
# The synthetic mouth sits 2 px lower, so that even wide open and rolled it keeps a
# margin from the face box's midline (the official crop adds 10 px below the chin,
# which lowers that midline).
_PHOTO_NEW_MOUTH_DY = 2.0
_PHOTO_MOUTH_HALF_WIDTH = 19.0
_PHOTO_ERASE_AXES = (26, 12)  # ellipse that covers the original lips and teeth

# A range of human skin tones (RGB), light to dark.
_SKIN = np.array(
    [[255, 224, 196], [241, 194, 150], [224, 172, 125], [198, 134, 96], [141, 85, 56], [92, 58, 38]], float
)
_HAIR = np.array([[30, 22, 18], [70, 45, 25], [140, 95, 50], [200, 170, 110], [120, 120, 120], [160, 60, 30]], float)
_IRIS = np.array([[70, 45, 25], [40, 90, 140], [60, 110, 60], [30, 25, 20]], float)


FloatOrArray = float | np.ndarray


@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic person.

    Attributes:
      index: identity number (also the speaker number).
      kind: "photo" (astronaut variant) or "drawn".
      scene: uint8 ``[Hs, Ws, 3]`` RGB, mouth erased (neutral skin).
      face_box: ``(x1, y1, x2, y2)`` in scene pixels.
      mouth_center: ``(x, y)`` in scene pixels.
      mouth_half_width: lip corner distance from the centre at neutral width, scene px.
      mouth_max_open: half-height of the fully open mouth opening, scene px.
      lip_thickness: scene px.
      lip_color, inner_color, teeth_color: RGB floats.
      face_fraction: face box width as a share of the output's shorter side.
      offset: face centre offset from the frame centre, in shorter-side units ``(dx, dy)``.
      tilt: static head roll in degrees.
      voice: the speaker's voice.
    """

    index: int
    kind: str
    scene: np.ndarray
    face_box: tuple[float, float, float, float]
    mouth_center: tuple[float, float]
    mouth_half_width: float
    mouth_max_open: float
    lip_thickness: float
    lip_color: tuple[float, float, float]
    inner_color: tuple[float, float, float]
    teeth_color: tuple[float, float, float]
    face_fraction: float
    offset: tuple[float, float]
    tilt: float
    voice: Voice


@functools.lru_cache(maxsize=1)
def _astronaut_without_mouth() -> np.ndarray:
    """skimage's astronaut with her smile inpainted away: uint8 ``[512, 512, 3]`` RGB."""
    from skimage import data  # the image ships inside scikit-image: no download

    img = np.ascontiguousarray(data.astronaut()[..., :3])
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, (int(_PHOTO_MOUTH[0]), int(_PHOTO_MOUTH[1])), _PHOTO_ERASE_AXES, 0, 0, 360, 255, -1)
    filled = cv2.inpaint(img, mask, 9, cv2.INPAINT_TELEA)
    # Telea inpainting leaves streaks; blurring inside the (feathered) mask hides them.
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3.0)[..., None]
    out = (filled * (1.0 - soft) + cv2.GaussianBlur(filled, (0, 0), 3.0) * soft + 0.5).astype(np.uint8)
    out.setflags(write=False)
    return out


def _recolor(img: np.ndarray, hue_deg: float, saturation: float, brightness: float) -> np.ndarray:
    """Hue rotation (degrees), saturation and brightness scaling of a uint8 RGB image."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_deg / 2.0, 180.0)  # OpenCV hue is degrees / 2
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _photo_identity(index: int, rng: np.random.Generator, voice: Voice) -> Identity:
    """The astronaut photo; identities after the first get a new hue, tone, mirror and framing."""
    img = _astronaut_without_mouth()
    box, mouth = _PHOTO_FACE_BOX, (_PHOTO_MOUTH[0], _PHOTO_MOUTH[1] + _PHOTO_NEW_MOUTH_DY)
    if index > 0:
        hue = float(rng.choice([-1.0, 1.0]) * rng.uniform(20.0, 45.0))
        img = _recolor(img, hue, float(rng.uniform(0.7, 1.4)), float(rng.uniform(0.75, 1.1)))
        if rng.random() < 0.5:  # mirror image: x -> W - x (pixel-edge coordinates)
            w = img.shape[1]
            img = np.ascontiguousarray(img[:, ::-1])
            box, mouth = (w - box[2], box[1], w - box[0], box[3]), (w - mouth[0], mouth[1])
    # Lips: the skin around the mouth, reddened and darkened.
    x, y = int(mouth[0]), int(mouth[1])
    skin = np.median(img[y - 6 : y + 6, x - 20 : x + 20].reshape(-1, 3), axis=0).astype(float)
    lip = skin * np.array([0.78, 0.45, 0.5])
    scene = np.ascontiguousarray(img)
    scene.setflags(write=False)
    return Identity(
        index=index,
        kind="photo",
        scene=scene,
        face_box=box,
        mouth_center=mouth,
        mouth_half_width=_PHOTO_MOUTH_HALF_WIDTH * float(rng.uniform(0.9, 1.1)),
        mouth_max_open=10.0,
        lip_thickness=3.2,
        lip_color=_rgb(lip),
        inner_color=(45.0, 12.0, 18.0),
        teeth_color=(235.0, 230.0, 215.0),
        voice=voice,
        **_framing(rng, 6.0 if index > 0 else 0.0),
    )


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _rgb(colour: np.ndarray) -> tuple[float, float, float]:
    return float(colour[0]), float(colour[1]), float(colour[2])


def _ellipse(
    img: np.ndarray, x: float, y: float, a: float, b: float, colour: tuple, arc=(0, 360), thickness: int = -1
) -> None:
    """Anti-aliased (filled, by default) ellipse centred at ``(x, y)`` with half-axes ``(a, b)``."""
    axes = (max(1, int(round(a))), max(1, int(round(b))))
    cv2.ellipse(img, _pt(x, y), axes, 0, arc[0], arc[1], colour, thickness, cv2.LINE_AA)


def _framing(rng: np.random.Generator, max_tilt: float) -> dict:
    """Where the face sits in the output: its width share, offset from centre and static roll."""
    return dict(
        face_fraction=float(rng.uniform(0.42, 0.52)),
        offset=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.04, 0.04))),
        tilt=float(rng.uniform(-max_tilt, max_tilt)),
    )


def _drawn_identity(index: int, rng: np.random.Generator, voice: Voice) -> Identity:
    """A cartoon face: background, shoulders, neck, ears, head, hair, eyes, brows, nose."""
    size = 512
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    scene = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (size, size, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(3, 7))):  # background clutter, so the background is not flat
        colour = _rgb(rng.uniform(30, 240, 3))
        p = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            cv2.circle(scene, _pt(*p), int(rng.uniform(20, 90)), colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(scene, _pt(*p), _pt(*(p + rng.uniform(30, 160, 2))), colour, -1, cv2.LINE_AA)
    scene = cv2.GaussianBlur(scene, (0, 0), 2.0)

    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.05, 3), 0, 255)
    hair = _rgb(_HAIR[rng.integers(len(_HAIR))])
    cx, cy = 256.0 + rng.uniform(-10, 10), 235.0 + rng.uniform(-10, 10)
    ax, ay = rng.uniform(88, 108), rng.uniform(118, 140)  # head half-axes
    shade = _rgb(skin * 0.85)
    shirt = _rgb(rng.uniform(20, 230, 3))
    long_hair, bald = rng.random() < 0.4, rng.random() < 0.15
    if long_hair and not bald:
        _ellipse(scene, cx, cy + 0.1 * ay, 1.25 * ax, 1.25 * ay, hair)
    _ellipse(scene, cx, size + 40, 2.3 * ax, 1.35 * ay, shirt)  # shoulders
    neck = (_pt(cx - 0.45 * ax, cy + 0.5 * ay), _pt(cx + 0.45 * ax, cy + 1.45 * ay))
    cv2.rectangle(scene, *neck, shade, -1, cv2.LINE_AA)
    for side in (-1, 1):  # ears
        _ellipse(scene, cx + side * 0.97 * ax, cy - 0.05 * ay, 0.18 * ax, 0.22 * ay, shade)
    if not bald:
        _ellipse(scene, cx, cy - 0.2 * ay, 1.06 * ax, 0.95 * ay, hair)
    _ellipse(scene, cx, cy, ax, ay, _rgb(skin))
    # Round shading: darker towards the face outline, for some depth.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    factor = np.where(r2 < 1.0, 1.0 - 0.22 * r2**2, 1.0)[..., None]
    scene = np.clip(scene * factor, 0, 255).astype(np.uint8)
    if not bald:  # fringe: the upper half of an ellipse over the forehead
        _ellipse(scene, cx, cy - 0.62 * ay, 0.99 * ax, 0.42 * ay, hair, arc=(180, 360))

    eye_y, eye_dx = cy - 0.2 * ay, 0.38 * ax
    iris = _rgb(_IRIS[rng.integers(len(_IRIS))])
    brow = _rgb(np.array(hair) * 0.7 if not bald else skin * 0.5)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        _ellipse(scene, ex, eye_y, 0.17 * ax, 0.075 * ay, (245, 245, 240))
        cv2.circle(scene, _pt(ex, eye_y), int(round(0.075 * ax)), iris, -1, cv2.LINE_AA)
        cv2.circle(scene, _pt(ex, eye_y), int(round(0.035 * ax)), (10, 10, 10), -1, cv2.LINE_AA)
        _ellipse(scene, ex, eye_y - 0.12 * ay, 0.2 * ax, 0.05 * ay, brow, arc=(200, 340), thickness=5)
    if rng.random() < 0.3:  # glasses
        frame, r = (25, 25, 30), 0.26 * ax
        for side in (-1, 1):
            cv2.circle(scene, _pt(cx + side * eye_dx, eye_y), int(r), frame, 3, cv2.LINE_AA)
        cv2.line(scene, _pt(cx - eye_dx + r, eye_y), _pt(cx + eye_dx - r, eye_y), frame, 3, cv2.LINE_AA)
    nose = _rgb(skin * 0.72)
    cv2.line(scene, _pt(cx + 0.04 * ax, eye_y + 0.1 * ay), _pt(cx + 0.1 * ax, cy + 0.27 * ay), nose, 3, cv2.LINE_AA)
    for side in (-1, 1):  # nostrils
        _ellipse(scene, cx + side * 0.1 * ax, cy + 0.3 * ay, 0.07 * ax, 0.035 * ay, nose)

    scene.setflags(write=False)
    lip = np.clip(skin * np.array([0.8, 0.48, 0.5]) + np.array([25.0, 0.0, 0.0]), 0, 255)
    # Face box from the brow line to the chin; the mouth (centre at 0.58 ay below the
    # head centre, opening up to 0.13 ay) stays below the box midline at 0.19 ay.
    return Identity(
        index=index,
        kind="drawn",
        scene=scene,
        face_box=(float(cx - ax), float(cy - 0.62 * ay), float(cx + ax), float(cy + ay + 2.0)),
        mouth_center=(float(cx), float(cy + 0.58 * ay)),
        mouth_half_width=float(0.32 * ax),
        mouth_max_open=float(0.13 * ay),
        lip_thickness=float(0.07 * ay),
        lip_color=_rgb(lip),
        inner_color=(40.0, 10.0, 15.0),
        teeth_color=(240.0, 238.0, 228.0),
        voice=voice,
        **_framing(rng, 5.0),
    )


@functools.lru_cache(maxsize=64)
def make_identity(seed: int, index: int) -> Identity:
    """Identity ``index`` of dataset ``seed``: even indices are photo variants, odd ones drawn.

    Deterministic: the appearance stream is ``default_rng([seed, 1, index])`` and the
    voice stream ``default_rng([seed, 2, index])``. Identity 0 is the unmodified photo.
    """
    voice = make_voice(np.random.default_rng([seed, 2, index]))
    rng = np.random.default_rng([seed, 1, index])
    return _photo_identity(index, rng, voice) if index % 2 == 0 else _drawn_identity(index, rng, voice)


def _ellipse_alpha(x: np.ndarray, y: np.ndarray, a: FloatOrArray, b: FloatOrArray) -> np.ndarray:
    """Anti-aliased coverage (0..1) of the ellipse ``(x/a)^2 + (y/b)^2 <= 1`` at pixel centres.

    Uses the first-order distance ``f / |grad f|`` to the boundary, which is exact
    enough for a one-pixel soft edge even for very flat ellipses (a closed mouth).
    """
    f = (x / a) ** 2 + (y / b) ** 2 - 1.0
    grad = 2.0 * np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2)
    return np.clip(0.5 - f / np.maximum(grad, 1e-6), 0.0, 1.0)


def mouth_shape(ident: Identity, opening: FloatOrArray, width: FloatOrArray) -> tuple[FloatOrArray, FloatOrArray]:
    """Half-width and half-height (scene px) of the mouth opening for audio features in [0, 1].

    Works elementwise on floats or arrays ``[F]``.
    """
    a = ident.mouth_half_width * (0.8 + 0.4 * width) * (1.0 - 0.1 * opening)  # an open mouth narrows a little
    return a, ident.mouth_max_open * opening


def draw_mouth(canvas: np.ndarray, ident: Identity, opening: float, width: float) -> tuple[int, int, int, int]:
    """Draws the mouth into ``canvas`` (uint8 ``[Hs, Ws, 3]``, modified in place).

    Lips are a ring around a dark opening whose half-height is ``opening *
    mouth_max_open``; a closed mouth leaves a thin dark seam between the lips; upper
    teeth show once the opening exceeds ~3 px.

    Returns:
      The touched patch ``(x0, y0, x1, y1)`` in scene pixels (exclusive ends), which
      the caller restores from the clean scene before drawing the next frame.
    """
    a, b = mouth_shape(ident, opening, width)
    cx, cy = ident.mouth_center
    lt = ident.lip_thickness
    x0, x1 = int(np.floor(cx - a - lt - 2)), int(np.ceil(cx + a + lt + 3))
    y0, y1 = int(np.floor(cy - b - lt - 2)), int(np.ceil(cy + b + 1.3 * lt + 3))
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, canvas.shape[0]), min(x1, canvas.shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    x, y = xx + 0.5 - cx, yy + 0.5 - cy
    # The lower lip is fuller than the upper one.
    outer_b = np.where(y < 0, b + 0.85 * lt, b + 1.25 * lt)
    lips = _ellipse_alpha(x, y, a + 0.5 * lt, outer_b)
    inner = _ellipse_alpha(x, y, a, max(b, 0.45))
    teeth = np.zeros_like(inner)
    if b > 3.0:
        teeth_edge = -b + min(0.4 * b, 1.2 * lt)  # upper teeth: a band under the upper lip
        teeth = inner * np.clip(teeth_edge - y + 0.5, 0.0, 1.0) * _ellipse_alpha(x, y, 0.8 * a, b)
    patch = canvas[y0:y1, x0:x1].astype(np.float32)
    for alpha, colour in ((lips, ident.lip_color), (inner, ident.inner_color), (teeth, ident.teeth_color)):
        patch += alpha[..., None] * (np.asarray(colour, np.float32) - patch)
    canvas[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    return x0, y0, x1, y1
