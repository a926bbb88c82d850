"""The two training console scripts, over the one loop (:func:`diff2lip_jax.train.loop.train`).

    diff2lip-train         --config=configs/diff2lip.py:tiny --workdir=DIR [--config.a.b=v ...]
    diff2lip-train-syncnet --config=configs/syncnet.py:tiny  --workdir=DIR [--config.a.b=v ...]

An existing workdir is resumed. Exit codes: 0 done (or stopped by SIGTERM after
checkpointing: a planned preemption), 2 a user error (one line), 130 Ctrl-C (after
checkpointing the running step).
"""

from __future__ import annotations

import signal
import sys

from absl import flags

from diff2lip_jax import cli

FLAGS = flags.FLAGS

DOCS = {
    "diff2lip": """diff2lip-train --config=configs/diff2lip.py:VARIANT --workdir=DIR [--config.a.b=v ...]

Trains Diff2Lip (all five losses unless the config turns some off) on a prepared
dataset (--config.data.dir), with a SyncNet expert (--config.syncnet.checkpoint).
DIR holds checkpoints, the config, TensorBoard metrics and sample grids, and is
resumed when it holds a checkpoint. Variants: official (the paper's 128 px model),
tiny (CPU-sized); losses=recon|sync|perceptual|gan picks the paper's ablation rows.
""",
    "syncnet": """diff2lip-train-syncnet --config=configs/syncnet.py:VARIANT --workdir=DIR [--config.a.b=v ...]

Trains the SyncNet lip-sync expert on a prepared dataset (--config.data.dir),
resuming when DIR holds a checkpoint, and prints the held-out
`sync accuracy: X.XX%`. Use DIR as Diff2Lip's expert with
`diff2lip-train --config.syncnet.checkpoint=DIR`.
""",
}
PROGS = {"diff2lip": "diff2lip-train", "syncnet": "diff2lip-train-syncnet"}


def _main(task: str, argv) -> None:
    from diff2lip_jax.train.loop import Interrupted, NonFiniteLossError, train
    from diff2lip_jax.train.validation import task_of

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; use --config=... --workdir=...")
    if not FLAGS.workdir:
        raise ValueError("--workdir is required (checkpoints and metrics go there; an existing workdir is resumed)")
    try:
        FLAGS.config.get("task")
    except OSError as e:  # config_flags defers a missing or unreadable file to the first access
        reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise ValueError(
            f"--config: cannot load the config file ({reason}); e.g. --config=configs/{task}.py:tiny"
        ) from None
    if task_of(FLAGS.config) != task:
        raise ValueError(
            f"--config is a {FLAGS.config.task} config; train it with {PROGS[FLAGS.config.task]} "
            f"(or pass --config=configs/{task}.py:VARIANT)"
        )
    try:
        last = train(FLAGS.config, FLAGS.workdir)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    except Interrupted as e:
        planned = e.signum == signal.SIGTERM
        what = "stopped by SIGTERM" if planned else "interrupted"
        print(f"{PROGS[task]}: {what}: checkpointed step {e.step}; run the same command to resume", file=sys.stderr)
        sys.exit(0 if planned else 130)
    if last:
        print("final " + " ".join(f"{k}={v:.4g}" for k, v in sorted(last.items())))
    if "eval_accuracy" in last:
        print(f"sync accuracy: {100 * last['eval_accuracy']:.2f}%")


def _run(task: str) -> None:
    cli.define_config_flag(f"training config, e.g. configs/{task}.py:tiny", None, required=True)
    flags.DEFINE_string("workdir", None, "checkpoints, config, metrics (TensorBoard) and sample grids")
    cli.run_app(PROGS[task], lambda argv: _main(task, argv), doc=DOCS[task])


def run() -> None:
    """Console script `diff2lip-train`."""
    _run("diff2lip")


def run_syncnet() -> None:
    """Console script `diff2lip-train-syncnet`."""
    _run("syncnet")


if __name__ == "__main__":
    run()
