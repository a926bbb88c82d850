"""Builds the official PyTorch TFGModel from a user's checkout, for parity checks and timing.

The project ships none of the official code: point `repo_dir` at a checkout of
github.com/soumik-kanad/diff2lip (it bundles guided-diffusion). Only torch is
needed: the official logger (TensorBoard) and dist_util (MPI, blobfile) are
side-stepped, because building and running the model uses neither.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS


def _import_guided_diffusion(repo_dir: str):
    package_dir = os.path.join(os.path.abspath(repo_dir), "guided-diffusion")
    if not os.path.isfile(os.path.join(package_dir, "guided_diffusion", "unet.py")):
        raise FileNotFoundError(f"{repo_dir}: not a diff2lip checkout (no guided-diffusion/guided_diffusion/unet.py)")
    if package_dir not in sys.path:
        sys.path.insert(0, package_dir)
    for name in ("logger", "dist_util"):  # imported at module level, unused by the model
        sys.modules.setdefault(f"guided_diffusion.{name}", types.ModuleType(f"guided_diffusion.{name}"))
    return importlib.import_module("guided_diffusion.script_util")


def build_official_model(repo_dir: str, model_flags: Mapping[str, Any] | None = None):
    """The official TFGModel (torch.nn.Module, float32, eval mode) for official-style flags."""
    script_util = _import_guided_diffusion(repo_dir)
    flags = dict(OFFICIAL_MODEL_FLAGS)
    if model_flags is not None:
        items = model_flags.to_dict() if hasattr(model_flags, "to_dict") else dict(model_flags)
        flags.update({k: v for k, v in items.items() if k in flags})
    if flags.get("channel_mult", "") not in ("", None):
        raise ValueError("the official tfg_create_model picks channel_mult from image_size; leave it ''")
    kwargs = {k: v for k, v in flags.items() if k != "channel_mult"}
    kwargs["use_checkpoint"] = False
    kwargs["audio_encoder_kwargs"] = dict(kwargs.get("audio_encoder_kwargs") or {})
    model = script_util.tfg_create_model(**kwargs)
    return model.float().eval()


def build_official_diffusion(repo_dir: str, diffusion_flags: Mapping[str, Any], timestep_respacing: str):
    """The official (respaced) GaussianDiffusion for our diffusion flag names."""
    script_util = _import_guided_diffusion(repo_dir)
    flags = dict(diffusion_flags)
    return script_util.create_gaussian_diffusion(
        steps=int(flags.get("diffusion_steps", 1000)),
        learn_sigma=bool(flags.get("learn_sigma", False)),
        noise_schedule=flags.get("noise_schedule", "linear"),
        predict_xstart=bool(flags.get("predict_xstart", False)),
        rescale_timesteps=bool(flags.get("rescale_timesteps", False)),
        timestep_respacing=timestep_respacing,
    )


def import_official_generate(repo_dir: str, write_video: Any):
    """The official `generate.py` as a module, importable without torchvision or face_detection.

    `torchvision.io.write_video` becomes `write_video` (the official writer, called with
    `(path, video_array=..., fps=..., ...)`); `face_detection` is an empty module (the
    caller passes its own detector object); `dist_util.dev()` is the CPU. Everything
    else (its frame order, mel windows, batching, composite and paste) is the official code.
    """
    import torch

    _import_guided_diffusion(repo_dir)
    sys.modules["guided_diffusion.dist_util"].dev = lambda: torch.device("cpu")
    torchvision = types.ModuleType("torchvision")
    torchvision.io = types.SimpleNamespace(write_video=write_video)
    saved = {name: sys.modules.get(name) for name in ("torchvision", "face_detection")}
    sys.modules["torchvision"], sys.modules["face_detection"] = torchvision, types.ModuleType("face_detection")
    repo = os.path.abspath(repo_dir)
    if repo not in sys.path:
        sys.path.insert(0, repo)  # its `audio` package
    try:
        spec = importlib.util.spec_from_file_location("_official_generate", os.path.join(repo, "generate.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module
