"""Loading a Diff2Lip model for inference, and its compiled, device-sharded DDIM sampler.

Checkpoints come in two kinds:

* a model directory (a `diff2lip-train` workdir or a `diff2lip-convert import`
  output): the EMA params and the model flags travel together (`checkpoint.load_model`);
  `weights="raw"` takes a training workdir's raw params instead (early in training the
  EMA is still mostly the initialisation: at decay 0.9999, 61% of it after 5k steps);
* an official PyTorch `.pt`/`.pth` or a `.safetensors` state_dict: the model flags come
  from a config (`config.model`), by default the official model (`diff2lip_jax.default_config`).

The diffusion flags come from `config.diffusion` when a config is given, else from
the training run that wrote a model directory (its meta), else the official ones
(1000 linear steps); sampling always respaces to `ddim{ddim_steps}`.

The sampler is one `jax.jit` program per (model flags, diffusion, DDIM steps,
recorded intermediates, devices), cached for the process: batch shapes are fixed by
the caller (the last batch is padded), so a whole video compiles it exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diff2lip_jax import checkpoint as ckpt
from diff2lip_jax import default_config
from diff2lip_jax.conditioning import FACE_HIDE_PERCENTAGE, lower_half_mask, masked_cond_img
from diff2lip_jax.constants import PRECISIONS
from diff2lip_jax.diffusion import DIFFUSION_FLAGS, create_diffusion_from_config
from diff2lip_jax.images import uint8_to_unit, unit_to_uint8_truncate
from diff2lip_jax.models import UNetConfig, build_unet

STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")

# Traces of the sampler body, for tests and stats: a retrace means a recompilation.
_TRACES = {"count": 0}


def sampler_traces() -> int:
    """How many times any generation sampler has been traced (compiled) in this process."""
    return _TRACES["count"]


def load_config(config: Any) -> ml_collections.ConfigDict | None:
    """A config from None, a ConfigDict / dict, or a "FILE.py[:ARG]" string (its `get_config(ARG)`)."""
    if config is None or isinstance(config, ml_collections.ConfigDict):
        return config
    if isinstance(config, Mapping):
        return ml_collections.ConfigDict(dict(config))
    text = os.fspath(config)
    path, _, arg = text.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {path}: no such file; pass FILE.py[:VARIANT], e.g. configs/diff2lip.py:tiny")
    spec = importlib.util.spec_from_file_location(f"_diff2lip_generate_config_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config {path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {path}: defines no get_config()")
    return module.get_config(arg or None) if arg else module.get_config()


def _official_config() -> ml_collections.ConfigDict:
    return default_config.get_config()  # the official model and diffusion flags


def diffusion_flags(
    config: ml_collections.ConfigDict | None, cfg: UNetConfig, trained_with: dict | None = None
) -> tuple[tuple[str, Any], ...]:
    """The diffusion flags (hashable) for sampling; learn_sigma always from the model.

    In order: the given config's, else the ones the checkpoint was trained with
    (`trained_with`, a training run's meta["diffusion"]), else the official ones. A
    model trained with e.g. predict_xstart must be sampled with it.
    """
    if config is not None and "diffusion" in config:
        source = dict(config.diffusion)
    elif trained_with:
        source = dict(trained_with)
    else:
        source = dict(_official_config().diffusion)
    flags = {k: source[k] for k in DIFFUSION_FLAGS if k in source}
    flags["learn_sigma"] = cfg.learn_sigma  # one flag for model and diffusion, as in the official code
    flags.pop("timestep_respacing", None)  # sampling sets ddim{steps}
    return tuple(sorted(flags.items()))


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """Host params (nested dict of float32 numpy), the model flags, diffusion flags, and a description."""

    params: dict
    cfg: UNetConfig
    diffusion: tuple[tuple[str, Any], ...]
    description: str
    step: int | None


def load_checkpoint(
    path: str | os.PathLike, config: Any = None, step: int | None = None, weights: str = "ema"
) -> LoadedModel:
    """Loads a model directory (EMA or raw params, `weights` in `checkpoint.WEIGHTS`) or an
    official `.pt`/`.safetensors` state_dict.

    Raises one-line user errors: FileNotFoundError (missing path), ValueError
    (not a checkpoint, unreadable, or flags that do not fit the tensors).
    """
    path = os.fspath(path)
    config = load_config(config)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file or directory")
    if weights not in ckpt.WEIGHTS:
        raise ValueError(f"--weights={weights}: choose one of {', '.join(ckpt.WEIGHTS)}")
    if os.path.isdir(path):
        try:
            params, cfg, found_step, meta = ckpt.load_model_and_meta(path, step, weights)
        except ckpt.CheckpointError:
            raise
        except Exception as e:  # orbax raises many types for damaged folders
            raise ValueError(f"--checkpoint {path}: unreadable checkpoint ({_first_line(e)})") from None
        return LoadedModel(
            params,
            cfg,
            diffusion_flags(config, cfg, meta.get("diffusion")),
            f"{path} step {found_step} ({weights})",
            found_step,
        )
    if not path.endswith(STATE_DICT_SUFFIXES):
        raise ValueError(
            f"--checkpoint {path}: not a checkpoint; pass a model directory or a "
            f"{'/'.join(STATE_DICT_SUFFIXES)} state_dict"
        )
    if step is not None:
        raise ValueError("--step selects a step of a model directory; a state_dict file has one set of weights")
    if weights != "ema":
        raise ValueError(
            f"--weights {weights} selects a training workdir's weights; a state_dict file has one set (drop --weights)"
        )
    from diff2lip_jax.convert import load_state_dict_file, torch_to_flax

    model_flags = (
        config.model
        if config is not None and "model" in config
        else config
        if config is not None
        else _official_config().model
    )
    cfg = UNetConfig.from_flags(model_flags)
    try:
        state_dict = load_state_dict_file(path)
    except (ValueError, FileNotFoundError, ImportError):
        raise
    except Exception as e:  # a damaged safetensors / zip file
        raise ValueError(f"--checkpoint {path}: unreadable state_dict ({_first_line(e)})") from None
    params = torch_to_flax(state_dict, cfg)
    return LoadedModel(params, cfg, diffusion_flags(config, cfg), path, None)


def check_precision(precision: str) -> None:
    """Raises a one-line ValueError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision={precision}: choose one of {', '.join(PRECISIONS)}")


def with_precision(cfg: UNetConfig, precision: str) -> UNetConfig:
    """The model flags with the sampling compute dtype `precision` (one of PRECISIONS).

    "bfloat16" runs the UNet's convolutions, matmuls and activations in bfloat16 (params
    stay float32; norms, the time embedding and the diffusion math stay float32): about
    2x the throughput on GPUs and TPUs, at the error `tests/test_generate.py` bounds.
    """
    check_precision(precision)
    if precision == "float32":
        return dataclasses.replace(cfg, use_fp16=False)
    if precision == "bfloat16":
        return dataclasses.replace(cfg, use_fp16=True, compute_dtype="bfloat16")
    return cfg


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def batch_mesh(devices: tuple[jax.Device, ...] | None = None) -> Mesh:
    """A 1-D mesh, axis "batch", over the given (default: all local) devices."""
    devices = tuple(devices or jax.local_devices())
    return Mesh(np.asarray(devices), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))


