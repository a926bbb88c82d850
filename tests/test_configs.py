"""The recipes in configs/*.py: every value of every variant and option, and the argument grammar.

The expected dicts are the values of the configs before the official recipe was
written once with a tiny override block (minus `data.prefetch`, read nowhere).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import ml_collections
import pytest
from helpers_config import config_module, config_path, load_config

from diff2lip_jax import default_config
from diff2lip_jax.config_args import VariantArg, parse_variant_arg

OFFICIAL_MODEL = {
    "attention_resolutions": "32,16,8",
    "audio_as_style": True,
    "audio_as_style_encoder_mlp": False,
    "audio_encoder_kwargs": {},
    "channel_mult": "",
    "class_cond": False,
    "compute_dtype": "auto",
    "dropout": 0.0,
    "image_size": 128,
    "learn_sigma": True,
    "nframes": 5,
    "nrefer": 1,
    "num_channels": 128,
    "num_head_channels": 64,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_audio": True,
    "use_fp16": False,
    "use_ref": True,
    "use_scale_shift_norm": False,
}
OFFICIAL_DIFFUSION = {
    "diffusion_steps": 1000,
    "learn_sigma": True,
    "noise_schedule": "linear",
    "predict_xstart": False,
    "rescale_timesteps": False,
    "timestep_respacing": "ddim25",
}
DIFF2LIP_OFFICIAL = {
    "data": {"dir": "", "eval_split": "val", "train_split": "train", "worker_count": 8},
    "diffusion": OFFICIAL_DIFFUSION,
    "discriminator": {"base_channels": 64, "num_layers": 3},
    "loss": {
        "face_hide_percentage": 0.5,
        "gan": 0.01,
        "l2": 1.0,
        "lpips": 0.2,
        "simple": 1.0,
        "sync": 0.05,
        "vb": 1.0,
    },
    "losses": "gan",
    "lpips": {"mode": "pretrained", "weights_dir": ""},
    "mesh": {"data": -1, "fsdp": 1},
    "model": OFFICIAL_MODEL,
    "syncnet": {"base_channels": 32, "checkpoint": "", "embed_dim": 512, "kind": "ours"},
    "train": {
        "batch_size": 64,
        "checkpoint_every": 5000,
        "d_lr": 0.0001,
        "ema_rate": 0.9999,
        "eval_batches": 20,
        "eval_every": 10000,
        "grad_clip": 1.0,
        "keep_checkpoints": 3,
        "log_every": 100,
        "lr": 0.0001,
        "num_steps": 500000,
        "sample_ddim_steps": 25,
        "sample_every": 10000,
        "seed": 0,
        "warmup_steps": 1000,
        "weight_decay": 0.0,
    },
    "task": "diff2lip",
    "variant": "official",
}
DIFF2LIP_TINY = {
    "data": {"dir": "", "eval_split": "val", "train_split": "train", "worker_count": 0},
    "diffusion": {**OFFICIAL_DIFFUSION, "learn_sigma": False, "predict_xstart": True},
    "discriminator": {"base_channels": 32, "num_layers": 2},
    "loss": {
        "face_hide_percentage": 0.5,
        "gan": 0.01,
        "l2": 1.0,
        "lpips": 0.2,
        "simple": 1.0,
        "sync": 0.05,
        "vb": 1.0,
    },
    "losses": "gan",
    "lpips": {"mode": "random", "weights_dir": ""},
    "mesh": {"data": -1, "fsdp": 1},
    "model": {
        **OFFICIAL_MODEL,
        "attention_resolutions": "8",
        "audio_encoder_kwargs": {"channel_mult": (1, 2, 2), "init_spatial_dim": 32, "num_res_blocks": 1},
        "channel_mult": "1,2,2",
        "image_size": 32,
        "learn_sigma": False,
        "num_channels": 32,
        "num_head_channels": 16,
        "num_res_blocks": 1,
    },
    "syncnet": {"base_channels": 16, "checkpoint": "", "embed_dim": 128, "kind": "ours"},
    "train": {
        "batch_size": 4,
        "checkpoint_every": 300,
        "d_lr": 0.0002,
        "ema_rate": 0.95,
        "eval_batches": 2,
        "eval_every": 300,
        "grad_clip": 1.0,
        "keep_checkpoints": 3,
        "log_every": 25,
        "lr": 0.001,
        "num_steps": 600,
        "sample_ddim_steps": 5,
        "sample_every": 300,
        "seed": 0,
        "warmup_steps": 0,
        "weight_decay": 0.0,
    },
    "task": "diff2lip",
    "variant": "tiny",
}
# losses=ROW: the loss weights of the ablation row (official; tiny in TINY_LOSS_WEIGHTS).
LOSS_WEIGHTS = {
    "recon": {"face_hide_percentage": 0.5, "gan": 0.0, "l2": 1.0, "lpips": 0.0, "simple": 1.0, "sync": 0.0, "vb": 1.0},
    "sync": {"face_hide_percentage": 0.5, "gan": 0.0, "l2": 1.0, "lpips": 0.0, "simple": 1.0, "sync": 0.05, "vb": 1.0},
    "perceptual": {
        "face_hide_percentage": 0.5,
        "gan": 0.0,
        "l2": 1.0,
        "lpips": 0.2,
        "simple": 1.0,
        "sync": 0.05,
        "vb": 1.0,
    },
    "gan": {"face_hide_percentage": 0.5, "gan": 0.01, "l2": 1.0, "lpips": 0.2, "simple": 1.0, "sync": 0.05, "vb": 1.0},
}
# tiny: no vb (no learned sigmas), sync 0.1, LPIPS and GAN off.
TINY_LOSS_WEIGHTS = {
    row: dict(w, vb=0.0, sync=0.1 if w["sync"] else 0.0, lpips=0.0, gan=0.0) for row, w in LOSS_WEIGHTS.items()
}
SYNCNET_OFFICIAL = {
    "augment": {"color": 0.0, "flip": False, "max_zoom": 0.0},
    "data": {"dir": "", "eval_split": "val", "read_threads": 8, "train_split": "train", "worker_count": 8},
    "mesh": {"data": -1, "fsdp": 1},
    "model": {
        "audio_mult": (1, 2, 4, 8),
        "base_channels": 32,
        "embed_dim": 512,
        "face_mult": (2, 4, 8, 16, 16),
        "image_size": 128,
        "num_res_blocks": 2,
    },
    "negatives": {"min_offset": 5, "same_clip": True},
    "train": {
        "batch_size": 64,
        "checkpoint_every": 10000,
        "eval_batches": 50,
        "eval_every": 10000,
        "keep_checkpoints": 3,
        "log_every": 100,
        "lr": 0.0001,
        "lr_schedule": "constant",
        "num_steps": 300000,
        "seed": 0,
        "warmup_steps": 0,
    },
    "task": "syncnet",
    "variant": "official",
}
SYNCNET_TINY = {
    "augment": {"color": 0.3, "flip": True, "max_zoom": 0.15},
    "data": {"dir": "", "eval_split": "val", "read_threads": 2, "train_split": "train", "worker_count": 0},
    "mesh": {"data": -1, "fsdp": 1},
    "model": {
        "audio_mult": (1, 2, 4, 8),
        "base_channels": 16,
        "embed_dim": 512,
        "face_mult": (2, 4, 8, 16, 16),
        "image_size": 32,
        "num_res_blocks": 0,
    },
    "negatives": {"min_offset": 5, "same_clip": True},
    "train": {
        "batch_size": 32,
        "checkpoint_every": 500,
        "eval_batches": 16,
        "eval_every": 500,
        "keep_checkpoints": 3,
        "log_every": 100,
        "lr": 0.0003,
        "lr_schedule": "cosine",
        "num_steps": 3000,
        "seed": 0,
        "warmup_steps": 100,
    },
    "task": "syncnet",
    "variant": "tiny",
}


def assert_same(got, want, path="config"):
    """Equal values of equal types (1 != 1.0, a tuple is not a list), key by key."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {got!r} is not a dict"
        assert sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    else:
        assert type(got) is type(want) and got == want, f"{path}: {got!r} != {want!r}"


