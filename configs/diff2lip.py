"""Diff2Lip model, diffusion and training configs.

    --config=configs/diff2lip.py:official          the paper's 128 px model
    --config=configs/diff2lip.py:tiny              a model that trains on a laptop CPU
    --config=configs/diff2lip.py:official,losses=sync   the paper's ablation rows:
        losses=recon|sync|perceptual|gan (default gan: all five losses)

The official recipe is written once below; the `tiny` block at the end overrides
it, then `losses=` zeroes the weights outside the chosen ablation row. Model and
diffusion fields carry the official flag names (diff2lip_jax/default_config.py),
so a user who knows `scripts/inference.sh` sets the same values with
`--config.model.X=V`.
"""

from __future__ import annotations

import ml_collections

from diff2lip_jax import default_config
from diff2lip_jax.config_args import parse_variant_arg

VARIANTS = ("official", "tiny")

# The paper's ablation rows (Tables 1 and 3): each adds one loss to the row before.
LOSS_SETS = {
    "recon": ("simple", "vb", "l2"),
    "sync": ("simple", "vb", "l2", "sync"),
    "perceptual": ("simple", "vb", "l2", "sync", "lpips"),
    "gan": ("simple", "vb", "l2", "sync", "lpips", "gan"),
}
OPTIONS = {"losses": tuple(LOSS_SETS)}

# Loss weights. The paper names the five losses but not their weights; these are
# our choice: L_simple and the vb term as guided-diffusion, the x0 L2 at 1, and the
# expert/perceptual/adversarial terms small, in the range Wav2Lip uses (sync 0.03,
# disc 0.07) so they shape the mouth without overriding the denoising objective.
LAMBDAS = dict(simple=1.0, vb=1.0, l2=1.0, sync=0.05, lpips=0.2, gan=0.01)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, options = parse_variant_arg(arg, VARIANTS, OPTIONS)
    losses = options.get("losses", "gan")

    # The official recipe. model / diffusion: the official flags (learn_sigma shared).
    cfg = default_config.get_config()
    cfg.task = "diff2lip"  # which trainer: diff2lip-train or diff2lip-train-syncnet
    cfg.variant = variant
    cfg.losses = losses
    cfg.loss = ml_collections.ConfigDict(dict(LAMBDAS))
    cfg.loss.face_hide_percentage = 0.5  # official: the lower half is generated
    cfg.data = ml_collections.ConfigDict(
        dict(
            dir="",  # a prepared dataset (diff2lip-preprocess --out)
            train_split="train",
            eval_split="val",
            worker_count=8,
        )
    )
    cfg.train = ml_collections.ConfigDict(
        dict(
            num_steps=500_000,
            batch_size=64,  # global, in 5-frame sequences (64 x 5 = 320 frames)
            lr=1e-4,
            d_lr=1e-4,
            weight_decay=0.0,
            grad_clip=1.0,
            warmup_steps=1000,
            ema_rate=0.9999,
            seed=0,
            log_every=100,
            checkpoint_every=5000,
            keep_checkpoints=3,
            sample_every=10_000,
            sample_ddim_steps=25,
            eval_every=10_000,
            eval_batches=20,
        )
    )
    cfg.syncnet = ml_collections.ConfigDict(
        dict(
            kind="ours",  # "ours" (diff2lip-train-syncnet workdir) or "wav2lip" (lipsync_expert.pth)
            checkpoint="",  # workdir or .pth; "" = random weights (tests only; logged loudly)
            base_channels=32,  # the random SyncNet's size (a checkpoint brings its own)
            embed_dim=512,
        )
    )
    cfg.lpips = ml_collections.ConfigDict(
        dict(
            mode="pretrained",  # "random" only for tests and the offline demo
            weights_dir="",
        )
    )
    cfg.discriminator = ml_collections.ConfigDict(dict(base_channels=64, num_layers=3))
    cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

    if variant == "tiny":  # learns lip-sync on a 2-core CPU in minutes (README: "What the demo shows")
        # 32 px crops and a slim UNet and audio encoder: 0.66 GFLOP per frame forward
        # (the 64 px tiny model of before: 3.5). The audio encoder's 64-row input stack
        # cost as much as the image path; 32 rows and two downsamplings suffice for 16 mel steps.
        cfg.model.image_size = 32
        cfg.model.num_channels = 32
        cfg.model.channel_mult = "1,2,2"
        cfg.model.num_res_blocks = 1
        cfg.model.num_head_channels = 16
        cfg.model.attention_resolutions = "8"
        cfg.model.audio_encoder_kwargs = ml_collections.ConfigDict(
            {"num_res_blocks": 1, "init_spatial_dim": 32, "channel_mult": (1, 2, 2)}
        )
        # x0 prediction: L_simple is then the masked x0 MSE, whose gradient at large t asks
        # directly for the mouth the audio implies; with eps prediction and learned sigmas
        # 400 CPU steps still copied the reference (sync r = 0.33, chance 0.29).
        cfg.model.learn_sigma = False
        cfg.diffusion.predict_xstart = True
        cfg.data.worker_count = 0
        cfg.train.num_steps = 600
        cfg.train.batch_size = 4
        cfg.train.lr = 1e-3  # short CPU runs (L_simple 0.20 vs 0.69 after 50 demo steps at 2e-4)
        cfg.train.d_lr = 2e-4
        cfg.train.warmup_steps = 0
        cfg.train.ema_rate = 0.95  # 0.99 left 37% of the init weights after 100 steps
        cfg.train.log_every = 25
        cfg.train.checkpoint_every = 300
        cfg.train.sample_every = 300
        cfg.train.sample_ddim_steps = 5
        cfg.train.eval_every = 300
        cfg.train.eval_batches = 2
        cfg.syncnet.base_channels = 16
        cfg.syncnet.embed_dim = 128
        cfg.lpips.mode = "random"
        cfg.discriminator.base_channels = 32
        cfg.discriminator.num_layers = 2
        # The expert does the lip-sync teaching (x0 L2 alone: sync r -0.17 after 300 steps;
        # with sync 0.1: 0.78 after 600, 0.89 after 900 on held-out identities). LPIPS
        # would use random VGG weights offline and the GAN costs steps: both off here;
        # turn them on (--config.loss.lpips=0.2 with lpips.mode=pretrained) on a GPU.
        cfg.loss.update(vb=0.0, sync=0.1, lpips=0.0, gan=0.0)

    # The ablation row: the losses outside it weigh 0.
    for name in LAMBDAS:
        if name not in LOSS_SETS[losses]:
            cfg.loss[name] = 0.0
    return cfg
