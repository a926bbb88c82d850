"""The Diff2Lip TFG UNet (guided-diffusion UNet + audio encoder) in Flax, NHWC.

Architecture and parameter layout equal the official `TFGModel` for the same
flags, so `diff2lip_jax.convert` exchanges weights with it in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from diff2lip_jax.models.config import NUM_CLASSES, AudioEncoderConfig, UNetConfig
from diff2lip_jax.models.layers import (
    AttentionBlock,
    Downsample,
    GroupNorm32,
    ResBlock,
    Upsample,
    conv,
    dense,
    timestep_embedding,
)


def resolve_compute_dtype(cfg: UNetConfig) -> jnp.dtype:
    """float32 unless `use_fp16`; then `compute_dtype`, where "auto" means bfloat16.

    bfloat16 needs no loss scaling and is native on TPU and recent GPUs; set
    `compute_dtype="float16"` to reproduce the official fp16 numerics on a GPU.
    """
    if not cfg.use_fp16 or cfg.compute_dtype == "float32":
        return jnp.float32
    if cfg.compute_dtype in ("auto", "bfloat16"):
        return jnp.bfloat16
    if cfg.compute_dtype == "float16":
        return jnp.float16
    raise ValueError(f"compute_dtype {cfg.compute_dtype!r}: use auto, bfloat16, float16 or float32")


def _time_mlp(module: nn.Module, t_emb: jax.Array, width: int, prefix: str) -> jax.Array:
    h = dense(width, jnp.float32, f"{prefix}_0")(t_emb)
    return dense(width, jnp.float32, f"{prefix}_2")(nn.silu(h))


class AudioEncoder(nn.Module):
    """TFGAudioEncoder: mel windows [N, 80, 16] -> features [N, 8, 8, C_audio].

    Conv1d over mel time maps the 80 bands to `init_spatial_dim` rows, which then
    form a one-channel image [N, 64, 16, 1] for a 2-D residual stack whose
    downsampling halves only the height (stride (2,1)) until it reaches the
    time length, then both (stride (2,2)).
    """

    cfg: AudioEncoderConfig
    dropout: float
    use_scale_shift_norm: bool
    resblock_updown: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mels: jax.Array, train: bool = False) -> jax.Array:
        c = self.cfg
        n = mels.shape[0]
        emb = _time_mlp(
            self, timestep_embedding(jnp.zeros((n,), jnp.int32), c.model_channels), c.model_channels, "time_embed"
        )
        h = jnp.swapaxes(mels.astype(self.dtype), 1, 2)  # [N, T=16, bands=80]
        h = conv(c.init_spatial_dim, 3, self.dtype, "input_block_0", ndim=1)(h)
        h = GroupNorm32(self.dtype, silu=True, name="input_block_1")(h)
        h = jnp.swapaxes(h, 1, 2)[..., None]  # [N, 64, 16, 1]

        res = dict(dropout=self.dropout, use_scale_shift_norm=self.use_scale_shift_norm, dtype=self.dtype)
        ch = int(c.channel_mult[0] * c.model_channels)
        h = conv(ch, 3, self.dtype, "encoder_blocks_0_0")(h)
        block, ds = 1, 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                ch = int(mult * c.model_channels)
                h = ResBlock(ch, **res, name=f"encoder_blocks_{block}_0")(h, emb, train)
                block += 1
            if level != len(c.channel_mult) - 1:
                stride = (2, 1) if c.init_spatial_dim // ds > c.audio_frames_per_video else (2, 2)
                name = f"encoder_blocks_{block}_0"
                if self.resblock_updown:
                    h = ResBlock(ch, **res, down=True, down_stride=stride, name=name)(h, emb, train)
                else:
                    # The official encoder passes `down_stride` to Downsample, which
                    # has no such argument and crashes; this is the evident intent.
                    h = Downsample(ch, True, stride, self.dtype, name=name)(h)
                block += 1
                ds *= 2
        return ResBlock(c.resolved_out_channels, **res, name="middle_block_0")(h, emb, train)


class TFGUNet(nn.Module):
    """Diff2Lip's UNet.

    Call: (x, timesteps, cond_img, mask, ref_img, indiv_mels) with NHWC images
    [B, H, W, 3] in [-1, 1] (ref_img [B, H, W, 3*nrefer]), mask [B, H, W, 1]
    (1 = region to generate), indiv_mels [B, 80, 16] and timesteps [B] (int or
    float). Returns [B, H, W, 6 if learn_sigma else 3] in float32.
    """

    cfg: UNetConfig

    @nn.compact
    def __call__(
        self, x, timesteps, cond_img=None, mask=None, ref_img=None, indiv_mels=None, y=None, train: bool = False
    ):
        cfg = self.cfg
        dtype = resolve_compute_dtype(cfg)
        out_dtype = jnp.float32
        x = x.astype(jnp.float32)
        # Known region from cond_img, the region to generate from x.
        x = x * mask + (1.0 - mask) * cond_img
        parts = [x, cond_img] + ([ref_img] if cfg.use_ref else [])
        h = jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1)
        if h.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"TFGUNet: inputs have {h.shape[-1]} channels, the model expects "
                f"{cfg.in_channels} (x, cond_img{', ref_img x nrefer' if cfg.use_ref else ''})"
            )

        emb = _time_mlp(self, timestep_embedding(timesteps, cfg.num_channels), cfg.time_embed_dim, "time_embed")
        if cfg.class_cond:
            label_emb = nn.Embed(NUM_CLASSES, cfg.time_embed_dim, name="label_emb")
            if y is not None:
                emb = emb + label_emb(y)
            elif self.is_initializing():
                _ = label_emb.embedding  # the official model owns this table even when unused

        audio_mid = None
        if cfg.use_audio:
            if indiv_mels is None:
                raise ValueError("TFGUNet: use_audio=True needs indiv_mels [B, 80, 16]")
            if cfg.audio_as_style:
                emb = emb + self._audio_style(indiv_mels, dtype, train)
            else:
                audio_mid = self._audio_encoder(dtype)(indiv_mels, train)

        res = dict(dropout=cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm, dtype=dtype)
        hs = []
        h = conv(int(cfg.channel_mult[0] * cfg.num_channels), 3, dtype, "input_blocks_0_0")(h.astype(dtype))
        hs.append(h)
        block, ds = 1, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                h = ResBlock(int(mult * cfg.num_channels), **res, name=f"input_blocks_{block}_0")(h, emb, train)
                if ds in cfg.attention_ds:
                    h = AttentionBlock(cfg.num_heads, cfg.num_head_channels, dtype, name=f"input_blocks_{block}_1")(h)
                hs.append(h)
                block += 1
            if level != len(cfg.channel_mult) - 1:
                name = f"input_blocks_{block}_0"
                if cfg.resblock_updown:
                    h = ResBlock(h.shape[-1], **res, down=True, name=name)(h, emb, train)
                else:
                    h = Downsample(h.shape[-1], True, (2, 2), dtype, name=name)(h)
                hs.append(h)
                block += 1
                ds *= 2

        mid_ch = h.shape[-1]
        if audio_mid is not None:
            h = jnp.concatenate([h, audio_mid.astype(dtype)], axis=-1)
        h = ResBlock(mid_ch, **res, name="middle_block_0")(h, emb, train)
        h = AttentionBlock(cfg.num_heads, cfg.num_head_channels, dtype, name="middle_block_1")(h)
        h = ResBlock(mid_ch, **res, name="middle_block_2")(h, emb, train)

        block = 0
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                ch = int(cfg.num_channels * mult)
                h = ResBlock(ch, **res, name=f"output_blocks_{block}_0")(h, emb, train)
                sub = 1
                if ds in cfg.attention_ds:
                    h = AttentionBlock(
                        cfg.heads_upsample, cfg.num_head_channels, dtype, name=f"output_blocks_{block}_{sub}"
                    )(h)
                    sub += 1
                if level and i == cfg.num_res_blocks:
                    name = f"output_blocks_{block}_{sub}"
                    if cfg.resblock_updown:
                        h = ResBlock(ch, **res, up=True, name=name)(h, emb, train)
                    else:
                        h = Upsample(ch, True, dtype, name=name)(h)
                    ds //= 2
                block += 1

        h = GroupNorm32(out_dtype, silu=True, name="out_0")(h)
        return conv(cfg.out_channels, 3, out_dtype, "out_2", zero=True)(h)

    def _audio_encoder(self, dtype) -> AudioEncoder:
        cfg = self.cfg
        return AudioEncoder(
            cfg.audio, cfg.dropout, cfg.use_scale_shift_norm, cfg.resblock_updown, dtype, name="audio_encoder"
        )

    def _audio_style(self, mels: jax.Array, dtype, train: bool) -> jax.Array:
        """Audio -> [B, time_embed_dim] float32, added to the timestep embedding."""
        cfg = self.cfg
        if cfg.audio_as_style_encoder_mlp:
            # The official MLP head is Linear(audio_dim + frames, E), so it cannot take
            # the flattened 80x16 window it is handed (its forward fails). We feed the
            # two marginal profiles whose sizes that layer was built for: the mean over
            # time per mel band (80) and the mean over bands per time step (16).
            m = mels.astype(jnp.float32)
            feats = jnp.concatenate([m.mean(axis=2), m.mean(axis=1)], axis=-1)
            a = dense(cfg.time_embed_dim, jnp.float32, "audio_encoder_1")(feats)
            a = GroupNorm32(jnp.float32, silu=True, name="audio_encoder_2")(a)
            return dense(cfg.time_embed_dim, jnp.float32, "audio_encoder_4")(a)
        a = self._audio_encoder(dtype)(mels, train)
        a = GroupNorm32(dtype, silu=True, name="audio_encoder_to_style_0")(a)
        a = a.mean(axis=(1, 2), keepdims=True)
        a = conv(cfg.time_embed_dim, 1, dtype, "audio_encoder_to_style_3", zero=True)(a)
        return a.reshape(a.shape[0], -1).astype(jnp.float32)


def build_unet(model_cfg: Mapping[str, Any] | Any | UNetConfig) -> TFGUNet:
    """The TFG UNet for official-style flags (dict, ConfigDict or UNetConfig); other keys ignored."""
    cfg = model_cfg if isinstance(model_cfg, UNetConfig) else UNetConfig.from_flags(model_cfg)
    return TFGUNet(cfg)


def abstract_params(model_cfg: Mapping[str, Any] | Any | UNetConfig) -> dict:
    """Shapes and dtypes of the params for these flags: a ShapeDtypeStruct tree, no compute."""
    model = build_unet(model_cfg)
    return jax.eval_shape(lambda: init_params(model, jax.random.key(0)))


def random_params(model_cfg: Mapping[str, Any] | Any | UNetConfig, seed: int = 0) -> dict:
    """Random host params for these flags, for tests and benchmarks; NOT a training init
    (that is `init_params`, guided-diffusion's init with zeroed output convs).

    Returns the tree of `abstract_params(model_cfg)` with numpy float32 leaves, every one
    non-zero so that each layer reaches the output: kernels standard normal / sqrt(fan-in)
    (all axes but the last, so activations stay O(1)), norm scales 1 + 0.05 N(0, 1), the
    rest (biases, embeddings) 0.05 N(0, 1). The same `seed` gives the same params. numpy
    only, no jitted init: compiling one for the official model takes about a minute.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flatten_dict(abstract_params(model_cfg)).items():
        if path[-1] == "kernel":
            value = rng.standard_normal(leaf.shape) / math.sqrt(np.prod(leaf.shape[:-1]))
        elif path[-1] == "scale":
            value = 1.0 + 0.05 * rng.standard_normal(leaf.shape)
        else:
            value = 0.05 * rng.standard_normal(leaf.shape)
        out[path] = value.astype(np.float32)
    return unflatten_dict(out)


def init_params(model: TFGUNet, rng: jax.Array, batch: int = 1) -> dict:
    """Float32 params for `model`, initialised under jit from dummy inputs of its size."""
    cfg = model.cfg
    s = cfg.image_size
    img = jnp.zeros((batch, s, s, 3), jnp.float32)
    ref = jnp.zeros((batch, s, s, 3 * cfg.nrefer), jnp.float32)
    mels = jnp.zeros((batch, cfg.audio.audio_dim, cfg.audio.audio_frames_per_video), jnp.float32)

    @jax.jit
    def _init(key):
        return model.init(
            key,
            img,
            jnp.zeros((batch,), jnp.int32),
            cond_img=img,
            mask=jnp.ones((batch, s, s, 1)),
            ref_img=ref,
            indiv_mels=mels,
        )["params"]

    return _init(rng)
