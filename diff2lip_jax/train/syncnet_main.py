"""`diff2lip-train-syncnet --config=configs/syncnet.py:tiny --workdir=DIR [--config.a.b=v ...]`.

Trains the SyncNet lip-sync expert on a prepared dataset (`--config.data.dir`),
resuming when DIR holds a checkpoint, and prints the held-out
`sync accuracy: X.XX%`. Use the workdir as Diff2Lip's expert with
`diff2lip-train --config.syncnet.checkpoint=DIR`.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from diff2lip_jax import cli

PROG = "diff2lip-train-syncnet"
FLAGS = flags.FLAGS


def _main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; use --config=... --workdir=...")
    if not FLAGS.workdir:
        raise ValueError("--workdir is required (checkpoints and metrics go there; an existing workdir is resumed)")
    from diff2lip_jax.train.syncnet import NonFiniteLossError, train

    try:
        last = train(FLAGS.config, FLAGS.workdir)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    if last:
        print("final " + " ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())))
    if "eval_accuracy" in last:
        print(f"sync accuracy: {100 * last['eval_accuracy']:.2f}%")


def run():
    """Console script `diff2lip-train-syncnet`."""
    config_flags.DEFINE_config_file("config", cli.default_config("syncnet", "tiny"), "SyncNet training config")
    flags.DEFINE_string("workdir", None, "checkpoints, config and metrics (TensorBoard)")
    cli.run_app(PROG, _main, doc=__doc__)


if __name__ == "__main__":
    run()
