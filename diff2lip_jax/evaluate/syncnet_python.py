"""The official LSE scorer: syncnet_python's SyncNet (``S``, weights ``syncnet_v2.model``) in Flax.

LSE-C/D in Wav2Lip, Diff2Lip and most lip-sync papers are computed with
github.com/joonson/syncnet_python (Chung & Zisserman 2016, "Out of time"). This
module reproduces its parts that turn a video into embeddings:

* ``SyncNetPythonModel``: the ``S`` network, layer for layer (NHWC / NDHWC here,
  NCHW / NCDHW there). Submodules are named ``<Sequential>_<index>`` after the
  torch keys (``netcnnlip.0.weight`` -> ``netcnnlip_0/kernel``), so the released
  ``syncnet_v2.model`` (a torch state_dict, 1024-d embeddings) maps on by name.
  BatchNorm uses running statistics (eps 1e-5), as ``S.eval()``.
* :func:`mfcc`: ``python_speech_features.mfcc`` with its defaults (25 ms frames,
  10 ms hop, 512-point FFT, 26 filters, 13 cepstra, lifter 22, log energy in c0,
  pre-emphasis 0.97, rectangular window) on 16 kHz int16-scaled samples, which is
  what ``SyncNetInstance`` feeds it after ``ffmpeg -ac 1 -ar 16000 pcm_s16le``.
  Video frame ``t`` (25 fps) owns MFCC frames ``4t .. 4t+19`` of its 5-frame window.
* :func:`syncnet_crops`: ``run_pipeline.crop_video``: box size / centre tracks
  median-filtered over 13 frames (``scipy.signal.medfilt``, zero padded at the
  ends as there), crop scale 0.4 (the crop reaches 1.4 box-half-sizes either side
  and below the centre, 1 above), frames padded with grey 110, resized to 224.
  Faces enter the network as BGR values in [0, 255], unnormalised, as
  ``cv2.imread`` gives them.

Differences from the official pipeline: boxes come from our detectors and
tracks (the official runs S3FD at 1/4 scale, shot detection and IoU tracking),
and frames are not re-encoded to JPEG/XVID between cropping and scoring.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
import scipy.signal

from diff2lip_jax.torch_io import (
    check_state_dict,
    kernel_shape_to_torch,
    kernel_to_flax,
    load_state_dict_file,
    strip_prefixes,
)

SYNCNET_PYTHON_URL = "https://github.com/joonson/syncnet_python (download_model.sh: syncnet_v2.model)"
CROP_SIZE = 224
CROP_SCALE = 0.4
MEDFILT_KERNEL = 13
PAD_VALUE = 110
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20  # 5 video frames
BN_EPS = 1e-5

# (sequential index, out channels, kernel, stride, padding); "pool" entries: (kernel, stride, padding).
_AUD = (
    ("conv", 0, 64, (3, 3), (1, 1), (1, 1)),
    ("conv", 4, 192, (3, 3), (1, 1), (1, 1)),
    ("pool", (3, 3), (1, 2), (0, 0)),
    ("conv", 8, 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 11, 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 14, 256, (3, 3), (1, 1), (1, 1)),
    ("pool", (3, 3), (2, 2), (0, 0)),
    ("conv", 18, 512, (5, 4), (1, 1), (0, 0)),
)
_LIP = (
    ("conv", 0, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 4, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 8, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 11, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 14, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 18, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)


class SyncNetPythonModel(nn.Module):
    """syncnet_python's ``S``: ``(faces, mfcc) -> (lip_emb [B, D], aud_emb [B, D])``, not normalised.

    faces: float ``[B, 5, 224, 224, 3]`` BGR in [0, 255] (time on axis 1).
    mfcc: float ``[B, 13, 20]`` or ``[B, 13, 20, 1]`` (cepstra x MFCC frames).
    Variables: {"params", "batch_stats"} (:func:`variables_from_state_dict`).
    """

    embed_dim: int = 1024

    def _trunk(self, x: jax.Array, spec: tuple, net: str) -> jax.Array:
        for layer in spec:
            if layer[0] == "pool":
                _, kernel, stride, pad = layer
                x = nn.max_pool(x, kernel, strides=stride, padding=[(p, p) for p in pad])
                continue
            _, idx, features, kernel, stride, pad = layer
            x = nn.Conv(features, kernel, strides=stride, padding=[(p, p) for p in pad], name=f"{net}_{idx}")(x)
            x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"{net}_{idx + 1}")(x)
            x = nn.relu(x)
        return x.reshape(x.shape[0], -1)

    def _fc(self, x: jax.Array, net: str) -> jax.Array:
        x = nn.Dense(512, name=f"{net}_0")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"{net}_1")(x))
        return nn.Dense(self.embed_dim, name=f"{net}_3")(x)

    @nn.compact
    def __call__(self, faces: jax.Array, mfcc_windows: jax.Array) -> tuple[jax.Array, jax.Array]:
        lip = self._fc(self._trunk(faces.astype(jnp.float32), _LIP, "netcnnlip"), "netfclip")
        a = mfcc_windows if mfcc_windows.ndim == 4 else mfcc_windows[..., None]
        aud = self._fc(self._trunk(a.astype(jnp.float32), _AUD, "netcnnaud"), "netfcaud")
        return lip, aud


def _torch_shape(flax_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # conv [*k, I, O] -> [O, I, *k]; dense [I, O] -> [O, I]
    return kernel_shape_to_torch(shape) if flax_name == "kernel" else shape


@functools.lru_cache(maxsize=4)
def _flat_variables(embed_dim: int = 1024) -> dict[str, tuple[str, str, str, tuple[int, ...]]]:
    """torch key -> (collection, module name, flax leaf, flax shape)."""
    shapes = jax.eval_shape(
        SyncNetPythonModel(embed_dim).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 5, CROP_SIZE, CROP_SIZE, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 13, MFCC_WINDOW), jnp.float32),
    )
    names = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean", "var": "running_var"}
    out = {}
    for collection in ("params", "batch_stats"):
        for module, leaves in shapes[collection].items():
            for leaf, value in leaves.items():
                net, idx = module.rsplit("_", 1)
                out[f"{net}.{idx}.{names[leaf]}"] = (collection, module, leaf, tuple(value.shape))
    order = ("netcnnaud", "netfcaud", "netfclip", "netcnnlip")  # S's registration order
    leaves = ("weight", "bias", "running_mean", "running_var")

    def torch_order(key: str) -> tuple[int, int, int]:
        net, idx, leaf = key.split(".")
        return order.index(net), int(idx), leaves.index(leaf)

    return {k: out[k] for k in sorted(out, key=torch_order)}


def state_dict_shapes(embed_dim: int = 1024) -> dict[str, tuple[int, ...]]:
    """Every tensor key of ``S``'s state_dict -> torch shape (num_batches_tracked left out)."""
    return {k: _torch_shape(leaf, shape) for k, (_, _, leaf, shape) in _flat_variables(embed_dim).items()}


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """syncnet_python ``S`` state_dict (numpy or torch values) -> {"params", "batch_stats"}.

    The embedding size is read from ``netfcaud.3.weight``; missing/unexpected keys or
    shapes raise ValueError.
    """
    sd = strip_prefixes(state_dict, ("module.", "__S__."))
    embed_dim = int(np.shape(sd["netfcaud.3.weight"])[0]) if "netfcaud.3.weight" in sd else 1024
    expected = _flat_variables(embed_dim)
    sd = check_state_dict(
        sd,
        {key: _torch_shape(leaf, shape) for key, (_, _, leaf, shape) in expected.items()},
        what="not a syncnet_python SyncNet state_dict (syncnet_v2.model)",
        ignore=("*num_batches_tracked",),
        show=4,
    )
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for key, (collection, module, leaf, _) in expected.items():
        variables[collection].setdefault(module, {})[leaf] = kernel_to_flax(sd[key]) if leaf == "kernel" else sd[key]
    return variables


