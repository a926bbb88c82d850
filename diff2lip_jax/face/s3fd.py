"""S3FD face detector (Zhang et al. 2017) in Flax, as bundled with Diff2Lip/Wav2Lip.

The network matches the official `face_detection/detection/sfd/net_s3fd.py`
layer for layer (NHWC here, NCHW there); submodules carry the PyTorch
state_dict names, so the official `s3fd.pth` maps onto the params by name.
Post-processing follows the official `batch_detect` + `detect_from_batch` +
`get_detections_for_batch`: softmax over {background, face}, prior-box decoding
(variances 0.1/0.2, strides 4..128, square anchors of 4x the stride), candidate
scores > 0.05, NMS at IoU 0.3 (pixel-inclusive areas), keep scores > 0.5, and the
best remaining box per image.

The official weights are at
https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth ; this
module never downloads them: pass the path of a local copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.torch_io import check_state_dict, kernel_to_flax, load_state_dict_file

S3FD_WEIGHTS_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"

# BGR channel means the detector was trained with (subtracted in BGR order).
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)
VARIANCES = (0.1, 0.2)
CANDIDATE_THRESHOLD = 0.05
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.3

# (name, out channels, kernel, stride, padding) for the trunk, in forward order;
# "pool" is a 2x2/2 max pool (floor, as torch's default ceil_mode=False).
_TRUNK: tuple[tuple[str, int, int, int, int] | str, ...] = (
    ("conv1_1", 64, 3, 1, 1),
    ("conv1_2", 64, 3, 1, 1),
    "pool",
    ("conv2_1", 128, 3, 1, 1),
    ("conv2_2", 128, 3, 1, 1),
    "pool",
    ("conv3_1", 256, 3, 1, 1),
    ("conv3_2", 256, 3, 1, 1),
    ("conv3_3", 256, 3, 1, 1),
    "f3_3",
    "pool",
    ("conv4_1", 512, 3, 1, 1),
    ("conv4_2", 512, 3, 1, 1),
    ("conv4_3", 512, 3, 1, 1),
    "f4_3",
    "pool",
    ("conv5_1", 512, 3, 1, 1),
    ("conv5_2", 512, 3, 1, 1),
    ("conv5_3", 512, 3, 1, 1),
    "f5_3",
    "pool",
    # fc6 keeps padding 3 with a 3x3 kernel (no dilation): its map is 4 px larger than the input.
    ("fc6", 1024, 3, 1, 3),
    ("fc7", 1024, 1, 1, 0),
    "fc7",
    ("conv6_1", 256, 1, 1, 0),
    ("conv6_2", 512, 3, 2, 1),
    "f6_2",
    ("conv7_1", 128, 1, 1, 0),
    ("conv7_2", 256, 3, 2, 1),
    "f7_2",
)
# (source feature, L2Norm scale or None, head prefix, conf channels); order = output order.
_HEADS: tuple[tuple[str, float | None, str, int], ...] = (
    ("f3_3", 10.0, "conv3_3_norm", 4),
    ("f4_3", 8.0, "conv4_3_norm", 2),
    ("f5_3", 5.0, "conv5_3_norm", 2),
    ("fc7", None, "fc7", 2),
    ("f6_2", None, "conv6_2", 2),
    ("f7_2", None, "conv7_2", 2),
)
STRIDES = tuple(2 ** (i + 2) for i in range(len(_HEADS)))  # 4, 8, ..., 128


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (init `scale`)."""

    scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.constant(self.scale), (x.shape[-1],), jnp.float32)
        # eps is added to the norm, not under the square root, as in the official layer.
        norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10
        return x / norm * weight


