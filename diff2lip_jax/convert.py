"""Parameter exchange between the Flax TFG UNet and the official PyTorch TFGModel.

Flax submodules are named after the PyTorch module paths with indices folded in
(`input_blocks.1.0.in_layers.2` <-> `input_blocks_1_0/in_layers_2`), so keys map
by name; only the leaf name and the kernel layout differ:

  conv2d  torch [O, I, kh, kw]  <-> flax [kh, kw, I, O]
  conv1d  torch [O, I, k]       <-> flax [k, I, O]
  linear  torch [O, I]          <-> flax [I, O]
  norm    torch weight/bias     <-> flax scale/bias
  embed   torch weight [N, E]   <-> flax embedding [N, E]

The generic parts (state_dict files, prefix stripping, key/shape checks, kernel
layouts) live in `diff2lip_jax.torch_io`; `load_state_dict_file`,
`save_state_dict_file` and `ConversionError` are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from diff2lip_jax.models import abstract_params
from diff2lip_jax.torch_io import (  # file I/O re-exported: `diff2lip_jax.convert.load_state_dict_file` etc.
    ConversionError,
    check_state_dict,
    kernel_shape_to_torch,
    kernel_to_flax,
    kernel_to_torch,
    load_state_dict_file,
    save_state_dict_file,
    strip_prefixes,
)

__all__ = [
    "ConversionError",
    "flax_to_torch",
    "load_state_dict_file",
    "run",
    "save_state_dict_file",
    "torch_key",
    "torch_to_flax",
]

# Registration order of the official modules (guided-diffusion's __init__s); a
# state_dict lists its keys in this order, level by level.
_MODULE_ORDER = [
    "time_embed",
    "label_emb",
    "input_blocks",
    "input_block",
    "encoder_blocks",
    "middle_block",
    "output_blocks",
    "out",
    "audio_encoder",
    "audio_encoder_to_style",
    "in_layers",
    "emb_layers",
    "out_layers",
    "skip_connection",
    "norm",
    "qkv",
    "proj_out",
    "op",
    "conv",
    "weight",
    "bias",
]
_RANK = {name: i for i, name in enumerate(_MODULE_ORDER)}


def _torch_components(flax_path: tuple[str, ...]) -> list[str]:
    comps: list[str] = []
    for part in flax_path[:-1]:
        tokens = part.split("_")
        cut = len(tokens)
        while cut > 1 and tokens[cut - 1].isdigit():
            cut -= 1
        comps.append("_".join(tokens[:cut]))
        comps.extend(tokens[cut:])
    comps.append("bias" if flax_path[-1] == "bias" else "weight")
    return comps


def torch_key(flax_path: tuple[str, ...]) -> str:
    """('input_blocks_1_0', 'in_layers_2', 'kernel') -> 'input_blocks.1.0.in_layers.2.weight'."""
    return ".".join(_torch_components(flax_path))


def _order(key: str) -> tuple:
    return tuple((1, int(c)) if c.isdigit() else (0, _RANK.get(c, len(_RANK)), c) for c in key.split("."))


def _to_torch_layout(leaf_name: str, value: np.ndarray) -> np.ndarray:
    return kernel_to_torch(value) if leaf_name == "kernel" else value


def _to_flax_layout(leaf_name: str, value: np.ndarray) -> np.ndarray:
    return kernel_to_flax(value) if leaf_name == "kernel" else value


def _torch_shape(leaf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return kernel_shape_to_torch(shape) if leaf_name == "kernel" else tuple(shape)


def torch_to_flax(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any] | Any) -> dict:
    """Official TFGModel state_dict -> Flax params (nested dict of float32 numpy arrays).

    Args:
      state_dict: key -> numpy array or torch tensor (a DataParallel `module.`
        prefix is accepted).
      model_cfg: official-style model flags (dict/ConfigDict/UNetConfig).
    Raises:
      ConversionError naming missing, unexpected or mis-shaped keys.
    """
    template = flatten_dict(abstract_params(model_cfg))
    wanted = {torch_key(path): path for path in template}
    sd = check_state_dict(
        strip_prefixes(state_dict, ("module.",)),
        {key: _torch_shape(wanted[key][-1], template[wanted[key]].shape) for key in sorted(wanted, key=_order)},
        what="state_dict does not match the model flags",
        ignore=("*num_batches_tracked",),
        hint="pass the flags the checkpoint was trained with (--config.model.X=V)",
        show=3,
    )
    return unflatten_dict({path: _to_flax_layout(path[-1], sd[key]) for key, path in wanted.items()})


def flax_to_torch(params: Mapping[str, Any], model_cfg: Mapping[str, Any] | Any = None) -> dict[str, np.ndarray]:
    """Flax params -> official state_dict (ordered dict of float32 numpy arrays).

    Keys, order and shapes equal the official TFGModel's for the same flags.
    With `model_cfg`, the params are first checked against those flags.
    """
    flat = flatten_dict(dict(params))
    if model_cfg is not None:
        template = flatten_dict(abstract_params(model_cfg))
        if set(template) != set(flat) or any(template[p].shape != np.shape(flat[p]) for p in flat):
            raise ConversionError("params do not match the model flags given to flax_to_torch")
    out = {
        torch_key(path): _to_torch_layout(path[-1], np.asarray(jax.device_get(v), np.float32))
        for path, v in flat.items()
    }
    return {k: np.ascontiguousarray(out[k]) for k in sorted(out, key=_order)}


# ---------------------------------------------------------------- CLI


def _main(argv):
    from absl import app, flags

    from diff2lip_jax import checkpoint

    FLAGS = flags.FLAGS
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise app.UsageError(
            "usage: diff2lip-convert import --torch F --out DIR [--config=...] | "
            "export --checkpoint DIR --out F.pt|F.safetensors"
        )
    if argv[1] == "import":
        if not FLAGS.torch or not FLAGS.out:
            raise app.UsageError("import needs --torch (an official .pt/.safetensors) and --out DIR")
        model_flags = FLAGS.config.model
        try:
            sd = load_state_dict_file(FLAGS.torch)
        except (ConversionError, FileNotFoundError, IsADirectoryError) as e:
            raise type(e)(f"--torch={e}") from None
        try:
            params = torch_to_flax(sd, model_flags)
        except ConversionError:
            raise
        # Flags that build no model (e.g. channels that GroupNorm's 32 groups cannot split):
        # flax's GroupNorm raises TypeError / ZeroDivisionError, the CPU GroupNorm ValueError.
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise ConversionError(_bad_model_flags(model_flags, e)) from None
        where = checkpoint.save_model(
            FLAGS.out, params, model_flags, step=0, meta={"source": os.path.abspath(FLAGS.torch)}
        )
        print(f"imported {len(sd)} tensors from {FLAGS.torch} -> {where}")
    else:
        if not FLAGS.checkpoint or not FLAGS.out:
            raise app.UsageError("export needs --checkpoint DIR and --out F.pt|F.safetensors")
        params, cfg, step = _load_for_export(FLAGS.checkpoint, FLAGS.step, FLAGS.weights)
        sd = flax_to_torch(params, cfg)
        save_state_dict_file(sd, FLAGS.out, overwrite=FLAGS.overwrite)
        print(
            f"exported step {step} {FLAGS.weights} weights ({len(sd)} tensors, {sum(v.size for v in sd.values()):,} parameters) -> {FLAGS.out}"
        )


def _bad_model_flags(model_flags: Any, error: BaseException) -> str:
    nc = int(model_flags.get("num_channels", 0) or 0) if hasattr(model_flags, "get") else 0
    why = (
        f"num_channels={nc} is not a multiple of 32 (the GroupNorm groups)" if nc % 32 else " ".join(str(error).split())
    )
    return (
        f"--config.model does not build a model: {why}; pass the flags the checkpoint was trained with "
        "(--config.model.X=V)"
    )


def _quiet_closed_event_loop() -> None:
    """Drops the "Event loop is closed" noise orbax's threads print at exit after a failed restore."""
    import sys

    default = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        default(unraisable)

    sys.unraisablehook = hook


