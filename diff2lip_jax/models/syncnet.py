"""Lip-sync experts: Wav2Lip's SyncNet_color (importable weights) and our 128 px SyncNet.

Both map a 5-frame window of lower-half faces and its 16-step mel window to two
L2-normalised embeddings; their cosine is the probability that audio and lips are
in sync (Wav2Lip's `cosine_loss`). Embeddings come out of a ReLU, so the cosine
lies in [0, 1].

Frame stacking (Wav2Lip): the 5 frames are concatenated on channels in time
order, channel = 3 * t + c (`torch.cat([g[:, :, i] for i in range(T)], dim=1)`).
Wav2Lip reads frames with OpenCV, so each frame's channels are BGR and its
expert was trained on BGR; our pipeline is RGB and the flip happens in
`to_wav2lip_faces` (used by `Wav2LipExpert`). Our own `SyncNet` is trained on
RGB and needs no flip.

Modules return `(face_emb, audio_emb)` and take `(faces, mel)`; Wav2Lip's
`forward(audio, face)` returns `(audio_emb, face_emb)`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from diff2lip_jax.constants import FRAMES_PER_WINDOW
from diff2lip_jax.torch_io import check_state_dict, kernel_to_flax, load_state_dict_file, strip_prefixes

Dtype = Any
Variables = Mapping[str, Any]

NUM_FRAMES = FRAMES_PER_WINDOW  # syncnet_T: the frames a window shows
WAV2LIP_FACE_SIZE = (48, 96)  # lower half of Wav2Lip's 96x96 crops, (H, W)

# Wav2Lip layers: (out_channels, kernel, stride, padding, residual).
_Spec = tuple[int, int, int | tuple[int, int], int, bool]
WAV2LIP_FACE_LAYERS: tuple[_Spec, ...] = (
    (32, 7, 1, 3, False),
    (64, 5, (1, 2), 1, False),
    (64, 3, 1, 1, True),
    (64, 3, 1, 1, True),
    (128, 3, 2, 1, False),
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (256, 3, 2, 1, False),
    (256, 3, 1, 1, True),
    (256, 3, 1, 1, True),
    (512, 3, 2, 1, False),
    (512, 3, 1, 1, True),
    (512, 3, 1, 1, True),
    (512, 3, 2, 1, False),
    (512, 3, 1, 0, False),
    (512, 1, 1, 0, False),
)
WAV2LIP_AUDIO_LAYERS: tuple[_Spec, ...] = (
    (32, 3, 1, 1, False),
    (32, 3, 1, 1, True),
    (32, 3, 1, 1, True),
    (64, 3, (3, 1), 1, False),
    (64, 3, 1, 1, True),
    (64, 3, 1, 1, True),
    (128, 3, 3, 1, False),
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (256, 3, (3, 2), 1, False),
    (256, 3, 1, 1, True),
    (256, 3, 1, 1, True),
    (512, 3, 1, 0, False),
    (512, 1, 1, 0, False),
)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """F.normalize(p=2, dim=-1): x / max(||x||, eps), in float32."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def stack_frames(frames: jax.Array) -> jax.Array:
    """[B, T, H, W, C] -> [B, H, W, T*C], channel = C * t + c (Wav2Lip's order)."""
    b, t, h, w, c = frames.shape
    return jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c)