class S3FD(nn.Module):
    """The S3FD network: x [B,H,W,3] float32, BGR minus `BGR_MEAN` -> 12 raw maps.

    Returns `[cls1, reg1, ..., cls6, reg6]`, NHWC: cls_i [B,h_i,w_i,2] logits
    (background, face), reg_i [B,h_i,w_i,4] offsets (dx, dy, dw, dh). cls1 is the
    max-out of three background logits and the face logit, as the official net.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        feats: dict[str, jax.Array] = {}
        h = x
        for item in _TRUNK:
            if item == "pool":
                h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
            elif isinstance(item, str):
                feats[item] = h
            else:
                name, ch, k, s, p = item
                h = nn.relu(nn.Conv(ch, (k, k), strides=(s, s), padding=[(p, p), (p, p)], name=name)(h))
        outs: list[jax.Array] = []
        for src, scale, prefix, conf_ch in _HEADS:
            f = feats[src] if scale is None else L2Norm(scale, name=prefix)(feats[src])
            cls = nn.Conv(conf_ch, (3, 3), padding=[(1, 1), (1, 1)], name=f"{prefix}_mbox_conf")(f)
            reg = nn.Conv(4, (3, 3), padding=[(1, 1), (1, 1)], name=f"{prefix}_mbox_loc")(f)
            if conf_ch == 4:
                # Max-out background: the smallest anchors see many small false faces.
                cls = jnp.concatenate([jnp.max(cls[..., :3], axis=-1, keepdims=True), cls[..., 3:]], -1)
            outs += [cls, reg]
        return outs


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """The official `s3fd` state_dict keys (in order) with their PyTorch shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 3
    for item in _TRUNK:
        if isinstance(item, tuple):
            name, ch, k, _, _ = item
            shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (ch, cin, k, k), (ch,)
            cin = ch
    trunk_ch = {"f3_3": 256, "f4_3": 512, "f5_3": 512, "fc7": 1024, "f6_2": 512, "f7_2": 256}
    for src, scale, prefix, _ in _HEADS:
        if scale is not None:
            shapes[f"{prefix}.weight"] = (trunk_ch[src],)
    for src, _, prefix, conf_ch in _HEADS:
        for head, ch in (("conf", conf_ch), ("loc", 4)):
            shapes[f"{prefix}_mbox_{head}.weight"] = (ch, trunk_ch[src], 3, 3)
            shapes[f"{prefix}_mbox_{head}.bias"] = (ch,)
    return shapes


def params_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official S3FD state_dict (torch tensors or arrays) -> Flax params (float32).

    Conv kernels OIHW -> HWIO; biases and L2Norm weights unchanged. Raises
    ValueError naming any missing, unexpected or misshapen key.
    """
    sd = check_state_dict(state_dict, state_dict_shapes(), what="not an S3FD state_dict")
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in sd.items():
        module, leaf = key.rsplit(".", 1)
        if arr.ndim == 4:
            params.setdefault(module, {})["kernel"] = np.ascontiguousarray(kernel_to_flax(arr))
        else:
            params.setdefault(module, {})["bias" if leaf == "bias" else "weight"] = arr
    return params


def load_s3fd_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the official `s3fd.pth` (a plain state_dict) from a local file.

    Read with `diff2lip_jax.torch_io.load_state_dict_file` (`torch.load(weights_only=True)`):
    a file whose pickle carries code is refused with ValueError rather than executed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"S3FD weights not found at {path!r}; download them from {S3FD_WEIGHTS_URL} "
            "(or `diff2lip-weights fetch s3fd`, then leave the path out)"
        )
    return params_from_state_dict(load_state_dict_file(path))


def decode_outputs(outputs: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Raw S3FD maps -> (scores [B,A], boxes [B,A,4] x1,y1,x2,y2 in input pixels).

    Anchors are ordered level by level, then row-major (h, w), the order the
    official loop visits them. Prior of cell (h, w) at stride s: centre
    (s/2 + w s, s/2 + h s), side 4 s; box centre = prior + 0.1 * d_xy * side,
    size = side * exp(0.2 * d_wh).
    """
    scores, boxes = [], []
    for level, stride in enumerate(STRIDES):
        cls, reg = outputs[2 * level], outputs[2 * level + 1]
        b, fh, fw, _ = cls.shape
        scores.append(jax.nn.softmax(cls.astype(jnp.float32), axis=-1)[..., 1].reshape(b, -1))
        ys, xs = jnp.meshgrid(jnp.arange(fh, dtype=jnp.float32), jnp.arange(fw, dtype=jnp.float32), indexing="ij")
        centre = jnp.stack([stride / 2 + xs * stride, stride / 2 + ys * stride], -1).reshape(1, -1, 2)
        side = float(stride * 4)
        loc = reg.astype(jnp.float32).reshape(b, -1, 4)
        xy = centre + loc[..., :2] * VARIANCES[0] * side
        wh = side * jnp.exp(loc[..., 2:] * VARIANCES[1])
        boxes.append(jnp.concatenate([xy - wh / 2, xy + wh / 2], -1))
    return jnp.concatenate(scores, 1), jnp.concatenate(boxes, 1)


