"""Diff2Lip training-step speed: steps/s, frames/s, memory, MFU; optionally vs the official UNet in PyTorch.

    python benchmarks/train_step.py --config=configs/diff2lip.py:tiny --batch=2
    python benchmarks/train_step.py --config=configs/diff2lip.py:official --batch=1 \
        --torch_reference=/path/to/diff2lip --peak_tflops=...

The step is the real one (five losses, D update, EMA) on random data of the
config's size, jitted with the mesh shardings of the config. Memory: XLA's
estimate for the compiled step (arguments + outputs + temporaries, per device)
and the process's peak RSS. MFU = achieved FLOP/s (XLA cost analysis of the
compiled step) / --peak_tflops (per device; no default on CPU, where the peak
depends on the machine). With --torch_reference the official TFGModel runs a
forward + backward + Adam step on the same number of frames in the same
process: that is the part of training the official repo could run, so the
ratio jax/torch compares like with like only for `--config.loss.*=0` apart
from simple/vb; both are printed.
"""

from __future__ import annotations

import os
import resource

import jax
from absl import app, flags
from common import bench_torch, compile_train_step, flops_of, make_inputs, memory_bytes, timed

from diff2lip_jax import cli, xla_flags
from diff2lip_jax.models import UNetConfig

# A training recipe of this checkout (the library's default config has no training fields).
TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "diff2lip.py") + ":tiny"
cli.define_config_flag("training config", TINY)
flags.DEFINE_integer("batch", 2, "global batch in 5-frame sequences")
flags.DEFINE_integer("repeats", 3, "timed steps after the warm-up")
flags.DEFINE_float("peak_tflops", None, "peak TFLOP/s per device for MFU (e.g. 197 for a TPU v5e chip)")
flags.DEFINE_string("torch_reference", None, "checkout of the official diff2lip repo to time alongside")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    xla_flags.apply_cpu_flags()  # before the first JAX computation
    cfg = FLAGS.config
    compiled, state, frozen, batch, mesh, compile_s = compile_train_step(cfg, FLAGS.batch)
    size = cfg.model.image_size
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], frozen, batch)
        jax.block_until_ready(metrics)

    secs = timed(run, FLAGS.repeats)
    flops = flops_of(compiled)
    mem = memory_bytes(compiled)
    frames = FLAGS.batch * 5
    on = [k for k in ("simple", "vb", "l2", "sync", "lpips", "gan") if cfg.loss[k] > 0]
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), mesh {dict(mesh.shape)}, "
        f"image {size}, batch {FLAGS.batch} sequences ({frames} frames), losses {'+'.join(on)}"
    )
    print(f"compile {compile_s:.1f} s | step {secs:.3f} s | {1 / secs:.3f} steps/s | {frames / secs:.2f} frames/s")
    print(
        f"XLA cost: {flops / 1e9:.1f} GFLOP/step ({flops / 1e9 / frames:.2f} GFLOP/frame), "
        f"{flops / 1e9 / secs:.1f} GFLOP/s achieved"
    )
    if mem is not None:
        print(f"memory (XLA estimate per device: arguments + outputs + temporaries): {mem / 2**30:.2f} GiB")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if FLAGS.peak_tflops:
        print(f"MFU: {100 * flops / secs / (FLAGS.peak_tflops * 1e12 * jax.device_count()):.1f}%")
    else:
        print("MFU: pass --peak_tflops (per device) to compute it")
    if FLAGS.torch_reference:
        import jax.numpy as jnp  # noqa: F401  (keeps jax first in the process)

        params = jax.device_get(holder[0].params)
        unet_cfg = UNetConfig.from_flags(cfg.model)
        inputs = make_inputs(unet_cfg, frames)
        torch_s = bench_torch(FLAGS.torch_reference, cfg.model, params, unet_cfg, inputs, ["train"], FLAGS.repeats)[
            "train"
        ]
        print(
            f"official PyTorch UNet fwd+bwd+Adam on {frames} frames: {torch_s:.3f} s "
            f"-> jax/torch = {secs / torch_s:.2f} (<= 1: our full step takes at most its time)"
        )


if __name__ == "__main__":
    app.run(main)