def diff2lip_expected(variant: str, losses: str) -> dict:
    want = copy.deepcopy(DIFF2LIP_OFFICIAL if variant == "official" else DIFF2LIP_TINY)
    want["losses"] = losses
    want["loss"] = (LOSS_WEIGHTS if variant == "official" else TINY_LOSS_WEIGHTS)[losses]
    return want


@pytest.mark.parametrize("variant", ["official", "tiny"])
@pytest.mark.parametrize("losses", ["recon", "sync", "perceptual", "gan"])
def test_diff2lip_config_values(variant, losses):
    assert_same(load_config("diff2lip", f"{variant},losses={losses}").to_dict(), diff2lip_expected(variant, losses))
    # The option may come first.
    assert_same(load_config("diff2lip", f"losses={losses},{variant}").to_dict(), diff2lip_expected(variant, losses))


@pytest.mark.parametrize(
    "arg, variant", [(None, "official"), ("", "official"), ("official", "official"), ("tiny", "tiny")]
)
def test_diff2lip_config_defaults(arg, variant):
    assert_same(load_config("diff2lip", arg).to_dict(), diff2lip_expected(variant, "gan"))
    assert_same(load_config("diff2lip", "losses=sync").to_dict(), diff2lip_expected("official", "sync"))


@pytest.mark.parametrize(
    "arg, want", [(None, SYNCNET_OFFICIAL), ("official", SYNCNET_OFFICIAL), ("tiny", SYNCNET_TINY)]
)
def test_syncnet_config_values(arg, want):
    assert_same(load_config("syncnet", arg).to_dict(), want)


