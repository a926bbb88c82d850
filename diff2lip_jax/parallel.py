"""Device mesh, sharding rules and multi-host plumbing (jax.jit + NamedSharding, no pmap).

The mesh has two axes, ("data", "fsdp"). Batches are split over both; every
parameter and optimizer-state leaf large enough to matter is split over "fsdp"
along its largest divisible dimension (ZeRO-3 style), the rest replicated.
Frozen networks (SyncNet, LPIPS) are replicated.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one; a no-op otherwise.

    Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what
    launch/local_multiprocess.sh sets). Otherwise jax's own auto-detection covers
    SLURM (srun) and Cloud TPU pod slices.
    """
    if jax.distributed.is_initialized():
        return
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def mesh_shape(data: int, fsdp: int, num_devices: int | None = None) -> tuple[int, int]:
    """Resolves -1 in (data, fsdp) to use all devices; checks the product."""
    n = num_devices or jax.device_count()
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of mesh.data and mesh.fsdp may be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh: data {data} x fsdp {fsdp} != {n} devices; set mesh.data/mesh.fsdp (-1 takes the rest)")
    return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A ("data", "fsdp") mesh over all devices of all processes.

    Axes are Auto: shardings are given at jit boundaries and XLA propagates them
    (recent jax defaults make_mesh to Explicit axes, which would demand sharding
    annotations on every intermediate).
    """
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh(mesh_shape(data, fsdp), ("data", "fsdp"), axis_types=auto)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp."""
    return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2**12) -> P:
    """Shards the largest dimension divisible by the fsdp size; small leaves stay replicated."""
    if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def fsdp_shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a pytree of arrays / ShapeDtypeStructs by the fsdp rule."""
    size = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(np.shape(x)), size)), tree)


def host_to_global(local_batch: Any, mesh: Mesh) -> Any:
    """This process's slice of the batch (numpy, leading axis) -> global jax.Arrays.

    Each process passes its own examples; the global batch is their
    concatenation in process order, split over ("data", "fsdp").
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def local_batch_size(global_batch_size: int) -> int:
    """Per-process share of the global batch; it must divide evenly."""
    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(f"train.batch_size {global_batch_size} does not split over {count} processes")
    return global_batch_size // count
