"""Per-device memory of the five-loss train step by batch size, with and without fsdp.

    python benchmarks/memory_plan.py                      # official config, 8 devices, data vs fsdp
    python benchmarks/memory_plan.py --devices=8 --meshes=8x1,1x8 --per_device_batches=1,2

Compiles (never runs) the real train step for each mesh (data x fsdp) and per-device
batch, on abstract inputs (`jax.eval_shape`: nothing is allocated), and reads XLA's
buffer assignment (`compiled.memory_analysis()`: arguments + outputs + temporaries -
donated aliases, per device). On a CPU host the devices are fake
(`--xla_force_host_platform_device_count`, set here), so the numbers are XLA:CPU's
buffer plan for the same program: a GPU's or TPU's differs in fusion and scratch space,
so keep 10-20% headroom, and check on the device with benchmarks/accelerator.py
(peak device memory). Memory is affine in the batch, so two batches per mesh give the
fixed part (weights, EMA, Adam moments, the frozen SyncNet and VGG16) and the cost per
sequence; the plan extrapolates the largest per-device batch that fits each --budgets_gib.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from common import memory_bytes  # numpy only: jax starts later, after the fake-device flag

OFFICIAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "diff2lip.py") + ":official"

flags.DEFINE_integer("devices", 8, "fake CPU devices (a CPU host only; an accelerator host uses its own)")
flags.DEFINE_list("meshes", ["8x1", "1x8"], "meshes DATAxFSDP whose product is the device count")
flags.DEFINE_list("per_device_batches", ["1", "2"], "5-frame sequences per device (two or more for the fit)")
flags.DEFINE_list("budgets_gib", ["40", "80"], "device memory sizes the plan fits a batch into")
flags.DEFINE_list("sampler_batches", ["8", "32"], "frames per device of generate's sampler (empty: skip)")
flags.DEFINE_list("sampler_budgets_gib", ["16", "24", "40", "80"], "device memory sizes for --batch_size")
FLAGS = flags.FLAGS


def step_memory(cfg, data: int, fsdp: int, per_device: int) -> dict:
    """XLA's per-device memory plan of the train step (GiB), compiled on abstract inputs."""
    import jax

    from diff2lip_jax import parallel
    from diff2lip_jax.train.build import build_modules, init_state
    from diff2lip_jax.train.diff2lip import random_batch
    from diff2lip_jax.train.step import make_train_step

    mesh = parallel.make_mesh(data, fsdp)
    modules, frozen = build_modules(cfg)
    state = jax.eval_shape(lambda: init_state(cfg, modules))
    shardings = parallel.fsdp_shardings(state, mesh)
    rep, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    batch = random_batch(per_device * mesh.devices.size, modules.model.cfg.image_size, nrefer=modules.model.cfg.nrefer)
    abstract = lambda tree, sh: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    step = jax.jit(
        make_train_step(modules, cfg),
        donate_argnums=0,
        in_shardings=(shardings, rep, batch_sh),
        out_shardings=(shardings, rep),
    )
    compiled = step.lower(
        abstract(state, shardings),
        abstract(frozen, jax.tree.map(lambda _: rep, frozen)),
        abstract(batch, jax.tree.map(lambda _: batch_sh, batch)),
    ).compile()
    mem = compiled.memory_analysis()
    return dict(
        total=memory_bytes(compiled) / 2**30,
        arguments=mem.argument_size_in_bytes / 2**30,
        temporaries=mem.temp_size_in_bytes / 2**30,
    )


def sampler_memory(cfg, per_device: int) -> float:
    """XLA's per-device memory plan (GiB) of generate's DDIM sampler on `per_device` frames, one device."""
    import jax
    import numpy as np

    from diff2lip_jax.generate import model as model_lib
    from diff2lip_jax.models import UNetConfig, abstract_params

    ucfg = UNetConfig.from_flags(cfg.model)
    sampler = model_lib.get_sampler(ucfg, model_lib.diffusion_flags(cfg, ucfg), 25, devices=jax.local_devices()[:1])
    s = ucfg.image_size
    crops = jax.ShapeDtypeStruct((per_device, s, s, 3), np.uint8)
    lowered = sampler._fn.lower(
        abstract_params(ucfg),
        jax.ShapeDtypeStruct((s, s, 3), np.float32),
        crops,
        crops,
        jax.ShapeDtypeStruct((per_device, 80, 16), np.float32),
    )
    return memory_bytes(lowered.compile()) / 2**30


