"""Diff2Lip model, diffusion and training configs.

    --config=configs/diff2lip.py:official          the paper's 128 px model
    --config=configs/diff2lip.py:tiny              a model that trains on a laptop CPU
    --config=configs/diff2lip.py:official,losses=sync   the paper's ablation rows:
        losses=recon|sync|perceptual|gan (default gan: all five losses)

Model and diffusion fields carry the official flag names, so a user who knows
`scripts/inference.sh` sets the same values with `--config.model.X=V`.
"""

from __future__ import annotations

import ml_collections

from diff2lip_jax.models.config import OFFICIAL_MODEL_FLAGS

VARIANTS = ("official", "tiny")

# The paper's ablation rows (Tables 1 and 3): each adds one loss to the row before.
LOSS_SETS = {
    "recon": ("simple", "vb", "l2"),
    "sync": ("simple", "vb", "l2", "sync"),
    "perceptual": ("simple", "vb", "l2", "sync", "lpips"),
    "gan": ("simple", "vb", "l2", "sync", "lpips", "gan"),
}

# Loss weights. The paper names the five losses but not their weights; these are
# our choice: L_simple and the vb term as guided-diffusion, the x0 L2 at 1, and the
# expert/perceptual/adversarial terms small, in the range Wav2Lip uses (sync 0.03,
# disc 0.07) so they shape the mouth without overriding the denoising objective.
LAMBDAS = dict(simple=1.0, vb=1.0, l2=1.0, sync=0.05, lpips=0.2, gan=0.01)


def _parse_arg(arg: str | None) -> dict[str, str]:
    """'official,losses=sync' -> {'variant': 'official', 'losses': 'sync'}."""
    parts = [p for p in (arg or "official").split(",") if p]
    out = {"variant": "official"}
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
        else:
            out["variant"] = part.strip()
    if out.get("losses", "gan") not in LOSS_SETS:
        raise ValueError(f"unknown losses={out['losses']!r}; choose one of {tuple(LOSS_SETS)}")
    if out["variant"] not in VARIANTS:
        raise ValueError(f"unknown variant {out['variant']!r}; choose one of {VARIANTS}")
    return out


def model_config(variant: str = "official") -> ml_collections.ConfigDict:
    """The UNet flags (official names) for a variant."""
    model = ml_collections.ConfigDict(dict(OFFICIAL_MODEL_FLAGS))
    model.compute_dtype = "auto"  # with use_fp16: bfloat16 ("float16" for the official GPU numerics)
    model.audio_encoder_kwargs = ml_collections.ConfigDict({})
    if variant == "tiny":
        model.image_size = 64
        model.num_channels = 32
        model.num_res_blocks = 1
        model.num_head_channels = 16
        model.attention_resolutions = "16,8"
        model.audio_encoder_kwargs = ml_collections.ConfigDict({"num_res_blocks": 1})
    return model


def diffusion_config() -> ml_collections.ConfigDict:
    """The official diffusion flags: 1000 linear steps, sampled with 25 DDIM steps."""
    return ml_collections.ConfigDict(
        dict(
            diffusion_steps=1000,
            noise_schedule="linear",
            learn_sigma=True,
            timestep_respacing="ddim25",
            predict_xstart=False,
            rescale_timesteps=False,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse_arg(arg)
    variant = args["variant"]
    cfg = ml_collections.ConfigDict()
    cfg.task = "diff2lip"  # which trainer: diff2lip-train or diff2lip-train-syncnet
    cfg.variant = variant
    cfg.model = model_config(variant)
    cfg.diffusion = diffusion_config()
    # learn_sigma is both a model and a diffusion flag in the official code; one value.
    cfg.diffusion.learn_sigma = cfg.model.get_ref("learn_sigma")

    losses = args.get("losses", "gan")
    cfg.losses = losses
    cfg.loss = ml_collections.ConfigDict({k: (v if k in LOSS_SETS[losses] else 0.0) for k, v in LAMBDAS.items()})
    cfg.loss.face_hide_percentage = 0.5  # official: the lower half is generated

    tiny = variant == "tiny"
    cfg.data = ml_collections.ConfigDict(
        dict(
            dir="",  # a prepared dataset (diff2lip-preprocess --out)
            train_split="train",
            eval_split="val",
            worker_count=0 if tiny else 8,
            prefetch=2,
        )
    )
    cfg.train = ml_collections.ConfigDict(
        dict(
            num_steps=300 if tiny else 500_000,
            batch_size=4 if tiny else 64,  # global, in 5-frame sequences (64 x 5 = 320 frames)
            lr=1e-3 if tiny else 1e-4,  # tiny: short CPU runs (L_simple 0.20 vs 0.69 after 50 demo steps at 2e-4)
            d_lr=2e-4 if tiny else 1e-4,
            weight_decay=0.0,
            grad_clip=1.0,
            warmup_steps=0 if tiny else 1000,
            ema_rate=0.95 if tiny else 0.9999,  # tiny: 0.99 left 37% of the init weights after the demo's 100 steps
            seed=0,
            log_every=10 if tiny else 100,
            checkpoint_every=100 if tiny else 5000,
            keep_checkpoints=3,
            sample_every=150 if tiny else 10_000,
            sample_ddim_steps=5 if tiny else 25,
            eval_every=150 if tiny else 10_000,
            eval_batches=2 if tiny else 20,
        )
    )
    cfg.syncnet = ml_collections.ConfigDict(
        dict(
            kind="ours",  # "ours" (diff2lip-train-syncnet workdir) or "wav2lip" (lipsync_expert.pth)
            checkpoint="",  # workdir or .pth; "" = random weights (tests only; logged loudly)
            base_channels=16 if tiny else 32,  # the random SyncNet's size (a checkpoint brings its own)
            embed_dim=128 if tiny else 512,
        )
    )
    cfg.lpips = ml_collections.ConfigDict(
        dict(
            mode="random" if tiny else "pretrained",  # "random" only for tests and the offline demo
            weights_dir="",
        )
    )
    cfg.discriminator = ml_collections.ConfigDict(
        dict(
            base_channels=32 if tiny else 64,
            num_layers=2 if tiny else 3,
        )
    )
    cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    return cfg