def _load_for_export(path: str, step: int | None, weights: str = "ema"):
    """`checkpoint.load_model` with one-line errors naming the workdir or the step folder."""
    from diff2lip_jax import checkpoint

    _quiet_closed_event_loop()
    if os.path.isfile(path):
        raise NotADirectoryError(f"--checkpoint={path} is a file; pass a model directory (holding checkpoints/)")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--checkpoint={path}: no such directory")
    resolved = step if step is not None else checkpoint.latest_step(path)
    folder = os.path.join(checkpoint.manager_dir(path), str(resolved))

    def unreadable(e: BaseException) -> ConversionError:
        detail = " ".join(str(e).split())
        if len(detail) > 200:
            detail = detail[:200] + "..."
        return ConversionError(
            f"--checkpoint={path}: step folder {folder} is damaged or incomplete ({type(e).__name__}: {detail}); "
            "export another --step or restore the folder"
        )

    try:
        meta, resolved = checkpoint.read_meta(path, step)
    except checkpoint.CheckpointError:
        raise
    except Exception as e:
        raise unreadable(e) from None
    if meta.get("kind") == checkpoint.SYNCNET_KIND:
        raise ConversionError(
            f"--checkpoint={path} is a SyncNet workdir (diff2lip-train-syncnet); export takes a Diff2Lip model "
            "directory (a diff2lip-train workdir or a diff2lip-convert import --out)"
        )
    if not isinstance(meta.get("model"), Mapping):
        raise ConversionError(
            f"--checkpoint={path}: step folder {folder} has no model flags in its meta; "
            "export takes a Diff2Lip model directory (a diff2lip-train workdir or a diff2lip-convert import --out)"
        )
    try:
        return checkpoint.load_model(path, resolved, weights)
    except checkpoint.CheckpointError:
        raise
    except Exception as e:
        raise unreadable(e) from None


def run():
    """Console script `diff2lip-convert`."""
    from absl import flags

    from diff2lip_jax import checkpoint, cli

    flags.DEFINE_string("torch", None, "import: official PyTorch state_dict (.pt/.pth/.safetensors)")
    flags.DEFINE_string("out", None, "import: new model directory; export: .pt or .safetensors file")
    flags.DEFINE_string("checkpoint", None, "export: model directory (training workdir or import output)")
    flags.DEFINE_integer("step", None, "export: step to export (default: the newest)")
    flags.DEFINE_enum(
        "weights", "ema", checkpoint.WEIGHTS, "export: a training workdir's EMA params (as generate uses) or raw params"
    )
    flags.DEFINE_bool("overwrite", False, "export: replace an existing --out file")
    cli.define_config_flag("import: model flags (config.model); default the official model")
    cli.run_app("diff2lip-convert", _main, doc=__doc__)
