"""UNet speed: jitted forward and training step (fwd+bwd+Adam), optionally vs the official PyTorch model.

    python benchmarks/unet.py                                  # official config, batch 5
    python benchmarks/unet.py --config=configs/diff2lip.py:tiny --batch=8
    python benchmarks/unet.py --torch_reference=/path/to/diff2lip   # + the official model, same inputs

Reports seconds per call (median of --repeats after one warm-up), frames/s and
achieved GFLOP/s from XLA's cost analysis of the compiled program. With
--torch_reference (a checkout of github.com/soumik-kanad/diff2lip that you
supply) the official TFGModel runs on the same inputs in the same process and
the ratio torch_time / jax_time is printed (> 1 means we are faster).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from common import bench_torch, flops_of, make_inputs, timed

from diff2lip_jax import cli
from diff2lip_jax.models import build_unet, init_params

cli.define_config_flag("model config (config.model); default the official model")
flags.DEFINE_integer("batch", 5, "frames per call")
flags.DEFINE_integer("repeats", 3, "timed calls after the warm-up")
flags.DEFINE_string("torch_reference", None, "checkout of the official diff2lip repo to time alongside")
flags.DEFINE_list("modes", ["forward", "train"], "forward and/or train (fwd+bwd+Adam)")
FLAGS = flags.FLAGS


def bench_jax(model, params, inputs, modes, repeats):
    kw = {k: jnp.asarray(inputs[k]) for k in ("cond_img", "mask", "ref_img", "indiv_mels")}
    x, t, target = jnp.asarray(inputs["x"]), jnp.asarray(inputs["t"]), jnp.asarray(inputs["target"])
    results = {}
    if "forward" in modes:
        fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, **kw))
        compiled = fwd.lower(params, x, t).compile()
        secs = timed(lambda: compiled(params, x, t).block_until_ready(), repeats)
        results["forward"] = (secs, flops_of(compiled))
    if "train" in modes:
        tx = optax.adam(1e-4)

        def loss_fn(p):
            return jnp.mean((model.apply({"params": p}, x, t, **kw) - target) ** 2)

        def step(p, opt_state):
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss

        opt_state = tx.init(params)
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state).compile()
        state = [jax.tree.map(jnp.copy, params), opt_state]

        def run():
            state[0], state[1], loss = compiled(state[0], state[1])
            loss.block_until_ready()

        results["train"] = (timed(run, repeats), flops_of(compiled))
    return results


def main(argv):
    del argv
    cfg_model = FLAGS.config.model
    model = build_unet(cfg_model)
    cfg = model.cfg
    params = init_params(model, jax.random.key(0))
    inputs = make_inputs(cfg, FLAGS.batch)
    print(
        f"backend {jax.default_backend()} ({jax.device_count()} device(s)), image {cfg.image_size}, "
        f"channels {cfg.num_channels}, batch {FLAGS.batch}, "
        f"{sum(p.size for p in jax.tree.leaves(params)):,} params"
    )
    ours = bench_jax(model, params, inputs, FLAGS.modes, FLAGS.repeats)
    theirs = (
        bench_torch(FLAGS.torch_reference, cfg_model, params, cfg, inputs, FLAGS.modes, FLAGS.repeats)
        if FLAGS.torch_reference
        else {}
    )
    print(
        f"{'mode':<9}{'jax s':>9}{'frames/s':>10}{'GFLOP/frame':>13}{'GFLOP/s':>9}"
        + (f"{'torch s':>9}{'torch/jax':>10}" if theirs else "")
    )
    for mode, (secs, flops) in ours.items():
        row = (
            f"{mode:<9}{secs:>9.3f}{FLAGS.batch / secs:>10.2f}{flops / 1e9 / FLAGS.batch:>13.1f}"
            f"{flops / 1e9 / secs:>9.1f}"
        )
        if mode in theirs:
            row += f"{theirs[mode]:>9.3f}{theirs[mode] / secs:>10.2f}"
        print(row)
    print(f"(train = forward + backward + Adam update; times are medians of {FLAGS.repeats} calls after a warm-up)")


if __name__ == "__main__":
    app.run(main)