def test_ablation_rows_match_loss_sets():
    loss_sets = config_module("diff2lip").LOSS_SETS
    assert list(loss_sets) == list(LOSS_WEIGHTS)
    for row, on in loss_sets.items():
        assert {k for k, v in LOSS_WEIGHTS[row].items() if v and k != "face_hide_percentage"} == set(on)


def test_learn_sigma_is_one_flag():
    for cfg in (load_config("diff2lip", "tiny"), default_config.get_config()):
        cfg.model.learn_sigma = False
        assert cfg.diffusion.learn_sigma is False


def test_library_default_is_the_official_model_and_diffusion():
    cfg = default_config.get_config()
    assert_same(cfg.to_dict(), {"model": OFFICIAL_MODEL, "diffusion": OFFICIAL_DIFFUSION})
    official = load_config("diff2lip", "official")
    assert_same(cfg.model.to_dict(), official.model.to_dict())
    assert_same(cfg.diffusion.to_dict(), official.diffusion.to_dict())
    with pytest.raises(ValueError, match="no argument"):
        default_config.get_config("tiny")


@pytest.mark.parametrize(
    "name, arg, message",
    [
        ("diff2lip", "huge", r"unknown variant 'huge'.*\('official', 'tiny'\)"),
        ("diff2lip", "tiny,losses=all", r"unknown losses='all'.*'recon', 'sync', 'perceptual', 'gan'"),
        ("diff2lip", "tiny,loss=gan", r"unknown option 'loss'; known options: losses"),
        ("diff2lip", "tiny,official", r"two variants"),
        ("diff2lip", "tiny,losses=sync,losses=gan", r"'losses' given twice"),
        ("syncnet", "tiny,losses=gan", r"unknown option 'losses'; known options: none"),
        ("syncnet", "huge", r"unknown variant 'huge'"),
    ],
)
def test_bad_config_args_name_the_key_and_the_choices(name, arg, message):
    with pytest.raises(ValueError, match=message):
        load_config(name, arg)


def test_parse_variant_arg_types():
    options = {"steps": int, "lr": float, "flip": bool, "name": str, "mode": ("a", "b")}
    got = parse_variant_arg(" tiny , steps=3, lr=1e-3,flip=yes,name=x=y,mode=b ", ("official", "tiny"), options)
    assert got == VariantArg("tiny", {"steps": 3, "lr": 1e-3, "flip": True, "name": "x=y", "mode": "b"})
    assert type(got.options["steps"]) is int
    assert parse_variant_arg(None, ("a", "b")) == VariantArg("a", {})
    assert parse_variant_arg("flip=0", ("a",), options) == VariantArg("a", {"flip": False})
    with pytest.raises(ValueError, match=r"steps='x' is not a valid int"):
        parse_variant_arg("steps=x", ("a",), options)
    with pytest.raises(ValueError, match=r"flip='maybe' is not a valid bool"):
        parse_variant_arg("flip=maybe", ("a",), options)


def test_configs_load_by_path_with_config_flags():
    """The files load as `--config=FILE.py:ARG`; configs/ is not an importable package of the library."""
    code = (
        "import sys; from absl import flags; from ml_collections import config_flags;"
        "config_flags.DEFINE_config_file('config');"
        "flags.FLAGS(sys.argv);"
        "c = flags.FLAGS.config; print(c.variant, c.losses, c.model.image_size, c.loss.gan)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, f"--config={config_path('diff2lip')}:tiny,losses=sync"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == ["tiny", "sync", "32", "0.0"]


def test_recipes_are_config_dicts():
    assert isinstance(load_config("diff2lip", "tiny"), ml_collections.ConfigDict)
    assert isinstance(load_config("syncnet", "tiny"), ml_collections.ConfigDict)


def _flag_run(define: str, *argv: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from absl import flags; from diff2lip_jax import cli;"
        f"{define};"
        "flags.FLAGS(sys.argv);"
        "c = flags.FLAGS.config; print(c.model.num_channels, c.diffusion.timestep_respacing, 'train' in c)"
    )
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)


def test_library_default_config_flag_takes_overrides_without_a_file():
    """generate / convert: no --config is the official model + diffusion, and --config.model.X=V still works."""
    define = "cli.define_config_flag('model flags')"
    proc = _flag_run(define, "--config.model.num_channels=64")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["64", "ddim25", "False"]
    proc = _flag_run(define, f"--config={config_path('diff2lip')}:tiny", "--config.diffusion.timestep_respacing=ddim5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["32", "ddim5", "True"]


def test_required_config_flag_has_no_default():
    """The trainers: --config names a recipe file; without it absl refuses the command line."""
    define = "cli.define_config_flag('training config', None, required=True)"
    proc = _flag_run(define)
    assert proc.returncode != 0 and "Flag --config must have a value other than None" in proc.stderr
    proc = _flag_run(define, f"--config={config_path('diff2lip')}:official,losses=sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["128", "ddim25", "True"]