def train_plan(cfg, meshes: list[tuple[int, int]], batches: list[int]) -> None:
    """Prints the train step's memory per mesh and batch, the affine fit, and what fits each budget."""
    print(f"{'mesh':<10}{'batch/device':>13}{'global':>8}{'GiB/device':>12}{'arguments':>11}{'temporaries':>13}")
    plans = []
    for data, fsdp in meshes:
        points = []
        for b in batches:
            m = step_memory(cfg, data, fsdp, b)
            points.append((b, m["total"]))
            print(
                f"{f'{data}x{fsdp}':<10}{b:>13}{b * data * fsdp:>8}{m['total']:>12.2f}{m['arguments']:>11.2f}"
                f"{m['temporaries']:>13.2f}",
                flush=True,
            )
        (b0, m0), (b1, m1) = points[0], points[-1]
        per_seq = (m1 - m0) / (b1 - b0)
        plans.append((data, fsdp, m0 - per_seq * b0, per_seq))
    print("\nfit: memory = fixed + per_sequence x batch/device; largest batch/device that fits")
    budgets = [float(g) for g in FLAGS.budgets_gib]
    print(f"{'mesh':<10}{'fixed GiB':>10}{'GiB/seq':>9}" + "".join(f"{f'{g:g} GiB':>10}" for g in budgets))
    for data, fsdp, fixed, per_seq in plans:
        fits = [max(0, int((g - fixed) // per_seq)) if per_seq > 0 else 0 for g in budgets]
        print(f"{f'{data}x{fsdp}':<10}{fixed:>10.2f}{per_seq:>9.2f}" + "".join(f"{n:>10}" for n in fits))


def sampler_plan(cfg, batches: list[int]) -> None:
    """Prints the sampler's memory per batch and the --batch_size per device that fits 80% of each budget."""
    print("\ngenerate's DDIM sampler, one device (frames per device = --batch_size / devices)")
    points = [(b, sampler_memory(cfg, b)) for b in batches]
    for b, gib in points:
        print(f"  {b:>4} frames: {gib:.2f} GiB", flush=True)
    (b0, m0), (b1, m1) = points[0], points[-1]
    per_frame = (m1 - m0) / (b1 - b0)
    fixed = m0 - per_frame * b0
    budgets = [float(g) for g in FLAGS.sampler_budgets_gib]
    fits = ", ".join(f"{g:g} GiB: {max(0, int((0.8 * g - fixed) // per_frame))}" for g in budgets)
    print(f"  fixed {fixed:.2f} GiB + {per_frame * 1024:.1f} MiB/frame; frames per device at 80% of {fits}")


def main(argv):
    del argv
    import jax

    cfg = FLAGS.config
    cfg.lpips.mode = "random"  # the same buffers as the pretrained VGG16; nothing to download
    cfg.syncnet.checkpoint = ""
    meshes = [tuple(int(v) for v in m.lower().split("x")) for m in FLAGS.meshes if m]
    batches = sorted(int(b) for b in FLAGS.per_device_batches)
    sampler_batches = sorted(int(b) for b in FLAGS.sampler_batches if b)
    if (meshes and len(batches) < 2) or len(sampler_batches) == 1:
        raise app.UsageError("--per_device_batches and --sampler_batches need two or more sizes (the fit is affine)")
    losses = "+".join(k for k in ("simple", "vb", "l2", "sync", "lpips", "gan") if cfg.loss[k] > 0)
    print(f"config {cfg.variant}, image {cfg.model.image_size}, losses {losses}, XLA:{jax.default_backend()}")
    if meshes:
        train_plan(cfg, meshes, batches)
    if sampler_batches:
        sampler_plan(cfg, sampler_batches)


if __name__ == "__main__":
    # Fake devices must exist before jax starts: set them here, on a CPU host only.
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        count = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "8")
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
        ).strip()
    from diff2lip_jax import cli

    cli.define_config_flag("training config", OFFICIAL)
    cli.run_app("memory_plan.py", main, doc=__doc__)