def load_syncnet_python(path: str | os.PathLike[str]) -> tuple[SyncNetPythonModel, dict[str, Any]]:
    """(module, variables) from a local ``syncnet_v2.model`` (torch state_dict, read with weights_only)."""
    variables = variables_from_state_dict(load_state_dict_file(os.fspath(path)))
    return SyncNetPythonModel(int(variables["params"]["netfcaud_3"]["bias"].shape[0])), variables


# ---------------------------------------------------------------- audio features


@functools.lru_cache(maxsize=2)
def _mel_filterbank(nfilt: int = 26, nfft: int = 512, sr: int = 16000) -> np.ndarray:
    """python_speech_features.get_filterbanks: triangular filters on FFT bins, ``[nfilt, nfft//2+1]``."""
    hz2mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
    mel2hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    bins = np.floor((nfft + 1) * mel2hz(np.linspace(hz2mel(0.0), hz2mel(sr / 2), nfilt + 2)) / sr)
    i = np.arange(nfft // 2 + 1)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    # Rising edge on [lo, mid), falling on [mid, hi); the reference fills these ranges in loops.
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where((i >= lo) & (i < mid), (i - lo) / (mid - lo), 0.0)
        down = np.where((i >= mid) & (i < hi), (hi - i) / (hi - mid), 0.0)
    return up + down


def mfcc(samples: np.ndarray, sr: int = 16000) -> np.ndarray:
    """``python_speech_features.mfcc(samples, sr)`` with its defaults: float64 ``[T, 13]``.

    ``samples`` are on the int16 scale (what ``scipy.io.wavfile.read`` returns for the
    pcm_s16le file syncnet_python writes); T = 1 + ceil((N - 400) / 160) frames.
    """
    x = np.asarray(samples, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mfcc: empty signal")
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frame_len, step, nfft = int(round(0.025 * sr)), int(round(0.01 * sr)), 512
    num = 1 if x.size <= frame_len else 1 + int(np.ceil((x.size - frame_len) / step))
    x = np.concatenate([x, np.zeros((num - 1) * step + frame_len - x.size)])
    frames = x[np.arange(num)[:, None] * step + np.arange(frame_len)[None, :]]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ _mel_filterbank(26, nfft, sr).T
    feat = np.where(feat == 0, eps, feat)
    cep = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    cep = cep * (1.0 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0))  # lifter L = 22
    cep[:, 0] = np.log(energy)
    return cep


def int16_scale(wav: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1] -> int16 sample values (ffmpeg's float -> s16: round(x * 32768), clipped)."""
    return np.clip(np.round(np.asarray(wav, np.float64) * 32768.0), -32768, 32767)


def mfcc_windows(wav: np.ndarray, start_frames: np.ndarray) -> np.ndarray:
    """The 5-frame audio inputs of ``S``: float32 ``[B, 13, 20]`` for windows starting at ``start_frames``.

    Window ``s`` is MFCC frames ``4s .. 4s+19`` (``cct[:, :, :, 4s:4s+20]`` in
    SyncNetInstance); frames past the end are zeros (the protocol never needs them).
    """
    cc = mfcc(int16_scale(wav)).T  # [13, T]
    starts = np.asarray(start_frames, np.int64) * MFCC_PER_FRAME
    idx = starts[:, None] + np.arange(MFCC_WINDOW)[None, :]
    cc = np.concatenate([cc, np.zeros((cc.shape[0], max(0, int(idx.max(initial=0)) + 1 - cc.shape[1])))], axis=1)
    return np.ascontiguousarray(np.moveaxis(cc[:, idx], 0, 1), dtype=np.float32)


# ---------------------------------------------------------------- face crops


def syncnet_crops(
    frames: np.ndarray, boxes: np.ndarray, crop_scale: float = CROP_SCALE, size: int = CROP_SIZE
) -> np.ndarray:
    """run_pipeline's ``crop_video``: frames ``[N, H, W, 3]`` uint8, boxes ``[N, 4]`` (x1, y1, x2, y2)
    -> uint8 ``[N, size, size, 3]`` (same channel order as the frames)."""
    frames, boxes = np.asarray(frames), np.asarray(boxes, np.float64)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes for {len(frames)} frames")
    kernel = MEDFILT_KERNEL
    s = scipy.signal.medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, kernel)
    cy = scipy.signal.medfilt((boxes[:, 1] + boxes[:, 3]) / 2, kernel)
    cx = scipy.signal.medfilt((boxes[:, 0] + boxes[:, 2]) / 2, kernel)
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        bs = s[i]
        bsi = int(bs * (1 + 2 * crop_scale))
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=PAD_VALUE)
        my, mx = cy[i] + bsi, cx[i] + bsi
        face = padded[
            int(my - bs) : int(my + bs * (1 + 2 * crop_scale)),
            int(mx - bs * (1 + crop_scale)) : int(mx + bs * (1 + crop_scale)),
        ]
        if face.size == 0:
            raise ValueError(f"frame {i}: empty face box {boxes[i].tolist()}")
        out[i] = cv2.resize(np.ascontiguousarray(face), (size, size))
    return out
