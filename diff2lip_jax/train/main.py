"""`diff2lip-train --config=configs/diff2lip.py:tiny --workdir=DIR [--config.a.b=v ...]`."""

from __future__ import annotations

from absl import flags, logging
from ml_collections import config_flags

from diff2lip_jax import cli

FLAGS = flags.FLAGS


def _main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; use --config=... --workdir=...")
    if not FLAGS.workdir:
        raise ValueError(
            "--workdir is required (checkpoints, metrics and samples go there; an existing workdir is resumed)"
        )
    from diff2lip_jax.train.loop import NonFiniteLossError, train

    logging.set_verbosity(logging.INFO)
    try:
        last = train(FLAGS.config, FLAGS.workdir)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    if last:
        print("final " + " ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())))


def run():
    """Console script `diff2lip-train`."""
    config_flags.DEFINE_config_file("config", cli.default_config("diff2lip", "tiny"), "training config")
    flags.DEFINE_string("workdir", None, "checkpoints, config, metrics (TensorBoard) and sample grids")
    cli.run_app("diff2lip-train", _main, doc=__doc__)


if __name__ == "__main__":
    run()
