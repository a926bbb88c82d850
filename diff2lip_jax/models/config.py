"""The TFG UNet's hyper-parameters, named as the official command-line flags.

`UNetConfig.from_flags` accepts a ConfigDict or dict that may hold every official
flag (model and diffusion alike) and keeps only those that shape the network, so
one `config.model` block can feed the model, the diffusion and the converter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# The flags of the official `scripts/inference.sh` (the released checkpoint).
OFFICIAL_MODEL_FLAGS: dict[str, Any] = dict(
    image_size=128,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    attention_resolutions="32,16,8",
    channel_mult="",
    dropout=0.0,
    class_cond=False,
    learn_sigma=True,
    use_scale_shift_norm=False,
    resblock_updown=True,
    use_fp16=False,
    use_ref=True,
    nframes=5,
    nrefer=1,
    use_audio=True,
    audio_as_style=True,
    audio_as_style_encoder_mlp=False,
    audio_encoder_kwargs={},
)

# Channel multipliers the official `tfg_create_model` picks from the image size.
CHANNEL_MULT_BY_SIZE = {
    512: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 3, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

NUM_CLASSES = 1000  # guided-diffusion's class_cond label count


@dataclasses.dataclass(frozen=True)
class AudioEncoderConfig:
    """TFGAudioEncoder hyper-parameters (official defaults; `audio_encoder_kwargs` overrides)."""

    audio_dim: int = 80
    audio_frames_per_video: int = 16
    init_spatial_dim: int = 64
    model_channels: int = 32
    out_channels: int = -1
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)

    @property
    def resolved_out_channels(self) -> int:
        if self.out_channels > 0:
            return self.out_channels
        return self.model_channels * self.channel_mult[-1]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the TFG UNet's parameters and computation."""

    image_size: int = 128
    num_channels: int = 128
    num_res_blocks: int = 2
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_ds: tuple[int, ...] = (4, 8, 16)
    channel_mult: tuple[float, ...] = (1, 1, 2, 3, 4)
    dropout: float = 0.0
    class_cond: bool = False
    learn_sigma: bool = True
    use_scale_shift_norm: bool = False
    resblock_updown: bool = True
    use_fp16: bool = False
    compute_dtype: str = "auto"
    use_ref: bool = True
    nframes: int = 5
    nrefer: int = 1
    use_audio: bool = True
    audio_as_style: bool = True
    audio_as_style_encoder_mlp: bool = False
    audio: AudioEncoderConfig = AudioEncoderConfig()

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    @property
    def in_channels(self) -> int:
        return 3 * (2 + self.nrefer) if self.use_ref else 3 * 2

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    @property
    def heads_upsample(self) -> int:
        return self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any] | Any | None = None, **overrides) -> UNetConfig:
        """Builds the config from official-style flags; unknown keys are ignored.

        Args:
          flags: dict or ml_collections ConfigDict with any subset of
            OFFICIAL_MODEL_FLAGS (missing ones take the official value), plus the
            project's `compute_dtype` ("auto", "bfloat16", "float16", "float32").
          **overrides: the same names, applied last.
        """
        merged = dict(OFFICIAL_MODEL_FLAGS)
        merged["compute_dtype"] = "auto"
        if flags is not None:
            items = flags.to_dict() if hasattr(flags, "to_dict") else dict(flags)
            merged.update({k: v for k, v in items.items() if k in merged})
        merged.update(overrides)
        size = int(merged["image_size"])
        mult = _parse_channel_mult(merged["channel_mult"], size)
        audio_kwargs = dict(merged["audio_encoder_kwargs"] or {})
        if "channel_mult" in audio_kwargs:
            audio_kwargs["channel_mult"] = tuple(_parse_ints(audio_kwargs["channel_mult"]))
        known = {f.name for f in dataclasses.fields(AudioEncoderConfig)}
        unknown = set(audio_kwargs) - known
        if unknown:
            raise ValueError(f"audio_encoder_kwargs: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(
            image_size=size,
            num_channels=int(merged["num_channels"]),
            num_res_blocks=int(merged["num_res_blocks"]),
            num_heads=int(merged["num_heads"]),
            num_head_channels=int(merged["num_head_channels"]),
            num_heads_upsample=int(merged["num_heads_upsample"]),
            attention_ds=_parse_attention(merged["attention_resolutions"], size),
            channel_mult=mult,
            dropout=float(merged["dropout"]),
            class_cond=bool(merged["class_cond"]),
            learn_sigma=bool(merged["learn_sigma"]),
            use_scale_shift_norm=bool(merged["use_scale_shift_norm"]),
            resblock_updown=bool(merged["resblock_updown"]),
            use_fp16=bool(merged["use_fp16"]),
            compute_dtype=str(merged["compute_dtype"]),
            use_ref=bool(merged["use_ref"]),
            nframes=int(merged["nframes"]),
            nrefer=int(merged["nrefer"]),
            use_audio=bool(merged["use_audio"]),
            audio_as_style=bool(merged["audio_as_style"]),
            audio_as_style_encoder_mlp=bool(merged["audio_as_style_encoder_mlp"]),
            audio=AudioEncoderConfig(**audio_kwargs),
        )

    def to_flags(self) -> dict[str, Any]:
        """The official-style flags that rebuild this config (JSON-serialisable)."""
        audio = dataclasses.asdict(self.audio)
        audio["channel_mult"] = list(audio["channel_mult"])
        default_audio = dataclasses.asdict(AudioEncoderConfig())
        default_audio["channel_mult"] = list(default_audio["channel_mult"])
        return dict(
            image_size=self.image_size,
            num_channels=self.num_channels,
            num_res_blocks=self.num_res_blocks,
            num_heads=self.num_heads,
            num_head_channels=self.num_head_channels,
            num_heads_upsample=self.num_heads_upsample,
            attention_resolutions=",".join(str(self.image_size // ds) for ds in self.attention_ds) or "-1",
            channel_mult=",".join(_fmt_mult(m) for m in self.channel_mult),
            dropout=self.dropout,
            class_cond=self.class_cond,
            learn_sigma=self.learn_sigma,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            use_fp16=self.use_fp16,
            compute_dtype=self.compute_dtype,
            use_ref=self.use_ref,
            nframes=self.nframes,
            nrefer=self.nrefer,
            use_audio=self.use_audio,
            audio_as_style=self.audio_as_style,
            audio_as_style_encoder_mlp=self.audio_as_style_encoder_mlp,
            audio_encoder_kwargs={k: v for k, v in audio.items() if v != default_audio[k]},
        )


def _parse_ints(value) -> list[int]:
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    return [int(v) for v in value]


def _fmt_mult(m: float) -> str:
    return str(int(m)) if float(m).is_integer() else str(m)


def _parse_channel_mult(value, image_size: int) -> tuple[float, ...]:
    if value in ("", None, ()):
        if image_size not in CHANNEL_MULT_BY_SIZE:
            raise ValueError(
                f"image_size {image_size} has no official channel_mult (sizes: "
                f"{sorted(CHANNEL_MULT_BY_SIZE)}); set channel_mult, e.g. '1,2,3,4'"
            )
        return CHANNEL_MULT_BY_SIZE[image_size]
    parts = value.split(",") if isinstance(value, str) else value
    mult = tuple(float(p) for p in parts)
    return tuple(int(m) if m.is_integer() else m for m in mult)


def _parse_attention(value, image_size: int) -> tuple[int, ...]:
    """'32,16,8' (resolutions) -> downsample factors, as the official code does; '-1' = none."""
    if isinstance(value, str):
        if "-1" in value:
            return ()
        return tuple(image_size // int(r) for r in value.split(",") if r.strip())
    return tuple(image_size // int(r) for r in value if int(r) != -1)