def nms(dets: np.ndarray, threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """Greedy NMS on dets [K,5] (x1,y1,x2,y2,score) -> kept indices, best first.

    Areas and overlaps use the official pixel-inclusive +1 convention; a box is
    dropped when its IoU with a kept box exceeds `threshold`.
    """
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return np.asarray(keep, np.int64)


def select_detections(scores: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Per image: candidates > 0.05, NMS 0.3, keep > 0.5 -> list of [K,5] float32, best first."""
    out = []
    for s, b in zip(np.asarray(scores), np.asarray(boxes)):
        cand = s > CANDIDATE_THRESHOLD
        dets = np.concatenate([b[cand], s[cand, None]], 1).astype(np.float32)
        dets = dets[nms(dets)] if len(dets) else dets
        out.append(dets[dets[:, 4] > SCORE_THRESHOLD])
    return out


class S3FDDetector:
    """Batched S3FD: frames [N,H,W,3] uint8 RGB -> (boxes [N,4] int64 x1,y1,x2,y2, found [N] bool).

    Frames are flipped to BGR and mean-subtracted as the official
    `get_detections_for_batch` + `batch_detect` do. Batches are padded to
    `batch_size` so the jitted forward compiles once per frame size. The box is
    the best-scoring detection, clipped at 0 and truncated to int (official);
    clamping to the far image edges happens with the pads in `detect_faces`.
    """

    fixed = False

    def __init__(self, params: Mapping[str, Any], batch_size: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.params = jax.tree_util.tree_map(jnp.asarray, dict(params))
        self.batch_size = batch_size
        module = S3FD()
        self._decode = jax.jit(lambda p, x: decode_outputs(module.apply({"params": p}, x)))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], batch_size: int = 4) -> S3FDDetector:
        """Build from a local official `s3fd.pth`."""
        return cls(load_s3fd_params(path), batch_size)

    def detect_all(self, frames: np.ndarray) -> list[np.ndarray]:
        """Frames [N,H,W,3] uint8 RGB -> per frame all kept detections [K,5] (x1,y1,x2,y2,score)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [N,H,W,3], got {frames.shape}")
        results: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start : start + self.batch_size, :, :, ::-1].astype(np.float32) - BGR_MEAN
            n = len(chunk)
            if n < self.batch_size:  # pad so the last batch reuses the compiled shape
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:], np.float32)])
            scores, boxes = jax.device_get(self._decode(self.params, jnp.asarray(chunk)))
            results += select_detections(scores[:n], boxes[:n])
        return results

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dets = self.detect_all(frames)
        found = np.array([len(d) > 0 for d in dets], bool)
        boxes = np.zeros((len(dets), 4), np.int64)
        if found.any():
            top = np.stack([d[0, :4] for d in dets if len(d)])
            boxes[found] = np.clip(top, 0, None).astype(np.int64)
        return boxes, found