class Sampler:
    """The compiled generation step for one batch shape family.

        `__call__(params, noise, crops, refs, mels)` with
          params   replicated device params (see `put_params`),
          noise    float32 [S, S, 3]: the one start-noise image every frame shares,
          crops    uint8 [B, S, S, 3] input face crops (B a multiple of the device count),
          refs     uint8 [B, S, S, 3] reference crops,
          mels     float32 [B, 80, 16] mel windows,
        returns uint8 [B, S, S, 3]: the DDIM sample's lower half over the input's upper half
    (official composite `sample * mask + (1 - mask) * input`, the upper half byte-exact);
        with `num_intermediates=K > 0` also (x_t, x0_pred) uint8 [K, B, S, S, 3] at K evenly
        spaced steps (noisiest first), each composited with the known upper half.
        Results are asynchronous jax arrays (dispatch returns before the device finishes).
    """

    def __init__(
        self,
        cfg: UNetConfig,
        diffusion: tuple[tuple[str, Any], ...],
        ddim_steps: int,
        num_intermediates: int,
        mesh: Mesh,
    ):
        self.cfg, self.mesh = cfg, mesh
        self.num_devices = mesh.devices.size
        self.diffusion = create_diffusion_from_config(dict(diffusion), timestep_respacing=f"ddim{ddim_steps}")
        self.num_intermediates = int(num_intermediates)
        model = build_unet(cfg)
        diff = self.diffusion
        k = self.num_intermediates

        def model_fn(x, t, params, **kwargs):
            return model.apply({"params": params}, x, t, **kwargs)

        def run(params, noise, crops, refs, mels):
            _TRACES["count"] += 1  # runs only while tracing
            img = uint8_to_unit(crops)  # official normalise2(x / 255)
            ref = jnp.tile(uint8_to_unit(refs), (1, 1, 1, cfg.nrefer))
            mask = lower_half_mask(img.shape[0], img.shape[1], FACE_HIDE_PERCENTAGE)
            # One noise image for every frame (official --sampling_seed): the start x_T and
            # the fill of cond_img's hidden lower half.
            x_t = jnp.broadcast_to(noise[None], img.shape)
            kwargs = dict(
                params=params, cond_img=masked_cond_img(img, mask, x_t), mask=mask, ref_img=ref, indiv_mels=mels
            )
            out = diff.ddim_sample_loop(model_fn, x_t, model_kwargs=kwargs, clip_denoised=True, return_intermediates=k)
            # sample * mask + (1 - mask) * input, the known half kept as the exact input bytes
            # (a float round trip could truncate a value to one grey level less).
            known = lambda x: jnp.where(mask > 0, unit_to_uint8_truncate(x), crops)
            if k:
                sample, xs, x0s = out
                return known(sample), known(xs), known(x0s)
            return known(out)

        rep, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
        out_sh = (batch, NamedSharding(mesh, P(None, "batch")), NamedSharding(mesh, P(None, "batch"))) if k else batch
        self._fn = jax.jit(run, in_shardings=(rep, rep, batch, batch, batch), out_shardings=out_sh)
        self.replicated = rep

    def put_params(self, params: dict) -> Any:
        """Host params -> device params replicated over the mesh (once per video)."""
        return jax.device_put(params, self.replicated)

    def padded_batch(self, batch_size: int) -> int:
        """`batch_size` rounded up to a multiple of the device count."""
        return -(-max(1, int(batch_size)) // self.num_devices) * self.num_devices

    def __call__(self, params, noise, crops, refs, mels):
        if crops.shape[0] % self.num_devices:
            raise ValueError(f"batch {crops.shape[0]} is not a multiple of {self.num_devices} devices")
        return self._fn(params, noise, crops, refs, mels)

    def cache_size(self) -> int:
        """Compiled variants of this sampler (1 when every batch had the same shape)."""
        return self._fn._cache_size()


def get_sampler(
    cfg: UNetConfig,
    diffusion: tuple[tuple[str, Any], ...],
    ddim_steps: int,
    num_intermediates: int = 0,
    devices: tuple[jax.Device, ...] | None = None,
) -> Sampler:
    """The process-wide `Sampler` for these flags (compiled programs are reused across videos)."""
    return _cached_sampler(
        cfg, tuple(diffusion), int(ddim_steps), int(num_intermediates), tuple(devices or jax.local_devices())
    )


@functools.lru_cache(maxsize=8)
def _cached_sampler(
    cfg: UNetConfig,
    diffusion: tuple[tuple[str, Any], ...],
    ddim_steps: int,
    num_intermediates: int,
    devices: tuple[jax.Device, ...],
) -> Sampler:
    return Sampler(cfg, diffusion, ddim_steps, num_intermediates, batch_mesh(devices))


def start_noise_image(seed: int, size: int) -> np.ndarray:
    """The shared start noise, float32 [size, size, 3] ~ N(0, 1) from `seed`.

    The official code draws it with torch.manual_seed(seed); jax's generator gives
    different numbers for the same seed, so outputs match in law, not bit for bit.
    """
    from diff2lip_jax.diffusion import start_noise

    return np.asarray(start_noise(jax.random.key(int(seed)), (1, size, size, 3), shared=True)[0])