def _mel_image(mel: jax.Array) -> jax.Array:
    """[B, 80, 16] or [B, 80, 16, 1] (bands x time) -> [B, 80, 16, 1]."""
    return mel if mel.ndim == 4 else mel[..., None]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _num_groups(channels: int) -> int:
    """GroupNorm groups: at most 32, and at least 4 channels per group when possible."""
    return math.gcd(channels, max(1, min(32, channels // 4)))


# ---------------------------------------------------------------- Wav2Lip SyncNet_color


class Wav2LipConv(nn.Module):
    """Wav2Lip's `Conv2d`: conv -> BatchNorm (running stats) -> (+ input) -> ReLU.

    Submodules `conv_block_0` / `conv_block_1` mirror `conv_block.0` / `conv_block.1`.
    """

    features: int
    kernel: int
    stride: int | tuple[int, int]
    padding: int
    residual: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        h = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=_pair(self.stride),
            padding=[(p, p), (p, p)],
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv_block_0",
        )(x)
        h = nn.BatchNorm(
            use_running_average=True, epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name="conv_block_1"
        )(h)
        if self.residual:
            h = h + x
        return nn.relu(h)


class Wav2LipSyncNet(nn.Module):
    """Wav2Lip's SyncNet_color expert, inference only (BatchNorm uses running stats).

    Call `(faces, mel) -> (face_emb, audio_emb)`:
      faces: [B, 48, 96, 15] float, values in [0, 1]; 5 lower-half frames of 96x96
        crops stacked on channels in time order, each frame BGR (see module doc).
      mel: [B, 80, 16] or [B, 80, 16, 1], the 16-step mel window (bands x time).
    Returns two float32 [B, 512] unit-norm embeddings. Variables:
    {"params", "batch_stats"} from `load_wav2lip_syncnet`.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, faces: jax.Array, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = faces.astype(self.dtype)
        for i, spec in enumerate(WAV2LIP_FACE_LAYERS):
            h = Wav2LipConv(*spec, dtype=self.dtype, name=f"face_encoder_{i}")(h)
        a = _mel_image(mel).astype(self.dtype)
        for i, spec in enumerate(WAV2LIP_AUDIO_LAYERS):
            a = Wav2LipConv(*spec, dtype=self.dtype, name=f"audio_encoder_{i}")(a)
        return l2_normalize(h.reshape(h.shape[0], -1)), l2_normalize(a.reshape(a.shape[0], -1))


def wav2lip_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Every SyncNet_color state_dict key -> shape, in PyTorch order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for enc, layers, cin in (("face_encoder", WAV2LIP_FACE_LAYERS, 15), ("audio_encoder", WAV2LIP_AUDIO_LAYERS, 1)):
        for i, (cout, k, _, _, _) in enumerate(layers):
            pre = f"{enc}.{i}.conv_block"
            shapes[f"{pre}.0.weight"] = (cout, cin, k, k)
            shapes[f"{pre}.0.bias"] = (cout,)
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{pre}.1.{leaf}"] = (cout,)
            shapes[f"{pre}.1.num_batches_tracked"] = ()
            cin = cout
    return shapes


def wav2lip_variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """SyncNet_color state_dict (numpy or torch values; "module." prefixes allowed)
    -> {"params", "batch_stats"} for `Wav2LipSyncNet`. Conv OIHW -> HWIO.

    Missing, unexpected or mis-shaped keys raise ConversionError (a ValueError) naming them;
    the `num_batches_tracked` counters may be present or absent.
    """
    expected = wav2lip_state_dict_shapes()
    sd = check_state_dict(
        strip_prefixes(state_dict, ("module.",)),
        expected,
        what="not a Wav2Lip SyncNet_color state_dict",
        ignore=[k for k in expected if k.endswith("num_batches_tracked")],
    )
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for key, arr in sd.items():
        enc, idx, _, sub, leaf = key.split(".")
        layer, module = f"{enc}_{idx}", f"conv_block_{sub}"
        if sub == "0":
            name = "kernel" if leaf == "weight" else "bias"
            params.setdefault(layer, {}).setdefault(module, {})[name] = kernel_to_flax(arr) if leaf == "weight" else arr
        elif leaf in ("weight", "bias"):
            params.setdefault(layer, {}).setdefault(module, {})["scale" if leaf == "weight" else "bias"] = arr
        else:
            stats.setdefault(layer, {}).setdefault(module, {})["mean" if leaf == "running_mean" else "var"] = arr
    return {"params": params, "batch_stats": stats}


def load_wav2lip_syncnet(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read Wav2Lip's `lipsync_expert.pth` (or any SyncNet_color state_dict file).

    Accepts a raw state_dict or Wav2Lip's training checkpoint {"state_dict": ...,
    "optimizer": ..., "global_step": ...}, keys with or without DataParallel's
    "module." prefix. Read with `torch.load(weights_only=True)`: a pickle that
    carries code is refused (ValueError), never executed.
    Returns {"params", "batch_stats"} for `Wav2LipSyncNet`.
    """
    return wav2lip_variables_from_state_dict(load_state_dict_file(os.fspath(path)))


# ---------------------------------------------------------------- our SyncNet (128 px)


class ConvGN(nn.Module):
    """Wav2Lip-style block with GroupNorm: conv -> GN -> (+ input) -> ReLU.

    GroupNorm keeps training functional (no mutable batch statistics) and works
    at any per-device batch size.
    """

    features: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | str = 1
    residual: bool = False
    norm: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.padding if isinstance(self.padding, str) else [(self.padding,) * 2] * 2
        h = nn.Conv(
            self.features,
            _pair(self.kernel),
            strides=_pair(self.stride),
            padding=pad,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x)
        if self.norm:
            h = nn.GroupNorm(
                _num_groups(self.features), epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name="norm"
            )(h)
        if self.residual:
            h = h + x
        return nn.relu(h)


class SyncNet(nn.Module):
    """Our SyncNet expert for 128 px crops (Wav2Lip's design with GroupNorm).

    Call `(faces, mel) -> (face_emb, audio_emb)`:
      faces: [B, H/2, W, 15] float in [-1, 1]; the lower halves of 5 consecutive
        RGB frames stacked on channels in time order (`stack_frames`); nominally
        [B, 64, 128, 15] for 128x128 crops, any size >= 16x32 works.
      mel: [B, 80, 16] (bands x time) or [B, 80, 16, 1], the sync mel window.
    Returns two float32 [B, embed_dim] unit-norm, non-negative embeddings.

    Face path: a 7x7 stem, a stride-(1, 2) conv that makes the half-face square,
    stride-2 levels down to 4x4 or less (64x128 -> 64, 32, 16, 8, 4), a conv
    spanning what is left, and a 1x1 conv. Audio path: Wav2Lip's ladder
    (80x16 -> 80x16, 27x16, 9x6, 3x3; levels past the fourth keep the size),
    then the same head.
    The last two layers of each path have no norm (they act on 1x1 maps).
    """

    base_channels: int = 32
    embed_dim: int = 512
    num_res_blocks: int = 2
    face_mult: Sequence[int] = (2, 4, 8, 16, 16)
    audio_mult: Sequence[int] = (1, 2, 4, 8)
    dtype: Dtype = jnp.float32

    def _head(self, h: jax.Array, prefix: str) -> jax.Array:
        k = (h.shape[1], h.shape[2])
        h = ConvGN(self.embed_dim, k, 1, "VALID", norm=False, dtype=self.dtype, name=f"{prefix}_head_0")(h)
        h = ConvGN(self.embed_dim, 1, 1, 0, norm=False, dtype=self.dtype, name=f"{prefix}_head_1")(h)
        return l2_normalize(h.reshape(h.shape[0], -1))

    def _res(self, h: jax.Array, ch: int, prefix: str) -> jax.Array:
        for j in range(self.num_res_blocks):
            h = ConvGN(ch, 3, residual=True, dtype=self.dtype, name=f"{prefix}_res_{j}")(h)
        return h

    @nn.compact
    def __call__(self, faces: jax.Array, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        b = self.base_channels
        h = ConvGN(b, 7, 1, 3, dtype=self.dtype, name="face_stem")(faces.astype(self.dtype))
        for level, mult in enumerate(self.face_mult):
            if level == 0:
                stride = (1, 2) if h.shape[2] >= 2 * h.shape[1] else 1
                h = ConvGN(b * mult, 5, stride, 2, dtype=self.dtype, name="face_down_0")(h)
            elif min(h.shape[1:3]) > 4:
                h = ConvGN(b * mult, 3, 2, 1, dtype=self.dtype, name=f"face_down_{level}")(h)
            else:  # already small (tiny inputs): widen without downsampling
                h = ConvGN(b * mult, 3, 1, 1, dtype=self.dtype, name=f"face_down_{level}")(h)
            h = self._res(h, b * mult, f"face_{level}")
        face_emb = self._head(h, "face")

        a = _mel_image(mel).astype(self.dtype)
        strides = (1, (3, 1), 3, (3, 2))
        for level, mult in enumerate(self.audio_mult):
            stride = strides[level] if level < len(strides) else 1
            a = ConvGN(b * mult, 3, stride, 1, dtype=self.dtype, name=f"audio_down_{level}")(a)
            a = self._res(a, b * mult, f"audio_{level}")
        return face_emb, self._head(a, "audio")


# ---------------------------------------------------------------- losses


def cosine_similarity(face_emb: jax.Array, audio_emb: jax.Array) -> jax.Array:
    """Cosine of unit-norm embeddings [B, D] x [B, D] -> [B] float32."""
    return jnp.sum(face_emb.astype(jnp.float32) * audio_emb.astype(jnp.float32), axis=-1)


def sync_loss(face_emb: jax.Array, audio_emb: jax.Array, labels: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Wav2Lip's `cosine_loss`: mean BCE of the cosine (as a probability) vs labels [B] in {0, 1}.

    The cosine is clipped to [eps, 1 - eps] so log() stays finite (torch's BCELoss
    clamps the log at -100 for the same reason).
    """
    p = jnp.clip(cosine_similarity(face_emb, audio_emb), eps, 1.0 - eps)
    y = labels.astype(jnp.float32).reshape(p.shape)
    return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def sync_accuracy(face_emb: jax.Array, audio_emb: jax.Array, labels: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Fraction of pairs whose (cosine > threshold) equals the label; scalar float32."""
    pred = cosine_similarity(face_emb, audio_emb) > threshold
    return jnp.mean((pred == (labels.reshape(pred.shape) > 0.5)).astype(jnp.float32))


EmbedFn = Callable[[Variables, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def expert_sync_loss(apply_fn: EmbedFn, params: Variables, frames_lower: jax.Array, sync_mel: jax.Array) -> jax.Array:
    """Diff2Lip's L_sync: BCE of the frozen expert's cosine against 1 (scalar float32).

    Args:
      apply_fn: a `SyncExpert.embed`.
      params: its variables; wrapped in stop_gradient (the expert is frozen),
        gradients flow to `frames_lower` only.
      frames_lower: [B, 5, H/2, W, 3] predicted lower halves, RGB in [-1, 1].
      sync_mel: [B, 80, 16] mel window of the 5 frames.
    """
    face_emb, audio_emb = apply_fn(jax.lax.stop_gradient(params), frames_lower, sync_mel)
    return sync_loss(face_emb, audio_emb, jnp.ones(face_emb.shape[:1], jnp.float32))


# ---------------------------------------------------------------- experts


class SyncExpert(Protocol):
    """A frozen lip-sync expert with one call interface for the Diff2Lip loss.

    `embed(variables, faces_lower [B, 5, h, w, 3] RGB in [-1, 1], mel [B, 80, 16])
    -> (face_emb [B, D], audio_emb [B, D])`, unit-norm float32.
    """

    def embed(self, variables: Variables, faces_lower: jax.Array, mel: jax.Array) -> tuple[jax.Array, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class SyncNetExpert:
    """Our `SyncNet` as a `SyncExpert` (RGB, [-1, 1], any lower-half size). Variables: {"params"}."""

    module: SyncNet = SyncNet()

    def embed(self, variables: Variables, faces_lower: jax.Array, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.module.apply(variables, stack_frames(faces_lower), mel)


def to_wav2lip_faces(faces_lower: jax.Array) -> jax.Array:
    """[B, 5, h, w, 3] RGB in [-1, 1] -> Wav2Lip input [B, 48, 96, 15], BGR per frame, in [0, 1].

    Bilinear resize with antialiasing (Wav2Lip resized whole crops to 96x96 with
    cv2 INTER_LINEAR; 128 -> 96 is a mild 0.75x downscale either way).
    """
    b, t, h, w, c = faces_lower.shape
    x = faces_lower.astype(jnp.float32).reshape(b * t, h, w, c)
    if (h, w) != WAV2LIP_FACE_SIZE:
        x = jax.image.resize(x, (b * t, *WAV2LIP_FACE_SIZE, c), "linear", antialias=True)
    x = jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)[..., ::-1]  # RGB -> BGR, as Wav2Lip's cv2 loader
    return stack_frames(x.reshape(b, t, *WAV2LIP_FACE_SIZE, c))


@dataclasses.dataclass(frozen=True)
class Wav2LipExpert:
    """Wav2Lip's expert as a `SyncExpert`. Variables: {"params", "batch_stats"} (`load_wav2lip_syncnet`)."""

    module: Wav2LipSyncNet = Wav2LipSyncNet()

    def embed(self, variables: Variables, faces_lower: jax.Array, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.module.apply(variables, to_wav2lip_faces(faces_lower), mel)
