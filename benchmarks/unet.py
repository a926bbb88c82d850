"""UNet speed: jitted forward and training step (fwd+bwd+Adam), optionally vs the official PyTorch model.

    python benchmarks/unet.py                                  # official config, batch 1
    python benchmarks/unet.py --config=configs/diff2lip.py:tiny --batch=1,2
    python benchmarks/unet.py --torch_reference=/path/to/diff2lip   # + the official model, same inputs
    python benchmarks/unet.py --framework=torch --torch_reference=...  # one side only, in this process

Reports seconds per call (median of --repeats after one warm-up), frames/s and
achieved GFLOP/s from XLA's cost analysis of the compiled program, for every
mode at every --batch. With --torch_reference (a checkout of
github.com/soumik-kanad/diff2lip that you supply) the official TFGModel is timed
on the same seeded inputs and the same weights, and the ratio jax_time /
torch_time is printed (<= 1 means we take at most the official model's time).

Each framework runs in its own process: XLA's and PyTorch's thread pools in one
process on a small CPU take cores from each other and distort both timings. The
two worker processes are started side by side and then take turns: one call of
one side, a pause (--settle) so that its threads go idle, one call of the other,
in the order jax, torch, torch, jax, ... so that a drift of the machine's speed
during a pair cancels. Only one side computes at a time. The jax process runs
with the project's CPU heap setting (xla_flags.keep_cpu_heap, unless you set
DIFF2LIP_CPU_MALLOC=0), the torch process with glibc's default heap, as the official
code does. Every pair gives a ratio; the table prints the median time of each
side and the median ratio. On a shared machine whose speed drifts by tens of
percent over minutes, ratios of calls seconds apart are far steadier than the
ratio of two runs minutes apart.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from diff2lip_jax import cli, xla_flags

cli.define_config_flag("model config (config.model); default the official model")
flags.DEFINE_list("batch", ["1"], "frames per call; a list times every mode at each size, e.g. 1,2")
flags.DEFINE_integer("repeats", 3, "timed calls (with --torch_reference: jax/torch pairs) after the warm-up")
flags.DEFINE_float("settle", 0.3, "with --torch_reference: seconds of pause before each timed call")
flags.DEFINE_integer("seed", 0, "seed of the inputs and the JAX weights")
flags.DEFINE_string("torch_reference", None, "checkout of the official diff2lip repo to time alongside")
flags.DEFINE_list("modes", ["forward", "train"], "forward and/or train (fwd+bwd+Adam)")
flags.DEFINE_enum("framework", "both", ["both", "jax", "torch"], "which side this process times")
flags.DEFINE_bool("serve", False, "internal: set up, then run one call per 'mode:batch' line read from stdin")
flags.DEFINE_string("weights", None, "internal: official-layout .npz the jax side writes and the torch side reads")
FLAGS = flags.FLAGS

Calls = dict[str, tuple]  # {"forward:1": (call, XLA FLOPs or None)}


def our_calls(batches: list[int]) -> Calls:
    import jax
    import numpy as np
    from common import jax_calls, make_inputs

    from diff2lip_jax.models import build_unet, init_params

    model = build_unet(FLAGS.config.model)
    cfg = model.cfg
    params = init_params(model, jax.random.key(FLAGS.seed))
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()} ({jax.device_count()} device(s)), "
        f"image {cfg.image_size}, channels {cfg.num_channels}, {sum(p.size for p in jax.tree.leaves(params)):,} params, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        file=sys.stderr,
        flush=True,
    )
    if FLAGS.weights:
        from diff2lip_jax.convert import flax_to_torch

        np.savez(FLAGS.weights, **flax_to_torch(params, cfg))
    out: Calls = {}
    for batch in batches:
        inputs = make_inputs(cfg, batch, FLAGS.seed)
        for mode, call in jax_calls(model, params, inputs, FLAGS.modes).items():
            out[f"{mode}:{batch}"] = call
    return out


def official_calls(batches: list[int]) -> Calls:
    """The official model on the same seeded inputs; no JAX computation in this process."""
    import numpy as np
    import torch
    from common import make_inputs, torch_calls

    from diff2lip_jax.models import UNetConfig

    if not FLAGS.torch_reference:
        raise app.UsageError("--framework=torch needs --torch_reference=DIR (a checkout of the official repo)")
    cfg = UNetConfig.from_flags(FLAGS.config.model)
    state_dict = dict(np.load(FLAGS.weights)) if FLAGS.weights else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, weights "
        f"{'from the jax run' if state_dict is not None else 'official init (seed 0)'}",
        file=sys.stderr,
        flush=True,
    )
    out: Calls = {}
    for batch in batches:
        inputs = make_inputs(cfg, batch, FLAGS.seed)
        calls = torch_calls(FLAGS.torch_reference, FLAGS.config.model, None, cfg, inputs, FLAGS.modes, state_dict)
        out.update({f"{mode}:{batch}": (call, None) for mode, call in calls.items()})
    return out


def serve(calls: Calls) -> None:
    """Worker loop: warm every call up, print {key: flops} as the ready line, then for each
    'key' line on stdin run that call once and print its seconds; stops at end of input."""
    for call, _ in calls.values():
        call()
    print(json.dumps({key: flops for key, (_, flops) in calls.items()}), flush=True)
    for line in sys.stdin:
        call = calls[line.strip()][0]
        start = time.perf_counter()
        call()
        print(f"{time.perf_counter() - start:.6f}", flush=True)


class Worker:
    """One framework's `--serve` process: `run(key)` is one timed call, in seconds."""

    def __init__(self, framework: str, weights: str | None):
        keep = [a for a in sys.argv[1:] if not a.startswith(("--framework", "--weights", "--serve"))]
        cmd = [sys.executable, os.path.abspath(__file__), *keep, f"--framework={framework}", "--serve"]
        if weights:
            cmd.append(f"--weights={weights}")
        self.name = framework
        env = dict(os.environ)
        if framework == "torch":
            # The official model as its users run it: importing diff2lip_jax (for the inputs and
            # the weight layout) would otherwise give this process our CPU heap settings too.
            env[xla_flags.HEAP_ENV] = "0"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.flops = json.loads(self._readline())

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} benchmark process ended early (exit {self.proc.wait()}); see above")
        return line

    def run(self, key: str) -> float:
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        return float(self._readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def interleaved(keys: list[str]) -> tuple[dict, dict, dict]:
    """Times both frameworks in turns: ({key: [jax s]}, {key: [torch s]}, {key: jax flops})."""
    with tempfile.TemporaryDirectory(prefix="unet_bench_") as tmp:
        jax_side = Worker("jax", os.path.join(tmp, "weights.npz"))  # writes the weights first
        torch_side = Worker("torch", os.path.join(tmp, "weights.npz"))
        ours, theirs = {k: [] for k in keys}, {k: [] for k in keys}
        try:
            for key in keys:
                for i in range(FLAGS.repeats):
                    order = [(jax_side, ours), (torch_side, theirs)]
                    for worker, times in order if i % 2 == 0 else order[::-1]:
                        time.sleep(FLAGS.settle)  # the other side's threads stop spinning
                        times[key].append(worker.run(key))
        finally:
            jax_side.close()
            torch_side.close()
    return ours, theirs, jax_side.flops


def print_table(ours: dict, theirs: dict, flops: dict) -> None:
    """Median seconds of each side per mode and batch; with torch, the median per-pair jax/torch ratio."""
    print(
        f"{'mode':<9}{'batch':>6}{'jax s':>9}{'frames/s':>10}{'GFLOP/frame':>13}{'GFLOP/s':>9}"
        + (f"{'torch s':>9}{'jax/torch':>10}{'pairs <= 1':>12}" if theirs else "")
    )
    for key, times in ours.items():
        mode, batch = key.split(":")
        b, secs = int(batch), statistics.median(times)
        row = f"{mode:<9}{b:>6}{secs:>9.3f}{b / secs:>10.2f}"
        row += (
            f"{flops[key] / 1e9 / b:>13.1f}{flops[key] / 1e9 / secs:>9.1f}" if flops.get(key) else f"{'-':>13}{'-':>9}"
        )
        if theirs:
            ratios = [j / t for j, t in zip(times, theirs[key])]
            wins = sum(r <= 1 for r in ratios)
            row += (
                f"{statistics.median(theirs[key]):>9.3f}{statistics.median(ratios):>10.2f}{f'{wins}/{len(ratios)}':>12}"
            )
        print(row)
    how = f"{FLAGS.repeats} calls after a warm-up"
    if theirs:
        how = f"{FLAGS.repeats} alternating jax/torch pairs after a warm-up, each side in its own process"
        print(
            "jax/torch per pair: "
            + "; ".join(f"{k} " + " ".join(f"{j / t:.2f}" for j, t in zip(ours[k], theirs[k])) for k in ours)
        )
    print(f"(train = forward + backward + Adam update; medians of {how})")


def main(argv):
    del argv
    batches = [int(b) for b in FLAGS.batch]
    if FLAGS.framework == "jax" or (FLAGS.framework == "both" and not FLAGS.torch_reference):
        xla_flags.apply_cpu_flags()  # before the first JAX computation
        xla_flags.enable_compilation_cache()
        calls = our_calls(batches)
    elif FLAGS.framework == "torch":
        calls = official_calls(batches)
    else:
        keys = [f"{mode}:{b}" for b in batches for mode in FLAGS.modes]
        print_table(*interleaved(keys))
        return
    if FLAGS.serve:
        serve(calls)
        return
    from common import timed

    times = {key: [timed(call, FLAGS.repeats)] for key, (call, _) in calls.items()}
    print_table(times, {}, {key: flops for key, (_, flops) in calls.items()})


if __name__ == "__main__":
    app.run(main)
