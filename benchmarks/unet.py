"""UNet speed: jitted forward and training step (fwd+bwd+Adam), optionally vs the official PyTorch model.

    python benchmarks/unet.py                                  # official config, batch 1
    python benchmarks/unet.py --config=configs/diff2lip.py:tiny --batch=1,2
    python benchmarks/unet.py --torch_reference=/path/to/diff2lip   # + the official model, same inputs
    python benchmarks/unet.py --framework=jax                  # one side only, in this process

Reports seconds per call (median of --repeats after one warm-up), frames/s and
achieved GFLOP/s from XLA's cost analysis of the compiled program, for every
mode at every --batch. With --torch_reference (a checkout of
github.com/soumik-kanad/diff2lip that you supply) the official TFGModel is timed
on the same seeded inputs and the same weights, and the ratio jax_time /
torch_time is printed (<= 1 means we take at most the official model's time).

Each framework runs in its own process (`--framework=both`, the default, starts
this script twice): XLA's and PyTorch's thread pools in one process on a small
CPU take cores from each other and distort both timings. The JAX process writes
its weights in the official layout to a temporary file that the torch process
loads. `--rounds=N` alternates the two processes N times (jax, torch, jax, ...)
and prints each round's ratio and their median: on a shared machine whose speed
drifts, a ratio taken within a round is steadier than one of two separate runs
(the jax processes after the first load their programs from JAX's persistent
compilation cache).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from diff2lip_jax import cli, xla_flags

cli.define_config_flag("model config (config.model); default the official model")
flags.DEFINE_list("batch", ["1"], "frames per call; a list times every mode at each size, e.g. 1,2")
flags.DEFINE_integer("repeats", 3, "timed calls after the warm-up")
flags.DEFINE_integer("rounds", 1, "with --torch_reference: alternate the jax and torch processes this many times")
flags.DEFINE_integer("seed", 0, "seed of the inputs and the JAX weights")
flags.DEFINE_string("torch_reference", None, "checkout of the official diff2lip repo to time alongside")
flags.DEFINE_list("modes", ["forward", "train"], "forward and/or train (fwd+bwd+Adam)")
flags.DEFINE_enum("framework", "both", ["both", "jax", "torch"], "which side this process times")
flags.DEFINE_string("weights", None, "internal: official-layout .npz the jax side writes and the torch side reads")
flags.DEFINE_string("result", None, "internal: file the timings are written to as JSON")
FLAGS = flags.FLAGS

Timings = dict[str, dict[str, float]]  # {"forward:1": {"secs": s, "flops": f}}


def run_jax(batches: list[int]) -> Timings:
    import jax
    import numpy as np
    from common import bench_jax, make_inputs

    from diff2lip_jax.models import build_unet, init_params

    model = build_unet(FLAGS.config.model)
    cfg = model.cfg
    params = init_params(model, jax.random.key(FLAGS.seed))
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()} ({jax.device_count()} device(s)), "
        f"image {cfg.image_size}, channels {cfg.num_channels}, {sum(p.size for p in jax.tree.leaves(params)):,} params, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        flush=True,
    )
    if FLAGS.weights:
        from diff2lip_jax.convert import flax_to_torch

        np.savez(FLAGS.weights, **flax_to_torch(params, cfg))
    out: Timings = {}
    for batch in batches:
        inputs = make_inputs(cfg, batch, FLAGS.seed)
        for mode, (secs, flops) in bench_jax(model, params, inputs, FLAGS.modes, FLAGS.repeats).items():
            out[f"{mode}:{batch}"] = {"secs": secs, "flops": flops}
    return out


def run_torch(batches: list[int]) -> Timings:
    """The official model on the same seeded inputs; no JAX computation in this process."""
    import numpy as np
    import torch
    from common import bench_torch, make_inputs

    from diff2lip_jax.models import UNetConfig

    if not FLAGS.torch_reference:
        raise app.UsageError("--framework=torch needs --torch_reference=DIR (a checkout of the official repo)")
    cfg = UNetConfig.from_flags(FLAGS.config.model)
    state_dict = dict(np.load(FLAGS.weights)) if FLAGS.weights else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, weights "
        f"{'from the jax run' if state_dict is not None else 'official init (seed 0)'}",
        flush=True,
    )
    out: Timings = {}
    for batch in batches:
        inputs = make_inputs(cfg, batch, FLAGS.seed)
        times = bench_torch(
            FLAGS.torch_reference, FLAGS.config.model, None, cfg, inputs, FLAGS.modes, FLAGS.repeats, state_dict
        )
        out.update({f"{mode}:{batch}": {"secs": secs} for mode, secs in times.items()})
    return out


def print_table(ours: Timings, theirs: Timings) -> None:
    print(
        f"{'mode':<9}{'batch':>6}{'jax s':>9}{'frames/s':>10}{'GFLOP/frame':>13}{'GFLOP/s':>9}"
        + (f"{'torch s':>9}{'jax/torch':>10}" if theirs else "")
    )
    for key in ours or theirs:
        mode, batch = key.split(":")
        b = int(batch)
        row = f"{mode:<9}{b:>6}"
        if key in ours:
            secs, flops = ours[key]["secs"], ours[key]["flops"]
            row += f"{secs:>9.3f}{b / secs:>10.2f}{flops / 1e9 / b:>13.1f}{flops / 1e9 / secs:>9.1f}"
        else:
            row += f"{'-':>9}{'-':>10}{'-':>13}{'-':>9}"
        if key in theirs:
            row += f"{theirs[key]['secs']:>9.3f}"
            row += f"{ours[key]['secs'] / theirs[key]['secs']:>10.2f}" if key in ours else ""
        print(row)
    print(f"(train = forward + backward + Adam update; times are medians of {FLAGS.repeats} calls after a warm-up)")


def print_rounds(rounds: list[tuple[Timings, Timings]]) -> None:
    """Per mode, the jax/torch time ratio of every round and their median (< 1: jax is faster)."""
    print(f"jax / torch time per round ({len(rounds)} rounds, each side in its own process):")
    for key in rounds[0][0]:
        ratios = [ours[key]["secs"] / theirs[key]["secs"] for ours, theirs in rounds if key in theirs]
        if ratios:
            listed = " ".join(f"{r:.2f}" for r in ratios)
            print(f"  {key.replace(':', ' batch '):<16} {listed}  median {statistics.median(ratios):.2f}")


def _child(framework: str, weights: str | None, result: str) -> Timings:
    """Runs this script for one framework in a fresh process; its timings."""
    keep = [a for a in sys.argv[1:] if not a.startswith(("--framework", "--weights", "--result"))]
    cmd = [sys.executable, os.path.abspath(__file__), *keep, f"--framework={framework}", f"--result={result}"]
    if weights:
        cmd.append(f"--weights={weights}")
    subprocess.run(cmd, check=True)
    with open(result) as f:
        return json.load(f)


def main(argv):
    del argv
    batches = [int(b) for b in FLAGS.batch]
    if FLAGS.framework == "both":
        rounds = []
        with tempfile.TemporaryDirectory(prefix="unet_bench_") as tmp:
            weights = os.path.join(tmp, "weights.npz") if FLAGS.torch_reference else None
            for _ in range(max(1, FLAGS.rounds) if FLAGS.torch_reference else 1):
                ours = _child("jax", weights, os.path.join(tmp, "jax.json"))
                theirs = _child("torch", weights, os.path.join(tmp, "torch.json")) if FLAGS.torch_reference else {}
                rounds.append((ours, theirs))
        for ours, theirs in rounds:
            print_table(ours, theirs)
        if len(rounds) > 1:
            print_rounds(rounds)
        return
    if FLAGS.framework == "jax":
        xla_flags.apply_cpu_flags()  # before the first JAX computation
        xla_flags.enable_compilation_cache()
        timings = run_jax(batches)
        print_table(timings, {})
    else:
        timings = run_torch(batches)
        for key, v in timings.items():
            print(f"torch {key.replace(':', ' batch ')}: {v['secs']:.3f} s")
    if FLAGS.result:
        with open(FLAGS.result, "w") as f:
            json.dump(timings, f)


if __name__ == "__main__":
    app.run(main)
