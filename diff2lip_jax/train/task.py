"""What the one training loop needs from a network: the `Task` interface.

A task is plain data and functions (no class hierarchy): how to make a fresh state,
the jitted-step body, the frozen networks it reads, its data, what a checkpoint's
inference items hold, and its periodic reports (held-out metrics, sample grids).
`diff2lip_jax.train.diff2lip.make_task` and `diff2lip_jax.train.syncnet.make_task`
build the two; :func:`diff2lip_jax.train.loop.train` runs either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

State = Any  # a flax.struct.PyTreeNode with a `step` (int32 scalar) field
Batch = Mapping[str, jax.Array]
Scalars = dict[str, float]

TASKS = ("diff2lip", "syncnet")


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/inf loss; the run stops and the last checkpoint stays as it was."""


@dataclasses.dataclass(frozen=True)
class Report:
    """A periodic report: every `every` steps (and after the last step when `at_end`),
    `run(state, step)` returns scalars logged under `prefix` (or None: nothing to log).
    `headline(scalars)` is an optional extra console line (e.g. the sync accuracy)."""

    every: int
    prefix: str
    run: Callable[[State, int], Scalars | None]
    at_end: bool = False
    headline: Callable[[Scalars], str] | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One network's training, as the loop sees it.

    kind: "diff2lip" or "syncnet" (the checkpoint meta's `kind`; a workdir of one kind
      never resumes as the other).
    batch_keys: the fields of a local batch that go to the device.
    init_state: () -> a fresh state (step 0), traceable (the loop runs it under
      `jax.eval_shape` and `jax.jit` with the state's shardings).
    train_step: (state, frozen, batch) -> (state, metrics); metrics are float32
      scalars and include `finite` (0 when the loss was NaN/inf and the update skipped).
    frozen: the frozen networks' variables (replicated on the mesh; {} when none).
    make_loader: (split, seed) -> an iterator of this process's local batches
      (numpy dicts), checkpointable with grain.
    inference_items: (state, step) -> (params, meta): the `params` and `meta` items a
      checkpoint carries for inference (:mod:`diff2lip_jax.checkpoint`).
    reports: periodic held-out metrics and sample grids.
    """

    kind: str
    batch_keys: tuple[str, ...]
    init_state: Callable[[], State]
    train_step: Callable[[State, Any, Batch], tuple[State, dict[str, jax.Array]]]
    frozen: Any
    make_loader: Callable[[str, int], Iterator[dict]]
    inference_items: Callable[[State, int], tuple[Any, dict]]
    reports: tuple[Report, ...] = ()


def close_iterator(it: Any) -> None:
    """Stops a grain iterator's worker processes (a no-op for plain iterators)."""
    if hasattr(it, "close"):
        it.close()
